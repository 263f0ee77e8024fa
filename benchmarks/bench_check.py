"""Benchmark: the report check (``generator.check``) on the IU X-ray test references, with errors injected.

What: for each of the 590 test references and each kind, one error injected by a rule written
here; recall = the share of injected reports that get more warnings of that kind than the
unmodified reference; the false-warning rate = the share of unmodified references with any warning
(listed one per line with --list); reports/s of the check on one core.
- contradiction: one finding statement's sentence with its negation flipped, added back;
- laterality: a sentence placing a finding on one side, added back with left and right swapped;
- unsupported_relation: "There is <disorder> in the <anatomy>." for a well-known disorder and
  location that M3KG never relates (``check.MIN_SUPPORT``);
- repetition: one sentence written again later;
- disagrees_with_image (with --predictions and --checkpoint): "<finding> is present." for a
  finding the reference does not affirm and the classifier puts below its threshold.
An injected sentence goes in at a random sentence boundary (seeded per report).
Needs: nothing but the repo (disagrees_with_image: a checkpoint with a fitted margin and its
``r2genkg test`` predictions.jsonl).
Run: ``.venv/bin/python benchmarks/bench_check.py [--list] [--predictions P --checkpoint DIR]``
"""
from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from timing import best_rate

from cxr.labeler import ReportLabeler, split_sentences
from cxr.observations import FINDINGS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Observation
from generator.check import KnownRelations, ReportChecker, WarningKind, clause_of, sides_of
from generator.decisions import read_thresholds
from graphdb.schema import EntityType, Relation

TARGET_RATE = 500.0      # reports / s
TARGET_RECALL = 0.90
TARGET_FALSE = 0.05
LABELER = ReportLabeler()
Inject = Callable[[str, random.Random], "str | None"]


def load_references(split: str = "test") -> list[tuple[str, str]]:
    data = json.loads((files("cxr") / "resources" / "iu_xray" / "annotation.json").read_text())
    return [(item["id"], item["report"]) for item in data[split]]


def insert(report: str, sentence: str, rng: random.Random, after: int = -1) -> str:
    """``sentence`` put in at a random boundary after sentence ``after`` (-1: anywhere)."""
    parts = [s.text for s in split_sentences(report)]
    at = rng.randint(after + 1, len(parts))
    return " ".join(parts[:at] + [sentence] + parts[at:])


def _finding_statements(report: str, labels: tuple[float, ...]) -> list:
    return [m for m in LABELER.label(report).mentions if m.observation in FINDINGS and m.label in labels]


_NEGATION_CUES = [(r"\bno evidence of\b", ""), (r"\bthere (is|are) no\b", r"there \1"), (r"\bwithout\b", "with"),
                  (r"\bnegative for\b", "with"), (r"\bfree of\b", "with"), (r"\bnot (seen|identified|present)\b", r"\1"),
                  (r"\bno\b", "")]


# Each finding stated plainly, affirmed and denied: the flip of a statement the rules cannot
# turn around ("the heart is normal in size" → "The heart is enlarged.").
PLAIN: dict[Observation, tuple[str, str]] = {
    Observation.ENLARGED_CARDIOMEDIASTINUM: ("The mediastinum is widened.", "The mediastinum is not widened."),
    Observation.CARDIOMEGALY: ("The heart is enlarged.", "There is no cardiomegaly."),
    Observation.LUNG_LESION: ("There is a pulmonary nodule.", "There is no pulmonary nodule."),
    Observation.LUNG_OPACITY: ("There is an opacity in the lungs.", "There is no opacity in the lungs."),
    Observation.EDEMA: ("There is pulmonary edema.", "There is no pulmonary edema."),
    Observation.CONSOLIDATION: ("There is consolidation.", "There is no consolidation."),
    Observation.PNEUMONIA: ("There is pneumonia.", "There is no pneumonia."),
    Observation.ATELECTASIS: ("There is atelectasis.", "There is no atelectasis."),
    Observation.PNEUMOTHORAX: ("There is a pneumothorax.", "There is no pneumothorax."),
    Observation.PLEURAL_EFFUSION: ("There is a pleural effusion.", "There is no pleural effusion."),
    Observation.PLEURAL_OTHER: ("There is pleural thickening.", "There is no pleural thickening."),
    Observation.FRACTURE: ("There is a rib fracture.", "There is no fracture."),
    Observation.SUPPORT_DEVICES: ("A pacemaker is present.", "There are no support devices."),
}


