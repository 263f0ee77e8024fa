"""Decision coverage: a report states every finding its model decided positive.

The diagnosis prompt tells the decoder which findings were decided, but a small decoder that has
memorised whole train reports sometimes writes one that leaves a decided finding out, or even
denies it ("no pleural effusion" for a study decided to have one). Coverage, after the greedy
report (``GenerationSettings.cover_decisions``, on by default):

1. the labeler reads the report; ``missing`` = the findings decided positive that it does not
   state as positive;
2. the decoder writes again for those studies, from the same image and knowledge tokens, with a
   prompt that lists only the missing findings: one greedy pass with all of them, then one per
   finding still missing (``cover_passes``), then optionally seeded samples (``cover_samples``);
3. from each such text, a sentence is taken if it states a missing finding and states
   nothing (positive or uncertain) that was not decided and denies nothing that was;
4. it replaces the first sentence of the report that denied that finding, or is added at the end.

Every word is the decoder's own; nothing is templated. What a pass added is reported
(``GenerationResult.covered`` / ``added``), so a reader can tell which sentences came from
coverage. A finding for which no pass writes a usable sentence stays missing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from cxr.labeler import ReportLabeler, split_sentences
from cxr.observations import (
    FINDINGS,
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    STATES,
    UNCERTAIN,
    Observation,
    State,
)

_LABELER = ReportLabeler()


def stated(text: str) -> dict[Observation, float]:
    """The labeler's reading of ``text`` over the 13 findings: observation → 1 / -1 / 0 (blank left out)."""
    values = _LABELER.label(text).values
    return {o: v for o in FINDINGS if (v := values[o]) is not None}


def decided_findings(states: torch.Tensor) -> list[list[Observation]]:
    """State codes (B, 14) → each row's findings decided positive, in FINDINGS order."""
    positive = STATES.index(State.POSITIVE)
    return [[o for o, s in zip(OBSERVATIONS, row) if s == positive and o in FINDINGS] for row in states.tolist()]


def announce(on_decided: Callable[[int, list[str]], None] | None, states: torch.Tensor, start: int = 0) -> None:
    """Tell ``on_decided`` each row's findings decided positive (by name), rows numbered from ``start``."""
    if on_decided is not None:
        for row, findings in enumerate(decided_findings(states)):
            on_decided(start + row, [o.value for o in findings])


def missing_findings(report: str, decided: Iterable[Observation]) -> list[Observation]:
    """The decided-positive findings ``report`` does not state as positive, in FINDINGS order."""
    read = stated(report)
    wanted = set(decided)
    return [o for o in FINDINGS if o in wanted and read.get(o) != POSITIVE]


@dataclass(frozen=True)
class Covered:
    report: str
    added: tuple[str, ...]               # the sentences taken from the coverage pass, in report order
    covered: tuple[Observation, ...]     # the missing findings those sentences state


def merge(report: str, candidate: str, decided: Iterable[Observation], missing: Sequence[Observation]) -> Covered:
    """``report`` with the sentences of ``candidate`` that state a ``missing`` finding (rules above)."""
    decided_set, todo = set(decided), list(missing)
    taken: list[tuple[str, tuple[Observation, ...]]] = []
    for sentence in split_sentences(candidate):
        read = stated(sentence.text)
        states = [o for o, v in read.items() if v in (POSITIVE, UNCERTAIN)]
        new = tuple(o for o in todo if read.get(o) == POSITIVE)
        if not new or any(o not in decided_set for o in states) or \
                any(v == NEGATIVE and o in decided_set for o, v in read.items()):
            continue
        taken.append((sentence.text, new))
        todo = [o for o in todo if o not in new]
        if not todo:
            break
    if not taken:
        return Covered(report, (), ())
    covering = {o for t in taken for o in t[1]}
    out: list[str] = []
    pending = list(taken)
    for sentence in split_sentences(report):
        denied = {o for o, v in stated(sentence.text).items() if v == NEGATIVE}
        hit = next((t for t in pending if denied & set(t[1])), None)
        if hit is not None:                  # the sentence that denied a decided finding gives way
            out.append(hit[0])
            pending.remove(hit)
        elif not denied & covering:          # a later one that denies it is left out
            out.append(sentence.text)
    out += [t[0] for t in pending]
    covered = tuple(o for o in FINDINGS if any(o in t[1] for t in taken))
    return Covered(" ".join(out), tuple(t[0] for t in taken), covered)


def before_denial(text: str, decided: Iterable[str] | None = None) -> str:
    """``text`` up to its first sentence that denies a decided finding (names; None: any finding):
    what a stream may send before the coverage pass has run, which replaces only such a sentence
    and adds the others at the end."""
    names = None if decided is None else set(decided)
    for sentence in split_sentences(text):
        if any(v == NEGATIVE and (names is None or o.value in names) for o, v in stated(sentence.text).items()):
            return text[:sentence.start]
    return text
