"""The diagnosis prompt (generator.prompt, generator.model): off, the prompt is token for token the
one before it existed; on, every combination of states gives prompts of one length that name the
positive findings and the uncertain ones ("uncertain …"), or "none."; the model puts the reference states in training prompts (its own
decisions where ``use_decided``), its decisions at generation, and ``states`` / ``positive`` / the
KG seeds all follow ``model.thresholds``."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cxr.observations import OBSERVATIONS, STATES, State, label_states
from generator.config import PAPER_PROMPT
from generator.decisions import NEVER, Thresholds
from generator.llm import embed_tokens
from generator.model import GenerationSettings
from generator.prompt import (
    DIAGNOSIS_HEADER,
    IGNORE_INDEX,
    TEMPLATE,
    prompt_ids,
    splice_for_generation,
    splice_for_training,
)
from tests.generator.conftest import study_batch

NEG, UNC, POS = (STATES.index(s) for s in (State.NEGATIVE, State.UNCERTAIN, State.POSITIVE))
OLD_TEMPLATE = "Human: <Img>{image}</Img> {prompt}\nAssistant:"   # the template before the diagnosis slot
SETTINGS = GenerationSettings(max_new_tokens=1, num_beams=1)


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


# ---- prompt ids ---------------------------------------------------------------------------------
def test_the_template_has_a_diagnosis_slot_after_the_prompt():
    assert TEMPLATE.replace("{diagnosis}", "") == OLD_TEMPLATE


def test_off_the_prompt_is_the_old_one(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, PAPER_PROMPT)
    old = prompt_ids(tiny_tokenizer, PAPER_PROMPT, template=OLD_TEMPLATE)
    assert (ids.before, ids.after) == (old.before, old.after)
    assert ids.diagnosis is None
    # spelled out: <bos> + "Human: <Img>" | "</Img> {prompt}\nAssistant:"
    enc = lambda text: tiny_tokenizer(text, add_special_tokens=False).input_ids
    assert ids.before == [tiny_tokenizer.bos_token_id, *enc("Human: <Img>")]
    assert ids.after == enc(f"</Img> {PAPER_PROMPT}\nAssistant:")
    assert "{diagnosis}" not in _decode(tiny_tokenizer, ids.after) and "Findings" not in _decode(tiny_tokenizer, ids.after)
    # states are ignored when the diagnosis prompt is off
    states = torch.full((2, 14), POS)
    assert ids.tail(2, states, torch.device("cpu")).tolist() == [ids.after] * 2
    assert ids.tail(2, None, torch.device("cpu")).tolist() == [ids.after] * 2


def test_on_every_state_combination_has_the_same_length(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, PAPER_PROMPT, diagnosis=True)
    assert ids.diagnosis is not None
    # No Finding (column 0) is never said: vary the 13 findings only
    combos = torch.tensor([[NEG] + [s] * 13 for s in (NEG, UNC, POS)]
                          + [[NEG] + [(j + k) % 3 for j in range(13)] for k in range(3)]
                          + [[NEG] + list(c) + [NEG] * 10 for c in itertools.product((NEG, UNC, POS), repeat=3)]
                          + [[NEG] * 10 + list(c) for c in itertools.product((NEG, UNC, POS), repeat=4)]).unique(dim=0)
    tail = ids.tail(len(combos), combos, torch.device("cpu"))
    assert tail.shape == (len(combos), len(ids.after) + ids.diagnosis.width) and tail.dtype == torch.long
    # the text around the findings is the same in every row
    at, width = ids.diagnosis_at, ids.diagnosis.width
    assert (tail[:, :at] == torch.tensor(ids.after[:at])).all()
    assert (tail[:, at + width:] == torch.tensor(ids.after[at:])).all()
    # distinct states give distinct prompts
    assert len({tuple(r) for r in tail.tolist()}) == len(combos)
    # the longest sentence (every finding uncertain) fits: padded only by what " none." needs more than "."
    d = ids.diagnosis
    longest = d.row([NEG] + [UNC] * 13)
    said = len(d.header) + sum(len(e[UNC]) for e in d.entries) + 12 * len(d.separator) + len(d.end)
    assert len(longest) == width and longest[:said][-len(d.end):] == d.end
    assert longest[said:] == [tiny_tokenizer.pad_token_id] * (max(len(d.none), len(d.end)) - len(d.end))


def test_the_tail_says_each_state_in_words(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, PAPER_PROMPT, diagnosis=True)
    states = torch.full((6, 14), NEG)
    states[0, 2] = POS                                            # Cardiomegaly
    states[1, 2] = UNC
    states[1, 10] = POS                                           # Pleural Effusion
    states[3, 0] = POS                                            # No Finding only
    states[4, 1:] = POS
    states[5, 1:] = UNC
    assert OBSERVATIONS[2].value == "Cardiomegaly" and OBSERVATIONS[10].value == "Pleural Effusion"
    text = [_decode(tiny_tokenizer, row) for row in ids.tail(6, states, torch.device("cpu"))]
    start, end = f"</Img> {PAPER_PROMPT}{DIAGNOSIS_HEADER}", "\nAssistant:"
    names = [o.value.lower() for o in OBSERVATIONS[1:]]
    assert text[0] == f"{start} cardiomegaly.{end}"
    assert text[1] == f"{start} uncertain cardiomegaly, pleural effusion.{end}"   # OBSERVATIONS order
    assert text[2] == f"{start} none.{end}"                                       # negatives are left out
    assert text[3] == f"{start} none.{end}"                                       # No Finding is not said
    assert text[4] == f"{start} {', '.join(names)}.{end}"
    assert text[5] == f"{start} {', '.join('uncertain ' + n for n in names)}.{end}"
    # the padding is the pad token, after the sentence (skipped when decoding)
    row = ids.diagnosis.row(states[0].tolist())
    pads = row[row.index(ids.diagnosis.end[-1]) + 1:] if ids.diagnosis.end else []
    assert pads and set(pads) == {tiny_tokenizer.pad_token_id}


def test_the_tail_needs_the_states(tiny_tokenizer):
    ids = prompt_ids(tiny_tokenizer, PAPER_PROMPT, diagnosis=True)
    with pytest.raises(ValueError, match="decided states"):
        ids.tail(2, None, torch.device("cpu"))


@pytest.mark.parametrize("template", [OLD_TEMPLATE, "Human: <Img>{image}</Img> {prompt}{diagnosis}{diagnosis}"])
def test_the_diagnosis_prompt_needs_one_slot(tiny_tokenizer, template):
    with pytest.raises(ValueError, match=r"\{diagnosis\} exactly once"):
        prompt_ids(tiny_tokenizer, PAPER_PROMPT, template=template, diagnosis=True)
    assert prompt_ids(tiny_tokenizer, PAPER_PROMPT, template=OLD_TEMPLATE).diagnosis is None


def test_splice_lengths_with_states(tiny_tokenizer):
    torch.manual_seed(0)
    embed = nn.Embedding(len(tiny_tokenizer), 8)
    off = prompt_ids(tiny_tokenizer, PAPER_PROMPT)
    on = prompt_ids(tiny_tokenizer, PAPER_PROMPT, diagnosis=True)
    B, P = 3, 5
    prefix = torch.randn(B, P, 8)
    states = torch.tensor([[NEG] * 14, [UNC] * 14, [POS] * 14])
    e_off, m_off = splice_for_generation(embed, off, prefix)
    e_on, m_on = splice_for_generation(embed, on, prefix, states)
    tail = on.tail(B, states, torch.device("cpu"))
    assert e_off.shape == (B, len(off.before) + P + len(off.after), 8) and m_off.eq(1).all()
    assert e_on.shape == (B, len(on.before) + P + tail.shape[1], 8) and m_on.shape == e_on.shape[:2]
    assert m_on.eq(1).all()
    # the pieces are where they belong: before, the prefix, then the tail with the findings
    nb = len(on.before)
    torch.testing.assert_close(e_on[:, nb:nb + P], prefix)
    torch.testing.assert_close(e_on[:, nb + P:], embed(tail))
    with pytest.raises(ValueError, match="decided states"):
        splice_for_generation(embed, on, prefix)
    # training: context + right-padded reports, labels only on the reports
    reports = [[5, 6, 7], [8], [9, 10]]
    e, m, labels = splice_for_training(embed, on, prefix, reports, tiny_tokenizer.pad_token_id, states)
    L = e_on.shape[1]
    assert e.shape == (B, L + 3, 8) and m.shape == labels.shape == (B, L + 3)
    torch.testing.assert_close(e[:, :L], e_on)
    assert labels[:, :L].eq(IGNORE_INDEX).all()
    assert labels[:, L:].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX], [9, 10, IGNORE_INDEX]]
    assert m[:, L:].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    e2, _, labels2 = splice_for_training(embed, off, prefix, reports, tiny_tokenizer.pad_token_id)
    assert e2.shape[1] == e_off.shape[1] + 3 and labels2.shape == (B, e_off.shape[1] + 3)


# ---- the model ----------------------------------------------------------------------------------
@pytest.fixture
def diagnosis_model(shared_diagnosis_model):
    """One model for the session (built once), with the default thresholds for each test."""
    shared_diagnosis_model.thresholds = Thresholds()
    return shared_diagnosis_model.eval()


def test_the_model_builds_the_diagnosis_prompt_only_when_asked(diagnosis_model, tiny_tokenizer, tmp_path):
    from generator.config import ModelConfig
    from tests.generator.conftest import debug_experiment

    assert ModelConfig().diagnosis_prompt is False                       # off unless a config asks
    assert debug_experiment(tmp_path).model.diagnosis_prompt is True     # configs/debug.yaml asks
    assert diagnosis_model.config.diagnosis_prompt is True
    expected = prompt_ids(tiny_tokenizer, diagnosis_model.config.prompt, diagnosis=True)
    got = diagnosis_model.prompt
    assert (got.before, got.after, got.diagnosis_at) == (expected.before, expected.after, expected.diagnosis_at)
    assert got.diagnosis == expected.diagnosis
    assert diagnosis_model.thresholds == Thresholds()


def test_training_prompts_carry_the_reference_states(diagnosis_model):
    model = diagnosis_model
    images, mask, ids, labels, _ = study_batch(4)
    with torch.no_grad():
        enc = model.encode(images, mask, ids, labels)
    reference = label_states(labels).long()
    assert enc.prompt_states.tolist() == reference.tolist()
    assert (reference == POS).any() and (reference == NEG).any()
    assert enc.states.shape == (4, 14)
    # the decided states come from the thresholds on the classifier's probabilities
    probs = torch.sigmoid(enc.disease.logits.float())
    assert enc.states.tolist() == model.thresholds.states(probs).tolist()


def test_use_decided_swaps_in_the_models_decisions(diagnosis_model):
    model = diagnosis_model
    images, mask, ids, labels, _ = study_batch(4)
    model.thresholds = Thresholds(positive=(1e-6,) * 14)    # decided: every observation positive
    with torch.no_grad():
        every = model.encode(images, mask, ids, labels, use_decided=torch.ones(4, dtype=torch.bool))
        some = model.encode(images, mask, ids, labels, use_decided=torch.tensor([True, False, True, False]))
    assert every.states.eq(POS).all()
    assert every.prompt_states.tolist() == every.states.tolist()
    reference = label_states(labels).long()
    assert some.prompt_states[[0, 2]].eq(POS).all()
    assert some.prompt_states[[1, 3]].tolist() == reference[[1, 3]].tolist()


def test_forward_trains_on_the_chosen_states(diagnosis_model):
    """The LM loss sees the prompt's states: reference and decided prompts give different losses."""
    model = diagnosis_model
    images, mask, ids, labels, reports = study_batch(1)
    model.thresholds = Thresholds(positive=(1e-6,) * 14)
    with torch.no_grad():
        ref = model(images, mask, ids, labels, reports)
        dec = model(images, mask, ids, labels, reports, use_decided=torch.ones(1, dtype=torch.bool))
    assert torch.isfinite(ref.loss) and torch.isfinite(dec.loss)
    assert ref.lm_loss.item() != dec.lm_loss.item()
    torch.testing.assert_close(ref.classifier_loss, dec.classifier_loss)


