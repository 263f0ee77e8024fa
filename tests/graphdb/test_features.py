"""Node text features: the packaged all-MiniLM-L6-v2 equals sentence-transformers, loads offline,
and node_features embeds each name once and caches it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphdb.features import TextEncoder, default_model_dir, node_features
from graphdb.tensorize import NodeTable

TEXTS = ["pleural effusion", "small", "left lower lobe", "Cardiomegaly", "ünïcødé 'quoted' \\ text"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(progress=False)


@pytest.mark.slow
def test_equals_sentence_transformers(encoder: TextEncoder):
    from sentence_transformers import SentenceTransformer

    ours = encoder.encode(TEXTS)
    reference = SentenceTransformer(str(default_model_dir()), device="cpu", local_files_only=True).encode(TEXTS)
    assert ours.shape == (5, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_meaningful_and_order_independent(encoder: TextEncoder):
    a = encoder.encode(["pleural effusion", "effusion of the pleura", "fractured rib"])
    assert a[0] @ a[1] > a[0] @ a[2]
    b = encoder.encode(["fractured rib", "pleural effusion"])
    np.testing.assert_allclose(b[1], a[0], atol=1e-6)       # batching/order does not change a vector


class CountingEmbedder:
    """A stand-in with the TextEmbedder interface: deterministic vectors, counts its calls."""

    id = "counting-v1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)


def test_node_features_embed_once_and_cache(tmp_path: Path):
    table = NodeTable(["Observation:Pleural Effusion", "Entity:C0013687", "Entity:x", "Entity:y"],
                      ["Pleural Effusion", "effusion", "same name", "same name"])
    embedder = CountingEmbedder()
    first = node_features(table, embedder, tmp_path)
    assert embedder.calls == [["Pleural Effusion", "effusion", "same name"]]   # each name once
    assert first.shape == (4, 3) and np.array_equal(first[2], first[3])
    again = node_features(table, embedder, tmp_path)
    assert len(embedder.calls) == 1 and np.array_equal(again, first)          # read from the cache
    files = list(tmp_path.glob("*.npy"))
    assert [f.name for f in files] == [f"{table.fingerprint}-counting-v1.npy"]
    files[0].write_bytes(b"not numpy")                                          # damaged: embed again
    assert np.array_equal(node_features(table, embedder, tmp_path), first) and len(embedder.calls) == 2


def test_bad_model_dirs_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist.*Nothing is downloaded"):
        TextEncoder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config.json"):
        TextEncoder(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    with pytest.raises(ValueError, match="has no weights"):
        TextEncoder(tmp_path)


def test_default_encoder_is_packaged_and_384d(encoder: TextEncoder):
    assert default_model_dir().is_dir() and "site-packages" in str(default_model_dir())
    assert encoder.dim == 384 and encoder.normalize and encoder.id.startswith("model-mean-l2-")


@pytest.mark.slow
def test_plain_hf_folder_with_cls_pooling(tmp_path: Path):
    """Any local BERT-like folder (here a tiny random one): no sentence-transformers files, so
    mean pooling unless asked, no L2, max length from the config; CLS = the first token's state."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True).save_pretrained(tmp_path)

    mean = TextEncoder(tmp_path, progress=False)
    assert (mean.pooling.value, mean.normalize, mean.max_length, mean.dim) == ("mean", False, 64, 32)
    cls = TextEncoder(tmp_path, pooling="cls", progress=False)
    assert cls.id != mean.id and cls.id.startswith(f"{tmp_path.name}-cls-")
    got = cls.encode(TEXTS[:3])
    model, tok = AutoModel.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    with torch.inference_mode():
        want = [model(**tok(t, return_tensors="pt")).last_hidden_state[0, 0].numpy() for t in TEXTS[:3]]
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
