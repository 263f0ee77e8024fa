"""Multi-granularity subgraphs from Cypher: per-study nested levels and the paper's global scales.

Per study (our mode), from seeds (observations and/or entity keys):
    level 0  seeds + their observation nodes + the entities that express seed observations
    level 1  1-hop neighbours of level-0 entities (MODIFY / LOCATED_AT / SUGGESTIVE_OF)
    level 2  1-hop neighbours of level-1 entities (2 hops from the seeds)
each level ranked by (summed edge count to the previous level desc, entity count desc, key) and
capped at its budget. Global (paper mode): the top-N entities by mention count, one nested level
per scale. Both return ``Subgraph`` (graphdb.schema) and run the same queries on either store.

Batched: one round trip per level covers a whole batch of studies (``UNWIND $studies``), and
studies with identical seeds share one computation.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cxr.observations import OBSERVATIONS, Observation
from graphdb import cypher
from graphdb.cypher import Dialect
from graphdb.schema import (
    EDGE_TYPES,
    ENTITY,
    EXPRESSES,
    OBSERVATION,
    StudySeeds,
    Subgraph,
    SubgraphEdge,
    SubgraphNode,
    SubgraphSpec,
)

Run = Callable[[str, dict[str, Any]], list[tuple]]
"""(query, params) → rows as tuples: what a store exposes to this module."""

_EDGE_RANK = {t: i for i, t in enumerate(EDGE_TYPES)}
_OBS_RANK = {o.value: i for i, o in enumerate(OBSERVATIONS)}


def _entity(row: Sequence[Any], level: int) -> SubgraphNode:
    key, name, kind, count = row
    return SubgraphNode(ENTITY, key, name, kind, int(count or 0), level)


def _observation(name: str) -> SubgraphNode:
    return SubgraphNode(OBSERVATION, name, name, "observation", 0, 0)


def _top(rows: Iterable[Sequence[Any]], budget: int, level: int) -> list[SubgraphNode]:
    """Rows (key, name, type, count, score) → the top ``budget`` nodes by (score desc, count
    desc, key): a total order, so both stores agree whatever order rows arrive in."""
    best = sorted(rows, key=lambda r: (-int(r[4]), -int(r[3] or 0), r[0]))[:budget]
    return [_entity(r[:4], level) for r in best]


def _ranked(nodes: Iterable[SubgraphNode]) -> list[SubgraphNode]:
    return sorted(nodes, key=lambda n: (-n.count, n.key))


def _level0(run: Run, batch: list[tuple[str, StudySeeds]], budget: int) -> dict[str, list[SubgraphNode]]:
    params = {"studies": [{"sid": sid, "obs": [o.value for o in s.observations], "ents": list(s.entities)}
                          for sid, s in batch]}
    seeds_found: dict[str, dict[str, SubgraphNode]] = defaultdict(dict)
    for sid, *row in run(cypher.SEED_ENTITIES, params):
        seeds_found[sid][row[0]] = _entity(row, 0)
    links: dict[str, list[tuple[SubgraphNode, str]]] = defaultdict(list)
    for sid, *row in run(cypher.SEED_LINKS, params):
        links[sid].append((_entity(row[:4], 0), row[4]))

    out: dict[str, list[SubgraphNode]] = {}
    for sid, seeds in batch:
        seed_obs = {o.value for o in seeds.observations}
        seed_ents = seeds_found.get(sid, {})
        observations = set(seed_obs)
        expressers: dict[str, SubgraphNode] = {}
        for node, obs in links.get(sid, []):
            if node.key in seed_ents:
                observations.add(obs)          # a seed entity brings its observation
            elif obs in seed_obs:
                expressers[node.key] = node    # an entity expressing a seed observation
        nodes = [_observation(o) for o in sorted(observations, key=_OBS_RANK.__getitem__)]
        nodes += _ranked(seed_ents.values())
        nodes += _ranked(expressers.values())
        out[sid] = nodes[:budget]
    return out


def _hop(run: Run, frontier: dict[str, list[str]], exclude: dict[str, set[str]],
         budget: int, level: int) -> dict[str, list[SubgraphNode]]:
    """Each study's top ``budget`` neighbours of its frontier, scored by the summed counts of
    the edges into the frontier; one NEIGHBOURS query for the whole batch."""
    union = sorted({k for keys in frontier.values() for k in keys})
    adjacency: dict[str, list[tuple]] = defaultdict(list)       # frontier key → neighbour rows
    if union:
        for key, *row in run(cypher.NEIGHBOURS, {"keys": union}):
            adjacency[key].append(row)                          # (key, name, type, count, edge count)
    out = {}
    for sid, keys in frontier.items():
        skip = exclude[sid]
        score: dict[str, int] = defaultdict(int)
        info: dict[str, tuple] = {}
        for k in keys:
            for nkey, name, kind, count, edge_count in adjacency.get(k, ()):
                if nkey not in skip:
                    score[nkey] += int(edge_count or 0)
                    info[nkey] = (nkey, name, kind, count)
        out[sid] = _top([(*info[k], v) for k, v in score.items()], budget, level)
    return out


def _edges(run: Run, dialect: Dialect, members: dict[str, list[SubgraphNode]]) -> dict[str, list[SubgraphEdge]]:
    """Induced edges of every study: one query over the union of the batch's entities."""
    union = sorted({n.key for nodes in members.values() for n in nodes if n.label == ENTITY})
    out_edges: dict[str, list[tuple[str, str, int]]] = defaultdict(list)   # head → (tail, type, count)
    links: dict[str, list[str]] = defaultdict(list)                         # entity → observations
    if union:
        for head, rel, tail, count in run(dialect.induced_relations, {"keys": union}):
            out_edges[head].append((tail, rel, int(count or 0)))
        for head, obs in run(cypher.INDUCED_LINKS, {"keys": union}):
            links[head].append(obs)
    result = {}
    for sid, nodes in members.items():
        keys = {n.key for n in nodes if n.label == ENTITY}
        obs = {n.key for n in nodes if n.label == OBSERVATION}
        edges = []
        for head in keys:
            hid = f"{ENTITY}:{head}"
            edges += [(_EDGE_RANK[rel], hid, f"{ENTITY}:{tail}", rel, count)
                      for tail, rel, count in out_edges.get(head, ()) if tail in keys]
            edges += [(_EDGE_RANK[EXPRESSES], hid, f"{OBSERVATION}:{o}", EXPRESSES, 1)
                      for o in links.get(head, ()) if o in obs]
        edges.sort()
        result[sid] = [SubgraphEdge(h, rel, t, c) for _, h, t, rel, c in edges]
    return result


