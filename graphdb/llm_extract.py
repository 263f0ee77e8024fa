"""LLM extraction behind the ``Extractor`` interface, as the paper built M3KG with GPT-4o.

report → POST {base_url}/v1/chat/completions (any OpenAI-compatible server, JSON mode) → JSON
{"entities": [{text, type, certainty}], "relations": [{head, relation, tail}]} → validated →
keys from the same ``EntityDictionary`` as the rules → the same ``GraphAccumulator``.
Responses are cached on disk by sha256(model, prompt version, report): a rerun makes no requests.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxr.records import DataError, ErrorPolicy, StudyRecord
from graphdb.accumulate import GraphAccumulator, study_node
from graphdb.schema import Certainty, EntityType, KnowledgeGraph, Relation, normalize
from graphdb.vocabulary import DictEntry, EntityDictionary

log = logging.getLogger(__name__)

PROMPT_VERSION = "m3kg-extract-v1"   # bump with any change of SYSTEM_PROMPT's meaning
SYSTEM_PROMPT = """\
You extract a medical knowledge graph from one chest X-ray radiology report.
Return one JSON object and nothing else:
{"entities": [{"text": ..., "type": ..., "certainty": ...}],
 "relations": [{"head": ..., "relation": ..., "tail": ...}]}

Entities: the single words or shortest fixed terms of the report that name an anatomy, a
disorder, a concept (size, side, severity, change, normal / clear / stable ...), a device or a
procedure, copied as written (keep "pleural" and "effusion" apart in "pleural effusion").
"type" is one of "anatomy", "disorder", "concept", "devices", "procedures".
"certainty" is "present", "absent" (negated: "no effusion") or "uncertain" ("possible
pneumonia"). Ignore the de-identification token XXXX.

Relations, between entity texts of your list:
- "modify": modifier -> the word it describes ("small" -> "effusion", "left" -> "pleural").
- "located_at": finding -> where it is ("effusion" -> "pleural", "opacity" -> "lobe").
- "suggestive_of": finding -> the diagnosis it suggests ("opacity" -> "atelectasis").
Include relations of negated findings too. Use only these three relations.
"""

_TYPES = [t.value for t in EntityType]
_CERTAINTIES = [c.value for c in Certainty]
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["entities", "relations"],
    "properties": {
        "entities": {"type": "array", "items": {
            "type": "object",
            "required": ["text", "type", "certainty"],
            "properties": {"text": {"type": "string", "minLength": 1},
                           "type": {"type": "string", "enum": _TYPES},
                           "certainty": {"type": "string", "enum": _CERTAINTIES}},
        }},
        "relations": {"type": "array", "items": {
            "type": "object",
            "required": ["head", "relation", "tail"],
            # the relation name is checked after the schema, to say "unknown relation"
            "properties": {"head": {"type": "string", "minLength": 1},
                           "relation": {"type": "string"},
                           "tail": {"type": "string", "minLength": 1}},
        }},
    },
}
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
CONFIG_STATUS = frozenset({401, 403, 404})   # wrong key / model / URL: no study would succeed


class LLMOutputError(DataError):
    """The model answered, but not with what the schema asks; the message names the field."""


class LLMRequestError(DataError):
    """No usable HTTP answer for one report (after retries, or a 4xx such as 400)."""


class LLMConfigError(RuntimeError):
    """The endpoint refuses every request (401 / 403 / 404): raised in strict and lenient mode."""


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}


def validate_json(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """A small JSON-schema subset (type, required, properties, items, enum, minLength), enough for
    ``RESPONSE_SCHEMA``; raises ``LLMOutputError`` naming the first bad field (``$.entities[2].type``)."""
    kind = schema.get("type")
    if kind is not None:
        is_bool_number = kind in ("integer", "number") and isinstance(value, bool)
        ok = isinstance(value, _JSON_TYPES[kind]) and not is_bool_number
        if not ok:
            raise LLMOutputError(f"{path}: expected {kind}, got {type(value).__name__} {value!r:.60}")
    if "enum" in schema and value not in schema["enum"]:
        raise LLMOutputError(f"{path}: {value!r:.60} is not one of {schema['enum']}")
    if isinstance(value, str) and len(value.strip()) < schema.get("minLength", 0):
        raise LLMOutputError(f"{path}: empty string")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise LLMOutputError(f"{path}: missing required field {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate_json(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate_json(item, schema["items"], f"{path}[{i}]")


@dataclass(frozen=True)
class LLMConfig:
    base_url: str = "https://api.openai.com/v1"   # with or without the trailing /v1
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"           # name of the variable; unset → no auth header
    cache_dir: Path | None = None                 # None: no cache
    max_workers: int = 4                          # concurrent requests
    max_retries: int = 4                          # on 408/409/429/5xx, timeouts, refused connections
    backoff_s: float = 1.0                        # wait backoff_s * 2**attempt (or Retry-After)
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0
    temperature: float = 0.0
    system_prompt: str = SYSTEM_PROMPT
    prompt_version: str = PROMPT_VERSION

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.base_url):
            raise ValueError(f"LLMConfig.base_url must start with http:// or https://, got {self.base_url!r}")
        if self.max_workers < 1:
            raise ValueError(f"LLMConfig.max_workers must be >= 1, got {self.max_workers}")
        for name in ("max_retries", "backoff_s", "max_backoff_s", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"LLMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"LLMConfig.timeout_s must be > 0, got {self.timeout_s}")
        if not self.model:
            raise ValueError("LLMConfig.model must not be empty")

    @property
    def endpoint(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"

    def cache_key(self, report: str) -> str:
        """sha256 of model, prompt version (+ the prompt's own hash) and report."""
        prompt = hashlib.sha256(self.system_prompt.encode()).hexdigest()[:16]
        parts = (self.model, self.prompt_version, prompt, report)
        return hashlib.sha256(b"\0".join(p.encode() for p in parts)).hexdigest()


@dataclass
class LLMStats:
    requests: int = 0       # HTTP requests sent, retries included
    retries: int = 0
    cache_hits: int = 0
    skipped: int = 0        # studies skipped in lenient mode
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class ChatClient:
    """POST one chat completion with retries; returns the assistant message's content."""

    def __init__(self, config: LLMConfig, stats: LLMStats, sleep: Callable[[float], None] = time.sleep):
        self.config, self.stats, self._sleep = config, stats, sleep

    def complete(self, report: str) -> str:
        cfg = self.config
        body = json.dumps({
            "model": cfg.model,
            "messages": [{"role": "system", "content": cfg.system_prompt},
                         {"role": "user", "content": report}],
            "temperature": cfg.temperature,
            "response_format": {"type": "json_object"},
        }).encode()
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(cfg.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(cfg.max_retries + 1):
            self.stats.add(requests=1)
            request = urllib.request.Request(cfg.endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout_s) as resp:
                    return _message_content(resp.read())
            except urllib.error.HTTPError as err:
                detail = err.read()[:300].decode("utf-8", "replace")
                if err.code in CONFIG_STATUS:
                    raise LLMConfigError(f"{cfg.endpoint}: HTTP {err.code} {err.reason} (check base_url, model "
                                         f"and ${cfg.api_key_env}): {detail}") from None
                if err.code not in RETRY_STATUS:
                    raise LLMRequestError(f"{cfg.endpoint}: HTTP {err.code} {err.reason}: {detail}") from None
                problem, wait = f"HTTP {err.code}: {detail}", _retry_after(err.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                problem, wait = f"{type(err).__name__}: {getattr(err, 'reason', err)}", None
            if attempt == cfg.max_retries:
                raise LLMRequestError(f"{cfg.endpoint}: gave up after {attempt + 1} attempts, last: {problem}")
            self.stats.add(retries=1)
            delay = min(cfg.max_backoff_s, wait if wait is not None else cfg.backoff_s * 2 ** attempt)
            log.warning("retrying in %.1fs after %s", delay, problem)
            self._sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _message_content(raw: bytes) -> str:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMOutputError("response is not a chat completion with choices[0].message.content: "
                             f"{raw[:200]!r}") from None
    if not isinstance(content, str):
        raise LLMOutputError(f"choices[0].message.content is {type(content).__name__}, not a string")
    return content


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_output(content: str) -> dict[str, Any]:
    """Model text → validated JSON object (a ```json fence around it is tolerated)."""
    if m := _FENCE.match(content):
        content = m.group(1)
    try:
        data = json.loads(content)
    except json.JSONDecodeError as err:
        raise LLMOutputError(f"model output is not valid JSON (line {err.lineno}, column {err.colno}: "
                             f"{err.msg}): {content[:120]!r}") from None
    validate_json(data, RESPONSE_SCHEMA)
    for i, rel in enumerate(data["relations"]):
        try:
            Relation.parse(rel["relation"])
        except ValueError:
            raise LLMOutputError(f"$.relations[{i}].relation: unknown relation {rel['relation']!r}; "
                                 f"expected one of {[r.value for r in Relation]}") from None
    return data


@dataclass(frozen=True)
class StudyOutput:
    mentions: tuple[tuple[DictEntry, str, Certainty], ...]
    triples: tuple[tuple[DictEntry, Relation, DictEntry], ...]


class LLMExtractor:
    """``Extractor`` that asks an OpenAI-compatible chat model for each report's entities and
    relations. Strict (default) raises ``DataError`` at the first bad study, naming it; lenient
    skips it and counts it (``policy.summary()``, ``stats.skipped``). Studies run concurrently
    but are merged in input order, so the graph is the same for any ``max_workers``; identical
    report texts are asked once.
    Triple count = studies whose output lists the triple; entity count = listed mentions.
    """

    def __init__(self, config: LLMConfig | None = None, dictionary: EntityDictionary | None = None,
                 policy: ErrorPolicy | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config or LLMConfig()
        self.dictionary = dictionary or EntityDictionary.bundled()
        self.policy = policy or ErrorPolicy.strict()
        self.stats = LLMStats()
        self.client = ChatClient(self.config, self.stats, sleep)

    def _cache_path(self, report: str) -> Path | None:
        d = self.config.cache_dir
        return None if d is None else Path(d) / f"{self.config.cache_key(report)}.json"

    def output_of(self, report: str) -> dict[str, Any]:
        """The validated model output for one report, from the cache or one (retried) request."""
        path = self._cache_path(report)
        if path is not None and path.is_file():
            try:
                data = parse_output(json.loads(path.read_text(encoding="utf-8"))["content"])
                self.stats.add(cache_hits=1)
                return data
            except (ValueError, KeyError, DataError):
                log.warning("%s: unreadable cache entry, asking again", path)
        content = self.client.complete(report)
        data = parse_output(content)
        if path is not None:   # only valid outputs are cached; write-then-rename is atomic
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text(json.dumps({"model": self.config.model, "prompt_version": self.config.prompt_version,
                                       "content": content}), encoding="utf-8")
            os.replace(tmp, path)
        return data

    def _entry(self, text: str, kind: EntityType) -> DictEntry:
        found = self.dictionary.lookup(text)
        key = normalize(text)
        return found or DictEntry(key, key, kind)

    def read(self, report: str) -> StudyOutput:
        data = self.output_of(report)
        mentions, by_text = [], {}
        for i, item in enumerate(data["entities"]):
            entry = self._entry(item["text"], EntityType.parse(item["type"]))
            if not entry.key:
                raise LLMOutputError(f"$.entities[{i}].text: {item['text']!r} has no words")
            mentions.append((entry, item["text"], Certainty(item["certainty"])))
            by_text.setdefault(normalize(item["text"]), entry)
        triples: dict[tuple[str, Relation, str], tuple[DictEntry, Relation, DictEntry]] = {}
        for i, rel in enumerate(data["relations"]):
            ends = []
            for side in ("head", "tail"):
                text = rel[side]
                entry = by_text.get(normalize(text)) or self.dictionary.lookup(text)
                if entry is None:
                    raise LLMOutputError(f"$.relations[{i}].{side}: {text!r} is neither a listed entity "
                                         "nor a dictionary term")
                ends.append(entry)
            relation = Relation.parse(rel["relation"])
            if ends[0].key != ends[1].key:
                triples.setdefault((ends[0].key, relation, ends[1].key), (ends[0], relation, ends[1]))
        return StudyOutput(tuple(mentions), tuple(triples.values()))

    def extract(self, records: Iterable[StudyRecord], progress: bool = False) -> KnowledgeGraph:
        records = list(records)
        acc = GraphAccumulator()
        with ThreadPoolExecutor(max_workers=self.config.max_workers) as pool:
            # one request per distinct text: IU X-ray alone repeats its normal reports hundreds of times
            by_text: dict[str, Future[StudyOutput]] = {}
            for r in records:
                if r.report not in by_text:
                    by_text[r.report] = pool.submit(self.read, r.report)
            try:
                for record in tqdm(records, desc="extracting (LLM)", unit="report", disable=not progress):
                    try:
                        output = by_text[record.report].result()
                    except DataError as err:
                        self.policy.fail(f"study {record.study_id!r}: {err}")   # strict: raises
                        self.stats.add(skipped=1)
                        continue
                    acc.add_study(study_node(record))
                    for entry, text, certainty in output.mentions:
                        acc.add_mention(record.study_id, entry, text, certainty)
                    for head, relation, tail in output.triples:
                        acc.add_triple(head, relation, tail)
            except BaseException:
                for f in by_text.values():
                    f.cancel()
                raise
        return acc.build()
