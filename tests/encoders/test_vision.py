"""SwinEncoder on a tiny debug Swin: shapes, view fusion, freezing, local weights."""
from __future__ import annotations

import pytest
import torch

from encoders.vision import SwinEncoder, VisionConfig, load_backbone_weights

B, V, S = 2, 2, 64  # batch, views, image side of the debug config


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(B, V, 3, S, S, generator=torch.Generator().manual_seed(0))


def make(**overrides) -> SwinEncoder:
    torch.manual_seed(0)
    return SwinEncoder(VisionConfig.debug(**overrides)).eval()


def test_mean_fusion_shapes(images):
    enc = make()
    out = enc(images)
    assert enc.out_dim == 64 and enc.tokens_per_view == 64 and enc.num_tokens(V) == 64
    assert out.tokens.shape == (B, 64, 64)  # (B, N, C)
    assert out.mask.shape == (B, 64) and out.mask.all()


def test_mean_over_one_valid_view_equals_that_view(images):
    enc = make()
    view_mask = torch.tensor([[True, False], [True, True]])
    padded = images.clone()
    padded[0, 1] = 1e3  # garbage in a padding view must not leak
    out = enc(padded, view_mask)
    single = enc(images[:1, :1])
    torch.testing.assert_close(out.tokens[0], single.tokens[0])
    both = enc.encode_views(images[1])  # (V, N, C)
    torch.testing.assert_close(out.tokens[1], both.mean(0))


def test_concat_fusion_masks_missing_views(images):
    enc = make(view_fusion="concat")
    view_mask = torch.tensor([[True, False], [True, True]])
    out = enc(images, view_mask)
    N = enc.tokens_per_view
    assert enc.num_tokens(V) == V * N
    assert out.tokens.shape == (B, V * N, enc.out_dim) and out.mask.shape == (B, V * N)
    assert out.mask[0, :N].all() and not out.mask[0, N:].any() and out.mask[1].all()
    torch.testing.assert_close(out.tokens[1, N:], enc.encode_views(images[1, 1:])[0])


def test_grayscale_input_and_one_channel_backbone(images):
    gray = images[:, :, :1]
    enc = make()
    torch.testing.assert_close(enc(gray).tokens, enc(gray.expand(-1, -1, 3, -1, -1)).tokens)
    assert make(in_chans=1)(gray).tokens.shape == (B, 64, 64)


def test_bad_inputs_are_named(images):
    enc = make()
    with pytest.raises(ValueError, match="at least one valid view"):
        enc(images, torch.tensor([[False, False], [True, True]]))
    with pytest.raises(ValueError, match="channels"):
        enc(images[:, :, :2])
    with pytest.raises(ValueError, match="trainable_stages"):
        VisionConfig.debug(freeze="partial", trainable_stages=-1)
    with pytest.raises(ValueError, match="trainable_stages=3"):
        make(freeze="partial", trainable_stages=3)
    with pytest.raises(ValueError, match="pretrained"):
        VisionConfig(model_kwargs={"pretrained": True})


def test_frozen_encoder_stays_frozen(images):
    enc = make(freeze="all")
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.backbone.modules())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    # a trainable layer on top: the optimizer steps, the backbone does not move
    probe = torch.nn.Linear(enc.out_dim, 1)
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad] + list(probe.parameters()),
                          lr=1.0)
    loss = probe(enc(images).tokens).pow(2).mean()
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in enc.parameters())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_partial_freeze_trains_last_stage_and_final_norm(images):
    enc = make(freeze="partial", trainable_stages=1).train()
    trainable = {n for n, p in enc.backbone.named_parameters() if p.requires_grad}
    expected = {n for n, _ in enc.backbone.named_parameters()
                if n.startswith(("layers.1.", "norm."))}
    assert trainable == expected and trainable
    assert not enc.backbone.patch_embed.training and not enc.backbone.layers[0].training
    assert enc.backbone.layers[1].training
    enc(images).tokens.sum().backward()
    assert all((p.grad is not None) == (n in expected) for n, p in enc.backbone.named_parameters())

    head_only = make(freeze="partial", trainable_stages=0)
    assert {n for n, p in head_only.backbone.named_parameters() if p.requires_grad} == {
        "norm.weight", "norm.bias"}


def test_weights_round_trip_torch_and_safetensors(images, tmp_path):
    from safetensors.torch import save_file

    src = make()
    torch.manual_seed(123)
    for p in src.parameters():
        p.data.normal_(0, 0.1)
    expected = src(images).tokens
    torch.save({"state_dict": src.backbone.state_dict()}, tmp_path / "swin.pt")
    save_file(src.backbone.state_dict(), tmp_path / "swin.safetensors")
    for name in ("swin.pt", "swin.safetensors"):
        loaded = make(weights=str(tmp_path / name))
        torch.testing.assert_close(loaded(images).tokens, expected)


def test_weights_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        make(weights=str(tmp_path / "absent.safetensors"))
    state = make().backbone.state_dict()
    state["head.fc.weight"] = torch.zeros(5, 64)  # a classifier is dropped silently
    state.pop("norm.bias")
    state["extra.weight"] = torch.zeros(1)
    state["norm.weight"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pt")
    target = make().backbone
    with pytest.raises(ValueError) as err:
        load_backbone_weights(target, tmp_path / "bad.pt")
    msg = str(err.value)
    assert "1 missing [norm.bias]" in msg and "1 unexpected [extra.weight]" in msg
    assert "norm.weight: saved (7,) vs model (64,)" in msg and "head.fc" not in msg


def test_a_cnn_backbone_gives_nhwc_ordered_tokens():
    """A timm CNN (NCHW feature map, no img_size argument) yields (B, H'W', C) tokens in the same
    row-major order as Swin: token n is feature-map position (n // W', n % W')."""
    cfg = VisionConfig(model_name="resnet10t", img_size=64, in_chans=1,
                       model_kwargs={"channels": (8, 8, 16, 16), "stem_width": 8})
    enc = SwinEncoder(cfg).eval()
    x = torch.randn(2, 1, 1, 64, 64)
    out = enc(x)
    assert out.tokens.shape == (2, enc.num_tokens(1), 16) == (2, 4, 16)
    fmap = enc.backbone.forward_features(x[:, 0])               # (2, 16, 2, 2) NCHW
    torch.testing.assert_close(out.tokens[:, 1], fmap[:, :, 0, 1])