_CUE_WORDS = {"no", "not", "without", "of", "evidence", "negative", "for", "free", "there", "is", "are", "any"}


def flip(sentence: str, observation: Observation, label: float, phrase: str = "", lead: str = "") -> tuple[str, str]:
    """The sentence with its negation flipped for ``observation`` and how: "rule" (the rules above),
    "phrase" (a denial's own words turned into "There is <words before the finding> <finding>.":
    "no large pleural effusion" → "There is large pleural effusion.") or "plain" (the plain opposite
    statement), whichever the labeler first reads as the opposite."""
    wanted = POSITIVE if label == NEGATIVE else NEGATIVE
    text = sentence
    if label == NEGATIVE:
        for pattern, repl in _NEGATION_CUES:
            text = re.sub(pattern, repl, text, count=1, flags=re.IGNORECASE)
    else:
        text = re.sub(r"\b(there (is|are))\b", r"\1 no", text, count=1, flags=re.IGNORECASE)
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    candidates = [(text, "rule")] if text != sentence else []
    if label == NEGATIVE and phrase:
        words = [w.lower() for w in re.findall(r"[A-Za-z-]+", re.split(r"[,;:]", lead)[-1])[-3:]
                 if w.lower() not in _CUE_WORDS]
        candidates.append(("There is " + " ".join(words + [phrase.lower()]) + ".", "phrase"))
    for candidate, how in candidates:
        if LABELER.label(candidate, check_language=False).values[observation] == wanted:
            return candidate, how
    return PLAIN[observation][0 if wanted == POSITIVE else 1], "plain"


def inject_contradiction(report: str, rng: random.Random) -> str | None:
    statements = _finding_statements(report, (POSITIVE, NEGATIVE))
    if not statements:
        return None
    m = rng.choice(statements)
    start = next(s.start for s in split_sentences(report) if s.start <= m.start < s.end + 1)
    return insert(report, flip(m.sentence, m.observation, m.label, m.phrase, report[start:m.start])[0], rng)


def _swap_sides(text: str) -> str:
    return re.sub(r"\b(left|right)\b", lambda m: {"left": "right", "right": "left"}[m.group(1).lower()]
                  if m.group(1).islower() else {"left": "Right", "right": "Left"}[m.group(1).lower()],
                  text, flags=re.IGNORECASE)


def inject_laterality(report: str, rng: random.Random) -> str | None:
    statements = _finding_statements(report, (POSITIVE, UNCERTAIN))
    bilateral = set()
    placed = []
    for m in statements:
        s = next(s for s in split_sentences(report) if s.text == m.sentence)
        sides = sides_of(clause_of(s.text, m.start - s.start, m.end - s.start))
        if len(sides) == 2:
            bilateral.add(m.observation)
        elif len(sides) == 1:
            placed.append(m)
    placed = [m for m in placed if m.observation not in bilateral]
    if not placed:
        return None
    m = rng.choice(placed)
    return insert(report, _swap_sides(m.sentence), rng)


def _well_known(known: KnownRelations, kind: EntityType, as_head: bool) -> list[str]:
    support = known.as_head if as_head else known.as_tail
    return sorted(k for k, t in known.types.items()
                  if t is kind and support.get((k, Relation.LOCATED_AT), 0) >= 1000 and " " not in known.names[k])


def inject_relation_factory(known: KnownRelations) -> Inject:
    disorders = _well_known(known, EntityType.DISORDER, as_head=True)
    places = _well_known(known, EntityType.ANATOMY, as_head=False)
    templates = ["There is {f} in the {a}.", "{F} is seen in the {a}.", "{F} in the {a}."]

    def inject(report: str, rng: random.Random) -> str | None:
        for _ in range(100):
            f, a = rng.choice(disorders), rng.choice(places)
            if (f, Relation.LOCATED_AT, a) in known.triples or (a, Relation.LOCATED_AT, f) in known.triples:
                continue
            fn, an = known.names[f], known.names[a]
            sentence = rng.choice(templates).format(f=fn, F=fn[:1].upper() + fn[1:], a=an)
            return insert(report, sentence, rng)
        return None
    return inject


