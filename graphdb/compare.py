"""How an extracted graph compares with a reference KG (M3KG): sizes, relation mix, overlap.

``compare_graphs(built, reference)`` → ``GraphComparison``; ``.format()`` is a plain-text table.
Overlap is by entity key (a CUI where both sides know one) and by (head, relation, tail).
"""
from __future__ import annotations

from dataclasses import dataclass

from graphdb.schema import RELATIONS, GraphStats, KnowledgeGraph


def _frac(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class GraphComparison:
    built: GraphStats
    reference: GraphStats
    shared_entities: int          # keys in both
    shared_triples: int           # (head, relation, tail) in both
    shared_pairs: int             # (head, tail) related in both, any relation or direction
    reference_support_covered: float  # share of the reference's summed triple counts on shared triples

    @property
    def entity_precision(self) -> float:
        """|built ∩ ref| / |built| over entity keys."""
        return _frac(self.shared_entities, self.built.entities)

    @property
    def entity_coverage(self) -> float:
        """|built ∩ ref| / |ref| over entity keys."""
        return _frac(self.shared_entities, self.reference.entities)

    @property
    def triple_precision(self) -> float:
        return _frac(self.shared_triples, self.built.triples)

    @property
    def triple_coverage(self) -> float:
        return _frac(self.shared_triples, self.reference.triples)

    @staticmethod
    def relation_fractions(stats: GraphStats, mentions: bool = False) -> dict[str, float]:
        """Relation → share of distinct triples (or of summed counts with ``mentions``)."""
        counts = stats.relation_mentions if mentions else stats.relations
        total = sum(counts.values())
        return {r: _frac(c, total) for r, c in counts.items()}

    def format(self) -> str:
        b, r = self.built, self.reference
        rows = [("entities", f"{b.entities:,}", f"{r.entities:,}"),
                ("triples (distinct)", f"{b.triples:,}", f"{r.triples:,}"),
                ("triple mentions (summed counts)", f"{sum(b.relation_mentions.values()):,}",
                 f"{sum(r.relation_mentions.values()):,}")]
        rows += [(f"  entities {t}", f"{n:,}", f"{r.entity_types.get(t, 0):,}") for t, n in b.entity_types.items()]
        bf, rf = self.relation_fractions(b), self.relation_fractions(r)
        bm, rm = self.relation_fractions(b, True), self.relation_fractions(r, True)
        for rel in (x.value for x in RELATIONS):
            rows.append((f"  {rel}: distinct (share)", f"{b.relations[rel]:,} ({bf[rel]:.1%})",
                         f"{r.relations[rel]:,} ({rf[rel]:.1%})"))
            rows.append((f"  {rel}: summed counts (share)", f"{b.relation_mentions[rel]:,} ({bm[rel]:.1%})",
                         f"{r.relation_mentions[rel]:,} ({rm[rel]:.1%})"))
        rows.append(("entities linked to an observation", f"{b.observations_linked:,}",
                     f"{r.observations_linked:,}"))
        width = max(len(x[0]) for x in rows)
        lines = [f"{'':{width}}  {'built':>20}  {'reference':>20}"]
        lines += [f"{name:{width}}  {x:>20}  {y:>20}" for name, x, y in rows]
        lines += [
            (f"shared entities: {self.shared_entities:,} = {self.entity_precision:.1%} of built, "
             f"{self.entity_coverage:.1%} of reference"),
            (f"shared triples:  {self.shared_triples:,} = {self.triple_precision:.1%} of built, "
             f"{self.triple_coverage:.1%} of reference ({self.reference_support_covered:.1%} of the "
             f"reference's summed counts)"),
            f"shared related pairs (any relation/direction): {self.shared_pairs:,}",
        ]
        return "\n".join(lines)


def _pairs(kg: KnowledgeGraph) -> set[frozenset[str]]:
    return {frozenset((t.head, t.tail)) for t in kg.triples}


def compare_graphs(built: KnowledgeGraph, reference: KnowledgeGraph) -> GraphComparison:
    built_keys = {e.key for e in built.entities}
    ref_keys = {e.key for e in reference.entities}
    built_triples = {(t.head, t.relation, t.tail) for t in built.triples}
    shared = [t for t in reference.triples if (t.head, t.relation, t.tail) in built_triples]
    ref_total = sum(t.count for t in reference.triples)
    return GraphComparison(
        built=built.stats(),
        reference=reference.stats(),
        shared_entities=len(built_keys & ref_keys),
        shared_triples=len(shared),
        shared_pairs=len(_pairs(built) & _pairs(reference)),
        reference_support_covered=_frac(sum(t.count for t in shared), ref_total),
    )
