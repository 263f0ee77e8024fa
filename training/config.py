"""One experiment = data + model + training + generation settings, filled from a YAML in configs/.

``load_experiment("configs/debug.yaml", ["train.lr=1e-4"])``: unknown or mistyped fields fail
with the dotted path of the field (generator/config_io.py). ``ExperimentConfig`` is the
checkpoint's ``RunConfig`` plus the training settings; where the graph lives is not in it (that is
the deployment's ``StoreConfig``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cxr.sentences import SentenceOrder
from generator.config import RunConfig
from generator.config_io import load_config
from generator.decisions import ThresholdRules

# Model selection: a weighted sum of validation metrics (training.evaluate's flat names).
SELECTION_PRESETS: dict[str, dict[str, float]] = {
    "paper": {"BLEU_4": 0.5, "CIDEr": 0.5},          # the paper's 0.5·BLEU-4 + 0.5·CIDEr
    "clinical": {"BLEU_4": 0.25, "CIDEr": 0.25,      # fluency and findings in equal parts
                 "CE14_macro_f1": 0.25, "CE5_micro_f1": 0.25},
}
SELECTABLE = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr", "CE14_micro_f1", "CE14_macro_f1",
              "CE5_micro_f1", "CE5_macro_f1", "consistency_f1", "classifier_mean_auroc")


def selection_weights(spec: str) -> dict[str, float]:
    """A preset name (``paper``, ``clinical``) or ``metric:weight[,metric:weight…]``."""
    if spec in SELECTION_PRESETS:
        return dict(SELECTION_PRESETS[spec])
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in SELECTABLE:
            raise ValueError(f"TrainConfig.selection={spec!r}: {name!r} is neither a preset "
                             f"({', '.join(SELECTION_PRESETS)}) nor a metric ({', '.join(SELECTABLE)})")
        if name in weights:
            raise ValueError(f"TrainConfig.selection={spec!r}: {name!r} is given twice")
        try:
            weights[name] = float(weight)
        except ValueError:
            weights[name] = math.nan
        if not math.isfinite(weights[name]):
            raise ValueError(f"TrainConfig.selection={spec!r}: the weight of {name!r} is not a number, or not a finite one "
                             "(write metric:weight, e.g. CE14_macro_f1:1)")
    return weights


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
    eval_batch_size: int | None = None   # studies per batch when validating (thresholds, val reports); None: batch_size
    selection: str = "clinical"      # what "best" means on val: a SELECTION_PRESETS name or metric:weight,…
    # diagnosis prompt: the share of studies whose prompt carries the model's own decided states
    # instead of the report's; 0 before diagnosis_from_epoch, then rising linearly to
    # diagnosis_final_share in the last epoch
    diagnosis_from_epoch: int = 2
    diagnosis_final_share: float = 0.25
    # text-only epochs over the train reports before the joint training: the decoder learns to
    # write what the diagnosis prompt's states say (the reports' own labels), no image tokens
    decoder_warmup_epochs: int = 0
    # in the warm-up, each finding a report states is left out (its sentences and its label) with
    # this probability: ties each finding of the prompt to its own sentences (cxr.sentences)
    warmup_finding_dropout: float = 0.0
    # the order of a training report's sentences: "report" (as written) or "findings_first"
    sentence_order: SentenceOrder = SentenceOrder.REPORT
    # how the decision thresholds are fit on val at each validation (and by `r2genkg calibrate`)
    thresholds: ThresholdRules = field(default_factory=ThresholdRules)

    def __post_init__(self) -> None:
        self.precision = Precision(self.precision)
        self.sentence_order = SentenceOrder(self.sentence_order)
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"TrainConfig.eval_batch_size must be ≥ 1 or null, got {self.eval_batch_size}")
        for name in ("warmup_steps", "save_every", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig: need 0 < min_lr ({self.min_lr}) ≤ lr ({self.lr})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be ≥ 1 or null, got {self.max_steps}")
        selection_weights(self.selection)   # validates
        if not 0.0 <= self.diagnosis_final_share <= 1.0:
            raise ValueError(f"TrainConfig.diagnosis_final_share must be in [0, 1], got {self.diagnosis_final_share}")
        if not 0.0 <= self.warmup_finding_dropout < 1.0:
            raise ValueError(f"TrainConfig.warmup_finding_dropout must be in [0, 1), got {self.warmup_finding_dropout}")
        if self.decoder_warmup_epochs < 0:
            raise ValueError(f"TrainConfig.decoder_warmup_epochs must be ≥ 0, got {self.decoder_warmup_epochs}")
        if self.diagnosis_from_epoch < 0:
            raise ValueError(f"TrainConfig.diagnosis_from_epoch must be ≥ 0, got {self.diagnosis_from_epoch}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"TrainConfig.threads must be ≥ 1 or null, got {self.threads}")


    @property
    def validation_batch_size(self) -> int:
        """Studies per batch when validating: ``eval_batch_size``, else the train batch."""
        return self.eval_batch_size or self.batch_size

    def decided_share(self, epoch: int) -> float:
        """The diagnosis schedule: the share of studies given decided states in ``epoch`` (0-based)."""
        if epoch < self.diagnosis_from_epoch:
            return 0.0
        span = self.epochs - self.diagnosis_from_epoch
        return self.diagnosis_final_share * (epoch - self.diagnosis_from_epoch + 1) / span if span > 0 else 0.0


@dataclass
class ExperimentConfig(RunConfig):
    train: TrainConfig = field(default_factory=TrainConfig)


# Fields that may change between a checkpoint and a resumed run without breaking exact resume.
RESUMABLE_CHANGES = ("train.epochs", "train.patience", "train.max_steps", "train.validate", "train.eval_batch_size",
                     "train.threads", "train.log_every", "train.save_every", "train.keep_checkpoints", "data.workers",
                     "model.vision.weights", "model.llm.path")


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    return load_config(ExperimentConfig, path, overrides)
