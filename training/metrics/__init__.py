"""Report metrics: NLG (BLEU-1..4, METEOR, ROUGE-L, CIDEr; R2Gen convention) and clinical efficacy
(CheXpert-label P / R / F1, micro and macro, 14 or 5 observations)."""
from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS
from training.metrics.clinical import PRF, CEResult, ClassStats, ce_from_reports, ce_metrics
from training.metrics.meteor import MeteorError, MeteorScorer
from training.metrics.nlg import NLG_KEYS, NLGScorer, NLGScores, nlg_scores, normalize_report

__all__ = [
    "FIVE_OBSERVATIONS",
    "NLG_KEYS",
    "OBSERVATIONS",
    "PRF",
    "CEResult",
    "ClassStats",
    "MeteorError",
    "MeteorScorer",
    "NLGScorer",
    "NLGScores",
    "ce_from_reports",
    "ce_metrics",
    "nlg_scores",
    "normalize_report",
]
