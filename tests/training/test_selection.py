"""Model selection and the diagnosis schedule: ``train.selection`` (a preset or metric:weight,…)
validated when the config is built and turned into a weighted sum by ``selection_score``; the
share of decided states in training prompts, 0 before ``diagnosis_from_epoch`` and rising
linearly to ``diagnosis_final_share`` in the last epoch."""
from __future__ import annotations

import pytest

from generator.config_io import ConfigError
from tests.generator.conftest import REPO
from training.config import (
    SELECTABLE,
    SELECTION_PRESETS,
    TrainConfig,
    load_experiment,
    selection_weights,
)
from training.loop import selection_score

METRICS = {"BLEU_1": 0.4, "BLEU_2": 0.3, "BLEU_3": 0.2, "BLEU_4": 0.1, "ROUGE_L": 0.35, "CIDEr": 0.6,
           "CE14_micro_f1": 0.5, "CE14_macro_f1": 0.2, "CE5_micro_f1": 0.45, "CE5_macro_f1": 0.3,
           "consistency_f1": 0.7, "classifier_mean_auroc": 0.8, "repeated_pct": 12.5}


# ---- selection_weights --------------------------------------------------------------------------
def test_presets():
    assert selection_weights("paper") == {"BLEU_4": 0.5, "CIDEr": 0.5}
    clinical = selection_weights("clinical")
    assert set(clinical) == {"BLEU_4", "CIDEr", "CE14_macro_f1", "CE5_micro_f1"}
    assert sum(clinical.values()) == pytest.approx(1.0)
    assert set(SELECTION_PRESETS) == {"paper", "clinical"}
    for weights in SELECTION_PRESETS.values():
        assert set(weights) <= set(SELECTABLE)


@pytest.mark.parametrize("spec, weights", [
    ("CE14_macro_f1:1,BLEU_4:0.5", {"CE14_macro_f1": 1.0, "BLEU_4": 0.5}),
    ("CIDEr:2", {"CIDEr": 2.0}),
    (" BLEU_4 : 0.25 , consistency_f1:1e-1", {"BLEU_4": 0.25, "consistency_f1": 0.1}),
    ("classifier_mean_auroc:1", {"classifier_mean_auroc": 1.0}),
])
def test_metric_weight_lists(spec, weights):
    assert selection_weights(spec) == pytest.approx(weights)
    assert all(isinstance(w, float) for w in selection_weights(spec).values())


@pytest.mark.parametrize("spec, named", [
    ("BLEU_5:1", "'BLEU_5'"),
    ("bleu_4:1", "'bleu_4'"),
    ("paper,CIDEr:1", "'paper'"),
    ("repeated_pct:1", "'repeated_pct'"),       # reported, but not something to maximise
    ("", "''"),
])
def test_unknown_metrics_are_named(spec, named):
    with pytest.raises(ValueError, match=rf"{named} is neither a preset \(paper, clinical\) nor a metric"):
        selection_weights(spec)


@pytest.mark.parametrize("spec, named", [
    ("BLEU_4:high", "'BLEU_4'"),
    ("CIDEr:1,BLEU_4", "'BLEU_4'"),
    ("CE14_macro_f1:", "'CE14_macro_f1'"),
])
def test_weights_that_are_not_numbers_are_named(spec, named):
    with pytest.raises(ValueError, match=rf"the weight of {named} is not a number"):
        selection_weights(spec)


def test_the_error_repeats_the_whole_spec():
    with pytest.raises(ValueError, match=r"TrainConfig.selection='CIDEr:1,nope:2'"):
        selection_weights("CIDEr:1,nope:2")


# ---- TrainConfig --------------------------------------------------------------------------------
def test_train_config_validates_selection():
    assert TrainConfig().selection == "clinical"
    assert TrainConfig(selection="paper").selection == "paper"
    assert TrainConfig(selection="CE14_macro_f1:1,BLEU_4:0.5").selection == "CE14_macro_f1:1,BLEU_4:0.5"
    with pytest.raises(ValueError, match="'METEORR'"):
        TrainConfig(selection="METEORR:1")
    with pytest.raises(ValueError, match="not a number"):
        TrainConfig(selection="CIDEr:x")


def test_selection_and_schedule_from_a_config_file(tmp_path):
    debug = REPO / "configs" / "debug.yaml"
    cfg = load_experiment(debug, ["train.selection=paper", "train.diagnosis_from_epoch=2",
                                  "train.diagnosis_final_share=1.0"])
    assert (cfg.train.selection, cfg.train.diagnosis_from_epoch, cfg.train.diagnosis_final_share) == ("paper", 2, 1.0)
    cfg = load_experiment(debug, ["train.thresholds.min_f1=0.4", "train.sentence_order=findings_first"])
    assert cfg.train.thresholds.min_f1 == 0.4 and cfg.train.sentence_order.value == "findings_first"
    with pytest.raises(ConfigError, match=r"min_f1 must be in \[0, 1\], got 1.5"):
        load_experiment(debug, ["train.thresholds.min_f1=1.5"])
    with pytest.raises(ConfigError, match=r"'BLEU_9' is neither a preset"):
        load_experiment(debug, ["train.selection=BLEU_9:1"])


