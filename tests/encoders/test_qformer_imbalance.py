"""encoders.qformer class imbalance: pos_weight weights positives by (1 - π) / π, logit_adjust
trains on logit + log(π / (1 - π)), π clamped to [0.01, 0.99]; both need the training positive
rates, which ``set_prior`` reads under the config's label policies and which are never saved."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoders.qformer import (
    MIN_PRIOR,
    DiseaseQFormer,
    Imbalance,
    QFormerConfig,
    disease_loss,
    disease_targets,
)

NAN = math.nan
C = 24


def _labels() -> torch.Tensor:
    """4 studies: column 0 a rare positive (1 of 4), column 1 with -1 and blanks, the rest 0."""
    labels = torch.zeros(4, 14)
    labels[0, 0] = 1.0
    labels[:, 1] = torch.tensor([1.0, -1.0, NAN, 0.0])
    labels[:, 2] = torch.tensor([NAN, NAN, NAN, NAN])
    return labels


def _manual_bce(logits, targets, weights, pos_weight=None):
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pw = torch.ones_like(logits) if pos_weight is None else pos_weight.expand_as(logits)
    per_entry = -(pw * targets * log_p + (1 - targets) * log_not_p)
    return (per_entry * weights).sum() / weights.sum().clamp_min(1.0)


def test_min_prior_and_policy_names():
    assert MIN_PRIOR == 0.01
    assert [i.value for i in Imbalance] == ["none", "pos_weight", "logit_adjust"]
    assert QFormerConfig.debug(imbalance="logit_adjust").imbalance is Imbalance.LOGIT_ADJUST
    assert QFormerConfig.debug().imbalance is Imbalance.NONE
    with pytest.raises(ValueError):
        QFormerConfig.debug(imbalance="focal")


def test_none_is_plain_bce_and_ignores_the_prior():
    logits = torch.randn(4, 14, generator=torch.Generator().manual_seed(0))
    labels = _labels()
    plain = disease_loss(logits, labels)
    assert disease_loss(logits, labels, imbalance="none", prior=torch.full((14,), 0.3)).item() == pytest.approx(plain.item())
    targets, weights = disease_targets(labels)
    assert plain.item() == pytest.approx(_manual_bce(logits, targets, weights).item(), rel=1e-6)


def test_pos_weight_raises_the_loss_of_a_missed_rare_positive():
    labels = torch.zeros(1, 14)
    labels[0, 0] = 1.0                                    # a positive the classifier misses …
    logits = torch.full((1, 14), -3.0)                    # … and confident negatives elsewhere
    prior = torch.full((14,), 0.05)                       # 5% positives: weight 19
    plain = disease_loss(logits, labels)
    weighted = disease_loss(logits, labels, imbalance=Imbalance.POS_WEIGHT, prior=prior)
    assert weighted > plain
    # only the positive entry changes, by (1 - π) / π
    missed = F.softplus(torch.tensor(3.0)).item()         # BCE of logit -3 against 1
    negative = F.softplus(torch.tensor(-3.0)).item()      # BCE of logit -3 against 0
    assert plain.item() == pytest.approx((missed + 13 * negative) / 14, rel=1e-6)
    assert weighted.item() == pytest.approx((19 * missed + 13 * negative) / 14, rel=1e-5)
    # negatives alone: pos_weight changes nothing
    zeros = torch.zeros(1, 14)
    assert disease_loss(logits, zeros, imbalance="pos_weight", prior=prior).item() == pytest.approx(
        disease_loss(logits, zeros).item())


def test_pos_weight_equals_weighted_bce_with_clamped_prior():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 14, generator=g) * 3
    labels = _labels()
    prior = torch.rand(14, generator=g)
    prior[:3] = torch.tensor([0.0, 1e-4, 1.0])            # clamped to 0.01, 0.01, 0.99
    pi = prior.clamp(0.01, 0.99)
    for uncertain, blank in (("ones", "negative"), ("ignore", "ignore"), ("zeros", "ignore")):
        targets, weights = disease_targets(labels, uncertain, blank)
        got = disease_loss(logits, labels, uncertain=uncertain, blank=blank, imbalance="pos_weight", prior=prior)
        want = _manual_bce(logits, targets, weights, pos_weight=(1 - pi) / pi)
        assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # the largest weight is 99, not 1/0
    one = torch.zeros(1, 14)
    one[0, 0] = 1.0
    got = disease_loss(torch.zeros(1, 14), one, imbalance="pos_weight", prior=torch.zeros(14))
    assert got.item() == pytest.approx((99 + 13) * math.log(2) / 14, rel=1e-5)


def test_logit_adjust_is_bce_on_shifted_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 14, generator=g) * 2
    labels = _labels()
    prior = torch.rand(14, generator=g)
    prior[:3] = torch.tensor([0.001, 0.999, 0.5])
    pi = prior.clamp(MIN_PRIOR, 1 - MIN_PRIOR)
    shifted = logits + torch.log(pi / (1 - pi))
    mask = torch.tensor([True, True, False, True])
    for uncertain, blank in (("ones", "negative"), ("ignore", "ignore")):
        targets, weights = disease_targets(labels, uncertain, blank)
        got = disease_loss(logits, labels, mask, uncertain=uncertain, blank=blank,
                           imbalance=Imbalance.LOGIT_ADJUST, prior=prior)
        want = F.binary_cross_entropy_with_logits(shifted, targets, reduction="none")
        w = weights * mask[:, None]
        assert got.item() == pytest.approx(((want * w).sum() / w.sum()).item(), rel=1e-5)
    # the offsets are log(0.01/0.99) ≈ -4.6 and +4.6 at the clamps, 0 at π = 0.5
    assert torch.log(pi / (1 - pi))[:3].tolist() == pytest.approx([math.log(1 / 99), math.log(99), 0.0], rel=1e-5)
    # rare observations: the same raw logit costs more as a positive and less as a negative
    rare = torch.full((14,), 0.01)
    neg, pos = torch.zeros(1, 14), torch.ones(1, 14)
    zero = torch.zeros(1, 14)
    assert disease_loss(zero, pos, imbalance="logit_adjust", prior=rare) > disease_loss(zero, pos)
    assert disease_loss(zero, neg, imbalance="logit_adjust", prior=rare) < disease_loss(zero, neg)
    # … and the loss is still attached to the graph
    x = torch.zeros(1, 14, requires_grad=True)
    disease_loss(x, neg, imbalance="logit_adjust", prior=rare).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("imbalance", ["pos_weight", "logit_adjust"])
def test_imbalance_needs_a_prior(imbalance):
    logits, labels = torch.zeros(2, 14), torch.zeros(2, 14)
    with pytest.raises(ValueError, match=rf"imbalance={imbalance} needs the training positive rates"):
        disease_loss(logits, labels, imbalance=imbalance)
    nan_prior = torch.full((14,), 0.2)
    nan_prior[5] = NAN
    with pytest.raises(ValueError, match="set_prior"):
        disease_loss(logits, labels, imbalance=imbalance, prior=nan_prior)


# ---- DiseaseQFormer.set_prior -------------------------------------------------------------------
def _visual(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randn(n, 6, C, generator=torch.Generator().manual_seed(3))
    return tokens, torch.ones(n, 6, dtype=torch.bool)


@pytest.mark.parametrize("uncertain, blank, rates", [
    # column 0: 1 of 4; column 1 (1, -1, NaN, 0); column 2 all blank
    ("ones", "negative", [0.25, 2 / 4, 0.0]),
    ("zeros", "negative", [0.25, 1 / 4, 0.0]),
    ("ignore", "negative", [0.25, 1 / 3, 0.0]),      # the -1 is left out
    ("ones", "ignore", [0.25, 2 / 3, 0.0]),          # the blank is left out; all-blank → 0
    ("ignore", "ignore", [0.25, 1 / 2, 0.0]),
])
def test_set_prior_reads_the_config_policies(uncertain, blank, rates):
    model = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, uncertain_policy=uncertain, blank_policy=blank))
    assert model.prior.shape == (14,) and model.prior.isnan().all()       # unset until the trainer sets it
    model.set_prior(_labels())
    assert model.prior[:3].tolist() == pytest.approx(rates)
    assert model.prior[3:].eq(0).all()


def test_the_model_loss_uses_its_prior():
    torch.manual_seed(0)
    model = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, imbalance="logit_adjust")).eval()
    labels = _labels()
    with pytest.raises(ValueError, match="set_prior"):
        model(*_visual(), labels=labels)
    assert model(*_visual()).loss is None              # no labels: no loss, no prior needed
    model.set_prior(labels)
    out = model(*_visual(), labels=labels)
    want = disease_loss(out.logits, labels, imbalance="logit_adjust", prior=model.prior)
    assert out.loss.item() == pytest.approx(want.item())
    assert out.loss.item() != pytest.approx(disease_loss(out.logits, labels).item())


def test_the_prior_is_not_saved():
    torch.manual_seed(0)
    model = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, imbalance="pos_weight"))
    model.set_prior(_labels())
    state = model.state_dict()
    assert "prior" not in state and not any(k.endswith("prior") for k in state)
    assert "prior" in dict(model.named_buffers())
    fresh = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, imbalance="pos_weight"))
    fresh.load_state_dict(state)                        # strict: nothing missing, nothing unexpected
    assert fresh.prior.isnan().all()                    # the trainer sets it again
    for name in ("queries", "head_weight", "head_bias"):
        torch.testing.assert_close(getattr(fresh, name), getattr(model, name))
