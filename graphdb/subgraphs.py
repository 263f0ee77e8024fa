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

import numpy as np

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


def _index(keys: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted keys and key → position: positions order exactly like the strings."""
    ordered = sorted(set(keys))
    return ordered, {k: i for i, k in enumerate(ordered)}


def _hop(run: Run, frontier: dict[str, list[str]], exclude: dict[str, set[str]],
         budget: int, level: int) -> dict[str, list[SubgraphNode]]:
    """Each study's top ``budget`` neighbours of its frontier, scored by the summed counts of
    the edges into the frontier; one NEIGHBOURS query for the whole batch, numpy per study."""
    union, fpos = _index(k for keys in frontier.values() for k in keys)
    rows = run(cypher.NEIGHBOURS, {"keys": union}) if union else []
    if not rows:
        return {sid: [] for sid in frontier}
    src_keys, dst_keys, dst_counts, weights = zip(*rows)
    cands, cpos = _index(dst_keys)
    src = np.fromiter((fpos[k] for k in src_keys), np.int64, len(rows))
    dst = np.fromiter((cpos[k] for k in dst_keys), np.int64, len(rows))
    w = np.fromiter((int(x or 0) for x in weights), np.int64, len(rows))
    count = np.zeros(len(cands), np.int64)
    count[dst] = np.fromiter((int(x or 0) for x in dst_counts), np.int64, len(rows))
    order = np.argsort(src, kind="stable")
    src, dst, w = src[order], dst[order], w[order]
    starts = np.searchsorted(src, np.arange(len(union) + 1))

    chosen: dict[str, list[int]] = {}
    for sid, keys in frontier.items():
        if not keys:
            chosen[sid] = []
            continue
        sel = np.concatenate([np.arange(starts[fpos[k]], starts[fpos[k] + 1]) for k in keys])
        seen = np.bincount(dst[sel], minlength=len(cands)) > 0
        score = np.bincount(dst[sel], weights=w[sel], minlength=len(cands)).astype(np.int64)
        seen[[cpos[k] for k in exclude[sid] if k in cpos]] = False
        idx = np.flatnonzero(seen)
        # rank by (score desc, entity count desc, key): key order is index order
        top = idx[np.lexsort((idx, -count[idx], -score[idx]))][:budget]
        chosen[sid] = top.tolist()
    info = {}
    picked = sorted({cands[i] for ids in chosen.values() for i in ids})
    if picked:
        info = {row[0]: _entity(row, level) for row in run(cypher.ENTITY_INFO, {"keys": picked})}
    return {sid: [info[cands[i]] for i in ids] for sid, ids in chosen.items()}


def _edges(run: Run, dialect: Dialect, members: dict[str, list[SubgraphNode]]) -> dict[str, list[SubgraphEdge]]:
    """Induced edges of every study: one query over the union of the batch's entities, then a
    numpy mask per study. Order: (edge type, head id, tail id)."""
    union, upos = _index(n.key for nodes in members.values() for n in nodes if n.label == ENTITY)
    rel_rows = run(dialect.induced_relations, {"keys": union}) if union else []
    link_rows = run(cypher.INDUCED_LINKS, {"keys": union}) if union else []
    obs_names, opos = _index(obs for _, obs in link_rows)
    h = np.array([upos[r[0]] for r in rel_rows], np.int64)
    t = np.array([upos[r[2]] for r in rel_rows], np.int64)
    kind = np.array([_EDGE_RANK[r[1]] for r in rel_rows], np.int64)
    lh = np.array([upos[r[0]] for r in link_rows], np.int64)
    lo = np.array([opos[r[1]] for r in link_rows], np.int64)
    # one (immutable) edge object per union edge, shared by the studies that hold it
    rel_edges = [SubgraphEdge(f"{ENTITY}:{a}", rel, f"{ENTITY}:{b}", int(c or 0)) for a, rel, b, c in rel_rows]
    link_edges = [SubgraphEdge(f"{ENTITY}:{a}", EXPRESSES, f"{OBSERVATION}:{o}", 1) for a, o in link_rows]
    result = {}
    for sid, nodes in members.items():
        mask = np.zeros(len(union), bool)
        mask[[upos[n.key] for n in nodes if n.label == ENTITY]] = True
        omask = np.zeros(len(obs_names), bool)
        omask[[opos[n.key] for n in nodes if n.label == OBSERVATION and n.key in opos]] = True
        keep = np.flatnonzero(mask[h] & mask[t]) if len(h) else np.zeros(0, np.int64)
        keep = keep[np.lexsort((t[keep], h[keep], kind[keep]))]
        lkeep = np.flatnonzero(mask[lh] & omask[lo]) if len(lh) else np.zeros(0, np.int64)
        lkeep = lkeep[np.lexsort((lo[lkeep], lh[lkeep]))]
        result[sid] = [rel_edges[i] for i in keep.tolist()] + [link_edges[i] for i in lkeep.tolist()]
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