@pytest.mark.parametrize("kwargs, message", [
    ({"diagnosis_final_share": 1.5}, r"diagnosis_final_share must be in \[0, 1\], got 1.5"),
    ({"diagnosis_final_share": -0.1}, r"diagnosis_final_share must be in \[0, 1\], got -0.1"),
    ({"diagnosis_from_epoch": -1}, r"diagnosis_from_epoch must be ≥ 0, got -1"),
    ({"warmup_finding_dropout": 1.0}, r"warmup_finding_dropout must be in \[0, 1\), got 1.0"),
    ({"sentence_order": "sideways"}, r"'sideways' is not a valid SentenceOrder"),
])
def test_bad_schedules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


# ---- TrainConfig.decided_share ------------------------------------------------------------------
def test_decided_share_rises_linearly_to_the_final_share():
    tc = TrainConfig(epochs=5, diagnosis_from_epoch=1, diagnosis_final_share=0.5)
    shares = [tc.decided_share(e) for e in range(5)]
    assert shares == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert shares[-1] == 0.5                                  # reaches it exactly in the last epoch


def test_decided_share_defaults_and_edges():
    default = TrainConfig()
    assert (default.diagnosis_from_epoch, default.diagnosis_final_share) == (2, 0.25)
    assert default.decided_share(0) == default.decided_share(1) == 0.0
    assert default.decided_share(default.epochs - 1) == pytest.approx(0.25)
    # from epoch 0: the first epoch already has some decided prompts
    tc = TrainConfig(epochs=4, diagnosis_from_epoch=0, diagnosis_final_share=1.0)
    assert [tc.decided_share(e) for e in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # a single epoch after the start: straight to the final share
    tc = TrainConfig(epochs=3, diagnosis_from_epoch=2, diagnosis_final_share=0.8)
    assert [tc.decided_share(e) for e in range(3)] == pytest.approx([0.0, 0.0, 0.8])
    # share 0: never
    tc = TrainConfig(epochs=6, diagnosis_final_share=0.0)
    assert all(tc.decided_share(e) == 0.0 for e in range(6))
    # monotone
    tc = TrainConfig(epochs=15, diagnosis_from_epoch=3, diagnosis_final_share=0.7)
    shares = [tc.decided_share(e) for e in range(15)]
    assert shares == sorted(shares) and all(0.0 <= s <= 0.7 + 1e-12 for s in shares)


@pytest.mark.parametrize("epochs, start", [(1, 1), (3, 3), (2, 5)])
def test_no_decided_prompts_when_the_run_ends_before_the_schedule_starts(epochs, start):
    tc = TrainConfig(epochs=epochs, diagnosis_from_epoch=start, diagnosis_final_share=1.0)
    assert all(tc.decided_share(e) == 0.0 for e in range(max(epochs, start) + 2))


# ---- selection_score ----------------------------------------------------------------------------
def test_selection_score_is_the_weighted_sum():
    assert selection_score(METRICS) == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)           # "paper" by default
    assert selection_score(METRICS, "paper") == pytest.approx(0.35)
    assert selection_score(METRICS, "clinical") == pytest.approx(0.25 * (0.1 + 0.6 + 0.2 + 0.45))
    assert selection_score(METRICS, "CE14_macro_f1:1,BLEU_4:0.5") == pytest.approx(0.2 + 0.05)
    assert selection_score(METRICS, "consistency_f1:2") == pytest.approx(1.4)
    assert isinstance(selection_score(METRICS, "paper"), float)


def test_selection_prefers_what_it_weights():
    fluent = METRICS | {"BLEU_4": 0.2, "CIDEr": 0.9, "CE14_macro_f1": 0.1, "CE5_micro_f1": 0.1}
    clinical = METRICS | {"BLEU_4": 0.15, "CIDEr": 0.7, "CE14_macro_f1": 0.4, "CE5_micro_f1": 0.6}
    assert selection_score(fluent, "paper") > selection_score(clinical, "paper")
    assert selection_score(clinical, "clinical") > selection_score(fluent, "clinical")


def test_a_metric_validation_did_not_compute_is_named():
    without_ce = {k: v for k, v in METRICS.items() if not k.startswith("CE")}
    with pytest.raises(ValueError, match=r"selection 'clinical' needs \['CE14_macro_f1', 'CE5_micro_f1'\]"):
        selection_score(without_ce, "clinical")
    with pytest.raises(ValueError, match=r"needs \['consistency_f1'\]"):
        selection_score({k: v for k, v in METRICS.items() if k != "consistency_f1"}, "consistency_f1:1")
    with pytest.raises(ValueError, match="neither a preset"):
        selection_score(METRICS, "nope")


def test_presets_are_not_shared_and_bad_weights_are_named():
    from training.config import SELECTION_PRESETS

    selection_weights("paper")["BLEU_4"] = 9.0
    assert SELECTION_PRESETS["paper"]["BLEU_4"] == 0.5
    with pytest.raises(ValueError, match="'BLEU_4' is given twice"):
        selection_weights("BLEU_4:1,BLEU_4:2")
    with pytest.raises(ValueError, match="not a finite one"):
        selection_weights("BLEU_4:nan")
