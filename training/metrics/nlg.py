"""NLG metrics the R2Gen way: N report pairs → BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap).

Convention (R2Gen ``modules/metrics.py::compute_scores`` + ``modules/trainer.py``): R2Gen scores
texts that its tokenizer already cleaned and decoded, i.e. ``" ".join(clean_report(t).split())``
(lowercase, punctuation stripped, sentences joined by ``" . "``), put into ``{i: [text]}`` dicts
and passed straight to ``Bleu(4)`` (``verbose=0``), ``Meteor()``, ``Rouge()`` and ``Cider()``.
It does **not** run pycocoevalcap's ``PTBTokenizer``.  We do the same: both sides go through
``normalize_report`` (our ``cxr.clean.clean_report`` with the caller's ``CleanStyle``, then
whitespace re-joined exactly as R2Gen's decode does), then the scorers.  Consequences:

* Numbers are *not* comparable with captioning-style evaluation (``pycocoevalcap.eval.COCOEvalCap``
  runs PTBTokenizer, which splits differently and drops punctuation, including the ``.`` tokens
  counted here).  CIDEr is pycocoevalcap's CIDEr-D with document frequencies from this corpus.
* R2Gen also maps out-of-vocabulary words to ``<unk>`` and truncates to ``max_seq_length``
  before decoding; we score full reports with their own words (no vocabulary exists here).
* ``clean_report`` is not idempotent: pass raw text, or ``style=None`` for already-cleaned text.

SPICE is not computed.  METEOR runs the jar inside the pycocoevalcap wheel through our robust
wrapper (``training.metrics.meteor``); it needs Java and ~10 s to start, so ``NLGScorer`` keeps
one JVM alive across calls, and ``meteor=False`` skips it (METEOR is then ``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Self

from cxr.clean import CleanStyle, clean_report
from training.metrics.meteor import MeteorScorer

NLG_KEYS: tuple[str, ...] = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
"""R2Gen's metric names, in its order; the keys of ``NLGScores.to_dict()``."""


@dataclass(frozen=True)
class NLGScores:
    """Corpus-level scores; ``meteor`` is ``None`` when METEOR was skipped."""

    bleu_1: float
    bleu_2: float
    bleu_3: float
    bleu_4: float
    meteor: float | None
    rouge_l: float
    cider: float

    def to_dict(self) -> dict[str, float | None]:
        """``{"BLEU_1": …, "BLEU_4": …, "METEOR": …, "ROUGE_L": …, "CIDEr": …}``."""
        return dict(zip(NLG_KEYS, asdict(self).values()))


def normalize_report(text: str, style: CleanStyle | str | None) -> str:
    """The text R2Gen's scorers see: cleaned (unless ``style`` is None) and single-spaced."""
    cleaned = text if style is None else clean_report(text, style)
    return " ".join(cleaned.split())


def _as_dicts(
    preds: Sequence[str], refs: Sequence[str]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    if len(preds) != len(refs):
        raise ValueError(
            f"{len(preds)} predictions but {len(refs)} references: lists must be parallel"
        )
    if not preds:
        raise ValueError("nothing to score: no reports")
    for name, texts in (("prediction", preds), ("reference", refs)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name} {i} is {type(text).__name__}, not str")
    gts = {i: [ref] for i, ref in enumerate(refs)}
    res = {i: [pred] for i, pred in enumerate(preds)}
    return gts, res


class NLGScorer:
    """Scores parallel lists of reports; holds the METEOR JVM (started lazily) until ``close()``."""

    def __init__(
        self, style: CleanStyle | str | None = CleanStyle.IU_XRAY, meteor: bool = True
    ) -> None:
        self.style = None if style is None else CleanStyle(style)
        self.use_meteor = meteor
        self._meteor: MeteorScorer | None = None

    def score(self, preds: Sequence[str], refs: Sequence[str]) -> NLGScores:
        """Normalise both sides with ``self.style``, then score them (see the module docstring)."""
        _as_dicts(preds, refs)  # validate before the (slow) cleaning
        return self.score_normalized(
            [normalize_report(p, self.style) for p in preds],
            [normalize_report(r, self.style) for r in refs],
        )

    def score_normalized(self, preds: Sequence[str], refs: Sequence[str]) -> NLGScores:
        """Score texts exactly as given (already normalised): R2Gen's ``compute_scores``."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        gts, res = _as_dicts(preds, refs)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        meteor = None
        if self.use_meteor:
            if self._meteor is None:
                self._meteor = MeteorScorer()
            meteor, _ = self._meteor.compute_score(gts, res)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        return NLGScores(
            bleu_1=float(bleu[0]),
            bleu_2=float(bleu[1]),
            bleu_3=float(bleu[2]),
            bleu_4=float(bleu[3]),
            meteor=None if meteor is None else float(meteor),
            rouge_l=float(rouge),
            cider=float(cider),
        )

    def close(self) -> None:
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def nlg_scores(
    preds: Sequence[str],
    refs: Sequence[str],
    style: CleanStyle | str | None = CleanStyle.IU_XRAY,
    meteor: bool = True,
) -> NLGScores:
    """One-shot ``NLGScorer(style, meteor).score(preds, refs)`` (starts and stops its own JVM)."""
    with NLGScorer(style, meteor=meteor) as scorer:
        return scorer.score(preds, refs)
