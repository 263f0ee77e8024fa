"""training.data: tiny hand-made PNGs + annotation → items, batches, skipped views, order."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.clean import clean_report
from cxr.datasets import DataConfig, load_split, prepare_images
from cxr.images import IMAGE_MEAN, IMAGE_STD
from cxr.labeler import label_reports
from cxr.records import DataError
from training.data import StudyCollator, StudyDataset, make_loader

SIZE = 16
REPORTS = {
    "s1": "The heart is normal in size. No pleural effusion.",
    "s2": "Cardiomegaly. Small right pleural effusion.",
    "s3": "No pneumothorax. Possible left lower lobe pneumonia.",
    "s4": "Lungs are clear.",
}


def write_png(path: Path, value: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)


@pytest.fixture
def tiny(tmp_path):
    """s1: 2 good views; s2: 3 views (one too many); s3: 1 view; s4: missing + corrupt views."""
    root = tmp_path / "images"
    paths = {"s1": ["s1/0.png", "s1/1.png"], "s2": ["s2/0.png", "s2/1.png", "s2/2.png"],
             "s3": ["s3/0.png"], "s4": ["s4/0.png", "s4/1.png"]}
    for sid, rels in paths.items():
        for v, rel in enumerate(rels):
            if sid != "s4":
                write_png(root / rel, value=40 * (v + 1))
    (root / "s4").mkdir()
    (root / "s4" / "1.png").write_bytes(b"not a png at all")   # s4/0.png is missing
    items = [{"id": sid, "report": REPORTS[sid], "image_path": rels, "split": "train"}
             for sid, rels in paths.items()]
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps({"train": items, "val": [], "test": []}))
    return annotation, root


def config_for(tiny, **overrides) -> DataConfig:
    annotation, root = tiny
    values = {"annotation": str(annotation), "image_root": str(root), "phantoms": False,
              "image_size": SIZE}
    return DataConfig(**(values | overrides))


def dataset_for(tiny, **overrides) -> StudyDataset:
    config = config_for(tiny, **overrides)
    return StudyDataset(load_split(config, "train"), config, progress=False)


# --- items ------------------------------------------------------------------------------------
def test_item_shapes_and_normalisation(tiny):
    item = dataset_for(tiny)[0]
    assert item.study_id == "s1"
    assert item.images.shape == (2, 1, SIZE, SIZE) and item.images.dtype == torch.float32
    assert item.view_mask.tolist() == [True, True]
    for v, value in enumerate((40, 80)):
        expected = (value / 255.0 - IMAGE_MEAN) / IMAGE_STD
        assert torch.allclose(item.images[v], torch.full((1, SIZE, SIZE), expected))
    assert item.report == clean_report(REPORTS["s1"])
    assert item.skipped_views == 0


def test_views_are_truncated_and_padded(tiny):
    data = dataset_for(tiny)
    three, one = data[1], data[2]
    assert three.images.shape[0] == 2 and three.view_mask.tolist() == [True, True]
    assert one.view_mask.tolist() == [True, False]
    assert torch.count_nonzero(one.images[1]) == 0
    assert data[1].skipped_views == 0   # views beyond max_views are dropped by design, not skipped
    wide = dataset_for(tiny, max_views=3)[1]
    assert wide.view_mask.tolist() == [True, True, True]


def test_missing_and_corrupt_views_are_skipped_with_a_warning(tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="training.data"):
        item = dataset_for(tiny, preload=False)[3]
    assert item.view_mask.tolist() == [False, False] and item.skipped_views == 2
    assert torch.count_nonzero(item.images) == 0
    text = caplog.text
    assert str(Path("s4") / "0.png") in text and "not found" in text
    assert str(Path("s4") / "1.png") in text


def test_preload_and_lazy_give_identical_tensors(tiny, tmp_path):
    lazy, eager = dataset_for(tiny, preload=False), dataset_for(tiny, preload=True)
    config = config_for(tiny)
    records = load_split(config, "train")
    # the second one reads the .npy files the first one wrote
    cached = [StudyDataset(records, config, cache_dir=tmp_path / "cache", progress=False)
              for _ in range(2)]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    for i in range(len(lazy)):
        for other in (eager, *cached):
            a, b = lazy[i], other[i]
            assert torch.equal(a.images, b.images) and torch.equal(a.view_mask, b.view_mask)
            assert torch.allclose(a.labels, b.labels, equal_nan=True)
            assert a.skipped_views == b.skipped_views


def test_labels_match_label_reports(tiny):
    data = dataset_for(tiny)
    expected = torch.from_numpy(label_reports(list(REPORTS.values()))).float()
    got = torch.stack([data[i].labels for i in range(len(data))])
    assert got.shape == (4, 14)
    assert torch.allclose(got, expected, equal_nan=True)
    assert torch.isnan(got).any()   # blanks stay NaN


def test_precomputed_labels_are_checked(tiny):
    config = config_for(tiny)
    with pytest.raises(ValueError, match="labels must have shape"):
        StudyDataset(load_split(config, "train"), config, labels=np.zeros((2, 14)), progress=False)


# --- batches ----------------------------------------------------------------------------------
def test_collator_drops_and_counts_unreadable_studies(tiny, caplog):
    data, collate = dataset_for(tiny), StudyCollator()
    with caplog.at_level(logging.WARNING, logger="training.data"):
        batch = collate([data[i] for i in range(4)])
    assert batch.study_ids == ["s1", "s2", "s3"] and len(batch) == 3
    assert batch.images.shape == (3, 2, 1, SIZE, SIZE)
    assert batch.view_mask.shape == (3, 2) and batch.view_mask.dtype == torch.bool
    assert batch.labels.shape == (3, 14) and len(batch.reports) == 3
    assert collate.skipped_studies == 1 and collate.skipped_views == 2
    assert "s4" in caplog.text
    moved = batch.to("cpu")
    assert moved.images.device.type == "cpu" and moved.study_ids == batch.study_ids


def test_all_bad_batch_raises_naming_the_ids(tiny):
    data = dataset_for(tiny)
    with pytest.raises(DataError, match=r"empty batch: none of the 2 studies \(s4, s4\)"):
        StudyCollator()([data[3], data[3]])


def _order(seed: int, epoch: int, n: int = 4) -> list[int]:
    """The permutation make_loader draws: RandomSampler on a generator seeded by seed + epoch."""
    loader = torch.utils.data.DataLoader(range(n), shuffle=True, generator=torch.Generator().manual_seed(seed + epoch))
    return [int(i) for i in loader]


def test_loader_order_depends_only_on_seed_and_epoch(tiny):
    data = dataset_for(tiny)
    torch.manual_seed(0)
    ids = [sid for batch in make_loader(data, batch_size=2, seed=3, epoch=1) for sid in batch.study_ids]
    torch.manual_seed(123)   # the global RNG plays no part
    again = [sid for batch in make_loader(data, batch_size=2, seed=3, epoch=1) for sid in batch.study_ids]
    assert ids == again == [data.records[i].study_id for i in _order(3, 1) if i != 3]   # s4 is unreadable
    other = [sid for batch in make_loader(data, batch_size=2, seed=3, epoch=2) for sid in batch.study_ids]
    assert sorted(other) == sorted(ids)


def test_skipping_first_batches_resumes_the_same_order(tiny):
    from accelerate import Accelerator

    data = dataset_for(tiny)
    full = [b.study_ids for b in make_loader(data, batch_size=2, seed=5, epoch=0)]
    rest = [b.study_ids for b in Accelerator(cpu=True).skip_first_batches(make_loader(data, batch_size=2, seed=5,
                                                                                      epoch=0), 1)]
    assert len(full) == 2 and rest == full[1:]


def test_collator_counts_are_checkpointed():
    collator = StudyCollator(skipped_studies=2, skipped_views=5)
    fresh = StudyCollator()
    fresh.load_state_dict(collator.state_dict())
    assert (fresh.skipped_studies, fresh.skipped_views) == (2, 5)


# --- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"dataset": "chexpert"}, "DataConfig.dataset"),
        ({"image_size": 0}, "DataConfig.image_size"),
        ({"max_views": 0}, "DataConfig.max_views"),
        ({"phantom_size": 32}, "DataConfig.phantom_size"),
        ({"max_report_tokens": 0}, "DataConfig.max_report_tokens"),
        ({"workers": -1}, "DataConfig.workers"),
        ({"limit": {"dev": 3}}, "DataConfig.limit"),
        ({"limit": {"train": -1}}, "DataConfig.limit"),
        ({"clean_style": "r2gen"}, "DataConfig.clean_style"),
    ],
)
def test_config_validation_names_the_field(overrides, name):
    with pytest.raises(ValueError, match=name):
        DataConfig(**overrides)


# --- phantoms ---------------------------------------------------------------------------------
def test_prepare_images_renders_phantoms_and_they_load(tmp_path):
    config = DataConfig(image_root=str(tmp_path / "phantoms"), image_size=64, phantom_size=256, limit={"train": 3})
    root = prepare_images(config, splits=["train"], progress=False)
    records = load_split(config, "train")
    assert len(records) == 3 and all(p.is_file() for r in records for p in r.image_paths)
    # resumable: a second call finds every image and renders nothing
    assert prepare_images(config, splits=["train"], progress=False) == root
    batch = StudyCollator()([StudyDataset(records, config, progress=False)[i] for i in range(3)])
    assert batch.images.shape == (3, 2, 1, 64, 64) and bool(batch.view_mask.all())
    # drawn at phantom_size (fine signs survive), resized to image_size when loaded
    with Image.open(records[0].image_paths[0]) as image:
        assert image.size == (config.phantom_size, config.phantom_size) == (256, 256)


def test_phantoms_are_drawn_at_least_at_the_model_input_size(tmp_path):
    for size, phantom_size in ((320, 64), (96, 0)):   # 0: drawn at image_size
        config = DataConfig(image_root=str(tmp_path / f"phantoms{size}"), image_size=size, phantom_size=phantom_size,
                            limit={"train": 1})
        prepare_images(config, splits=["train"], progress=False)
        with Image.open(load_split(config, "train")[0].image_paths[0]) as image:
            assert image.size == (size, size)


def test_findings_first_reorders_the_targets_not_the_records(tiny):
    config = config_for(tiny)
    records = load_split(config, "train")
    data = StudyDataset(records, config, progress=False, sentence_order="findings_first")
    s3 = [r.study_id for r in records].index("s3")
    assert data[s3].report == "possible left lower lobe pneumonia . no pneumothorax ."
    assert data.records[s3].report == REPORTS["s3"]                      # what references are scored on
    assert data[0].report == clean_report(REPORTS["s1"])                 # nothing stated: as written
