"""benchmarks/bench_check.py: its injection rules make the error they claim (read by the labeler and
the graph, not by the check), and the benchmark runs end to end with its table."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.labeler import ReportLabeler, split_sentences
from cxr.observations import NEGATIVE, POSITIVE, Observation
from graphdb.schema import Relation

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_check  # benchmarks/ is a script folder, not a package

REPORT = "The heart is normal in size. Small right pleural effusion. No pneumothorax."


@pytest.mark.parametrize("sentence, observation, label, wanted", [
    ("No pneumothorax.", Observation.PNEUMOTHORAX, NEGATIVE, POSITIVE),
    ("There is a small pleural effusion.", Observation.PLEURAL_EFFUSION, POSITIVE, NEGATIVE),
    ("The heart is normal in size.", Observation.CARDIOMEGALY, NEGATIVE, POSITIVE),   # plain statement
])
def test_a_flip_says_the_opposite(sentence, observation, label, wanted):
    text, _ = bench_check.flip(sentence, observation, label)
    assert ReportLabeler().label(text, check_language=False).values[observation] == wanted


def test_a_qualified_denial_flips_with_its_own_words():
    text, how = bench_check.flip("No large pleural effusion.", Observation.PLEURAL_EFFUSION, NEGATIVE,
                                 "pleural effusion", "No large ")
    assert how in {"rule", "phrase"} and "large" in text.lower()


def test_each_injection_adds_one_sentence_of_its_kind():
    rng = random.Random(0)
    swapped = bench_check.inject_laterality(REPORT, rng)
    assert "Small left pleural effusion." in swapped and len(split_sentences(swapped)) == 4
    repeated = bench_check.inject_repetition(REPORT, random.Random(1))
    assert len(split_sentences(repeated)) == 4 and len({s.text for s in split_sentences(repeated)}) == 3
    assert bench_check.inject_laterality("The lungs are clear.", rng) is None     # nothing one-sided
    from generator.check import KnownRelations

    known = KnownRelations.load()
    invented = bench_check.inject_relation_factory(known)(REPORT, random.Random(2))
    (sentence,) = [s.text for s in split_sentences(invented) if s.text not in REPORT]
    names = {known.names[k]: k for k in known.names}
    words = sentence.rstrip(".").lower().split()
    head = next(names[w] for w in words if w in names and known.types[names[w]].value == "disorder")
    tail = names[words[-1]]
    assert (head, Relation.LOCATED_AT, tail) not in known.triples and (tail, Relation.LOCATED_AT, head) not in known.triples


@pytest.mark.slow
def test_the_benchmark_prints_its_table():
    proc = subprocess.run([sys.executable, "benchmarks/bench_check.py"], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": f"{REPO}:{REPO / 'benchmarks'}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for kind in ("contradiction", "laterality", "unsupported_relation", "repetition"):
        assert kind in proc.stdout
    assert "false warnings:" in proc.stdout and "reports/s on one core" in proc.stdout
