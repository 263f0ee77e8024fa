"""Evidence per sentence, in words: one report + the model's figures for its study → a list of sentences.

For each sentence of the final report (``SentenceEvidence``):
- ``observations``: what the labeler reads in it (observation, certainty, the words), each with
  the classifier's probability and the checkpoint's decision threshold;
- ``triples``: the study-subgraph edges between the sentence's entities (the rule extractor's
  reading) and the observations it states, by name with M3KG's count:
  ``effusion —located_at→ pleural (36,265)``;
- ``examples``: for the observations it affirms, the training studies whose disease-aware tokens
  were retrieved for them, each with the sentence of its report that states the observation.

``study_graph`` turns the study's subgraph into names and edges for a reader (the viewer draws it).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cxr.labeler import split_sentences
from cxr.observations import NEGATIVE, POSITIVE, UNCERTAIN, Observation
from generator.check import ReportReading, read_report, readers
from generator.decisions import Thresholds
from graphdb.schema import Subgraph

CERTAINTY = {POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}
MAX_EXAMPLES = 3     # training studies quoted per observation


@dataclass(frozen=True)
class SentenceEvidence:
    text: str
    start: int                                   # char offsets in the report
    end: int
    observations: list[dict[str, Any]] = field(default_factory=list)
    triples: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EDGES_PER_NODE = 3   # study_graph keeps each node's strongest edges, not all of them


def study_graph(subgraph: Subgraph | None, per_node: int = EDGES_PER_NODE) -> dict[str, list[dict[str, Any]]] | None:
    """The subgraph for a reader: ``{"nodes": [{id, name, type, level}], "edges": [{head, relation,
    tail, count}]}``. A per-study subgraph has about 110 nodes and 2,700 edges, too many to draw or
    to send with every report, so an edge is kept while one of its ends has fewer than ``per_node``
    kept edges, strongest (highest M3KG count) first: every node keeps its main links."""
    if subgraph is None:
        return None
    kept, degree = [], dict.fromkeys((n.id for n in subgraph.nodes), 0)
    for e in sorted(subgraph.edges, key=lambda e: (-e.count, e.type, e.head, e.tail)):
        if degree.get(e.head, 0) < per_node or degree.get(e.tail, 0) < per_node:
            kept.append(e)
            degree[e.head] = degree.get(e.head, 0) + 1
            degree[e.tail] = degree.get(e.tail, 0) + 1
    return {"nodes": [{"id": n.id, "name": n.name, "type": n.type, "level": n.level} for n in subgraph.nodes],
            "edges": [{"head": e.head, "relation": e.type.lower(), "tail": e.tail, "count": e.count} for e in kept]}


@functools.lru_cache(maxsize=4096)
def _sentence_of(report: str, observation: Observation) -> str | None:
    """The first sentence of ``report`` that affirms (else calls uncertain) ``observation``; cached:
    the same training reports are quoted for study after study."""
    labeler, _ = readers()
    mentions = [m for m in labeler.label(report, check_language=False).mentions if m.observation is observation]
    for wanted in (POSITIVE, UNCERTAIN):
        hit = next((m for m in mentions if m.label == wanted), None)
        if hit is not None:
            return hit.sentence
    return None


def explain(report: str, probabilities: dict[str, float], thresholds: Thresholds,
            subgraph: Subgraph | None = None, retrieved: dict[str, list[int]] | None = None,
            sources: Sequence[str] = (), source_reports: dict[str, str] | None = None,
            reading: ReportReading | None = None) -> list[SentenceEvidence]:
    """Per-sentence evidence of ``report`` (module docstring). ``retrieved``: observation name → the
    bank token ids retrieved for it; ``sources``: the study id of each bank token (its metadata);
    ``source_reports``: study id → report, for the quoted sentence (None where unknown);
    ``reading``: the report already read (``check.read_report``, as the check reads it), else read here."""
    sentences = split_sentences(report or "")
    if sentences:
        reading = reading or read_report(report)
    labels = reading.labels if sentences else None
    graph = reading.graph if sentences else None
    nodes = {n.id: n for n in subgraph.nodes} if subgraph is not None else {}
    edges = subgraph.edges if subgraph is not None else ()
    cuts = thresholds.cuts()
    out = []
    for s in sentences:
        inside = [m for m in labels.mentions if s.start <= m.start < s.end + 1] if labels else []
        observations = []
        for m in inside:
            observations.append({"observation": m.observation.value, "certainty": CERTAINTY[m.label],
                                 "phrase": m.phrase, "probability": probabilities.get(m.observation.value),
                                 "threshold": cuts[m.observation.value]})
        # the sentence's entities and stated observations, as subgraph node ids
        ids = {f"Entity:{e.entry.key}" for e in (graph.mentions if graph else ()) if s.start <= e.start < s.end + 1}
        ids |= {f"Observation:{m.observation.value}" for m in inside if m.label in (POSITIVE, UNCERTAIN)}
        triples = [{"head": nodes[e.head].name, "relation": e.type.lower(), "tail": nodes[e.tail].name,
                    "count": e.count,
                    "text": f"{nodes[e.head].name} —{e.type.lower()}→ {nodes[e.tail].name} ({e.count:,})"}
                   for e in edges if e.head in ids and e.tail in ids and e.head != e.tail]
        examples = []
        for o in dict.fromkeys(m.observation for m in inside if m.label in (POSITIVE, UNCERTAIN)):
            studies = list(dict.fromkeys(sources[i] for i in (retrieved or {}).get(o.value, []) if 0 <= i < len(sources)))
            for study in studies[:MAX_EXAMPLES]:
                text = (source_reports or {}).get(study)
                examples.append({"observation": o.value, "study": study,
                                 "sentence": _sentence_of(text, o) if text else None})
        out.append(SentenceEvidence(s.text, s.start, s.end, observations, triples, examples))
    return out