def test_generation_prompts_carry_the_decided_states(diagnosis_model):
    model = diagnosis_model
    images, mask, ids, _, _ = study_batch(2)
    lengths = set()
    for positive in ((1e-6,) * 14, (NEVER,) * 14):
        model.thresholds = Thresholds(positive=positive)
        embeds, attn, enc = model.prompt_embeds(images, mask, ids)
        assert attn.shape == embeds.shape[:2] and attn.eq(1).all()
        assert enc.prompt_states.tolist() == enc.states.tolist()
        tail = model.prompt.tail(2, enc.states, torch.device("cpu"))
        torch.testing.assert_close(embeds[:, -tail.shape[1]:], embed_tokens(model.llm)(tail))
        lengths.add(embeds.shape[1])
    assert len(lengths) == 1   # all positive or all negative: the same prompt length


def test_generate_reports_states_and_positive_by_the_thresholds(diagnosis_model):
    model = diagnosis_model
    images, mask, ids, _, _ = study_batch(2)
    names = [o.value for o in OBSERVATIONS]

    model.thresholds = Thresholds(positive=(1e-6,) * 14)
    results = model.generate(images, mask, ids, SETTINGS)
    for r in results:
        assert list(r.states) == names and set(r.states.values()) == {"positive"}
        assert r.positive == names
        assert set(r.evidence.seeds) == {f"Observation:{n}" for n in names}

    model.thresholds = Thresholds(positive=(NEVER,) * 14)
    results = model.generate(images, mask, ids, SETTINGS)
    for r in results:
        assert len(r.states) == 14 and set(r.states.values()) == {"negative"}
        assert r.positive == []
        # no positive decision: one seed, the observation closest to its threshold (here the most probable)
        top = max(r.probabilities, key=r.probabilities.get)
        assert r.evidence.seeds == (f"Observation:{top}",)


