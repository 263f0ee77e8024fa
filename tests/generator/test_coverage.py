"""generator.coverage: a decided finding the report leaves out is written by one more decoder pass,
from sentences that state it and nothing undecided; the sentence that denied it gives way."""
from __future__ import annotations

from typing import ClassVar

import torch

from cxr.observations import OBSERVATIONS, STATES, Observation, State
from generator.backends import BackendKind, Completion, HFBackend
from generator.coverage import before_denial, merge, missing_findings
from generator.decisions import NEVER, Thresholds
from generator.llm import embed_tokens
from generator.prompt import splice_for_generation
from generator.settings import GenerationSettings
from tests.generator.conftest import study_batch

CARDIO, EFFUSION, EDEMA = Observation.CARDIOMEGALY, Observation.PLEURAL_EFFUSION, Observation.EDEMA
NORMAL = ("the heart is normal in size . the mediastinum is unremarkable . "
          "no pleural effusion or pneumothorax . the lungs are clear .")


def test_missing_findings_are_the_decided_ones_the_report_does_not_state():
    assert missing_findings(NORMAL, [CARDIO, EFFUSION]) == [CARDIO, EFFUSION]
    assert missing_findings("the heart is enlarged . no pleural effusion .", [CARDIO, EFFUSION]) == [EFFUSION]
    assert missing_findings("possible small pleural effusion .", [EFFUSION]) == [EFFUSION]   # uncertain is not stated
    assert missing_findings(NORMAL, []) == []


def test_merge_replaces_the_denying_sentence_in_place():
    got = merge(NORMAL, "the heart is normal . there is a small right pleural effusion . no pneumothorax .",
                [EFFUSION], [EFFUSION])
    assert got.report == ("the heart is normal in size . the mediastinum is unremarkable . "
                          "there is a small right pleural effusion . the lungs are clear .")
    assert got.added == ("there is a small right pleural effusion .",) and got.covered == (EFFUSION,)
    assert missing_findings(got.report, [EFFUSION]) == []


def test_merge_appends_where_nothing_denied_the_finding():
    report = "the heart is normal in size . the lungs are clear ."
    got = merge(report, "mild pulmonary edema .", [EDEMA], [EDEMA])
    assert got.report == report + " mild pulmonary edema ."


def test_merge_never_takes_a_sentence_that_states_an_undecided_finding_or_denies_a_decided_one():
    candidate = ("cardiomegaly with pulmonary edema . "          # edema was not decided
                 "the heart is enlarged and there is no effusion . "   # denies the decided effusion
                 "the cardiac silhouette is enlarged .")          # the one that qualifies
    got = merge(NORMAL, candidate, [CARDIO, EFFUSION], [CARDIO])
    assert got.added == ("the cardiac silhouette is enlarged .",)
    assert got.report.startswith("the cardiac silhouette is enlarged . the mediastinum")
    # a candidate with nothing usable changes nothing
    assert merge(NORMAL, "the lungs are clear .", [CARDIO], [CARDIO]).report == NORMAL
    assert merge(NORMAL, "the lungs are clear .", [CARDIO], [CARDIO]).covered == ()


def test_before_denial_holds_back_from_the_first_denying_sentence():
    assert before_denial("the heart is enlarged . small left effusion . no pneumothorax . the") == \
        "the heart is enlarged . small left effusion . "
    assert before_denial("the lungs are clear .") == ""   # "clear" lungs deny an opacity
    assert before_denial("the heart is enlarged .") == "the heart is enlarged ."


class Scripted:
    """The real HF backend for the report (the first call); every later call (a coverage pass)
    answers ``later(embeds, settings)``'s texts, one per row. Records what each call was given."""

    kind, max_batch = BackendKind.HF, None

    def __init__(self, model, text: str = "") -> None:
        self.hf, self.model, self.text = HFBackend(model.llm, model.tokenizer), model, text
        self.calls, self.settings = [], []

    def generate(self, embeds, mask, settings, on_token=None):
        self.calls.append(embeds)
        self.settings.append(settings)
        if len(self.calls) == 1:
            return self.hf.generate(embeds, mask, settings, on_token)
        return [Completion(self.model.tokenizer(" " + t, add_special_tokens=False).input_ids, "stop")
                for t in self.later(embeds, settings)]

    def later(self, embeds, settings) -> list[str]:
        return [self.text] * embeds.shape[0]


