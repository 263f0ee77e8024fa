"""The training loop: one plain loop on ``accelerate`` (CPU, one GPU, or DDP via ``accelerate launch``).

Per epoch: micro-batches → loss (LM + classifier) → optimizer step every ``grad_accum`` → the
disease-token bank is mined from the same forward passes (attention maps of the disease
queries) and swapped in at the epoch's end → validation with the one ``generate()`` → early
stopping on 0.5·BLEU-4 + 0.5·CIDEr. Checkpoints hold everything for an exact resume.
"""
from __future__ import annotations

import csv
import logging
import math
import pickle
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from rich.console import Console
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from cxr.clean import CleanStyle
from generator.config import KGMode
from generator.llm import load_tokenizer
from generator.model import R2GenKG
from retrieval.index import IndexConfig
from retrieval.tokens import BankConfig, DiseaseTokenBank
from training.checkpoint import (
    STATE_FILE,
    CheckpointError,
    ModelBundle,
    build_model,
    check_compatible,
    load_weights,
    read_config,
    read_tokenizer,
    save_checkpoint,
)
from training.config import RESUMABLE_CHANGES, ExperimentConfig, Precision
from training.data import StudyCollator, StudyDataset, load_split, make_loader, prepare_images
from training.evaluate import compute_scores
from training.metrics.auroc import auroc_per_observation
from training.predict import predict

log = logging.getLogger(__name__)

CHECKPOINTS, BEST = "checkpoints", "best"
TRAIN_LOG, VAL_LOG = "train_log.csv", "val_log.csv"


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainState:
    epoch: int = 0                 # current epoch (0-based)
    step: int = 0                  # optimizer steps done
    batch_in_epoch: int = 0        # micro-batches of `epoch` done
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0            # epochs since the best validation score
    samples: int = 0               # training studies seen
    seconds: float = 0.0           # training wall time (excludes validation)
    stopped: str = ""              # why training ended: epochs | early_stop | max_steps


@dataclass
class TrainResult:
    state: TrainState
    output_dir: Path
    best: Path | None
    val_history: list[dict[str, float]] = field(default_factory=list)
    skipped_studies: int = 0       # studies dropped: no readable image
    skipped_views: int = 0         # unreadable views skipped

    @property
    def samples_per_second(self) -> float:
        return self.state.samples / self.state.seconds if self.state.seconds else 0.0


def selection_score(metrics: dict[str, float]) -> float:
    """The paper's model-selection score."""
    return 0.5 * metrics["BLEU_4"] + 0.5 * metrics["CIDEr"]


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float) -> LambdaLR:
    """Linear warm-up, then cosine from lr to min_ratio·lr at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return LambdaLR(optimizer, factor)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = output_dir / CHECKPOINTS
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith((".tmp", ".old"))
                  and (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def _tensorboard(directory: Path) -> Any:
    """A TensorBoard writer when the ``tensorboard`` package is installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory))


class CsvLog:
    """Append-only CSV (mirrored to TensorBoard when installed); on resume, rows past the
    checkpoint's step are dropped (they will be redone)."""

    def __init__(self, path: Path, keep_through_step: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        self.board = _tensorboard(path.parent / "tensorboard")
        if path.exists() and keep_through_step is not None:
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_through_step]
            if rows:
                self.fields = list(rows[0])
            with path.open("w", newline="", encoding="utf-8") as f:
                if self.fields:
                    w = csv.DictWriter(f, self.fields)
                    w.writeheader()
                    w.writerows(rows)
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        if self.board is not None:
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    self.board.add_scalar(f"{self.path.stem}/{key}", value, int(row["step"]))
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


