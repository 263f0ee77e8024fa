"""R2Gen's report cleaning, re-expressed as named regex steps: raw report text → cleaned text.

``clean_report("1. No effusion.  2. Normal heart..", CleanStyle.IU_XRAY)`` →
``"no effusion . normal heart ."``; output equals R2Gen's ``Tokenizer.clean_report_iu_xray`` /
``clean_report_mimic_cxr`` (``modules/tokenizers.py``) character for character.

What R2Gen does, in order, and what each step below reproduces:
  1. report level (``IU_XRAY_STEPS`` / ``MIMIC_CXR_STEPS``): MIMIC only: newlines → spaces, runs
     of ``_`` / spaces collapsed; both: runs of dots collapsed; list markers ``"1. "`` dropped and
     ``" 2. "`` … ``" 5. "`` turned into sentence breaks.  R2Gen chains ``str.replace(pair, one)``
     a fixed number of times (3× for dots in IU, 8× in MIMIC, …), so a run of *n* characters
     becomes ``ceil(n / 2**passes)`` characters, not always one; the run steps keep that.
  2. strip, lowercase, split into sentences on ``". "`` exactly (one space; a newline does not
     split an IU report).
  3. per sentence: delete ``" / \\ '``, strip whitespace, then delete ``SENTENCE_PUNCTUATION``.
     R2Gen's class ``[.,?;*!%^&_+():-\\[\\]{}]`` contains the *range* ``:-[`` so ``< = > @`` are
     deleted too while ``-`` is kept; sentences are not stripped again, and empty sentences are
     kept (R2Gen's ``!= []`` filter never fires).
  4. join with ``" . "`` and append ``" ."``.

De-identification (``DeidMode``): IU X-ray writes de-identified words as ``XXXX``; R2Gen keeps
them, so ``xxxx`` is an ordinary vocabulary word (also glued forms such as ``xxxx-a-xxxx`` or
``xxxxct`` from ``XXXX/CT``).  ``KEEP`` (default) is R2Gen's behaviour.  ``MASK`` replaces every
cleaned token that contains ``xxxx`` with ``mask_token`` (``<unk>``: the R2Gen vocabulary's
unknown word); ``DROP`` deletes those tokens and any sentence they leave empty.  Both act on the
cleaned text, so the mask survives the punctuation step.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

Replacement = str | Callable[[re.Match[str]], str]


class CleanStyle(str, Enum):
    IU_XRAY = "iu_xray"
    MIMIC_CXR = "mimic_cxr"


class DeidMode(str, Enum):
    KEEP = "keep"   # R2Gen: "xxxx" stays a word
    MASK = "mask"   # every token containing "xxxx" → mask_token
    DROP = "drop"   # every token containing "xxxx" removed, emptied sentences removed


@dataclass(frozen=True)
class RegexStep:
    """One named rewrite: ``pattern.sub(replacement, text)``.

    ``needs`` is a literal every match contains; when it is absent the (slower) regex is skipped.
    """

    name: str
    pattern: re.Pattern[str]
    replacement: Replacement
    needs: str = ""

    def apply(self, text: str) -> str:
        if self.needs not in text:
            return text
        return self.pattern.sub(self.replacement, text)


def _literal_step(name: str, literal: str, replacement: str) -> RegexStep:
    return RegexStep(name, re.compile(re.escape(literal)), replacement, needs=literal)


def _collapse_runs(char: str, passes: int) -> Callable[[re.Match[str]], str]:
    """``passes`` rounds of ``.replace(char * 2, char)`` turn a run of n into ceil(n / 2**passes)."""
    divisor = 2**passes
    return lambda m: char * math.ceil(len(m.group()) / divisor)


def _run_step(name: str, char: str, passes: int) -> RegexStep:
    return RegexStep(name, re.compile(re.escape(char) + "{2,}"), _collapse_runs(char, passes), char * 2)


# R2Gen replaces these one after another; each needs its own pass (". 2. 3. " loses both markers
# only because "3" is handled after "2"), so they are not merged into one alternation.
_LIST_STEPS: tuple[RegexStep, ...] = (
    _literal_step("drop_list_marker_1", "1. ", ""),
    *(_literal_step(f"list_marker_{k}_after_sentence", f". {k}. ", ". ") for k in "2345"),
    *(_literal_step(f"list_marker_{k}_to_break", f" {k}. ", ". ") for k in "2345"),
)

IU_XRAY_STEPS: tuple[RegexStep, ...] = (
    _run_step("collapse_dot_runs", ".", passes=3),
    *_LIST_STEPS,
)

MIMIC_CXR_STEPS: tuple[RegexStep, ...] = (
    _literal_step("newline_to_space", "\n", " "),
    _run_step("collapse_underscore_runs", "_", passes=7),
    _run_step("collapse_space_runs", " ", passes=6),
    _run_step("collapse_dot_runs", ".", passes=8),
    *_LIST_STEPS,
)

STEPS: dict[CleanStyle, tuple[RegexStep, ...]] = {
    CleanStyle.IU_XRAY: IU_XRAY_STEPS,
    CleanStyle.MIMIC_CXR: MIMIC_CXR_STEPS,
}

SENTENCE_QUOTES = re.compile(r"[\"/\\']")
# R2Gen's "[.,?;*!%^&_+():-\[\]{}]" with its ":-[" range spelled out (A-Z cannot occur: lowercased).
SENTENCE_PUNCTUATION = re.compile(r"[.,?;*!%^&_+():;<=>?@A-Z\[\]{}]")
SENTENCE_SPLIT = ". "
DEID_TOKEN = re.compile(r"\S*xxxx\S*")
_SPACES = re.compile(r" +")


def clean_sentence(sentence: str) -> str:
    """R2Gen's per-sentence cleaner: drop quotes/slashes, strip, drop punctuation (no re-strip)."""
    return SENTENCE_PUNCTUATION.sub("", SENTENCE_QUOTES.sub("", sentence).strip())


