"""LLM extraction behind the ``Extractor`` interface, as the paper built M3KG with GPT-4o.

report → ``openai`` chat completion (any OpenAI-compatible server, JSON mode) → JSON
{"entities": [{text, type, certainty}], "relations": [{head, relation, tail}]} → ``ExtractionOutput``
(pydantic) → keys from the same ``EntityDictionary`` as the rules → the same ``GraphAccumulator``.
Responses are cached on disk by sha256(model, prompt version, report): a rerun makes no requests.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import openai
from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError
from tqdm.auto import tqdm

from cxr.files import write_text_atomic
from cxr.records import DataError, ErrorPolicy, StudyRecord
from graphdb.accumulate import GraphAccumulator, study_node
from graphdb.schema import (
    RELATION_MEANINGS,
    RELATIONS,
    Certainty,
    EntityType,
    KnowledgeGraph,
    Relation,
    normalize,
)
from graphdb.vocabulary import DictEntry, EntityDictionary

log = logging.getLogger(__name__)

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
""" + "".join(f'- "{r.value}": {RELATION_MEANINGS[r]}.\n' for r in RELATIONS) + f"""\
Include relations of negated findings too. Use only these {len(RELATIONS)} relations.
"""
# names the cached answers: a change of the prompt (e.g. a new relation) asks the model again
PROMPT_VERSION = "m3kg-extract-" + hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:12]

CONFIG_STATUS = frozenset({401, 403, 404})   # wrong key / model / URL: no study would succeed


class LLMOutputError(DataError):
    """The model answered, but not with what the schema asks; the message names the field."""


class LLMRequestError(DataError):
    """No usable HTTP answer for one report (after the client's retries, or a 4xx such as 400)."""


class LLMConfigError(RuntimeError):
    """The endpoint refuses every request (401 / 403 / 404): raised in strict and lenient mode."""


# ---- the output schema -------------------------------------------------------------------------

def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty string")
    return text


Text = Annotated[str, AfterValidator(_not_blank)]
# "located at" / "LOCATED_AT" are the model's spellings of located_at
RelationName = Annotated[Relation, BeforeValidator(lambda v: Relation.parse(v) if isinstance(v, str) else v)]


class ExtractedEntity(BaseModel):
    text: Text
    type: EntityType
    certainty: Certainty


class ExtractedRelation(BaseModel):
    head: Text
    relation: RelationName
    tail: Text


class ExtractionOutput(BaseModel):
    """What the model must return for one report (extra keys are ignored)."""

    entities: list[ExtractedEntity]
    relations: list[ExtractedRelation]


def _first_error(err: ValidationError) -> str:
    """``$.entities[2].type: Input should be ... (got 'organ')``: the first bad field, one line."""
    e = err.errors(include_url=False)[0]
    path = "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"])
    reason = str(e["ctx"]["error"]) if e["type"] == "value_error" else e["msg"]
    if e["type"] in ("missing", "value_error"):   # nothing to show / the reason shows it
        return f"{path}: {reason}"
    return f"{path}: {reason} (got {e['input']!r:.60})"


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_output(content: str) -> ExtractionOutput:
    """Model text → validated output (a ```json fence around it is tolerated)."""
    if m := _FENCE.match(content):
        content = m.group(1)
    try:
        data = json.loads(content)
    except json.JSONDecodeError as err:
        raise LLMOutputError(f"model output is not valid JSON (line {err.lineno}, column {err.colno}: "
                             f"{err.msg}): {content[:120]!r}") from None
    try:
        return ExtractionOutput.model_validate(data)
    except ValidationError as err:
        raise LLMOutputError(_first_error(err)) from None