def inject_repetition(report: str, rng: random.Random) -> str | None:
    parts = [s.text for s in split_sentences(report)]
    if not parts:
        return None
    i = rng.randrange(len(parts))
    return insert(report, parts[i], rng, after=i)


def inject_disagreement_factory(probabilities: dict[str, list[float]], cut: tuple[float, ...]) -> Callable:
    def inject(study: str, report: str, rng: random.Random) -> str | None:
        p = probabilities.get(study)
        if p is None:
            return None
        values = LABELER.label(report).values
        options = [o for o in FINDINGS if values[o] != POSITIVE and 0 < cut[OBSERVATIONS.index(o)] < 1
                   and p[OBSERVATIONS.index(o)] < cut[OBSERVATIONS.index(o)]]
        if not options:
            return None
        o = rng.choice(options)
        return insert(report, f"{o.value} is present.", rng)
    return inject


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print each warning on an unmodified reference")
    ap.add_argument("--predictions", type=Path, help="r2genkg test predictions.jsonl (probabilities per study)")
    ap.add_argument("--checkpoint", type=Path, help="the checkpoint whose thresholds.json holds the margin")
    args = ap.parse_args()

    references = load_references()
    thresholds = read_thresholds(args.checkpoint) if args.checkpoint else None
    probabilities: dict[str, list[float]] = {}
    if args.predictions:
        for line in args.predictions.read_text().splitlines():
            row = json.loads(line)
            probabilities[row["id"]] = [row["observations"][o.value] for o in OBSERVATIONS]
    checker = ReportChecker(thresholds=thresholds)

    def warnings(study: str, text: str) -> list:
        return checker.check(text, probabilities.get(study))

    original = {study: warnings(study, text) for study, text in references}
    warned = [(s, w) for s, ws in original.items() for w in ws]
    false_rate = sum(bool(ws) for ws in original.values()) / len(references)

    relation = inject_relation_factory(checker.relations)
    kinds: dict[WarningKind, Callable] = {
        WarningKind.CONTRADICTION: lambda s, r, rng: inject_contradiction(r, rng),
        WarningKind.LATERALITY: lambda s, r, rng: inject_laterality(r, rng),
        WarningKind.UNSUPPORTED_RELATION: lambda s, r, rng: relation(r, rng),
        WarningKind.REPETITION: lambda s, r, rng: inject_repetition(r, rng),
    }
    if thresholds is not None and thresholds.margin is not None and probabilities:
        kinds[WarningKind.DISAGREES_WITH_IMAGE] = inject_disagreement_factory(probabilities, thresholds.positive)

    print(f"{len(references)} IU X-ray test references; seed {args.seed}")
    print(f"{'kind':<22} {'injected':>8} {'found':>6} {'recall':>7}  target ≥ {TARGET_RECALL}")
    for k, (kind, inject) in enumerate(kinds.items()):
        injected = found = 0
        for i, (study, text) in enumerate(references):
            rng = random.Random(args.seed * 1_000_003 + k * 10_007 + i)
            changed = inject(study, text, rng)
            if changed is None:
                continue
            injected += 1
            before = sum(w.kind is kind for w in original[study])
            found += sum(w.kind is kind for w in warnings(study, changed)) > before
        recall = found / injected if injected else float("nan")
        print(f"{kind.value:<22} {injected:>8} {found:>6} {recall:>7.3f}  {'ok' if recall >= TARGET_RECALL else 'LOW'}")
    print(f"false warnings: {sum(bool(ws) for ws in original.values())} of {len(references)} unmodified "
          f"references warned ({false_rate:.1%}; target ≤ {TARGET_FALSE:.0%})")
    if args.list:
        for study, w in warned:
            print(f"  {study}  {w.kind.value}: {w.detail}  | {w.sentence}")
    texts = [text for _, text in references]
    rate = best_rate(checker.check, texts)
    print(f"speed: {rate:,.0f} reports/s on one core (target ≥ {TARGET_RATE:,.0f})")


if __name__ == "__main__":
    main()