def clean_sentences(text: str, style: CleanStyle | str = CleanStyle.IU_XRAY) -> list[str]:
    """The cleaned sentences of ``text`` (R2Gen's list before ``" . ".join``; may hold "")."""
    for step in STEPS[CleanStyle(style)]:
        text = step.apply(text)
    return [clean_sentence(s) for s in text.strip().lower().split(SENTENCE_SPLIT)]


def _apply_deid(sentences: Sequence[str], deid: DeidMode, mask_token: str) -> list[str]:
    if deid is DeidMode.KEEP:
        return list(sentences)
    if deid is DeidMode.MASK:
        return [DEID_TOKEN.sub(lambda _: mask_token, s) for s in sentences]
    kept = []
    for sentence in sentences:
        dropped = _SPACES.sub(" ", DEID_TOKEN.sub("", sentence)).strip() if "xxxx" in sentence else sentence
        if dropped or not sentence:   # keep R2Gen's empty sentences; drop ones we emptied
            kept.append(dropped)
    return kept


def clean_report(
    text: str,
    style: CleanStyle | str = CleanStyle.IU_XRAY,
    deid: DeidMode | str = DeidMode.KEEP,
    mask_token: str = "<unk>",
) -> str:
    """Clean ``text`` exactly as R2Gen does for ``style``; ``deid`` decides what ``xxxx`` becomes.

    With the default ``deid=KEEP`` the result is byte-identical to R2Gen's cleaner.  The result
    is not idempotent (cleaning twice changes it), as in R2Gen: clean raw text once.
    """
    sentences = _apply_deid(clean_sentences(text, style), DeidMode(deid), mask_token)
    return " . ".join(sentences) + " ."


def repeated_sentences(text: str, style: CleanStyle | str = CleanStyle.IU_XRAY) -> list[str]:
    """Sentences that occur more than once in ``text``, compared after R2Gen's cleaning (a
    degenerate report: "the lungs are clear . the lungs are clear .")."""
    seen: set[str] = set()
    repeated: list[str] = []
    for sentence in (" ".join(s.split()) for s in clean_sentences(text, style)):
        if sentence and sentence in seen and sentence not in repeated:
            repeated.append(sentence)
        seen.add(sentence)
    return repeated


_AFTER_SENTENCE = re.compile(r"((?<=\.)\s+)")


def drop_repeated_sentences(text: str) -> tuple[str, int]:
    """``text`` without the sentences it already said (compared as R2Gen cleans a sentence), and how
    many were dropped. Sentences end at a period followed by white space; the text between the
    sentences that stay is kept as written."""
    parts = _AFTER_SENTENCE.split(text)          # [sentence, gap, sentence, gap, …]
    seen: set[str] = set()
    kept: list[str] = []
    dropped = 0
    for k in range(0, len(parts), 2):
        sentence = parts[k]
        key = " ".join(clean_sentence(sentence.lower()).split())
        if key and key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept += [parts[k - 1], sentence] if kept else [sentence]
    return "".join(kept), dropped


def complete_sentences(text: str) -> str:
    """The part of ``text`` up to its last sentence end that is followed by white space."""
    gaps = list(_AFTER_SENTENCE.finditer(text))
    return text[:gaps[-1].start()] if gaps else ""
