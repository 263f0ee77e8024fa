"""A robust wrapper around the METEOR 1.5 jar that ships inside the ``pycocoevalcap`` wheel.

``MeteorScorer().compute_score(gts, res)`` takes and returns exactly what
``pycocoevalcap.meteor.meteor.Meteor.compute_score`` does (``{id: [text]}`` dicts in, ``(mean,
per-item list)`` out) and speaks the same ``SCORE`` / ``EVAL`` protocol to the same jar with the
same flags, so on well-formed input the numbers are identical.  What it fixes:

* Locale.  METEOR parses its own statistics back with ``java.util.Scanner.nextDouble``, which
  follows the JVM's default locale: under a comma-decimal locale (e.g. ``JAVA_TOOL_OPTIONS=
  -Duser.language=de``) the JVM dies with ``InputMismatchException`` and pycocoevalcap fails with
  ``could not convert string to float: b''``.  We pin ``-Duser.language=en -Duser.country=US``
  (command-line ``-D`` wins over ``JAVA_TOOL_OPTIONS``) and ``-Dfile.encoding=UTF-8`` (Java 17
  otherwise reads stdin in the locale's charset, e.g. ASCII under ``LANG=C``).
* Protocol breaks.  One line per request: a newline inside a text desynchronises the stream
  (pycocoevalcap then fails on ``'Error: specify SCORE or EVAL or SING'`` or hangs) and ``|||``
  is the field separator.  Both hypothesis *and* references are sanitised (``|`` removed,
  whitespace runs → one space); pycocoevalcap only strips ``|||`` from the hypothesis.
* The child's stderr goes to a temporary file, not an unread pipe (a full pipe would block the
  JVM), and a dead JVM or an unparsable reply raises ``MeteorError`` quoting that stderr.
* The JVM is closed deterministically (``close()`` / ``with``), not in ``__del__`` at exit;
  a lock keeps concurrent callers from interleaving requests, as pycocoevalcap's does.

Starting the JVM loads the paraphrase table: about 10 s, so reuse one scorer across calls.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO, Self

METEOR_JAR = "meteor-1.5.jar"
# The jar's flags exactly as pycocoevalcap passes them; only the JVM options are added.
METEOR_ARGS = ("-", "-", "-stdio", "-l", "en", "-norm")
JVM_OPTIONS = ("-Xmx2G", "-Dfile.encoding=UTF-8", "-Duser.language=en", "-Duser.country=US")

_FIELD_SEPARATOR = re.compile(r"\|")
_WHITESPACE = re.compile(r"\s+")


class MeteorError(RuntimeError):
    """The METEOR JVM could not be started, died, or answered something unexpected."""


def sanitize(text: str) -> str:
    """Make ``text`` safe for METEOR's one-line ``|||``-separated protocol.

    A no-op on R2Gen-cleaned text (single spaces, no ``|``), so scores equal pycocoevalcap's.
    """
    return _WHITESPACE.sub(" ", _FIELD_SEPARATOR.sub("", text)).strip()


def meteor_jar() -> Path:
    """The METEOR jar inside the installed pycocoevalcap package (its data/ sits beside it)."""
    resource = files("pycocoevalcap.meteor") / METEOR_JAR
    with as_file(resource) as path:  # a real file for a normal (unzipped) install
        if not path.is_file():
            raise MeteorError(f"METEOR jar not found at {path}; reinstall pycocoevalcap==1.2")
        return path


class MeteorScorer:
    """One long-lived METEOR JVM.  Use as a context manager or call ``close()``."""

    def __init__(self, java: str = "java") -> None:
        jar = meteor_jar()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  lives as long as the JVM
        command = [java, *JVM_OPTIONS, "-jar", str(jar), *METEOR_ARGS]
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=jar.parent,  # METEOR finds data/paraphrase-en.gz relative to here
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except FileNotFoundError as err:
            self._stderr.close()
            raise MeteorError(
                f"METEOR needs a Java runtime (>= 8) but {java!r} was not found on PATH; "
                "install one or skip METEOR (meteor=False / --no-meteor)"
            ) from err
        self._lock = threading.Lock()

    # --- protocol -------------------------------------------------------------------------
    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode("utf-8") + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError as err:
            raise self._died("while sending a request") from err

    def _receive(self) -> str:
        assert self._proc.stdout is not None
        reply = self._proc.stdout.readline()
        if not reply:
            raise self._died("before answering")
        return reply.decode("ascii", errors="replace").strip()

    def _receive_float(self) -> float:
        reply = self._receive()
        try:
            return float(reply)
        except ValueError:
            raise MeteorError(f"METEOR answered {reply!r} where a score was expected") from None

    def _died(self, when: str) -> MeteorError:
        code = self._proc.poll()
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", errors="replace")[-2000:]
        state = "is still running" if code is None else f"exited with code {code}"
        return MeteorError(f"the METEOR JVM {state} {when}; its stderr:\n{tail}")

    # --- public API -----------------------------------------------------------------------
    def compute_score(
        self, gts: Mapping[object, Sequence[str]], res: Mapping[object, Sequence[str]]
    ) -> tuple[float, list[float]]:
        """pycocoevalcap's contract: corpus METEOR and one score per id, in ``gts`` key order."""
        if gts.keys() != res.keys():
            raise ValueError("references and hypotheses must have the same ids")
        if self._proc is None:
            raise MeteorError("this MeteorScorer is closed")
        if self._proc.poll() is not None:
            raise self._died("before this call")
        ids = list(gts.keys())
        if not ids:
            raise ValueError("nothing to score: no ids")
        with self._lock:
            stats = []
            for key in ids:
                if len(res[key]) != 1:
                    raise ValueError(
                        f"id {key!r}: exactly one hypothesis expected, got {len(res[key])}"
                    )
                refs = " ||| ".join(sanitize(r) for r in gts[key])
                self._send(f"SCORE ||| {refs} ||| {sanitize(res[key][0])}")
                stats.append(self._receive())
            self._send("EVAL ||| " + " ||| ".join(stats))
            scores = [self._receive_float() for _ in ids]
            score = self._receive_float()
        return score, scores

    def method(self) -> str:
        return "METEOR"

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        proc = getattr(self, "_proc", None)
        if proc is None:
            return
        self._proc = None  # type: ignore[assignment]
        if proc.stdin is not None:
            try:
                proc.stdin.close()  # METEOR exits at end of input
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the contract
        self.close()
