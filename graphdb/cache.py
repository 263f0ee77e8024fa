"""Per-study subgraph cache: many studies' subgraphs as packed, memory-mapped numpy arrays, read
back as SubgraphData (the exact ``tensorize`` output, ≥ 20k studies/s) or as Subgraph, with no
graph-store round trip.

A cache directory:
    manifest.json    format, version, node-table fingerprint, meta, the committed chunks
    chunks/00000/    ≤ chunk_size studies: one .npy per SubgraphArrays field, node_type, the
                     node/edge offsets (S+1,), and studies.json (ids, seeds, type names, names)
    .lock            held by the one writer
A chunk is written to a temp folder and renamed; only then does the manifest (itself replaced
atomically) list it. A crash leaves the complete chunks readable, and a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from cxr.records import DataError
from graphdb.schema import EDGE_TYPES, Subgraph, SubgraphEdge, SubgraphNode
from graphdb.tensorize import (
    NodeTable,
    SubgraphArrays,
    SubgraphData,
    data_from_arrays,
    select_level,
    subgraph_arrays,
)

FORMAT = "r2genkg-subgraph-cache"
VERSION = 1
MANIFEST = "manifest.json"
CHUNKS = "chunks"
LOCK = ".lock"
NODE_FIELDS = ("node_id", "node_level", "node_count", "node_logcount", "node_type")
EDGE_FIELDS = ("edge_head", "edge_tail", "edge_type", "edge_count", "edge_logcount")


class SubgraphCacheError(DataError):
    """The cache is missing, damaged, busy, or was built for another graph; the message says
    which and what to do."""


class SubgraphCache:
    """Read side. ``get(study)`` → SubgraphData, ``get_subgraph(study)`` → Subgraph."""

    def __init__(self, root: Path, table: NodeTable, manifest: dict[str, Any], chunks: list[_Chunk]) -> None:
        self.root, self.table, self.manifest = root, table, manifest
        # study → (chunk, row, first node, end node, first edge, end edge)
        self._index: dict[str, tuple[_Chunk, int, int, int, int, int]] = {}
        for chunk in chunks:
            for row, study in enumerate(chunk.studies):
                if study in self._index:
                    raise _damaged(root, f"study {study!r} is in chunk {self._index[study][0].name} "
                                         f"and again in chunk {chunk.name}")
                self._index[study] = (chunk, row, chunk.node_ptr[row], chunk.node_ptr[row + 1],
                                      chunk.edge_ptr[row], chunk.edge_ptr[row + 1])

    @classmethod
    def open(cls, directory: str | Path, table: NodeTable) -> SubgraphCache:
        """Open a cache built on ``table``; refuse one built on another node table."""
        root = Path(directory)
        manifest = _read_manifest(root)
        _check_table(root, manifest, table)
        return cls(root, table, manifest, [_Chunk.load(root, entry) for entry in manifest["chunks"]])

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    @property
    def study_ids(self) -> tuple[str, ...]:
        """In write order."""
        return tuple(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, study_id: object) -> bool:
        return study_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def get(self, study_id: str, level: int | None = None) -> SubgraphData:
        """Equals ``tensorize(subgraph, table, level)`` of the subgraph that was written."""
        if level is not None:
            arrays = select_level(self.arrays(study_id), level)
            return data_from_arrays(arrays.node_id, arrays.node_level, arrays.node_logcount, arrays.edge_head,
                                    arrays.edge_tail, arrays.edge_type, arrays.edge_logcount)
        try:
            c, _, a, b, e0, e1 = self._index[study_id]
        except KeyError:
            raise self._missing(study_id) from None
        return data_from_arrays(c.node_id[a:b], c.node_level[a:b], c.node_logcount[a:b], c.edge_head[e0:e1],
                                c.edge_tail[e0:e1], c.edge_type[e0:e1], c.edge_logcount[e0:e1])

    def arrays(self, study_id: str) -> SubgraphArrays:
        """The study's compact arrays (read-only views into the mapped files)."""
        try:
            c, _, a, b, e0, e1 = self._index[study_id]
        except KeyError:
            raise self._missing(study_id) from None
        return SubgraphArrays(c.node_id[a:b], c.node_level[a:b], c.node_count[a:b], c.node_logcount[a:b],
                              c.edge_head[e0:e1], c.edge_tail[e0:e1], c.edge_type[e0:e1],
                              c.edge_count[e0:e1], c.edge_logcount[e0:e1])

    def get_subgraph(self, study_id: str) -> Subgraph:
        """The Subgraph that was written, field for field."""
        try:
            c, row, a, b, e0, e1 = self._index[study_id]
        except KeyError:
            raise self._missing(study_id) from None
        ids, names = self.table.ids, self.table.names
        nodes = []
        for j, g, level, count, code in zip(range(a, b), c.node_id[a:b].tolist(), c.node_level[a:b].tolist(),
                                            c.node_count[a:b].tolist(), c.node_type[a:b].tolist(), strict=True):
            label, _, key = ids[g].partition(":")
            nodes.append(SubgraphNode(label, key, c.names.get(j, names[g]), c.types[code], count, level))
        edges = tuple(SubgraphEdge(nodes[h].id, EDGE_TYPES[t], nodes[tl].id, n)
                      for h, tl, t, n in zip(c.edge_head[e0:e1].tolist(), c.edge_tail[e0:e1].tolist(),
                                             c.edge_type[e0:e1].tolist(), c.edge_count[e0:e1].tolist(), strict=True))
        return Subgraph(study_id, c.seeds[row], tuple(nodes), edges)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as (folder, table) and map the files again: DataLoader workers started by
        spawn get a cheap copy instead of every array."""
        return SubgraphCache.open, (self.root, self.table)

    def _missing(self, study_id: str) -> KeyError:
        return KeyError(f"study {study_id!r} is not in the subgraph cache {self.root} ({len(self)} studies)")

    def __repr__(self) -> str:
        return f"SubgraphCache({str(self.root)!r}, {len(self)} studies)"


class SubgraphCacheWriter:
    """Write side: ``add(subgraphs)`` buffers, writes a chunk every ``chunk_size`` studies and
    commits it to the manifest; ``close()`` writes the rest. Reopening a directory resumes:
    studies already written are skipped, so no study is ever stored twice (the first wins)."""

    def __init__(self, directory: str | Path, table: NodeTable, meta: Mapping[str, Any] | None = None,
                 chunk_size: int = 4096) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
        self.root, self.table, self.chunk_size = Path(directory), table, chunk_size
        (self.root / CHUNKS).mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.root)
        try:
            self.manifest, self._written = self._resume_or_start(_jsonable(dict(meta or {})))
        except BaseException:
            self._lock.close()
            raise
        self._buffer: list[tuple[Subgraph, SubgraphArrays]] = []
        self._buffered: set[str] = set()

    def _resume_or_start(self, meta: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        """The manifest to extend and the studies already written."""
        if not (self.root / MANIFEST).exists():
            manifest = {"format": FORMAT, "version": VERSION, "table": _table_entry(self.table), "meta": meta,
                        "chunks": []}
            _write_json_atomic(self.root / MANIFEST, manifest)
            return manifest, set()
        manifest = _read_manifest(self.root)
        _check_table(self.root, manifest, self.table)
        if manifest["meta"] != meta:
            raise SubgraphCacheError(f"subgraph cache {self.root} was built with meta {manifest['meta']}, "
                                     f"not {meta}: write to another directory, or delete this one to rebuild")
        written = {s for entry in manifest["chunks"] for s in _Chunk.load(self.root, entry).studies}
        for stale in (self.root / CHUNKS).glob(".*.tmp-*"):   # a crashed writer's half chunk
            shutil.rmtree(stale, ignore_errors=True)
        return manifest, written

    def __contains__(self, study_id: object) -> bool:
        return study_id in self._written or study_id in self._buffered

    def __len__(self) -> int:
        """Studies written or buffered."""
        return len(self._written) + len(self._buffered)

    def add(self, subgraphs: Iterable[Subgraph]) -> int:
        """Queue per-study subgraphs; returns how many were new (others are skipped)."""
        added = 0
        for sg in subgraphs:
            if not isinstance(sg.study, str) or not sg.study:
                raise ValueError(f"a per-study cache needs a study id on every subgraph, got {sg.study!r}")
            if sg.study in self:
                continue
            self._buffer.append((sg, subgraph_arrays(sg, self.table)))   # validates
            self._buffered.add(sg.study)
            added += 1
            if len(self._buffer) >= self.chunk_size:
                self.flush()
        return added

    def flush(self) -> None:
        """Write the buffered studies as one chunk and commit it to the manifest."""
        if not self._buffer:
            return
        name = f"{len(self.manifest['chunks']):05d}"
        entry = _write_chunk(self.root / CHUNKS, name, self._buffer, self.table)
        self.manifest["chunks"].append(entry)
        _write_json_atomic(self.root / MANIFEST, self.manifest)
        self._written |= self._buffered
        self._buffer, self._buffered = [], set()

    def close(self) -> None:
        if self._lock.closed:
            return
        try:
            self.flush()
        finally:
            self._lock.close()   # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()   # buffered subgraphs are each complete and valid: keep them


# ---- on disk --------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class _Chunk:
    """One chunk, its arrays memory-mapped."""

    name: str
    studies: list[str]
    seeds: list[tuple[str, ...]]
    types: list[str]                 # node_type code → type name
    names: dict[int, str]            # chunk node row → name, where it differs from the table's
    node_ptr: list[int]
    edge_ptr: list[int]
    node_id: np.ndarray
    node_level: np.ndarray
    node_count: np.ndarray
    node_logcount: np.ndarray
    node_type: np.ndarray
    edge_head: np.ndarray
    edge_tail: np.ndarray
    edge_type: np.ndarray
    edge_count: np.ndarray
    edge_logcount: np.ndarray

    @classmethod
    def load(cls, root: Path, entry: Mapping[str, Any]) -> _Chunk:
        name = entry["name"]
        folder = root / CHUNKS / name
        if not folder.is_dir():
            raise _damaged(root, f"chunk {name} is missing ({folder})")
        arrays = {}
        for field, size in [(f, entry["nodes"]) for f in NODE_FIELDS] + [(f, entry["edges"]) for f in EDGE_FIELDS] \
                + [("node_ptr", entry["studies"] + 1), ("edge_ptr", entry["studies"] + 1)]:
            path = folder / f"{field}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                raise _damaged(root, f"chunk {name}: {path.name} is missing") from None
            except (ValueError, OSError) as err:
                raise _damaged(root, f"chunk {name}: {path.name} is unreadable ({err})") from None
            if array.shape != (size,):
                raise _damaged(root, f"chunk {name}: {path.name} has shape {array.shape}, expected ({size},)")
            arrays[field] = np.asarray(array)   # a plain ndarray view of the map: cheaper to slice
        try:
            info = json.loads((folder / "studies.json").read_text(encoding="utf-8"))
            studies, seeds, types = info["studies"], info["seeds"], info["types"]
            names = {int(k): v for k, v in info["names"].items()}
        except FileNotFoundError:
            raise _damaged(root, f"chunk {name}: studies.json is missing") from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise _damaged(root, f"chunk {name}: studies.json is unreadable ({err!r})") from None
        node_ptr, edge_ptr = arrays.pop("node_ptr").tolist(), arrays.pop("edge_ptr").tolist()
        if (len(studies) != entry["studies"] or len(seeds) != len(studies) or node_ptr[0] != 0 or edge_ptr[0] != 0
                or node_ptr[-1] != entry["nodes"] or edge_ptr[-1] != entry["edges"]):
            raise _damaged(root, f"chunk {name}: studies.json or the offsets disagree with the manifest")
        return cls(name, studies, [tuple(s) for s in seeds], types, names, node_ptr, edge_ptr, **arrays)


def _write_chunk(folder: Path, name: str, items: list[tuple[Subgraph, SubgraphArrays]],
                 table: NodeTable) -> dict[str, Any]:
    """Write one chunk to a temp folder, then rename it into place. Returns its manifest entry."""
    fields = {f: np.concatenate([a[i] for _, a in items]) for i, f in enumerate(SubgraphArrays._fields)}
    types: dict[str, int] = {}
    codes = [types.setdefault(n.type, len(types)) for sg, _ in items for n in sg.nodes]
    if len(types) > 127:
        raise ValueError(f"chunk {name}: {len(types)} distinct node types; at most 127 fit the int8 code")
    fields["node_type"] = np.array(codes, np.int8)
    all_nodes = [n for sg, _ in items for n in sg.nodes]
    table_names = table.names
    names = {str(j): n.name for j, (n, g) in enumerate(zip(all_nodes, fields["node_id"].tolist(), strict=True))
             if n.name != table_names[g]}
    fields["node_ptr"] = np.concatenate([[0], np.cumsum([len(a.node_id) for _, a in items])]).astype(np.int64)
    fields["edge_ptr"] = np.concatenate([[0], np.cumsum([len(a.edge_head) for _, a in items])]).astype(np.int64)
    info = {"studies": [sg.study for sg, _ in items], "seeds": [list(sg.seeds) for sg, _ in items],
            "types": list(types), "names": names}

    final, tmp = folder / name, folder / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for field, array in fields.items():
        with open(tmp / f"{field}.npy", "wb") as handle:
            np.save(handle, array)
            _sync(handle)
    with open(tmp / "studies.json", "w", encoding="utf-8") as handle:
        json.dump(info, handle, ensure_ascii=False)
        _sync(handle)
    if final.exists():   # left by a crash after the rename but before the manifest listed it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return {"name": name, "studies": len(items), "nodes": int(fields["node_ptr"][-1]),
            "edges": int(fields["edge_ptr"][-1])}


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.exists():
        raise SubgraphCacheError(f"no subgraph cache at {root} ({MANIFEST} not found); build it with "
                                 "SubgraphCacheWriter")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise _damaged(root, f"{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SubgraphCacheError(f"{path} is not a subgraph cache manifest (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise SubgraphCacheError(f"subgraph cache {root} has format version {manifest.get('version')!r}; this "
                                 f"code reads version {VERSION}. Delete {root} and rebuild it")
    missing = [k for k in ("table", "meta", "chunks") if k not in manifest]
    if missing or "fingerprint" not in manifest["table"]:
        raise _damaged(root, f"{MANIFEST} lacks {missing or ['table.fingerprint']}")
    return manifest


def _check_table(root: Path, manifest: Mapping[str, Any], table: NodeTable) -> None:
    built = manifest["table"]
    if built["fingerprint"] != table.fingerprint:
        raise SubgraphCacheError(
            f"subgraph cache {root} was built for node table {built['fingerprint'][:12]} ({built.get('nodes')} "
            f"nodes), but the current table is {table.fingerprint[:12]} ({len(table)} nodes): the graph "
            f"changed. Rebuild the cache: delete {root} and write it again")


def _table_entry(table: NodeTable) -> dict[str, Any]:
    return {"fingerprint": table.fingerprint, "nodes": len(table)}


def _damaged(root: Path, problem: str) -> SubgraphCacheError:
    return SubgraphCacheError(f"subgraph cache {root} is damaged: {problem}. Delete {root} and rebuild it")


def _acquire_lock(root: Path) -> IO[str]:
    handle = open(root / LOCK, "a")   # noqa: SIM115 (held open for the writer's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SubgraphCacheError(f"subgraph cache {root} is being written by another writer "
                                 f"(it holds {root / LOCK}); wait for it or use another directory") from None
    return handle


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, ensure_ascii=False, indent=1)
            _sync(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sync(handle: IO[Any]) -> None:
    """Flush to disk, so a power cut cannot leave a renamed but empty file."""
    handle.flush()
    os.fsync(handle.fileno())


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Meta as it reads back from JSON (tuples → lists, dataclasses → dicts, enums → values),
    so a resumed writer compares like with like."""
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cache meta value {obj!r} is not JSON-serialisable")
    return json.loads(json.dumps(meta, default=default))
