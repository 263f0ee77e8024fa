"""graphdb.fingerprint.GraphContent: the same graph gives the same content whatever order it is
read in, and each part that differs is named with its counts."""
from __future__ import annotations

from graphdb.fingerprint import GraphContent

ENTITIES = [("effusion", "effusion"), ("pleural", "pleural")]
TRIPLES = [("pleural", "MODIFY", "effusion", 3)]
LINKS = [("effusion", "Pleural Effusion")]


def test_order_does_not_matter_and_every_part_counts():
    a = GraphContent.of(ENTITIES, TRIPLES, LINKS)
    assert a == GraphContent.of(reversed(ENTITIES), TRIPLES, LINKS)
    assert (a.entities, a.triples, a.links) == (2, 1, 1)
    recounted = GraphContent.of(ENTITIES, [("pleural", "MODIFY", "effusion", 4)], LINKS)
    assert recounted.digest != a.digest
    assert a.differences(recounted) == ["triples 1 vs 1 (the same number, different ones)"]
    unlinked = GraphContent.of(ENTITIES, TRIPLES, [])
    assert a.differences(unlinked) == ["EXPRESSES links 1 vs 0"]
    assert a.differences(a) == []