def test_the_model_runs_the_pass_with_a_prompt_of_the_missing_findings(shared_diagnosis_model):
    model = shared_diagnosis_model.eval()
    images, mask, ids, _, _ = study_batch(2)
    decide = [NEVER] * len(OBSERVATIONS)
    decide[OBSERVATIONS.index(CARDIO)] = 1e-6                 # Cardiomegaly decided for both studies
    try:
        model.thresholds = Thresholds(positive=tuple(decide))
        settings = GenerationSettings(max_new_tokens=3, cover_passes=1)
        backend = Scripted(model, "the heart is enlarged .")
        results = model.generate(images, mask, ids, settings, backend)
        plain = model.generate(images, mask, ids, GenerationSettings(max_new_tokens=3, cover_decisions=False))
        with torch.no_grad():
            enc = model.encode(images, mask, ids)      # the same decisions: the same KG seeds and prefix
    finally:
        model.thresholds = Thresholds()
    assert len(backend.calls) == 2
    states = torch.full((2, len(OBSERVATIONS)), STATES.index(State.NEGATIVE))
    states[:, OBSERVATIONS.index(CARDIO)] = STATES.index(State.POSITIVE)
    expected, _ = splice_for_generation(embed_tokens(model.llm), model.prompt, enc.prefix, states)
    torch.testing.assert_close(backend.calls[1], expected)
    for r, p in zip(results, plain):
        assert r.covered == ["Cardiomegaly"] and r.added == ["the heart is enlarged ."]
        assert r.report.endswith("the heart is enlarged .") and r.report.startswith(p.report)
        assert p.covered == [] and missing_findings(r.report, [CARDIO]) == []


class Stubborn(Scripted):
    """Pass 1 (several findings in one prompt) writes nothing usable; pass 2 rows (one finding
    each) write a sentence for their own finding."""

    SENTENCES: ClassVar[dict] = {CARDIO: "the heart is enlarged .", EFFUSION: "small left pleural effusion ."}

    def later(self, embeds, settings):
        if len(self.calls) == 2:
            return ["the lungs are clear ."] * embeds.shape[0]
        return [self.SENTENCES[o] for o in self.rows]


def test_a_second_pass_asks_for_each_finding_still_missing_alone(shared_diagnosis_model):
    model = shared_diagnosis_model.eval()
    images, mask, ids, _, _ = study_batch(1)
    decide = [NEVER] * len(OBSERVATIONS)
    decide[OBSERVATIONS.index(CARDIO)] = decide[OBSERVATIONS.index(EFFUSION)] = 1e-6
    backend = Stubborn(model, "")
    backend.rows = [CARDIO, EFFUSION]           # pass 2: one row per missing finding, FINDINGS order
    try:
        model.thresholds = Thresholds(positive=tuple(decide))
        one = model.generate(images, mask, ids, GenerationSettings(max_new_tokens=3, cover_passes=1, cover_samples=0), backend)
        backend.calls.clear()
        two = model.generate(images, mask, ids, GenerationSettings(max_new_tokens=3, cover_passes=2, cover_samples=0), backend)
    finally:
        model.thresholds = Thresholds()
    assert one[0].covered == []
    assert len(backend.calls) == 3 and backend.calls[2].shape[0] == 2
    assert two[0].covered == ["Cardiomegaly", "Pleural Effusion"]
    assert missing_findings(two[0].report, [CARDIO, EFFUSION]) == []


class Sampler(Scripted):
    """The greedy coverage passes write nothing usable; the sample seeded ``hit`` writes the sentence."""

    def __init__(self, model, hit: int) -> None:
        super().__init__(model)
        self.hit = hit

    def later(self, embeds, settings):
        hit = settings.sampling and settings.seed == self.hit
        return ["the heart is enlarged ." if hit else "the lungs are clear ."] * embeds.shape[0]


def test_seeded_samples_follow_the_greedy_passes_until_the_finding_is_written(shared_diagnosis_model):
    model = shared_diagnosis_model.eval()
    images, mask, ids, _, _ = study_batch(1)
    decide = [NEVER] * len(OBSERVATIONS)
    decide[OBSERVATIONS.index(CARDIO)] = 1e-6
    backend = Sampler(model, hit=1)
    try:
        model.thresholds = Thresholds(positive=tuple(decide))
        result = model.generate(images, mask, ids, GenerationSettings(max_new_tokens=3, cover_samples=4), backend)
    finally:
        model.thresholds = Thresholds()
    passes = backend.settings[1:]
    assert [s.sampling for s in passes] == [False, False, True, True]      # 2 greedy, then samples 0 and 1
    assert [s.seed for s in passes[2:]] == [0, 1]
    assert result[0].covered == ["Cardiomegaly"] and result[0].report.endswith("the heart is enlarged .")
