"""DiseaseQFormer: shapes, parity with an independent HF Blip2QFormerModel (weights copied),
attention map, BCE policies."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from cxr.observations import OBSERVATIONS
from encoders.qformer import (
    DiseaseQFormer,
    QFormerConfig,
    disease_loss,
    disease_targets,
)

B, N, C = 2, 10, 24
NAN = math.nan


@pytest.fixture(scope="module")
def model() -> DiseaseQFormer:
    torch.manual_seed(0)
    return DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C)).eval()


@pytest.fixture(scope="module")
def visual() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randn(B, N, C, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 6:] = False
    return tokens, mask


def test_shapes(model, visual):
    out = model(*visual)
    Q = len(OBSERVATIONS)
    assert out.tokens.shape == (B, Q, 32) and out.logits.shape == (B, Q)
    assert out.attention.shape == (B, Q, N) and out.loss is None


def test_attention_is_a_distribution_over_unmasked_tokens(model, visual):
    att = model(*visual).attention
    torch.testing.assert_close(att.sum(-1), torch.ones(B, len(OBSERVATIONS)))
    assert att[1, :, 6:].abs().max() == 0


def test_masked_tokens_do_not_matter(model, visual):
    tokens, mask = visual
    noisy = tokens.clone()
    noisy[1, 6:] = 100.0
    torch.testing.assert_close(model(noisy, mask).tokens, model(tokens, mask).tokens)


def _reference(model: DiseaseQFormer) -> tuple[Blip2QFormerModel, torch.Tensor]:
    """An independent HF Q-Former and the learned queries to feed it: its config is written out
    here (the debug sizes), not taken from ``QFormerConfig.to_hf``; the wrapper's Q-Former
    weights are copied in strictly, the queries cloned."""
    config = Blip2QFormerConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        cross_attention_frequency=1, encoder_hidden_size=C, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"  # returns the attention weights
    ref = Blip2QFormerModel(config).eval()
    ref.load_state_dict(model.qformer.state_dict(), strict=True)
    return ref, model.queries.detach().clone()


def _assert_parity(model: DiseaseQFormer, ref: Blip2QFormerModel, queries: torch.Tensor,
                   tokens: torch.Tensor, mask: torch.Tensor) -> None:
    """The wrapper's tokens, attention map and logits against the reference's, from the same
    learned queries (1, 14, D) and visual tokens / mask."""
    with torch.no_grad():
        out = model(tokens, mask)
        hf = ref(query_embeds=queries.expand(B, -1, -1), encoder_hidden_states=tokens,
                 encoder_attention_mask=mask, output_attentions=True)
    assert len(hf.cross_attentions) == 2  # cross-attention in every layer of the debug config
    torch.testing.assert_close(out.tokens, hf.last_hidden_state, atol=1e-5, rtol=1e-4)
    # the map the wrapper exposes: the last cross-attention layer, mean over its 4 heads
    torch.testing.assert_close(out.attention, hf.cross_attentions[-1].mean(1), atol=1e-6, rtol=1e-4)
    # the per-query head is 14 independent Linear(D, 1)
    for q in (0, 13):
        lin = torch.nn.Linear(32, 1)
        lin.weight.data, lin.bias.data = model.head_weight[q:q + 1], model.head_bias[q:q + 1]
        torch.testing.assert_close(out.logits[:, q], lin(hf.last_hidden_state[:, q]).squeeze(-1),
                                   atol=1e-5, rtol=1e-4)


def test_matches_an_independent_hf_qformer_with_copied_weights(model, visual):
    _assert_parity(model, *_reference(model), *visual)


@pytest.mark.parametrize("name", [
    "queries",
    "qformer.encoder.layer.1.crossattention.attention.key.weight",
    "qformer.encoder.layer.0.output_query.dense.bias",
    "qformer.layernorm.weight",
])
def test_parity_fails_when_the_wrapper_weights_change(model, visual, name):
    ref, queries = _reference(model)  # copied before the change
    changed = copy.deepcopy(model)
    param = changed.get_parameter(name)
    with torch.no_grad():  # random, not constant: a LayerNorm follows and cancels a uniform shift
        param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(AssertionError):
        _assert_parity(changed, ref, queries, *visual)


def test_gradient_reaches_queries_and_head(visual):
    torch.manual_seed(0)
    model = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C)).train()
    labels = torch.tensor([[1.0, 0.0] * 7, [0.0, 1.0] * 7])
    out = model(*visual, labels=labels)
    out.loss.backward()
    for p in (model.queries, model.head_weight, model.head_bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


# Hand-made label table: columns are 1, 0, -1, NaN for the first four observations.
LABELS = torch.tensor([[1.0, 0.0, -1.0, NAN] + [0.0] * 10])


@pytest.mark.parametrize("uncertain, blank, targets, weights", [
    ("ones", "negative", [1, 0, 1, 0], [1, 1, 1, 1]),
    ("zeros", "negative", [1, 0, 0, 0], [1, 1, 1, 1]),
    ("ignore", "negative", [1, 0, 0, 0], [1, 1, 0, 1]),
    ("ones", "ignore", [1, 0, 1, 0], [1, 1, 1, 0]),
    ("ignore", "ignore", [1, 0, 0, 0], [1, 1, 0, 0]),
    ("soft", "negative", [1, 0, 0.5, 0], [1, 1, 1, 1]),
])
def test_label_policies(uncertain, blank, targets, weights):
    t, w = disease_targets(LABELS, uncertain, blank)
    assert t[0, :4].tolist() == targets and w[0, :4].tolist() == weights
    assert t[0, 4:].eq(0).all() and w[0, 4:].eq(1).all()


def test_loss_values():
    logits = torch.zeros(1, 14)
    log2 = math.log(2.0)  # BCE of logit 0 against either target
    assert disease_loss(logits, LABELS).item() == pytest.approx(log2)
    # a confident positive logit on the uncertain entry: penalised only under U-Zeros
    logits[0, 2] = 20.0
    ones = disease_loss(logits, LABELS, uncertain="ones").item()
    zeros = disease_loss(logits, LABELS, uncertain="zeros").item()
    ignore = disease_loss(logits, LABELS, uncertain="ignore").item()
    assert ones == pytest.approx(13 * log2 / 14, abs=1e-6)
    assert zeros == pytest.approx((13 * log2 + 20.0) / 14, abs=1e-6)
    assert ignore == pytest.approx(log2, abs=1e-6)
    # under the soft policy the half target costs the same for a confident yes as for a confident no
    soft_yes = disease_loss(logits, LABELS, uncertain="soft").item()
    logits[0, 2] = -20.0
    assert disease_loss(logits, LABELS, uncertain="soft").item() == pytest.approx(soft_yes, abs=1e-6)
    assert soft_yes == pytest.approx((13 * log2 + 10.0) / 14, abs=1e-4)
    logits[0, 2] = 20.0
    # entry / study masks
    entry_mask = torch.zeros(1, 14, dtype=torch.bool)
    entry_mask[0, 2] = True
    assert disease_loss(logits, LABELS, entry_mask, uncertain="zeros").item() == pytest.approx(20.0)
    assert disease_loss(logits, LABELS, torch.tensor([False])).item() == 0.0


def test_bad_labels_and_config():
    with pytest.raises(ValueError, match="1, 0, -1 or NaN"):
        disease_targets(torch.full((1, 14), 2.0))
    with pytest.raises(ValueError, match="num_queries"):
        QFormerConfig.debug(num_queries=5)
    with pytest.raises(ValueError, match="num_heads"):
        QFormerConfig.debug(num_heads=5)
    with pytest.raises(ValueError):
        QFormerConfig.debug(uncertain_policy="maybe")
