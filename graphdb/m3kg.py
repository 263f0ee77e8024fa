"""Read the published M3KG (kg_relations.csv + res_dict_aliases.json) into a KnowledgeGraph.

kg_relations.csv: ``source_index,target_index,source_entity,target_entity,type,count``; an index
is a UMLS CUI or, for unlinked entities, the string itself. The bundled copy is the default KG.
"""
from __future__ import annotations

import csv
import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cxr.records import DataError
from graphdb.hierarchy import observation_links
from graphdb.schema import Entity, EntityType, KnowledgeGraph, Relation, Triple, normalize

COLUMNS = ("source_index", "target_index", "source_entity", "target_entity", "type", "count")


@dataclass(frozen=True)
class M3KGFiles:
    relations: Path
    aliases: Path

    @classmethod
    def bundled(cls) -> M3KGFiles:
        """The copy shipped in graphdb/resources/m3kg (BSD-3-Clause, Event-AHU)."""
        root = Path(str(resources.files("graphdb") / "resources" / "m3kg"))
        return cls(root / "kg_relations.csv", root / "res_dict_aliases.json")

    @classmethod
    def in_dir(cls, directory: Path) -> M3KGFiles:
        return cls(directory / "kg_relations.csv", directory / "res_dict_aliases.json")


def read_aliases(path: Path) -> dict[str, EntityType]:
    """alias → entity type, keys normalised."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: alias dictionary not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object alias → type, got {type(raw).__name__}")
    out: dict[str, EntityType] = {}
    for alias, kind in raw.items():
        try:
            out[normalize(alias)] = EntityType.parse(str(kind))
        except ValueError as err:
            raise DataError(f"{path}: alias {alias!r}: {err}") from None
    return out


def type_of(name: str, aliases: dict[str, EntityType]) -> EntityType:
    """Dictionary type of a surface string; else the type of its head noun (last word:
    "picc catheter" → catheter → devices); else concept."""
    key = normalize(name)
    if key in aliases:
        return aliases[key]
    words = key.split()
    for i in range(1, len(words)):
        tail = " ".join(words[i:])
        if tail in aliases:
            return aliases[tail]
    return EntityType.CONCEPT


def read_relations(path: Path) -> list[tuple[str, str, str, str, Relation, int]]:
    """Rows of kg_relations.csv, validated; errors name the file and line."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DataError(f"{path}: relations CSV not found") from None
    rows = []
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing}; expected {list(COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                rel = Relation.parse(row["type"] or "")
            except ValueError as err:
                raise DataError(f"{path}:{line}: {err}. Fix or drop the row.") from None
            try:
                count = int(row["count"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: count {row['count']!r} is not an integer") from None
            src, dst = (row["source_index"] or "").strip(), (row["target_index"] or "").strip()
            if not src or not dst:
                raise DataError(f"{path}:{line}: empty source_index or target_index")
            rows.append((src, dst, row["source_entity"] or src, row["target_entity"] or dst, rel, count))
    return rows


def _index_key(index: str) -> str:
    """CUIs stay as they are; unlinked string indexes are normalised."""
    return index if _is_cui(index) else normalize(index)


def _is_cui(index: str) -> bool:
    return len(index) == 8 and index[0] == "C" and index[1:].isdigit()


def load_m3kg(files: M3KGFiles | None = None) -> KnowledgeGraph:
    """The M3KG as entities (name = most-supported surface form, aliases = all forms, count =
    summed support of its triples), triples (duplicates merged, counts summed) and EXPRESSES links."""
    files = files or M3KGFiles.bundled()
    aliases = read_aliases(files.aliases)
    rows = read_relations(files.relations)

    forms: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    support: dict[str, int] = defaultdict(int)
    triples: dict[tuple[str, Relation, str], int] = defaultdict(int)
    for src, dst, src_name, dst_name, rel, count in rows:
        head, tail = _index_key(src), _index_key(dst)
        forms[head][normalize(src_name)] += count
        forms[tail][normalize(dst_name)] += count
        support[head] += count
        support[tail] += count
        triples[(head, rel, tail)] += count

    entities = []
    for key in sorted(forms):
        names = forms[key]
        name = min(names, key=lambda n: (-names[n], n))
        entities.append(Entity(key, name, type_of(name, aliases), tuple(sorted(names)), support[key]))
    kg = KnowledgeGraph(
        entities=entities,
        triples=[Triple(h, r, t, c) for (h, r, t), c in sorted(triples.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2]))],
        links=observation_links(entities),
    )
    kg.validate()
    return kg


@functools.cache
def bundled_m3kg() -> KnowledgeGraph:
    """The bundled M3KG, parsed once per process (about 0.5 s): the store check and the report
    check both read it. Shared: callers must not modify it."""
    return load_m3kg()
