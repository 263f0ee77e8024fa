"""FAISS index over disease-aware vision tokens, with their metadata beside it.

Vectors (n, d) float32 in → cosine top-k out: ``SearchResult(scores (q, k), ids (q, k) int64)``,
ids are rows of ``TokenIndex.vectors`` / ``TokenIndex.meta`` (-1 where fewer than k exist).

Design: one faiss sub-index per CheXpert observation. Each of the 14 disease queries searches
only its own observation's tokens, so a sub-index is exact isolation with no filter cost, and
each stays small (≤ per_disease tokens). Excluding a study (training: never retrieve tokens of
the query's own study) over-fetches ``k + c`` where c is that study's token count in the
sub-index, and drops its hits; an ivf row that still has fewer than ``min(k, n - c)`` hits is
redone probing every list (exact), so k results are guaranteed whenever k non-excluded tokens
exist. Which kind when: benchmarks/bench_retrieval.py (flat up to ~100k tokens, ivf beyond).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from cxr.files import atomic_directory
from cxr.observations import OBSERVATIONS

FORMAT_VERSION = 1
N_OBS = len(OBSERVATIONS)
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
META = "meta.npz"
REPORTS = "reports.json"   # optional: the report of each study the tokens came from (evidence)
RETIRED_FIELDS = ("hnsw_m", "ef_search", "ef_construction")


class IndexFileError(RuntimeError):
    """A saved index is missing a file or a file is corrupt; the message names the file."""


class IndexMismatchError(ValueError):
    """A saved index was written in another format version than this code reads."""


class IndexKind(str, Enum):
    FLAT = "flat"   # exact IndexFlatIP; the default (a bank of ~7k tokens needs nothing else)
    IVF = "ivf"     # IndexIVFFlat trained on each sub-index; for banks of ~1M tokens


@dataclass(frozen=True)
class IndexConfig:
    """Cosine similarity = inner product on L2-normalised vectors, for every kind.

    ivf defaults, measured on a synthetic 1M-token bank (benchmarks/bench_retrieval.py, table
    there): recall@10 0.997 against flat at ≤ 1.1 ms per query, dims 128 and 1024.
    """

    dim: int
    kind: IndexKind = IndexKind.FLAT
    nlist: int = 256   # ivf, build time: a sub-index of n vectors gets min(nlist, n // 39) lists
    nprobe: int = 8    # ivf, read at every search (no rebuild): lists probed per query

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", IndexKind(self.kind))
        for name in ("dim", "nlist", "nprobe"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass
class TokenMeta:
    """One row per stored token: where it came from and how strongly it was attended."""

    study_ids: np.ndarray    # (n,) str
    observation: np.ndarray  # (n,) int16, index into OBSERVATIONS
    view: np.ndarray         # (n,) int16, which image of the study
    patch: np.ndarray        # (n,) int32, token position within that image
    score: np.ndarray        # (n,) float32, attention at mining time

    def __post_init__(self) -> None:
        self.study_ids = np.asarray(self.study_ids, dtype=str).reshape(-1)
        self.observation = np.asarray(self.observation, dtype=np.int16).reshape(-1)
        self.view = np.asarray(self.view, dtype=np.int16).reshape(-1)
        self.patch = np.asarray(self.patch, dtype=np.int32).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        n = len(self.study_ids)
        for name in ("observation", "view", "patch", "score"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TokenMeta.{name} has {len(getattr(self, name))} rows, "
                                 f"study_ids has {n}")
        if n and (self.observation.min() < 0 or self.observation.max() >= N_OBS):
            raise ValueError(f"TokenMeta.observation must be in [0, {N_OBS})")

    def __len__(self) -> int:
        return len(self.study_ids)

    @classmethod
    def empty(cls) -> TokenMeta:
        return cls(np.array([], dtype=str), [], [], [], [])

    @classmethod
    def concat(cls, parts: Sequence[TokenMeta]) -> TokenMeta:
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("study_ids", "observation", "view", "patch", "score")))


@dataclass
class SearchResult:
    scores: np.ndarray  # (q, k) float32 cosine; -inf where ids == -1
    ids: np.ndarray     # (q, k) int64 rows of TokenIndex.vectors / .meta; -1 for missing


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _sort_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: best score first, ties by smaller id, missing (-1 / -inf) last; keep k."""
    key_ids = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, -scores), axis=-1)[:, :k]
    s = np.take_along_axis(scores, order, axis=1)
    i = np.take_along_axis(ids, order, axis=1)
    if s.shape[1] < k:  # pad to k columns
        pad = k - s.shape[1]
        s = np.concatenate([s, np.full((len(s), pad), -np.inf, np.float32)], axis=1)
        i = np.concatenate([i, np.full((len(i), pad), -1, np.int64)], axis=1)
    return s.astype(np.float32), i.astype(np.int64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TokenIndex:
    """Cosine top-k over stored tokens, one faiss sub-index per observation.

    ``vectors`` keeps the vectors as added (not normalised) so callers can gather them for
    cross-attention whatever the faiss kind; faiss holds the normalised copies.
    """

    config: IndexConfig
    vectors: np.ndarray = field(init=False)  # (n, d) float32, as added
    meta: TokenMeta = field(init=False)
    # study id → its report, for the studies the tokens came from: what a retrieved token's
    # evidence quotes (the training loop fills it; empty in banks saved before it existed)
    reports: dict[str, str] = field(default_factory=dict)
    _subs: list[Any] = field(init=False, repr=False)         # 14 faiss indexes or None
    _local: list[np.ndarray] = field(init=False, repr=False)  # 14 × (n_o,) local → global id
    _dirty: set[int] = field(init=False, repr=False)
    _per_study: list[np.ndarray] = field(init=False, repr=False)  # 14 × tokens per study code
    _codes: np.ndarray = field(init=False, repr=False)        # (n,) int64 study code
    _code_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((0, self.config.dim), np.float32)
        self.meta = TokenMeta.empty()
        self._subs = [None] * N_OBS
        self._local = [np.zeros(0, np.int64) for _ in range(N_OBS)]
        self._dirty = set()
        self._per_study = [np.zeros(0, np.int64) for _ in range(N_OBS)]
        self._codes = np.zeros(0, np.int64)
        self._code_of = {}

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return len(self.meta)

    def counts(self) -> np.ndarray:
        """(14,) tokens stored per observation."""
        return np.array([len(ids) for ids in self._local], dtype=np.int64)

    def add(self, vectors: np.ndarray, meta: TokenMeta) -> np.ndarray:
        """Append (n, d) vectors with n metadata rows; returns their ids. Bulk use: every
        add marks the touched sub-indexes for a rebuild at the next search or save (ivf
        retrains)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got {tuple(vectors.shape)}")
        if len(vectors) != len(meta):
            raise ValueError(f"{len(vectors)} vectors but {len(meta)} metadata rows")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or inf")
        start = len(self)
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.meta = TokenMeta.concat([self.meta, meta])
        codes = [self._code_of.setdefault(str(s), len(self._code_of)) for s in meta.study_ids]
        self._codes = np.concatenate([self._codes, np.asarray(codes, np.int64)])
        for o in np.unique(meta.observation).tolist():
            self._local[o] = np.concatenate([self._local[o], ids[meta.observation == o]])
            self._dirty.add(o)
        return ids

    # -- faiss sub-indexes ------------------------------------------------------------------

    def _make_sub(self, x: np.ndarray) -> Any:
        d = self.dim
        if self.config.kind is IndexKind.FLAT:
            index = faiss.IndexFlatIP(d)
        else:
            nlist = max(1, min(self.config.nlist, len(x) // 39))  # faiss: ≥ 39 points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.add(x)
        return index

    def _ensure_built(self) -> None:
        if not self._dirty:
            return
        for o in sorted(self._dirty):
            self._subs[o] = self._make_sub(_normalise(self.vectors[self._local[o]]))
        self._count_studies()
        self._dirty.clear()

    def _count_studies(self) -> None:
        for o in range(N_OBS):
            codes = self._codes[self._local[o]]
            self._per_study[o] = np.bincount(codes, minlength=len(self._code_of))

    # -- search -----------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        observations: int | Sequence[int] | np.ndarray,
        exclude_studies: Sequence[str] | None = None,
    ) -> SearchResult:
        """Top-k by cosine for (q, d) queries, each within its own observation's tokens.

        observations: one observation index per query, or one for all.
        exclude_studies: one study id per query, whose tokens are never returned (a study not
        in the bank excludes nothing).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(
                f"queries must be (q, {self.dim}) to match the index dim, got {tuple(q.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        nq = len(q)
        q = _normalise(q)
        excl = np.full(nq, -1, np.int64)  # study code per query, -1 = none / unknown study
        if exclude_studies is not None:
            if len(exclude_studies) != nq:
                raise ValueError(f"exclude_studies has {len(exclude_studies)} entries, "
                                 f"expected one per query ({nq})")
            excl = np.array([self._code_of.get(str(s), -1) for s in exclude_studies], np.int64)
        obs = np.broadcast_to(np.asarray(observations, dtype=np.int64), (nq,))
        if nq and (obs.min() < 0 or obs.max() >= N_OBS):
            raise ValueError(f"observations must be in [0, {N_OBS})")
        self._ensure_built()
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        for o in np.unique(obs).tolist():
            rows = np.flatnonzero(obs == o)
            scores[rows], ids[rows] = self._search_sub(o, q[rows], k, excl[rows])
        return SearchResult(scores, ids)

    def _search_sub(self, o: int, q: np.ndarray, k: int,
                    excl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nq, local, sub = len(q), self._local[o], self._subs[o]
        if len(local) == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        c = np.where(excl >= 0, self._per_study[o][np.maximum(excl, 0)], 0)  # (nq,) to skip
        fetch = int(min(len(local), k + c.max()))
        params = None
        if self.config.kind is IndexKind.IVF:
            params = faiss.SearchParametersIVF(nprobe=min(self.config.nprobe, sub.nlist))
        scores, ids = self._hits(sub, local, q, fetch, excl, k, params)
        # ivf can come back short (the probed lists hold too few tokens; flat never does):
        # probing every list is exact
        short = np.flatnonzero((ids >= 0).sum(1) < np.minimum(k, len(local) - c))
        if len(short):
            scores[short], ids[short] = self._hits(
                sub, local, q[short], fetch, excl[short], k,
                faiss.SearchParametersIVF(nprobe=sub.nlist))
        return scores, ids

    def _hits(self, sub: Any, local: np.ndarray, q: np.ndarray, fetch: int, excl: np.ndarray,
              k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """faiss top-``fetch`` → global ids, the excluded study's hits dropped, top-k kept."""
        d, i = sub.search(q, fetch, params=params)
        valid = i >= 0
        gids = np.where(valid, local[np.maximum(i, 0)], -1)
        valid &= self._codes[np.maximum(gids, 0)] != excl[:, None]
        return _sort_topk(np.where(valid, d, -np.inf).astype(np.float32),
                          np.where(valid, gids, -1), k)

    # -- persistence ------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write atomically (cxr.files.atomic_directory): the folder appears whole or not at all."""
        directory = Path(directory)
        self._ensure_built()
        with atomic_directory(directory) as tmp:
            self._write(tmp)
        return directory

    def _write(self, tmp: Path) -> None:
        np.save(tmp / VECTORS, self.vectors, allow_pickle=False)
        m = self.meta
        np.savez(tmp / META, study_ids=m.study_ids, observation=m.observation, view=m.view,
                 patch=m.patch, score=m.score)
        files = [VECTORS, META]
        if self.reports:
            (tmp / REPORTS).write_text(json.dumps(self.reports, ensure_ascii=False, sort_keys=True), encoding="utf-8")
            files.append(REPORTS)
        for o, sub in enumerate(self._subs):
            if sub is not None:
                name = f"obs_{o:02d}.faiss"
                faiss.write_index(sub, str(tmp / name))
                files.append(name)
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "dim": self.dim,
            "count": len(self),
            "counts": self.counts().tolist(),
            "observations": [obs.value for obs in OBSERVATIONS],
            "sha256": {f: _sha256(tmp / f) for f in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> TokenIndex:
        """Read a saved index, checking every file against the manifest's checksums."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise IndexFileError(f"missing {path}: not a saved TokenIndex directory")
        try:
            manifest = json.loads(path.read_text())
            version = manifest["format_version"]
            # banks saved while an hnsw kind existed carry its (unused) fields
            config = IndexConfig(**{k: v for k, v in manifest["config"].items()
                                    if k not in RETIRED_FIELDS})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise IndexFileError(f"corrupt {path}: {type(e).__name__}: {e}") from e
        if version != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{path} has format_version {version}, this code reads {FORMAT_VERSION}")
        for name, digest in manifest["sha256"].items():
            f = directory / name
            if not f.is_file():
                raise IndexFileError(f"missing {f} (listed in {path})")
            if _sha256(f) != digest:
                raise IndexFileError(f"corrupt {f}: checksum differs from {path}")
        try:
            vectors = np.load(directory / VECTORS, allow_pickle=False)
            with np.load(directory / META, allow_pickle=False) as z:
                meta = TokenMeta(z["study_ids"], z["observation"], z["view"], z["patch"],
                                 z["score"])
        except (OSError, ValueError, KeyError) as e:
            raise IndexFileError(f"corrupt file in {directory}: {e}") from e
        if vectors.shape != (manifest["count"], config.dim):
            raise IndexFileError(f"corrupt {directory / VECTORS}: shape {vectors.shape}, "
                                 f"manifest says ({manifest['count']}, {config.dim})")
        index = cls(config)
        index.add(vectors, meta)  # rebuilds ids, codes and per-observation maps
        index._dirty.clear()
        index._count_studies()
        for o in range(N_OBS):
            name = f"obs_{o:02d}.faiss"
            if name not in manifest["sha256"]:
                if len(index._local[o]):
                    raise IndexFileError(f"missing {directory / name} for {len(index._local[o])}"
                                         f" stored tokens of {OBSERVATIONS[o].value}")
                continue
            sub = faiss.read_index(str(directory / name))
            if sub.d != config.dim or sub.ntotal != len(index._local[o]):
                raise IndexFileError(f"corrupt {directory / name}: d={sub.d}, "
                                     f"ntotal={sub.ntotal}, expected d={config.dim}, "
                                     f"ntotal={len(index._local[o])}")
            index._subs[o] = sub
        if REPORTS in manifest["sha256"]:
            try:
                index.reports = json.loads((directory / REPORTS).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise IndexFileError(f"corrupt {directory / REPORTS}: {e}") from e
        return index
