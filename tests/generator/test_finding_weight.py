"""model.finding_token_weight: the LM loss weighs the tokens of sentences that state a finding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr.sentences import stating_sentences
from generator.prompt import finding_token_weights, report_ids
from tests.generator.conftest import study_batch

FINDING = "the heart is enlarged . the lungs are clear ."
NORMAL = "the heart is normal in size . the lungs are clear ."


def test_stating_sentences_gives_offsets_and_which_sentences_state_a_finding():
    spans = stating_sentences("the lungs are clear . small left pleural effusion . no pneumothorax .")
    assert spans == ((0, False), (22, True), (52, False))
    assert stating_sentences(NORMAL) == ((0, False), (30, False))


def test_weights_line_up_with_the_report_targets(tiny_tokenizer):
    reports = [FINDING, NORMAL, "small left pleural effusion ."]
    targets = report_ids(tiny_tokenizer, reports, max_tokens=60)
    weights = finding_token_weights(tiny_tokenizer, reports, max_tokens=60, weight=3.0)
    assert [len(w) for w in weights] == [len(t) for t in targets]
    assert all(row[-1] == 1.0 for row in weights)                         # <eos>
    heavy = [i for i, w in zip(targets[0], weights[0]) if w == 3.0]
    assert tiny_tokenizer.decode(heavy).strip() == "the heart is enlarged ."  # its closing " ." included
    assert tiny_tokenizer.decode(targets[0][len(heavy):-1]).strip() == "the lungs are clear ."
    assert set(weights[1]) == {1.0}
    assert set(weights[2][:-1]) == {3.0}
    cut = finding_token_weights(tiny_tokenizer, reports, max_tokens=4, weight=3.0)
    assert [len(w) for w in cut] == [len(t) for t in report_ids(tiny_tokenizer, reports, max_tokens=4)]


@pytest.fixture
def model(shared_diagnosis_model):
    return shared_diagnosis_model.eval()


def _lm_loss(model, reports, weight):
    images, mask, ids, labels, _ = study_batch(len(reports))
    model.config.finding_token_weight = weight
    try:
        with torch.no_grad():
            return model(images, mask, ids, labels, reports).lm_loss.item()
    finally:
        model.config.finding_token_weight = 1.0


def test_the_weighted_loss_is_the_plain_mean_when_no_sentence_states_a_finding(model):
    reports = [NORMAL, "the lungs are clear ."]       # ragged: padding must not count
    assert _lm_loss(model, reports, 5.0) == pytest.approx(_lm_loss(model, reports, 1.0), rel=1e-5)


def test_a_heavier_finding_sentence_moves_the_loss_toward_its_tokens(model, tiny_tokenizer):
    reports = [FINDING, NORMAL]
    plain, heavy = _lm_loss(model, reports, 1.0), _lm_loss(model, reports, 4.0)
    assert heavy != pytest.approx(plain, rel=1e-4)
    # the weighted mean is plain per-token losses reweighted: recompute it by hand
    from generator.llm import embed_tokens
    from generator.prompt import splice_for_training

    images, mask, ids, labels, _ = study_batch(2)
    with torch.no_grad():
        enc = model.encode(images, mask, ids, labels)
        targets = report_ids(tiny_tokenizer, reports, model.config.max_report_tokens)
        embeds, attn, lm_labels = splice_for_training(embed_tokens(model.llm), model.prompt, enc.prefix, targets,
                                                      tiny_tokenizer.pad_token_id, enc.prompt_states)
        logits = model.llm(inputs_embeds=embeds, attention_mask=attn).logits
    losses, weights = [], []
    rows = finding_token_weights(tiny_tokenizer, reports, model.config.max_report_tokens, 4.0)
    start = lm_labels.shape[1] - max(map(len, targets))
    for b, (target, row) in enumerate(zip(targets, rows)):
        for j, (token, w) in enumerate(zip(target, row)):
            logp = torch.log_softmax(logits[b, start + j - 1].float(), -1)[token].item()
            losses.append(-logp)
            weights.append(w)
    assert heavy == pytest.approx(float(np.average(losses, weights=weights)), rel=1e-4)
    assert plain == pytest.approx(float(np.mean(losses)), rel=1e-4)


def test_the_weight_must_be_positive():
    from generator.config import ModelConfig

    with pytest.raises(ValueError, match="finding_token_weight"):
        ModelConfig(finding_token_weight=0.0)
