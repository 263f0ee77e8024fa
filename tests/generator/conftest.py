"""A tiny full model (configs/debug.yaml sizes) over the session's M3KG store, for model tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
REPORTS = [
    "the heart is normal in size. the lungs are clear. no pleural effusion or pneumothorax.",
    "the heart is enlarged. mild cardiomegaly. no focal consolidation.",
    "small left pleural effusion. the heart size is normal.",
    "there is pulmonary edema. cardiomegaly is present.",
    "right lower lobe consolidation concerning for pneumonia.",
    "no acute cardiopulmonary abnormality.",
    "a right chest tube is in place. small right pneumothorax.",
    "left basilar atelectasis. no pleural effusion.",
]


def debug_experiment(tmp: Path, *overrides: str):
    from training.config import load_experiment

    return load_experiment(REPO / "configs" / "debug.yaml", [
        f"data.image_root={tmp / 'images'}", f"train.output_dir={tmp / 'run'}", *overrides])


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from generator.llm import train_tokenizer

    return train_tokenizer(REPORTS * 4, vocab_size=400)


def make_model(store_path: Path, tokenizer, tmp: Path, *overrides: str, seed: int = 0):
    """(model, store): random node features instead of MiniLM keep unit tests fast."""
    from generator.model import R2GenKG
    from graphdb.embedded_store import EmbeddedGraphStore
    from graphdb.provider import SubgraphProvider

    cfg = debug_experiment(tmp, *overrides)
    store = EmbeddedGraphStore(store_path)
    provider = SubgraphProvider(store, cfg.model.kg.spec)
    features = np.random.default_rng(0).standard_normal((len(provider.table), 32)).astype(np.float32)
    torch.manual_seed(seed)
    return R2GenKG(cfg.model, tokenizer, features, provider), store


def study_batch(n: int = 4, size: int = 64, seed: int = 0):
    """Distinct random images per study (2 views, the second missing for odd studies) + labels."""
    from cxr.labeler import label_reports

    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 2, 1, size, size, generator=g)
    view_mask = torch.ones(n, 2, dtype=torch.bool)
    view_mask[1::2, 1] = False
    reports = [REPORTS[i % len(REPORTS)] for i in range(n)]
    labels = torch.from_numpy(label_reports(reports).astype(np.float32))
    return images, view_mask, [f"s{i}" for i in range(n)], labels, reports


@pytest.fixture(scope="session")
def shared_diagnosis_model(m3kg_store, tiny_tokenizer, tmp_path_factory):
    """One tiny model with the diagnosis prompt for the session; tests that change it restore it."""
    model, store = make_model(m3kg_store, tiny_tokenizer, tmp_path_factory.mktemp("diagnosis"),
                              "model.diagnosis_prompt=true")
    yield model.eval()
    store.close()


# ---- the API server (tests/generator/test_server*.py) ----------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path, m3kg_config):
    from generator.engine import Engine, EngineConfig

    with Engine.from_checkpoint(tiny_checkpoint, EngineConfig(device="cpu", micro_batch=8), m3kg_config) as e:
        yield e


@pytest.fixture(scope="module")
def served(engine):
    """The app with small limits (api_client.LIMITS), served for the module."""
    from generator.api_schema import ServerConfig
    from generator.server import create_app
    from tests.generator.api_client import KEY, LIMITS, Served

    s = Served(create_app(engine, ServerConfig(api_keys=(KEY,), max_batch=16, max_wait_ms=20, **LIMITS)))
    yield s
    s.stop()