def test_states_and_seeds_follow_per_observation_thresholds(diagnosis_model):
    model = diagnosis_model
    images, mask, ids, _, _ = study_batch(3)
    probs = model.probabilities(images, mask).double()                 # (3, 14)
    # thresholds between the studies' probabilities: per observation, the most probable study is
    # positive, the next uncertain, the last negative
    sorted_p = probs.sort(0).values
    cut = ((sorted_p[1] + sorted_p[2]) / 2).tolist()
    band = ((sorted_p[0] + sorted_p[1]) / 2).tolist()
    model.thresholds = Thresholds(positive=tuple(cut), uncertain=tuple(band))
    results = model.generate(images, mask, ids, SETTINGS)
    expected = model.thresholds.states(probs)
    assert expected.eq(POS).any() and expected.eq(UNC).any() and expected.eq(NEG).any()
    for b, r in enumerate(results):
        assert [STATES.index(State(s)) for s in r.states.values()] == expected[b].tolist()
        decided = [o.value for o, c in zip(OBSERVATIONS, expected[b].tolist()) if c == POS]
        assert r.positive == decided
        seeds = {f"Observation:{n}" for n in decided}
        if seeds:
            assert set(r.evidence.seeds) == seeds
        else:   # fallback: the observation whose probability is closest to (highest relative to) its threshold
            j = int((probs[b] / torch.tensor(cut, dtype=torch.float64)).argmax())
            assert r.evidence.seeds == (f"Observation:{OBSERVATIONS[j].value}",)


