"""One experiment = data + model + training + generation settings, filled from a YAML in configs/.

``load_experiment("configs/debug.yaml", ["train.lr=1e-4"])``: unknown or mistyped fields fail
with the dotted path of the field (generator/config_io.py). ``ExperimentConfig`` is the
checkpoint's ``RunConfig`` plus the training settings; where the graph lives is not in it (that is
the deployment's ``StoreConfig``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from generator.config import RunConfig
from generator.config_io import load_config


class Precision(str, Enum):
    AUTO = "auto"   # bf16 on a GPU that supports it, fp32 on CPU
    NO = "no"       # fp32 everywhere
    BF16 = "bf16"


@dataclass
class TrainConfig:
    output_dir: str = "outputs/runs/default"
    epochs: int = 15
    batch_size: int = 6
    grad_accum: int = 1              # micro-batches per optimizer step
    lr: float = 9e-5                 # the paper: 9e-5, cosine to min_lr
    min_lr: float = 1e-6
    warmup_steps: int = 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: Precision = Precision.AUTO
    threads: int | None = None       # torch CPU threads; None: torch's default
    log_every: int = 10              # optimizer steps between CSV rows
    save_every: int = 0              # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
    keep_checkpoints: int = 2        # newest step checkpoints kept (best/ is kept apart)
    patience: int = 3                # epochs without a better validation score before stopping (0: never)
    max_steps: int | None = None     # stop after this many optimizer steps (tests, smoke runs)
    validate: bool = True            # generate on the val split after each epoch

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig: need 0 < min_lr ({self.min_lr}) ≤ lr ({self.lr})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be ≥ 1 or null, got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"TrainConfig.threads must be ≥ 1 or null, got {self.threads}")


@dataclass
class ExperimentConfig(RunConfig):
    train: TrainConfig = field(default_factory=TrainConfig)


# Fields that may change between a checkpoint and a resumed run without breaking exact resume.
RESUMABLE_CHANGES = ("train.epochs", "train.patience", "train.max_steps", "train.validate", "train.threads",
                     "train.log_every", "train.save_every", "train.keep_checkpoints", "data.workers",
                     "model.vision.weights", "model.llm.path")


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    return load_config(ExperimentConfig, path, overrides)
