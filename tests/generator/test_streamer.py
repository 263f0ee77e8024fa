"""The streaming side of dropped repeats: the deltas a client receives add up to the final report."""
from __future__ import annotations

import asyncio

import pytest

from cxr.clean import drop_repeated_sentences
from generator.batcher import Job, _Streamer
from generator.engine import StudyInput
from generator.settings import GenerationSettings


class WordTokenizer:
    """Each token id is one word of ``WORDS`` (with its leading blank)."""

    WORDS = ("the", "lungs", "are", "clear", ".", "no", "effusion")

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(" " + self.WORDS[i] for i in ids)


def _stream(ids: list[int], drop: bool, cover: bool = False, report: str | None = None,
            decided: list[str] | None = None) -> tuple[list[str], str]:
    loop = asyncio.new_event_loop()
    try:
        job = Job(StudyInput("s", []), GenerationSettings(drop_repeated_sentences=drop, cover_decisions=cover), loop.create_future(),
                  asyncio.Queue())
        streamer = _Streamer(job, WordTokenizer(), loop)
        streamer.decided = decided
        for token in ids:
            streamer.token(token)
        text = WordTokenizer().decode(ids).strip()
        if report is None:
            report = drop_repeated_sentences(text)[0] if drop else text
        streamer.finish(report)
        loop.run_until_complete(asyncio.sleep(0))   # run the call_soon_threadsafe puts
        pieces = []
        while not job.deltas.empty():
            pieces.append(job.deltas.get_nowait())
        return pieces, report
    finally:
        loop.close()


REPEATING = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 4]   # the lungs are clear . (twice) no effusion .


@pytest.mark.parametrize("drop", [True, False])
def test_the_deltas_add_up_to_the_report(drop):
    pieces, report = _stream(REPEATING, drop)
    assert "".join(pieces) == report
    assert report.count("clear") == (1 if drop else 2)


def test_with_repeats_dropped_only_whole_sentences_are_sent_before_the_end():
    pieces, _ = _stream(REPEATING, True)
    assert pieces[0] == "the lungs are clear ."
    assert all(p.rstrip().endswith(".") for p in pieces)


def test_with_coverage_nothing_from_the_first_denial_on_is_sent_before_the_end():
    """The coverage pass may replace a sentence that denies a finding: the stream holds it back."""
    ids = [0, 5, 6, 4, 0, 1, 2, 3, 4]                 # the no effusion . the lungs are clear .
    covered = "the small effusion . the lungs are clear ."   # as if the pass replaced the denial
    pieces, report = _stream(ids, drop=True, cover=True, report=covered)
    assert "".join(pieces) == report == covered
    assert len(pieces) == 1


def test_with_coverage_and_nothing_decided_a_normal_report_streams_sentence_by_sentence():
    ids = [0, 5, 6, 4, 0, 1, 2, 3, 4]                 # the no effusion . the lungs are clear .
    pieces, report = _stream(ids, drop=True, cover=True, decided=[])
    assert "".join(pieces) == report and pieces[0] == "the no effusion ."
    # decided effusion: its denial (and all after it) waits for the coverage pass
    pieces, _ = _stream(ids, drop=True, cover=True, decided=["Pleural Effusion"])
    assert len(pieces) == 1