class Trainer:
    def __init__(self, config: ExperimentConfig, resume: bool = True, progress: bool = True,
                 console: Console | None = None) -> None:
        self.config, self.progress = config, progress
        self.console = console or Console()
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        cuda = torch.cuda.is_available()
        bf16 = tc.precision == Precision.BF16 or (tc.precision == Precision.AUTO and cuda and torch.cuda.is_bf16_supported())
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no")
        self.out = Path(tc.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume_from = latest_checkpoint(self.out) if resume else None
        if self.resume_from is not None:
            check_compatible(read_config(self.resume_from), config, RESUMABLE_CHANGES, self.resume_from)
        elif not resume and (self.out / CHECKPOINTS).exists():
            shutil.rmtree(self.out / CHECKPOINTS)
        seed_everything(tc.seed)
        self.collator = StudyCollator()

    # ---- setup ----
    def _datasets(self) -> tuple[StudyDataset, StudyDataset | None]:
        dc = self.config.data
        prepare_images(dc, progress=self.progress)
        cache = self.out.parent / ".image_cache"
        train = StudyDataset(load_split(dc, "train"), dc, cache_dir=cache, progress=self.progress)
        val = None
        if self.config.train.validate:
            val = StudyDataset(load_split(dc, "val"), dc, cache_dir=cache, progress=self.progress)
        if len(train) == 0:
            raise ValueError(f"the train split of {dc.annotation_path} is empty")
        return train, val

    def _bundle(self, train: StudyDataset) -> ModelBundle:
        if self.resume_from is not None:
            tokenizer = read_tokenizer(self.resume_from, read_config(self.resume_from))
        else:
            tokenizer = load_tokenizer(self.config.model.llm, train.reports)
        bundle = build_model(self.config, tokenizer)
        if self.config.model.kg.mode == KGMode.PER_STUDY and bundle.model.provider is not None:
            # every label seed set of the training data, in one batched query up front
            bundle.model.provider.warm(train.label_seed_sets())
        return bundle

    # ---- the loop ----
    def run(self) -> TrainResult:
        train_ds, val_ds = self._datasets()
        bundle = self._bundle(train_ds)
        try:
            return self._run(bundle, train_ds, val_ds)
        finally:
            bundle.close()

    def _run(self, bundle: ModelBundle, train_ds: StudyDataset, val_ds: StudyDataset | None) -> TrainResult:
        cfg, tc, acc = self.config, self.config.train, self.accelerator
        model: R2GenKG = bundle.model
        saved_config = cfg
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        batches_per_epoch = math.ceil(len(train_ds) / tc.batch_size)
        total_steps = tc.epochs * math.ceil(batches_per_epoch / tc.grad_accum)
        scheduler = cosine_schedule(optimizer, tc.warmup_steps, total_steps, tc.min_lr / tc.lr)
        state, miner = TrainState(), None
        if self.resume_from is not None:
            state, miner = self._restore(model, optimizer, scheduler)
            self.console.print(f"resumed from {self.resume_from} (epoch {state.epoch}, step {state.step})")
        keep = state.step if self.resume_from is not None else None
        train_log, val_log = CsvLog(self.out / TRAIN_LOG, keep), CsvLog(self.out / VAL_LOG, keep)
        wrapped, optimizer = acc.prepare(model, optimizer)
        history: list[dict[str, float]] = []

        while state.epoch < tc.epochs and not state.stopped:
            teacher = state.epoch < cfg.model.kg.teacher_forcing_epochs
            if miner is None:
                miner = self._new_miner(model)
            loader = make_loader(train_ds, tc.batch_size, shuffle=True, seed=tc.seed, epoch=state.epoch,
                                 collator=self.collator, workers=cfg.data.workers, skip_batches=state.batch_in_epoch)
            bar = tqdm(total=batches_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{tc.epochs}",
                       unit="batch", disable=not self.progress or not acc.is_main_process)
            t0, window = time.perf_counter(), []
            for batch in loader:
                batch = batch.to(acc.device)
                boundary = (state.batch_in_epoch + 1) % tc.grad_accum == 0 or state.batch_in_epoch + 1 == batches_per_epoch
                with acc.autocast():
                    out = wrapped(batch.images, batch.view_mask, batch.study_ids, batch.labels, batch.reports,
                                  teacher_forcing=teacher)
                if not torch.isfinite(out.loss):
                    last = latest_checkpoint(self.out)
                    raise TrainingDiverged(
                        f"loss is {out.loss.item()} at epoch {state.epoch + 1}, step {state.step + 1} "
                        f"(lm {out.lm_loss.item():.4g}, classifier {out.classifier_loss.item():.4g}); "
                        f"stopped. Last good checkpoint: {last or 'none'}. Lower train.lr or check the data.")
                acc.backward(out.loss / tc.grad_accum)
                if miner is not None:
                    miner.add_batch(out.encoded.visual.float().cpu(), out.encoded.disease.attention.detach().float().cpu(),
                                    batch.labels.cpu(), batch.study_ids)
                state.batch_in_epoch += 1
                state.samples += len(batch)
                window.append(out.loss.item())
                bar.update(1)
                if not boundary:
                    continue
                if tc.max_grad_norm:
                    acc.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                bar.set_postfix(loss=f"{np.mean(window):.3f}")
                if state.step % tc.log_every == 0 and acc.is_main_process:
                    train_log.write({"step": state.step, "epoch": state.epoch + 1, "lr": scheduler.get_last_lr()[0],
                                     "loss": float(np.mean(window)), "lm_loss": out.lm_loss.item(),
                                     "classifier_loss": out.classifier_loss.item()})
                    window = []
                if tc.max_steps is not None and state.step >= tc.max_steps:
                    state.stopped = "max_steps"
                if tc.save_every and state.step % tc.save_every == 0 or state.stopped:
                    state.seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save(model, saved_config, optimizer, scheduler, state, miner)
                if state.stopped:
                    break
            bar.close()
            state.seconds += time.perf_counter() - t0
            if state.stopped:
                break
            # epoch end: the bank mined during this epoch serves the next one (and inference)
            if miner is not None:
                model.bank = miner.build()
                miner = None
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if val_ds is not None:
                metrics = self._validate(model, val_ds, state)
                history.append(metrics)
                if acc.is_main_process:
                    val_log.write(metrics)
                improved = metrics["score"] > state.best_score
                if improved:
                    state.best_score, state.best_epoch, state.bad_epochs = metrics["score"], state.epoch, 0
                    if acc.is_main_process:
                        save_checkpoint(self.out / BEST, model, saved_config)
                else:
                    state.bad_epochs += 1
                if tc.patience and state.bad_epochs >= tc.patience:
                    state.stopped = "early_stop"
                flag = [state.stopped]
                broadcast_object_list(flag)
                state.stopped = flag[0]
            elif acc.is_main_process:
                save_checkpoint(self.out / BEST, model, saved_config)  # no validation: the last epoch
            self._save(model, saved_config, optimizer, scheduler, state, None)
        state.stopped = state.stopped or "epochs"
        best = self.out / BEST if (self.out / BEST).is_dir() else None
        return TrainResult(state, self.out, best, history, self.collator.skipped_studies,
                           self.collator.skipped_views)

    def _new_miner(self, model: R2GenKG) -> DiseaseTokenBank | None:
        dt = self.config.model.disease_tokens
        if not dt.enabled:
            return None
        return DiseaseTokenBank(BankConfig(per_image=dt.per_image, per_disease=dt.per_disease),
                                IndexConfig(dim=model.vision.out_dim, kind=dt.index))

    def _validate(self, model: R2GenKG, val_ds: StudyDataset, state: TrainState) -> dict[str, float]:
        cfg = self.config
        results = list(predict(model, val_ds, cfg.generation, cfg.train.batch_size, self.accelerator.device,
                               progress=self.progress, desc="validate"))
        refs = {r.study_id: r.report for r in val_ds.records}
        scores = compute_scores([r.report for r in results], [refs[r.study_id] for r in results],
                                CleanStyle(cfg.data.clean_style), meteor=False, clinical=True)
        flat = scores.flat()
        labels = dict(zip((r.study_id for r in val_ds.records), val_ds.labels.numpy()))
        aurocs = auroc_per_observation(np.array([list(r.probabilities.values()) for r in results]),
                                       np.stack([labels[r.study_id] for r in results]))
        known = [v for v in aurocs.values() if v is not None]
        metrics = {"step": state.step, "epoch": state.epoch, "score": selection_score(flat),
                   **{k: flat[k] for k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr", "CE14_micro_f1",
                                           "CE14_macro_f1", "CE5_micro_f1") if k in flat},
                   "classifier_mean_auroc": float(np.mean(known)) if known else float("nan")}
        self.console.print("validation " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in metrics.items()), highlight=False)
        return metrics

    def _save(self, model: R2GenKG, config: ExperimentConfig, optimizer: Any, scheduler: LambdaLR,
              state: TrainState, miner: DiseaseTokenBank | None) -> None:
        if not self.accelerator.is_main_process:
            return
        trainer_state = {"state": asdict(state), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                         "miner": pickle.dumps(miner) if miner is not None else None,
                         "collator": (self.collator.skipped_studies, self.collator.skipped_views)}
        save_checkpoint(self.out / CHECKPOINTS / f"step-{state.step:07d}", model, config, trainer_state)
        old = sorted(p for p in (self.out / CHECKPOINTS).glob("step-*") if p.is_dir() and p.suffix == "")
        for path in old[:-self.config.train.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)

    def _restore(self, model: R2GenKG, optimizer: Any, scheduler: LambdaLR) -> tuple[TrainState, DiseaseTokenBank | None]:
        src = self.resume_from
        assert src is not None
        load_weights(model, src)
        blob = torch.load(src / STATE_FILE, map_location="cpu", weights_only=False)
        try:
            optimizer.load_state_dict(blob["optimizer"])
            scheduler.load_state_dict(blob["scheduler"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{src}: optimizer state does not fit this model: {err}") from err
        _set_rng_state(blob["rng"])
        self.collator.skipped_studies, self.collator.skipped_views = blob.get("collator", (0, 0))
        miner = pickle.loads(blob["miner"]) if blob.get("miner") else None
        state = TrainState(**blob["state"])
        state.stopped = ""   # a max_steps stop is not a reason to stay stopped
        return state, miner


def train(config: ExperimentConfig, resume: bool = True, progress: bool = True,
          console: Console | None = None) -> TrainResult:
    return Trainer(config, resume, progress, console).run()
