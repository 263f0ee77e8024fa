"""The training loop: one plain loop on ``accelerate`` (CPU, one GPU, or DDP via ``accelerate launch``).

Per epoch: micro-batches → loss (LM + classifier) → optimizer step every ``grad_accum`` → the
disease-token bank is mined from the same forward passes (attention maps of the disease
queries) and swapped in at the epoch's end → validation: the per-observation decision thresholds
are fit on the val probabilities, then the one ``generate()`` writes the val reports → the
selection score (``train.selection``: ``clinical`` by default, the paper's ``paper``) keeps the
best epoch and drives early stopping.

Exact resume rests on accelerate: ``save_state`` / ``load_state`` keep the optimizer, scheduler,
RNG states and the registered loop state (counters, the half-mined bank, skip counts);
``ProjectConfiguration(total_limit=…)`` rotates step checkpoints; ``skip_first_batches`` resumes
mid-epoch; ``log`` feeds the CSV logs (and TensorBoard when it is installed). A step checkpoint
is also a complete model checkpoint (generator.checkpoint's files, written by a save hook).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from rich.console import Console
from tqdm import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from cxr.datasets import load_split, prepare_images
from cxr.home import in_home
from cxr.observations import State, UncertainPolicy, positive_mask
from cxr.sentences import LabelledReports
from generator.checkpoint import (
    CheckpointError,
    ModelBundle,
    build_model,
    check_fingerprint,
    load_weights,
    read_config_data,
    read_fingerprint,
    read_tokenizer,
    save_model,
    write_model_files,
)
from generator.config import KGMode
from generator.config_io import diff, from_dict, to_dict
from generator.llm import load_tokenizer
from generator.model import R2GenKG
from graphdb.store import StoreConfig
from retrieval.index import IndexConfig
from retrieval.tokens import BankConfig, DiseaseTokenBank
from training.calibrate import fit_on_split
from training.clock import RunClock
from training.config import RESUMABLE_CHANGES, ExperimentConfig, Precision, selection_weights
from training.data import StudyCollator, StudyDataset, make_loader
from training.evaluate import compute_scores
from training.logs import csv_trackers
from training.predict import predict

log = logging.getLogger(__name__)

CHECKPOINTS, BEST = "checkpoints", "best"
STEP_PREFIX = "checkpoint_"        # accelerate's automatic naming: checkpoints/checkpoint_<step>
COMPLETE = "trainer_state.json"    # written last: marks a step checkpoint as whole


class TrainingDiverged(RuntimeError):
    pass


def warmup_weights(labels: torch.Tensor) -> torch.Tensor:
    """Sampling weights of the decoder warm-up, one per report: 1/sqrt(base rate) of the rarest
    finding it states (positive or uncertain; No Finding's for a report that states none), so the
    rare findings' sentences are seen often enough to be learnt from their text alone."""
    stated = positive_mask(labels, UncertainPolicy.ONES)                    # (N, 14)
    rate = stated.float().mean(0).clamp_min(1.0 / len(labels))              # (14,)
    per_finding = torch.where(stated, rate.rsqrt(), torch.zeros_like(rate))
    return per_finding.max(1).values.clamp_min(float(rate[0].rsqrt()))


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
    warmed_up: bool = False        # the decoder warm-up (train.decoder_warmup_epochs) is done

    # accelerate's register_for_checkpointing protocol
    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            setattr(self, f.name, state.get(f.name, f.default))   # fields added later keep their default


class Slot:
    """A registered checkpoint object holding one picklable value (the half-mined bank)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


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


def selection_score(metrics: dict[str, float], selection: str = "paper") -> float:
    """The model-selection score: ``selection``'s weighted sum of the validation metrics."""
    weights = selection_weights(selection)
    missing = [k for k in weights if k not in metrics]
    if missing:
        raise ValueError(f"selection {selection!r} needs {missing}, which validation did not compute")
    return float(sum(w * metrics[k] for k, w in weights.items()))


def step_checkpoints(output_dir: Path) -> list[Path]:
    """Whole step checkpoints, oldest first."""
    root = output_dir / CHECKPOINTS
    found = [p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and (p / COMPLETE).is_file()] \
        if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.removeprefix(STEP_PREFIX)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = step_checkpoints(output_dir)
    return done[-1] if done else None


def _drop_incomplete(output_dir: Path) -> None:
    """A save killed halfway leaves a step folder without its COMPLETE mark: remove it, or the
    same step's next save would find its name taken."""
    root = output_dir / CHECKPOINTS
    for path in root.glob(f"{STEP_PREFIX}*") if root.is_dir() else []:
        if not (path / COMPLETE).is_file():
            log.warning("removing the incomplete checkpoint %s (a save was interrupted)", path)
            shutil.rmtree(path, ignore_errors=True)


def _refuse_old_layout(output_dir: Path) -> None:
    """Step checkpoints of r2genkg before accelerate's state (``step-NNNNNNN``) cannot be resumed:
    say so rather than start over on top of them."""
    old = sorted((output_dir / CHECKPOINTS).glob("step-*")) if (output_dir / CHECKPOINTS).is_dir() else []
    if old:
        raise CheckpointError(f"{output_dir / CHECKPOINTS} holds checkpoints of an older r2genkg ({old[-1].name}, …) "
                              "that cannot be resumed. Their best/ still loads for test, run_batch and serve; "
                              "to train again, pass --no-resume (it deletes them) or another train.output_dir.")


def check_resumable(saved: dict[str, Any], requested: ExperimentConfig, source: Path) -> None:
    """Raise naming every field that differs, except those a resume may change."""
    diffs = [d for d in diff(saved, to_dict(requested)) if not d.startswith(RESUMABLE_CHANGES)]
    if diffs:
        raise CheckpointError(f"{source}: the checkpoint's config differs from the requested one: "
                              + "; ".join(diffs[:8]))


class Trainer:
    def __init__(self, config: ExperimentConfig, store: StoreConfig, resume: bool = True, progress: bool = True,
                 console: Console | None = None) -> None:
        self.config, self.store, self.progress = config, store, progress
        self.console = console or Console()
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.out = in_home(tc.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        cuda = torch.cuda.is_available()
        bf16 = tc.precision == Precision.BF16 or (tc.precision == Precision.AUTO and cuda and torch.cuda.is_bf16_supported())
        project = ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tensorboard"),
                                       automatic_checkpoint_naming=True, total_limit=tc.keep_checkpoints)
        if resume:
            _refuse_old_layout(self.out)
            _drop_incomplete(self.out)
        self.resume_from = latest_checkpoint(self.out) if resume else None
        if self.resume_from is not None:
            check_resumable(self._saved_experiment(self.resume_from), config, self.resume_from)
        elif (self.out / CHECKPOINTS).exists():   # --no-resume, or nothing complete to resume from
            shutil.rmtree(self.out / CHECKPOINTS)
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if bf16 else "no",
                                       project_config=project,
                                       log_with=csv_trackers(self.out, keep_through_step=self._resume_step()))
        self.accelerator.init_trackers(config.name)
        set_seed(tc.seed)   # python, numpy and torch, as before the move to accelerate
        self.collator = StudyCollator()

    def _saved_experiment(self, checkpoint: Path) -> dict[str, Any]:
        data = read_config_data(checkpoint)
        if "train" not in data:
            raise CheckpointError(f"{checkpoint}: not a training checkpoint (no train settings); "
                                  "start afresh with --no-resume")
        return to_dict(from_dict(ExperimentConfig, data))

    def _resume_step(self) -> int | None:
        return int(self.resume_from.name.removeprefix(STEP_PREFIX)) if self.resume_from is not None else None

    # ---- setup ----
    def _datasets(self) -> tuple[StudyDataset, StudyDataset | None]:
        dc = self.config.data
        prepare_images(dc, progress=self.progress)
        cache = self.out.parent / ".image_cache"
        train = StudyDataset(load_split(dc, "train"), dc, cache_dir=cache, progress=self.progress,
                             sentence_order=self.config.train.sentence_order)
        val = None
        if self.config.train.validate:
            val = StudyDataset(load_split(dc, "val"), dc, cache_dir=cache, progress=self.progress)
        if len(train) == 0:
            raise ValueError(f"the train split of {dc.annotation_path} is empty")
        return train, val

    def _bundle(self, train: StudyDataset) -> ModelBundle:
        if self.resume_from is not None:
            # the resume check made sure the model config is the checkpoint's
            tokenizer = read_tokenizer(self.resume_from, self.config)
        else:
            tokenizer = load_tokenizer(self.config.model.llm, train.reports)
        bundle = build_model(self.config, tokenizer, self.store)
        bundle.model.qformer.set_prior(train.labels)   # the class-imbalance policies read the base rates
        if self.config.model.kg.mode == KGMode.PER_STUDY and bundle.model.provider is not None:
            # every label seed set of the training data, in one batched query up front
            bundle.model.provider.warm(train.label_seed_sets(self.config.model.qformer.uncertain_policy))
        return bundle

    # ---- the loop ----
    def run(self) -> TrainResult:
        train_ds, val_ds = self._datasets()
        bundle = self._bundle(train_ds)
        try:
            return self._run(bundle, train_ds, val_ds)
        finally:
            bundle.close()
            self.accelerator.end_training()

    def _register(self, bundle: ModelBundle, state: TrainState, miner: Slot) -> None:
        """The model travels in generator.checkpoint's format (hooks); the rest is accelerate's."""
        acc, model = self.accelerator, bundle.model

        def save_model_files(models: list[Any], weights: list[Any], output_dir: str) -> None:
            weights.clear()   # accelerate must not write its own copy of the model
            if acc.is_main_process:
                write_model_files(Path(output_dir), model, self.config, bundle.fingerprint)

        def load_model_files(models: list[Any], input_dir: str) -> None:
            models.clear()
            load_weights(model, Path(input_dir))

        acc.register_save_state_pre_hook(save_model_files)
        acc.register_load_state_pre_hook(load_model_files)
        acc.register_for_checkpointing(state, miner, self.collator)

    def _run(self, bundle: ModelBundle, train_ds: StudyDataset, val_ds: StudyDataset | None) -> TrainResult:
        cfg, tc, acc = self.config, self.config.train, self.accelerator
        model: R2GenKG = bundle.model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        batches_per_epoch = math.ceil(len(train_ds) / tc.batch_size)
        total_steps = tc.epochs * math.ceil(batches_per_epoch / tc.grad_accum)
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, tc.warmup_steps, total_steps,
                                                                min_lr=tc.min_lr)
        state, miner = TrainState(), Slot()
        wrapped, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
        self._register(bundle, state, miner)
        if self.resume_from is not None:
            check_fingerprint(read_fingerprint(self.resume_from), bundle, self.resume_from)
            try:
                acc.load_state(str(self.resume_from))
            except (KeyError, ValueError, RuntimeError) as err:
                raise CheckpointError(f"{self.resume_from}: the training state does not fit this run: {err}") from err
            state.stopped = ""   # a max_steps stop is not a reason to stay stopped
            self.console.print(f"resumed from {self.resume_from} (epoch {state.epoch}, step {state.step})")
        history: list[dict[str, float]] = []
        if tc.decoder_warmup_epochs and not state.warmed_up and state.step == 0:
            t0 = time.perf_counter()
            self._warm_decoder(model, train_ds)
            state.seconds += time.perf_counter() - t0   # training time, like the epochs'
            state.warmed_up = True
            self._save_step(state)

        clock = RunClock(tc.epochs, first_epoch=state.epoch)   # the whole run; the bars below are per epoch
        while state.epoch < tc.epochs and not state.stopped:
            teacher = state.epoch < cfg.model.kg.teacher_forcing_epochs
            decided_share = tc.decided_share(state.epoch) if cfg.model.diagnosis_prompt else 0.0
            if miner.value is None:
                miner.value = self._new_miner(model)
            loader = make_loader(train_ds, tc.batch_size, shuffle=True, seed=tc.seed, epoch=state.epoch,
                                 collator=self.collator, workers=cfg.data.workers)
            if state.batch_in_epoch:
                loader = acc.skip_first_batches(loader, state.batch_in_epoch)
            bar = tqdm(total=batches_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{tc.epochs}",
                       unit="batch", disable=not self.progress or not acc.is_main_process)
            t0, window = time.perf_counter(), []
            for batch in loader:
                batch = batch.to(acc.device)
                boundary = (state.batch_in_epoch + 1) % tc.grad_accum == 0 or state.batch_in_epoch + 1 == batches_per_epoch
                use_decided = torch.rand(len(batch)) < decided_share if decided_share else None
                with acc.autocast():
                    out = wrapped(batch.images, batch.view_mask, batch.study_ids, batch.labels, batch.reports,
                                  teacher_forcing=teacher, use_decided=use_decided)
                if not torch.isfinite(out.loss):
                    last = latest_checkpoint(self.out)
                    raise TrainingDiverged(
                        f"loss is {out.loss.item()} at epoch {state.epoch + 1}, step {state.step + 1} "
                        f"(lm {out.lm_loss.item():.4g}, classifier {out.classifier_loss.item():.4g}); "
                        f"stopped. Last good checkpoint: {last or 'none'}. Lower train.lr or check the data.")
                acc.backward(out.loss / tc.grad_accum)
                if miner.value is not None:
                    miner.value.add_batch(out.encoded.visual.float().cpu(),
                                          out.encoded.disease.attention.detach().float().cpu(),
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
                if state.step % tc.log_every == 0:
                    acc.log({"train/epoch": state.epoch + 1, "train/lr": scheduler.get_last_lr()[0],
                             "train/loss": float(np.mean(window)), "train/lm_loss": out.lm_loss.item(),
                             "train/classifier_loss": out.classifier_loss.item()}, step=state.step)
                    window = []
                if tc.max_steps is not None and state.step >= tc.max_steps:
                    state.stopped = "max_steps"
                if tc.save_every and state.step % tc.save_every == 0 or state.stopped:
                    state.seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._save_step(state)
                if state.stopped:
                    break
            bar.close()
            state.seconds += time.perf_counter() - t0
            if state.stopped:
                break
            # epoch end: the bank mined during this epoch serves the next one (and inference)
            if miner.value is not None:
                model.bank = miner.value.build()
                miner.value = None
                sources = set(model.bank.meta.study_ids.tolist())     # what retrieved tokens' evidence quotes
                model.bank.reports = {r.study_id: r.report for r in train_ds.records if r.study_id in sources}
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if val_ds is not None:
                metrics = self._validate(model, val_ds, state)
                history.append(metrics)
                acc.log({f"val/{k}": v for k, v in metrics.items() if k != "step"}, step=state.step)
                if metrics["score"] > state.best_score:
                    state.best_score, state.best_epoch, state.bad_epochs = metrics["score"], state.epoch, 0
                    if acc.is_main_process:
                        save_model(self.out / BEST, model, cfg, bundle.fingerprint)
                else:
                    state.bad_epochs += 1
                if tc.patience and state.bad_epochs >= tc.patience:
                    state.stopped = "early_stop"
                flag = [state.stopped]
                broadcast_object_list(flag)
                state.stopped = flag[0]
            elif acc.is_main_process:
                save_model(self.out / BEST, model, cfg, bundle.fingerprint)  # no validation: the last epoch
            self._save_step(state)
            if acc.is_main_process:
                self.console.print(clock.after_epoch(state.epoch, state.stopped), highlight=False, soft_wrap=True)
        state.stopped = state.stopped or "epochs"
        best = self.out / BEST if (self.out / BEST).is_dir() else None
        return TrainResult(state, self.out, best, history, self.collator.skipped_studies,
                           self.collator.skipped_views)

    def _warm_decoder(self, model: R2GenKG, train_ds: StudyDataset) -> None:
        """train.decoder_warmup_epochs over the train reports alone (R2GenKG.text_loss), drawn by
        ``warmup_weights`` (with ``train.warmup_finding_dropout``: variants of them that leave some
        findings out, ``cxr.sentences.LabelledReports.sample``), with an optimizer of its own, so the joint training's optimizer and
        schedule start as they would without."""
        tc, acc = self.config.train, self.accelerator
        params = [p for p in model.llm.parameters() if p.requires_grad]
        if not params:
            return
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        generator = torch.Generator().manual_seed(tc.seed)
        n, size = len(train_ds), tc.batch_size
        weights = warmup_weights(train_ds.labels)
        variants = LabelledReports(train_ds.reports) if tc.warmup_finding_dropout else None
        rng = np.random.default_rng(tc.seed)
        bar = tqdm(total=tc.decoder_warmup_epochs * math.ceil(n / size), desc="decoder warm-up", unit="batch",
                   disable=not self.progress or not acc.is_main_process)
        model.train()
        for _ in range(tc.decoder_warmup_epochs):
            order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
            for start in range(0, n, size):
                idx = order[start:start + size]
                labels, reports = train_ds.labels[idx], [train_ds.reports[i] for i in idx]
                if variants is not None:   # some findings' sentences left out, labels to match
                    reports, rows = zip(*(variants.sample(i, tc.warmup_finding_dropout, rng) for i in idx))
                    labels = torch.from_numpy(np.stack(rows)).to(labels.dtype)
                loss = model.text_loss(labels.to(acc.device), list(reports))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if acc.num_processes > 1:   # text_loss is not forward(): average the gradients by hand
                    for p in params:
                        if p.grad is not None:
                            p.grad = acc.reduce(p.grad, reduction="mean")
                if tc.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()

    def _save_step(self, state: TrainState) -> None:
        """checkpoints/checkpoint_<step>: the model files, accelerate's state, then the COMPLETE mark."""
        acc = self.accelerator
        acc.project_configuration.iteration = state.step   # accelerate names the folder by it
        target = self.out / CHECKPOINTS / f"{STEP_PREFIX}{state.step}"
        if target.exists():   # a mid-epoch save at the step an epoch ends: the epoch-end state replaces it
            shutil.rmtree(target)
        acc.save_state()
        if acc.is_main_process:
            (target / COMPLETE).write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")

    def _new_miner(self, model: R2GenKG) -> DiseaseTokenBank | None:
        dt = self.config.model.disease_tokens
        if not dt.enabled:
            return None
        return DiseaseTokenBank(BankConfig(per_image=dt.per_image, per_disease=dt.per_disease),
                                IndexConfig(dim=model.vision.out_dim, kind=dt.index))

    def _fit_thresholds(self, model: R2GenKG, val_ds: StudyDataset) -> None:
        """The classifier over val, then F1-optimal thresholds per observation: every decision the
        val reports (and a checkpoint saved now) make uses them."""
        tc = self.config.train
        model.thresholds = fit_on_split(model, val_ds, "val", tc.thresholds, tc.validation_batch_size,
                                        self.accelerator.device)

    def _validate(self, model: R2GenKG, val_ds: StudyDataset, state: TrainState) -> dict[str, float]:
        cfg = self.config
        self._fit_thresholds(model, val_ds)
        # the greedy coverage passes only, whatever the config asks: sampled ones would add
        # minutes to every validation (docs/model.md); validation reads only the reports
        settings = replace(cfg.generation, cover_samples=0, evidence=False)
        results = list(predict(model, val_ds, settings, cfg.train.validation_batch_size, self.accelerator.device,
                               progress=self.progress, desc="validate"))
        refs = {r.study_id: r.report for r in val_ds.records}
        labels = dict(zip((r.study_id for r in val_ds.records), val_ds.labels.numpy()))
        scores = compute_scores([r.report for r in results], [refs[r.study_id] for r in results],
                                cfg.data.clean_style, meteor=False, clinical=True,
                                probabilities=np.array([list(r.probabilities.values()) for r in results]),
                                reference_labels=np.stack([labels[r.study_id] for r in results]),
                                decisions=np.array([[s == State.POSITIVE.value for s in r.states.values()]
                                                    for r in results]), check=False)
        flat = scores.flat()
        metrics = {"step": state.step, "epoch": state.epoch, "score": selection_score(flat, cfg.train.selection),
                   **{k: flat[k] for k in ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr", "CE14_micro_f1",
                                           "CE14_macro_f1", "CE5_micro_f1", "consistency_f1", "repeated_pct")
                      if k in flat},
                   "classifier_mean_auroc": scores.mean_auroc if scores.mean_auroc is not None else float("nan")}
        self.console.print("validation " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in metrics.items()), highlight=False)
        return metrics


def train(config: ExperimentConfig, store: StoreConfig | None = None, resume: bool = True, progress: bool = True,
          console: Console | None = None) -> TrainResult:
    """Train ``config``; the graph comes from ``store`` (default: ``StoreConfig.from_env()``)."""
    return Trainer(config, store or StoreConfig.from_env(), resume, progress, console).run()
