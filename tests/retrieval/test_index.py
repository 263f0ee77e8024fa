"""TokenIndex: exact top-k against numpy, ivf recall and its exact fallback, no same-study
leakage, per-observation isolation, save/load round trip and file errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.index import (
    IndexConfig,
    IndexFileError,
    IndexKind,
    IndexMismatchError,
    TokenIndex,
    TokenMeta,
)


def _meta(n: int, rng: np.random.Generator, n_studies: int = 50, obs=None) -> TokenMeta:
    return TokenMeta(
        study_ids=np.array([f"s{i}" for i in rng.integers(0, n_studies, n)]),
        observation=rng.integers(0, 14, n) if obs is None else np.broadcast_to(obs, (n,)),
        view=np.zeros(n), patch=rng.integers(0, 144, n), score=rng.random(n))


def _normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _owners(index: TokenIndex, res) -> set[str]:
    """Study ids of the tokens a (1, k) search returned."""
    return set(index.meta.study_ids[res.ids[0][res.ids[0] >= 0]])


def _brute(x, meta, q, k, obs=None, exclude=None):
    s = _normed(q) @ _normed(x).T
    if obs is not None:
        s[:, meta.observation != obs] = -np.inf
    if exclude is not None:
        s[:, meta.study_ids == exclude] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k], np.sort(s, axis=1)[:, ::-1][:, :k]


@pytest.fixture(scope="module")
def flat_bank():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 16)).astype(np.float32)
    meta = _meta(700, rng)
    index = TokenIndex(IndexConfig(dim=16))
    index.add(x, meta)
    return index, x, meta


def test_flat_matches_numpy_per_observation(flat_bank):
    index, x, meta = flat_bank
    q = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)
    for o in (0, 5, 13):
        res = index.search(q, 8, observations=o)
        ids, scores = _brute(x, meta, q, 8, obs=o)
        np.testing.assert_array_equal(res.ids, ids)
        np.testing.assert_allclose(res.scores, scores, atol=1e-5)
        assert (meta.observation[res.ids] == o).all()  # isolation
    # one observation per query: each row equals its own single-observation search
    obs = np.arange(20) % 14
    mixed = index.search(q, 8, observations=obs)
    for row in (0, 7, 19):
        np.testing.assert_array_equal(mixed.ids[row], _brute(x, meta, q[row:row + 1], 8,
                                                             obs=obs[row])[0][0])


def test_ties_broken_by_smaller_id():
    index = TokenIndex(IndexConfig(dim=4))
    x = np.tile(np.array([[1, 0, 0, 0]], np.float32), (10, 1))
    index.add(x, TokenMeta([f"s{i}" for i in range(10)], [2] * 10, [0] * 10, range(10), [1] * 10))
    res = index.search(x[:1], 4, exclude_studies=["s1"], observations=2)
    assert res.ids.tolist() == [[0, 2, 3, 4]]


def test_excluded_study_owning_the_top_hits_never_leaks():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    meta = _meta(300, rng, n_studies=40, obs=3)
    # study "S" owns 6 near-copies of the query direction: the 6 best hits without exclusion
    q = rng.standard_normal((1, 8)).astype(np.float32)
    x[:6] = q + 0.01 * rng.standard_normal((6, 8))
    meta.study_ids[:6] = "S"
    for kind in IndexKind:  # ivf: 4 lists, 1 probed, so k = 294 needs the exact fallback
        index = TokenIndex(IndexConfig(dim=8, kind=kind, nlist=4, nprobe=1))
        index.add(x, meta)
        assert _owners(index, index.search(x[:1], 6, observations=3)) == {"S"}
        for k in (1, 10, 294):  # 294 = every non-excluded token
            res = index.search(x[:1], k, exclude_studies=["S"], observations=3)
            assert (res.ids >= 0).all(), (kind, k)
            assert "S" not in _owners(index, res)
        res = index.search(x[:1], 300, exclude_studies=["S"], observations=3)
        assert (res.ids >= 0).sum() == 294 and (res.ids[0, 294:] == -1).all()


def test_exclusion_is_per_query(flat_bank):
    index, x, meta = flat_bank
    studies = [meta.study_ids[i] for i in range(5)]
    obs = meta.observation[:5]
    res = index.search(x[:5], 7, exclude_studies=studies, observations=obs)
    for row, s in enumerate(studies):
        assert s not in set(meta.study_ids[res.ids[row]])
        ids, _ = _brute(x, meta, x[row:row + 1], 7, obs=obs[row], exclude=s)
        np.testing.assert_array_equal(res.ids[row], ids[0])


def test_empty_observation_and_short_observation_pad_with_minus_one():
    index = TokenIndex(IndexConfig(dim=4))
    index.add(np.eye(4, dtype=np.float32)[:3], TokenMeta(["a", "b", "c"], [1, 1, 1], [0] * 3,
                                                         [0, 1, 2], [1] * 3))
    res = index.search(np.ones((2, 4), np.float32), 5, observations=[1, 7])
    assert (res.ids >= 0).tolist() == [[True] * 3 + [False] * 2, [False] * 5]
    assert np.isneginf(res.scores[1]).all()


def _recall(truth: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(truth, got, strict=True)]))


def test_ivf_recall_at_10_grows_with_nprobe_and_is_exact_probing_every_list():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, 32)).astype(np.float32)
    x = (centres[rng.integers(0, 50, 5000)] + rng.standard_normal((5000, 32))).astype(np.float32)
    meta = _meta(5000, rng, n_studies=1000, obs=0)
    q = (centres[rng.integers(0, 50, 200)] + rng.standard_normal((200, 32))).astype(np.float32)
    exact = TokenIndex(IndexConfig(dim=32))  # 50 overlapping clusters
    exact.add(x, meta)
    truth = exact.search(q, 10, observations=0).ids
    ivf = TokenIndex(IndexConfig(dim=32, kind=IndexKind.IVF, nlist=64, nprobe=1))
    ivf.add(x, meta)
    recalls = {}
    for nprobe in (1, 8, 64):  # nprobe is read at search time: no rebuild
        ivf.config = IndexConfig(dim=32, kind=IndexKind.IVF, nlist=64, nprobe=nprobe)
        recalls[nprobe] = _recall(truth, ivf.search(q, 10, observations=0).ids)
    assert recalls[1] < 0.9, recalls  # one list of 64 misses neighbours in the next cluster
    assert recalls[8] >= 0.95, recalls
    assert recalls[64] == 1.0, recalls


def test_query_dim_mismatch_is_a_clear_error(flat_bank):
    with pytest.raises(ValueError, match="match the index dim"):
        flat_bank[0].search(np.zeros((1, 3), np.float32), 2, observations=0)


@pytest.mark.parametrize("kind", list(IndexKind))
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((800, 16)).astype(np.float32)
    meta = _meta(800, rng, obs=rng.integers(0, 3, 800))  # observations 3..13 stay empty
    cfg = IndexConfig(dim=16, kind=kind, nlist=4, nprobe=2)
    index = TokenIndex(cfg)
    index.add(x, meta)
    q = rng.standard_normal((10, 16)).astype(np.float32)
    obs = rng.integers(0, 5, 10)  # 3 and 4 are empty observations
    before = index.search(q, 5, exclude_studies=["s1"] * 10, observations=obs)
    index.save(tmp_path / "bank")
    index.save(tmp_path / "bank")  # overwriting an existing bank works
    loaded = TokenIndex.load(tmp_path / "bank")
    assert loaded.config == cfg
    after = loaded.search(q, 5, exclude_studies=["s1"] * 10, observations=obs)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(loaded.vectors, x)
    np.testing.assert_array_equal(loaded.meta.study_ids, meta.study_ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank"]  # no tmp dirs left


def _saved(tmp_path):
    index = TokenIndex(IndexConfig(dim=4))
    index.add(np.eye(4, dtype=np.float32), TokenMeta(list("abcd"), [0, 0, 1, 1], [0] * 4,
                                                     range(4), [1] * 4))
    return index.save(tmp_path / "bank")


def test_load_refuses_another_format_version(tmp_path):
    path = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(IndexMismatchError, match="format_version 2"):
        TokenIndex.load(path)


def test_load_reads_a_bank_saved_with_the_retired_hnsw_fields(tmp_path):
    path = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config"] |= {"hnsw_m": 32, "ef_search": 128, "ef_construction": 80}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert TokenIndex.load(path).config == IndexConfig(dim=4)


@pytest.mark.parametrize("name", ["manifest.json", "vectors.npy", "meta.npz", "obs_01.faiss"])
def test_missing_file_is_named(tmp_path, name):
    path = _saved(tmp_path)
    (path / name).unlink()
    with pytest.raises(IndexFileError, match=name.replace(".", r"\.")):
        TokenIndex.load(path)


@pytest.mark.parametrize("name", ["vectors.npy", "meta.npz", "obs_00.faiss"])
def test_corrupt_file_is_named(tmp_path, name):
    path = _saved(tmp_path)
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=f"corrupt .*{name.replace('.', '[.]')}"):
        TokenIndex.load(path)


def test_corrupt_manifest_is_named(tmp_path):
    path = _saved(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFileError, match="corrupt .*manifest.json"):
        TokenIndex.load(path)
    (path / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(IndexFileError, match="manifest.json"):
        TokenIndex.load(path)


def test_the_source_reports_travel_with_the_bank_and_are_checked(tmp_path):
    index = TokenIndex(IndexConfig(dim=4))
    index.add(np.eye(4, dtype=np.float32), TokenMeta(list("abcd"), [0, 0, 1, 1], [0] * 4, range(4), [1] * 4))
    assert TokenIndex.load(index.save(tmp_path / "old")).reports == {}     # a bank without them still loads
    index.reports = {"a": "Small left pleural effusion.", "c": "Cardiomegaly. No effusion."}
    loaded = TokenIndex.load(index.save(tmp_path / "bank"))
    assert loaded.reports == index.reports
    (tmp_path / "bank" / "reports.json").write_text('{"a": "tampered"}')
    with pytest.raises(IndexFileError, match="reports.json"):
        TokenIndex.load(tmp_path / "bank")
