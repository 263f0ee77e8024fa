"""METEOR wrapper: same numbers as pycocoevalcap, robust to locale and protocol-breaking text."""

from __future__ import annotations

import pytest
from pycocoevalcap.meteor.meteor import Meteor

from training.metrics.meteor import MeteorError, MeteorScorer, meteor_jar, sanitize

GTS = {
    0: ["the heart is normal in size . the lungs are clear ."],
    1: ["no pleural effusion or pneumothorax ."],
    2: ["there is a small right pleural effusion ."],
}
RES = {
    0: ["heart size is normal . lungs are clear ."],
    1: ["small left pleural effusion ."],
    2: ["there is a small right pleural effusion ."],
}


def test_jar_ships_with_pycocoevalcap():
    jar = meteor_jar()
    assert jar.name == "meteor-1.5.jar" and jar.stat().st_size > 1_000_000
    assert (jar.parent / "data" / "paraphrase-en.gz").is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the heart is normal .", "the heart is normal ."),  # cleaned text: untouched
        ("a ||| b", "a b"),
        ("line one\nline two", "line one line two"),
        ("  tabs\tand  spaces ", "tabs and spaces"),
    ],
)
def test_sanitize(text, expected):
    assert sanitize(text) == expected


def test_missing_java_is_a_clear_error():
    with pytest.raises(MeteorError, match="needs a Java runtime"):
        MeteorScorer(java="/nonexistent/java")


@pytest.mark.slow
def test_equal_to_pycocoevalcap_and_robust(monkeypatch):
    direct = Meteor().compute_score(GTS, RES)
    # A comma-decimal JVM locale kills pycocoevalcap's JVM; ours pins en_US on the command line.
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Duser.language=de -Duser.country=DE")
    with MeteorScorer() as scorer:
        assert scorer.compute_score(GTS, RES) == direct
        assert direct[1][2] == 1.0 and 0 < direct[0] < 1
        # newlines and ||| would desynchronise the protocol; sanitised they score like clean text
        messy_gts = {0: ["no pleural\neffusion ||| or pneumothorax ."]}
        clean_gts = {0: ["no pleural effusion or pneumothorax ."]}
        res = {0: ["small left pleural\neffusion ."]}
        assert scorer.compute_score(messy_gts, res) == scorer.compute_score(
            clean_gts, {0: ["small left pleural effusion ."]}
        )
        with pytest.raises(ValueError, match="same ids"):
            scorer.compute_score({0: ["a"]}, {1: ["a"]})
    with pytest.raises(MeteorError, match="closed"):
        scorer.compute_score(GTS, RES)
