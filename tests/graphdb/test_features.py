"""Node text features: TextEncoder against transformers + hand-written mean pooling, the cache that
never loads the model on a hit, ids that follow the model files, one-line errors for bad folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from graphdb.features import TextEncoder, default_model_dir, node_features
from graphdb.tensorize import NodeTable

TEXTS = ["pleural effusion", "Cardiomegaly", "ünïcødé 'quoted' \\ text"]


def _mean_pooled(model_dir: Path, texts: list[str], normalize: bool) -> np.ndarray:
    """The independent reference: transformers' AutoModel, mean over the attention mask, L2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    out = []
    with torch.inference_mode():
        for text in texts:
            inputs = tokenizer(text, return_tensors="pt")
            states = model(**inputs).last_hidden_state[0]                   # (T, D)
            mask = inputs["attention_mask"][0].unsqueeze(-1).float()         # (T, 1)
            vector = (states * mask).sum(0) / mask.sum()
            out.append((vector / vector.norm() if normalize else vector).numpy())
    return np.stack(out)


def _fake_model_dir(root: Path, weights: bytes = b"weights v1") -> Path:
    """A folder that passes the construction checks; its files are never loaded."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (root / "model.safetensors").write_bytes(weights)
    (root / "README.md").write_text("notes")
    return root


# ---- the packaged model against an independent computation ----------------------------------------

@pytest.mark.slow
def test_default_encoder_equals_transformers_mean_pooling_l2():
    encoder = TextEncoder(progress=False)
    got = encoder.encode(TEXTS)
    assert got.shape == (3, 384) and got.dtype == np.float32 and encoder.dim == 384
    np.testing.assert_allclose(got, _mean_pooled(default_model_dir(), TEXTS, normalize=True), atol=1e-5)
    again = encoder.encode(TEXTS[::-1])                                    # batching / order: same vectors
    np.testing.assert_allclose(again[::-1], got, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_plain_hf_folder_gets_mean_pooling(tmp_path: Path):
    """A BERT-like folder without sentence-transformers files (a tiny random one): sentence-
    transformers' default modules, mean pooling and no L2."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True).save_pretrained(tmp_path)
    encoder = TextEncoder(tmp_path, progress=False)
    assert encoder.dim == 32
    np.testing.assert_allclose(encoder.encode(TEXTS), _mean_pooled(tmp_path, TEXTS, normalize=False), atol=1e-5)


# ---- ids and errors (no model is loaded) ----------------------------------------------------------

def test_id_follows_the_model_files(tmp_path: Path):
    folder = _fake_model_dir(tmp_path / "my model")
    first = TextEncoder(folder).id
    assert first.startswith("my_model-") and TextEncoder(folder).id == first
    (folder / "README.md").write_text("other notes")                      # not a model file
    assert TextEncoder(folder).id == first
    (folder / "model.safetensors").write_bytes(b"weights v2")             # another checkpoint
    assert TextEncoder(folder).id != first


def test_default_model_is_packaged():
    folder = default_model_dir()
    assert folder.is_dir() and "site-packages" in str(folder) and (folder / "modules.json").is_file()
    assert TextEncoder(folder).id.startswith(f"{folder.name}-")


def test_bad_model_dirs_fail_in_one_line(tmp_path: Path):
    cases = [(tmp_path / "nope", FileNotFoundError, "does not exist.*Nothing is downloaded"),
             (tmp_path, ValueError, "no config.json")]
    (tmp_path / "file.bin").write_bytes(b"x")
    cases.append((tmp_path / "file.bin", ValueError, "is a file"))
    for folder, error, message in cases:
        with pytest.raises(error, match=message) as info:
            TextEncoder(folder)
        assert "\n" not in str(info.value)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="has no weights"):
        TextEncoder(tmp_path)
    broken = TextEncoder(_fake_model_dir(tmp_path / "broken"))            # passes the checks, cannot load
    with pytest.raises(ValueError, match=r"text encoder .*broken: cannot load it") as info:
        broken.encode(["x"])
    assert "\n" not in str(info.value)


# ---- node_features: order, duplicates, the cache ----------------------------------------------------

class CountingEmbedder:
    """A stand-in with the TextEmbedder interface: deterministic vectors, counts its calls."""

    id = "counting-v1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)


TABLE = NodeTable(["Observation:Pleural Effusion", "Entity:C0013687", "Entity:x", "Entity:y", "Entity:z"],
                  ["Pleural Effusion", "effusion", "same name", "rib", "same name"])


def test_rows_follow_the_table_and_duplicates_are_embedded_once(tmp_path: Path):
    embedder = CountingEmbedder()
    features = node_features(TABLE, embedder, tmp_path)
    assert embedder.calls == [["Pleural Effusion", "effusion", "same name", "rib"]]
    assert features.shape == (5, 3) and features.dtype == np.float32
    np.testing.assert_array_equal(features, CountingEmbedder().encode(TABLE.names))   # row i = names[i]


def test_cache_hit_never_loads_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def refuse(self):
        raise AssertionError("the model was loaded on a cache hit")

    monkeypatch.setattr(TextEncoder, "model", property(refuse))          # encode and dim go through it
    encoder = TextEncoder(_fake_model_dir(tmp_path / "model"), progress=False)
    cached = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.save(tmp_path / f"{TABLE.fingerprint}-{encoder.id}.npy", cached)
    np.testing.assert_array_equal(node_features(TABLE, encoder, tmp_path), cached)
    with pytest.raises(AssertionError, match="loaded on a cache hit"):    # a miss does reach the guard
        node_features(TABLE, encoder, tmp_path / "empty")


def test_cache_is_reused_and_repaired(tmp_path: Path):
    embedder = CountingEmbedder()
    first = node_features(TABLE, embedder, tmp_path)
    assert np.array_equal(node_features(TABLE, embedder, tmp_path), first) and len(embedder.calls) == 1
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{TABLE.fingerprint}-counting-v1.npy"]   # no temporary left
    files[0].write_bytes(b"not numpy")                                          # damaged: embed again
    assert np.array_equal(node_features(TABLE, embedder, tmp_path), first) and len(embedder.calls) == 2
    np.save(files[0], first[:2])                                                # wrong shape: again
    assert np.array_equal(node_features(TABLE, embedder, tmp_path), first) and len(embedder.calls) == 3


def test_copied_folder_keeps_its_id(tmp_path: Path):
    """The id depends on the files, not on where the folder lives (same folder name)."""
    source = _fake_model_dir(tmp_path / "a" / "enc")
    copy = tmp_path / "b" / "enc"
    shutil.copytree(source, copy)
    assert TextEncoder(source).id == TextEncoder(copy).id