# ---- the endpoint ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LLMConfig:
    base_url: str = "https://api.openai.com/v1"   # with or without the trailing /v1
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"           # name of the variable; unset → key "EMPTY" (local servers)
    cache_dir: Path | None = None                 # None: no cache
    max_workers: int = 4                          # concurrent requests
    max_retries: int = 4                          # the client's: 408/409/429/5xx, timeouts, refused connections
    timeout_s: float = 60.0
    temperature: float = 0.0
    system_prompt: str = SYSTEM_PROMPT
    prompt_version: str = PROMPT_VERSION

    def __post_init__(self) -> None:
        if not re.match(r"^https?://", self.base_url):
            raise ValueError(f"LLMConfig.base_url must start with http:// or https://, got {self.base_url!r}")
        if self.max_workers < 1:
            raise ValueError(f"LLMConfig.max_workers must be >= 1, got {self.max_workers}")
        for name in ("max_retries", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"LLMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"LLMConfig.timeout_s must be > 0, got {self.timeout_s}")
        if not self.model:
            raise ValueError("LLMConfig.model must not be empty")

    @property
    def api_base(self) -> str:
        """The client's base URL, always ending in /v1."""
        base = self.base_url.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"

    @property
    def endpoint(self) -> str:
        return f"{self.api_base}/chat/completions"

    def cache_key(self, report: str) -> str:
        """sha256 of model, prompt version (+ the prompt's own hash) and report."""
        prompt = hashlib.sha256(self.system_prompt.encode()).hexdigest()[:16]
        parts = (self.model, self.prompt_version, prompt, report)
        return hashlib.sha256(b"\0".join(p.encode() for p in parts)).hexdigest()


@dataclass
class LLMStats:
    requests: int = 0       # HTTP requests sent, the client's retries included
    asked: int = 0          # reports sent to the endpoint (each one chat completion)
    cache_hits: int = 0
    skipped: int = 0        # studies skipped in lenient mode
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def retries(self) -> int:
        return self.requests - self.asked

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class ChatClient:
    """One chat completion per report through ``openai.OpenAI``, which retries 408/409/429/5xx,
    timeouts and refused connections with backoff (honouring Retry-After); errors → one line."""

    def __init__(self, config: LLMConfig, stats: LLMStats):
        self.config, self.stats = config, stats
        self._attempts = threading.local()   # HTTP requests of the current report, per worker thread
        self.client = openai.OpenAI(
            base_url=config.api_base,
            api_key=os.environ.get(config.api_key_env) or "EMPTY",   # vLLM & co. take any key; the client needs one
            max_retries=config.max_retries,
            timeout=config.timeout_s,
            # the hook counts every HTTP request, the client's own retries included
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._on_request]}),
        )

    def _on_request(self, request: Any) -> None:
        self.stats.add(requests=1)
        self._attempts.n = getattr(self._attempts, "n", 0) + 1

    def complete(self, report: str) -> str:
        """The assistant message's content for ``report``."""
        cfg = self.config
        self._attempts.n = 0
        self.stats.add(asked=1)
        try:
            completion = self.client.chat.completions.create(
                model=cfg.model,
                messages=[{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": report}],
                temperature=cfg.temperature,
                response_format={"type": "json_object"},
            )
        except openai.APIStatusError as err:
            if err.status_code in CONFIG_STATUS:
                raise LLMConfigError(f"{cfg.endpoint}: HTTP {err.status_code} (check base_url, model and "
                                     f"${cfg.api_key_env}): {err.message}") from None
            raise LLMRequestError(f"{cfg.endpoint}: {self._gave_up()}HTTP {err.status_code}: {err.message}") from None
        except openai.APIConnectionError as err:   # timeouts included
            cause = f" ({type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ else ""
            raise LLMRequestError(f"{cfg.endpoint}: {self._gave_up()}{type(err).__name__}: {err.message}{cause}") from None
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise LLMOutputError(f"response is not a chat completion with choices[0].message.content: "
                                 f"{str(completion)[:200]}") from None
        if not isinstance(content, str):
            raise LLMOutputError(f"choices[0].message.content is {type(content).__name__}, not a string")
        return content

    def _gave_up(self) -> str:
        n = self._attempts.n
        return f"gave up after {n} attempts, last: " if n > 1 else ""


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
                 policy: ErrorPolicy | None = None):
        self.config = config or LLMConfig()
        self.dictionary = dictionary or EntityDictionary.bundled()
        self.policy = policy or ErrorPolicy.strict()
        self.stats = LLMStats()
        self.client = ChatClient(self.config, self.stats)

    def _cache_path(self, report: str) -> Path | None:
        d = self.config.cache_dir
        return None if d is None else Path(d) / f"{self.config.cache_key(report)}.json"

    def output_of(self, report: str) -> ExtractionOutput:
        """The validated model output for one report, from the cache or one (retried) request."""
        path = self._cache_path(report)
        if path is not None and path.is_file():
            try:
                output = parse_output(json.loads(path.read_text(encoding="utf-8"))["content"])
                self.stats.add(cache_hits=1)
                return output
            except (ValueError, KeyError, TypeError, DataError):
                log.warning("%s: unreadable cache entry, asking again", path)
        content = self.client.complete(report)
        output = parse_output(content)
        if path is not None:   # only valid outputs are cached
            write_text_atomic(path, json.dumps({"model": self.config.model,
                                                "prompt_version": self.config.prompt_version, "content": content}))
        return output

    def _entry(self, text: str, kind: EntityType) -> DictEntry:
        found = self.dictionary.lookup(text)
        key = normalize(text)
        return found or DictEntry(key, key, kind)

    def read(self, report: str) -> StudyOutput:
        output = self.output_of(report)
        mentions, by_text = [], {}
        for i, item in enumerate(output.entities):
            entry = self._entry(item.text, item.type)
            if not entry.key:
                raise LLMOutputError(f"$.entities[{i}].text: {item.text!r} has no words")
            mentions.append((entry, item.text, item.certainty))
            by_text.setdefault(normalize(item.text), entry)
        triples: dict[tuple[str, Relation, str], tuple[DictEntry, Relation, DictEntry]] = {}
        for i, rel in enumerate(output.relations):
            ends = []
            for side, text in (("head", rel.head), ("tail", rel.tail)):
                entry = by_text.get(normalize(text)) or self.dictionary.lookup(text)
                if entry is None:
                    raise LLMOutputError(f"$.relations[{i}].{side}: {text!r} is neither a listed entity "
                                         "nor a dictionary term")
                ends.append(entry)
            if ends[0].key != ends[1].key:
                triples.setdefault((ends[0].key, rel.relation, ends[1].key), (ends[0], rel.relation, ends[1]))
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