def study_subgraphs(run: Run, dialect: Dialect, seeds: Sequence[StudySeeds], spec: SubgraphSpec,
                    batch_size: int = 512, dedupe: bool = True,
                    progress: Callable[[int], None] | None = None) -> list[Subgraph]:
    """One nested 3-level subgraph per study, in input order. ``dedupe`` computes each distinct
    seed set once (studies with equal seeds get equal subgraphs either way)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if dedupe:
        unique: dict[tuple, StudySeeds] = {}
        for s in seeds:
            unique.setdefault(s.signature, s)
        work = [(f"g{i}", s) for i, s in enumerate(unique.values())]
        by_sig = {s.signature: sid for sid, s in work}
        assign = [by_sig[s.signature] for s in seeds]
    else:
        work = [(f"g{i}", s) for i, s in enumerate(seeds)]
        assign = [sid for sid, _ in work]

    computed: dict[str, Subgraph] = {}
    for start in range(0, len(work), batch_size):
        batch = work[start:start + batch_size]
        l0 = _level0(run, batch, spec.level_budgets[0])
        seen = {sid: {n.key for n in nodes if n.label == ENTITY} for sid, nodes in l0.items()}
        frontier = {sid: sorted(keys) for sid, keys in seen.items()}
        l1 = _hop(run, frontier, seen, spec.level_budgets[1], 1)
        for sid, nodes in l1.items():
            seen[sid] |= {n.key for n in nodes}
        l2 = _hop(run, {sid: sorted(n.key for n in nodes) for sid, nodes in l1.items()},
                  seen, spec.level_budgets[2], 2)
        members = {sid: l0[sid] + l1[sid] + l2[sid] for sid, _ in batch}
        edges = _edges(run, dialect, members)
        for sid, s in batch:
            computed[sid] = Subgraph(None, _seed_ids(s), tuple(members[sid]), tuple(edges[sid]))
        if progress is not None:
            progress(len(batch))
    out = []
    for s, sid in zip(seeds, assign):
        g = computed[sid]
        out.append(Subgraph(s.study, g.seeds, g.nodes, g.edges))
    return out


def _seed_ids(seeds: StudySeeds) -> tuple[str, ...]:
    return (*(f"{OBSERVATION}:{o.value}" for o in seeds.observations), *(f"{ENTITY}:{k}" for k in seeds.entities))


def global_subgraph(run: Run, dialect: Dialect, spec: SubgraphSpec) -> Subgraph:
    """The paper's fixed scales: the top ``max(global_scales)`` entities by count; a node's level
    is the index of the smallest scale that holds it, so ``at_level(i)`` is scale i."""
    rows = run(cypher.TOP_ENTITIES, {"limit": spec.global_scales[-1]})
    nodes = []
    for rank, row in enumerate(rows):
        level = next(i for i, size in enumerate(spec.global_scales) if rank < size)
        nodes.append(_entity(row, level))
    edges = _edges(run, dialect, {"global": nodes})["global"]
    return Subgraph(None, (), tuple(nodes), tuple(edges))


def seeds_from_mentions(rows: Iterable[tuple], study_ids: Sequence[str],
                        observations: dict[str, Sequence[Observation]] | None = None) -> list[StudySeeds]:
    """StudySeeds from STUDY_MENTIONS rows: entities the report mentions as present or uncertain
    (absent ones are not evidence of anything in the image)."""
    ents: dict[str, list[str]] = defaultdict(list)
    for sid, key, certainty, _count in rows:
        if certainty != "absent":
            ents[sid].append(key)
    observations = observations or {}
    return [StudySeeds(sid, tuple(observations.get(sid, ())), tuple(ents.get(sid, ()))) for sid in study_ids]