def test_the_seed_fallback_is_relative_to_each_threshold(diagnosis_model):
    """Nothing decided positive: the seed is the observation nearest its own threshold, not the
    most probable one."""
    model = diagnosis_model
    images, mask, ids, _, _ = study_batch(1)
    probs = model.probabilities(images, mask).double()[0]
    j = int(probs.argmin())                                      # the least probable observation
    assert j != int(probs.argmax())
    positive = [NEVER] * 14
    positive[j] = float(probs[j]) * 1.01                         # just above it; the rest out of reach
    model.thresholds = Thresholds(positive=tuple(positive))
    (result,) = model.generate(images, mask, ids, SETTINGS)
    assert result.positive == [] and set(result.states.values()) == {"negative"}
    assert result.evidence.seeds == (f"Observation:{OBSERVATIONS[j].value}",)
    # at its threshold it is decided positive, and the only seed
    positive[j] = float(probs[j]) * 0.99
    model.thresholds = Thresholds(positive=tuple(positive))
    (result,) = model.generate(images, mask, ids, SETTINGS)
    assert result.positive == [OBSERVATIONS[j].value]
    assert result.evidence.seeds == (f"Observation:{OBSERVATIONS[j].value}",)


def test_diagnosis_slot_before_the_image_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="must come after"):
        prompt_ids(tiny_tokenizer, "Write.", "Human: {diagnosis}<Img>{image}</Img> {prompt}\nAssistant:", diagnosis=False)


def test_text_loss_reads_the_states_of_the_labels(diagnosis_model):
    """The warm-up objective: the same reports score differently under their own states and others'."""
    model = diagnosis_model
    _, _, _, labels, reports = study_batch(4)
    own = model.text_loss(labels, reports)
    assert own.ndim == 0 and torch.isfinite(own)
    own.backward()
    assert model.llm.get_input_embeddings().weight.grad is not None
    model.zero_grad(set_to_none=True)
    flipped = torch.where(labels == 1.0, torch.zeros_like(labels), torch.ones_like(labels))
    with torch.no_grad():
        assert model.text_loss(flipped, reports).item() != pytest.approx(own.item())


def test_warmup_weights_favour_reports_that_state_rare_findings():
    from training.loop import warmup_weights

    nan = float("nan")
    labels = torch.full((10, 14), nan)
    labels[:8, 0] = 1.0                 # 8 normal reports
    labels[8, 2] = 1.0                  # Cardiomegaly once
    labels[9, 2], labels[9, 5] = -1.0, 1.0   # uncertain cardiomegaly + edema
    w = warmup_weights(labels)
    assert w.shape == (10,) and torch.allclose(w[:8], w[0])
    assert w[8] > w[0] and w[9] >= w[8]
