"""NLG metrics: our R2Gen-convention wrapper equals pycocoevalcap's scorers on the same inputs."""

from __future__ import annotations

import json

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from cxr.clean import CleanStyle, clean_report
from training.metrics.nlg import NLG_KEYS, NLGScorer, nlg_scores, normalize_report


@pytest.fixture(scope="module")
def iu_pairs(iu_annotation):
    """20 real IU test references, each "predicted" by a different real report."""
    test = json.loads(iu_annotation.read_text())["test"]
    return [t["report"] for t in test[20:40]], [t["report"] for t in test[:20]]  # preds, refs


def direct_inputs(preds, refs):
    gts = {i: [normalize_report(r, CleanStyle.IU_XRAY)] for i, r in enumerate(refs)}
    res = {i: [normalize_report(p, CleanStyle.IU_XRAY)] for i, p in enumerate(preds)}
    return gts, res


def test_normalize_is_r2gen_decode_of_cleaned_text():
    raw = "1. The heart is normal.  2. No effusion..  XXXX/CT shows  nodule."
    cleaned = clean_report(raw, CleanStyle.IU_XRAY)
    assert normalize_report(raw, CleanStyle.IU_XRAY) == " ".join(cleaned.split())
    assert "  " not in normalize_report(raw, CleanStyle.IU_XRAY)
    assert normalize_report(" a  b .\n", None) == "a b ."  # style None: only whitespace


def test_bleu_rouge_cider_equal_pycocoevalcap(iu_pairs):
    preds, refs = iu_pairs
    ours = nlg_scores(preds, refs, CleanStyle.IU_XRAY, meteor=False)
    gts, res = direct_inputs(preds, refs)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours.bleu_1, ours.bleu_2, ours.bleu_3, ours.bleu_4] == bleu
    assert ours.rouge_l == Rouge().compute_score(gts, res)[0]
    assert ours.cider == Cider().compute_score(gts, res)[0]
    assert ours.meteor is None
    assert 0.1 < ours.bleu_1 < 0.9 and ours.cider > 0  # different real reports: non-trivial


@pytest.mark.slow
def test_all_metrics_with_meteor_equal_pycocoevalcap(iu_pairs):
    preds, refs = iu_pairs
    with NLGScorer(CleanStyle.IU_XRAY) as scorer:  # one JVM, reused
        ours = scorer.score(preds, refs).to_dict()
        again = scorer.score(refs, refs)
    assert again.meteor > 0.95 and again.bleu_4 == pytest.approx(1.0, abs=1e-6)
    gts, res = direct_inputs(preds, refs)
    direct = dict(zip(NLG_KEYS[:4], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    direct["METEOR"] = Meteor().compute_score(gts, res)[0]
    direct["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    direct["CIDEr"] = Cider().compute_score(gts, res)[0]
    assert ours == direct
    assert 0.05 < ours["METEOR"] < 0.9


def test_identical_reports_score_one(iu_pairs):
    _, refs = iu_pairs
    scores = nlg_scores(refs, refs, CleanStyle.IU_XRAY, meteor=False)
    assert scores.bleu_4 == pytest.approx(1.0, abs=1e-6)  # BleuScorer's 1e-15 / 1e-9 smoothing
    assert scores.bleu_1 == pytest.approx(1.0, abs=1e-6)
    assert scores.rouge_l == 1.0


def test_disjoint_reports_score_zero():
    # style=None: cleaned texts always share the " ." token, so disjointness needs verbatim text
    preds = ["heart size normal", "lungs are clear"]
    refs = ["large left effusion", "bilateral nodules seen"]
    scores = nlg_scores(preds, refs, style=None, meteor=False)
    assert scores.bleu_1 == pytest.approx(0.0, abs=1e-6)
    assert scores.bleu_4 == pytest.approx(0.0, abs=1e-6)
    assert scores.rouge_l == 0.0
    assert scores.cider == 0.0


def test_cleaning_is_applied_to_both_sides():
    # Same words, different case and punctuation: identical after R2Gen cleaning.
    scores = nlg_scores(
        ["The heart is NORMAL, size."],
        ["the heart is normal size"],
        CleanStyle.IU_XRAY,
        meteor=False,
    )
    assert scores.rouge_l == 1.0
    verbatim = nlg_scores(
        ["The heart is NORMAL, size."], ["the heart is normal size"], None, meteor=False
    )
    assert verbatim.rouge_l < 1.0


def test_to_dict_uses_r2gen_keys():
    scores = nlg_scores(["a b c d"], ["a b c d"], None, meteor=False).to_dict()
    assert (
        tuple(scores)
        == NLG_KEYS
        == ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
    )


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        nlg_scores(["a", "b"], ["a"], meteor=False)
    with pytest.raises(ValueError, match="no reports"):
        nlg_scores([], [], meteor=False)
    with pytest.raises(TypeError, match="reference 1 is NoneType"):
        nlg_scores(["a", "b"], ["a", None], meteor=False)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        NLGScorer(style="chexpert")
