"""Swin image encoder: a study's views (B, V, C, H, W) + view mask (B, V) → visual tokens
(B, N', C) + token mask (B, N'). Uses only timm's public interface: ``create_model`` and
``forward_features`` (NHWC for Swin, flattened here to (B, N, C)). Any timm backbone with a
final feature map works the same way (a CNN's NCHW map is permuted first): configs/iu_phantom.yaml
uses one because a from-scratch Swin does not learn the phantoms within a CPU budget
(docs/results.md).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from cxr.home import in_home
from encoders.state import StateDictError, load_state


class FreezeMode(str, Enum):
    NONE = "none"        # everything trains
    ALL = "all"          # the whole backbone is a fixed feature extractor
    PARTIAL = "partial"  # the last `trainable_stages` stages + the final norm train


class ViewFusion(str, Enum):
    MEAN = "mean"      # token-wise mean over the valid views: N' = N
    CONCAT = "concat"  # views side by side: N' = V * N, tokens of missing views masked


@dataclass
class VisionConfig:
    model_name: str = "swin_base_patch4_window7_224"  # the paper's encoder
    img_size: int = 224
    in_chans: int = 3  # 3: grayscale X-rays are replicated; 1: timm adapts the patch embedding
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra create_model kwargs
    weights: str | None = None  # local .safetensors or torch state dict; never downloaded
    freeze: FreezeMode = FreezeMode.NONE
    trainable_stages: int = 1  # only read when freeze == "partial"
    view_fusion: ViewFusion = ViewFusion.MEAN

    def __post_init__(self) -> None:
        self.freeze = FreezeMode(self.freeze)
        self.view_fusion = ViewFusion(self.view_fusion)
        if self.in_chans not in (1, 3):
            raise ValueError(f"VisionConfig.in_chans must be 1 or 3, got {self.in_chans}")
        if self.img_size <= 0:
            raise ValueError(f"VisionConfig.img_size must be positive, got {self.img_size}")
        if self.trainable_stages < 0:
            raise ValueError(f"VisionConfig.trainable_stages must be >= 0, got {self.trainable_stages}")
        reserved = {"pretrained", "num_classes", "img_size", "in_chans"} & set(self.model_kwargs)
        if reserved:
            raise ValueError(f"VisionConfig.model_kwargs must not set {sorted(reserved)}; "
                             "use the VisionConfig fields (pretrained is always False)")

    @classmethod
    def debug(cls, **overrides: Any) -> VisionConfig:
        """A 73k-parameter two-stage Swin on 64x64 images: 8x8 = 64 tokens of width 64."""
        kwargs: dict[str, Any] = {
            "model_name": "swin_tiny_patch4_window7_224", "img_size": 64,
            "model_kwargs": {"embed_dim": 32, "depths": (1, 1), "num_heads": (1, 2), "window_size": 4},
        }
        return cls(**(kwargs | overrides))


@dataclass
class VisionOutput:
    tokens: torch.Tensor  # (B, N', C)
    mask: torch.Tensor    # (B, N') bool, True = a real token


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint into a timm model, strictly; never touches the network.

    Accepts .safetensors or a torch file holding a state dict (optionally under "state_dict" or
    "model"). Classifier keys (``head.*``) are dropped: the encoder is built with
    ``num_classes=0``. Any other missing, unexpected or mis-shaped key is an error that names them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vision weights not found: {path} (weights are only read from a "
                                "local file; nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
                state = state[key]
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}

    try:
        load_state(model, state, path)
    except StateDictError as err:
        raise ValueError(f"{err}. Check model_name / img_size / model_kwargs against the checkpoint.") from None


def _create(config: VisionConfig) -> nn.Module:
    """timm model, never pretrained. Transformers take ``img_size``; CNNs have no such argument."""
    kwargs = dict(pretrained=False, num_classes=0, in_chans=config.in_chans, **config.model_kwargs)
    try:
        return timm.create_model(config.model_name, img_size=config.img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(config.model_name, **kwargs)


class SwinEncoder(nn.Module):
    """Per-view Swin features, fused over the views of a study.

    Padding views (view_mask False) are never run through the backbone. ``mean`` averages each
    token position over the valid views; ``concat`` keeps all V * N tokens and masks the
    padding views' tokens. Every study needs at least one valid view.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _create(config)
        if config.weights is not None:
            load_backbone_weights(self.backbone, in_home(config.weights))   # a config path: under the project home
        self.out_dim: int = self.backbone.num_features
        stride = self.backbone.feature_info[-1]["reduction"]
        self.tokens_per_view: int = (config.img_size // stride) ** 2
        self._frozen_modules = self._freeze(config.freeze, config.trainable_stages)
        self.train()

    def num_tokens(self, num_views: int = 1) -> int:
        """N' of the output for studies padded to ``num_views`` views."""
        return self.tokens_per_view * (num_views if self.config.view_fusion == ViewFusion.CONCAT else 1)

    def _freeze(self, mode: FreezeMode, trainable_stages: int) -> tuple[str, ...]:
        """Set requires_grad; return the (maximal) backbone submodules left fully frozen."""
        params = list(self.backbone.named_parameters())
        if mode == FreezeMode.NONE:
            return ()
        trainable: set[str] = set()
        if mode == FreezeMode.PARTIAL:
            stages = [info["module"] for info in self.backbone.feature_info]
            if trainable_stages > len(stages):
                raise ValueError(f"VisionConfig.trainable_stages={trainable_stages} but "
                                 f"{self.config.model_name} has {len(stages)} stages")
            in_stage = [i for i, (n, _) in enumerate(params)
                        if any(n.startswith(s + ".") for s in stages)]
            tail = {n for n, _ in params[in_stage[-1] + 1:]}  # after the last stage: final norm
            last = tuple(s + "." for s in stages[len(stages) - trainable_stages:])
            trainable = tail | {n for n, _ in params if trainable_stages and n.startswith(last)}
        for name, p in params:
            p.requires_grad_(name in trainable)
        frozen: list[str] = []
        for name, module in self.backbone.named_modules():
            if any(name.startswith(f + ".") or f == "" for f in frozen):
                continue
            own = list(module.parameters())
            if own and not any(p.requires_grad for p in own):
                frozen.append(name)
        return tuple(frozen)

    def train(self, mode: bool = True) -> SwinEncoder:
        super().train(mode)
        for name in self._frozen_modules:  # frozen parts never see dropout / drop-path
            self.backbone.get_submodule(name).eval()
        return self

    def encode_views(self, images: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) → (M, N, C_out)."""
        if images.shape[1] == 1 and self.config.in_chans == 3:
            images = images.expand(-1, 3, -1, -1)  # grayscale → the 3 channels Swin expects
        fully_frozen = self.config.freeze == FreezeMode.ALL
        with torch.set_grad_enabled(torch.is_grad_enabled() and not fully_frozen):
            feats = self.backbone.forward_features(images)  # (M, H', W', C) for Swin
        if feats.ndim == 4:
            if getattr(self.backbone, "output_fmt", "NCHW") != "NHWC":
                feats = feats.permute(0, 2, 3, 1)  # CNN backbones (NCHW) → NHWC like Swin
            feats = feats.flatten(1, 2)  # (M, N, C)
        if feats.shape[1:] != (self.tokens_per_view, self.out_dim):
            raise RuntimeError(f"backbone gave {tuple(feats.shape)}, expected "
                               f"(M, {self.tokens_per_view}, {self.out_dim})")
        return feats

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> VisionOutput:
        """images (B, V, C, H, W), view_mask (B, V) bool (None: all views valid)."""
        if images.ndim != 5:
            raise ValueError(f"images must be (B, V, C, H, W), got {tuple(images.shape)}")
        B, V, C = images.shape[:3]
        if C not in (1, self.config.in_chans):
            raise ValueError(f"images have {C} channels; expected 1 or {self.config.in_chans}")
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=images.device)
        view_mask = view_mask.bool()
        if view_mask.shape != (B, V):
            raise ValueError(f"view_mask must be {(B, V)}, got {tuple(view_mask.shape)}")
        if not view_mask.any(dim=1).all():
            raise ValueError("every study needs at least one valid view (a row of view_mask is all False)")

        flat_mask = view_mask.flatten()                              # (B*V,)
        feats = self.encode_views(images.flatten(0, 1)[flat_mask])   # (M, N, C)
        per_view = feats.new_zeros(B * V, *feats.shape[1:])
        per_view[flat_mask] = feats
        per_view = per_view.view(B, V, *feats.shape[1:])             # (B, V, N, C), padding = 0
        N = feats.shape[1]

        if self.config.view_fusion == ViewFusion.MEAN:
            count = view_mask.sum(dim=1).to(per_view.dtype)          # (B,)
            tokens = per_view.sum(dim=1) / count[:, None, None]      # (B, N, C)
            mask = torch.ones(B, N, dtype=torch.bool, device=images.device)
        else:
            tokens = per_view.flatten(1, 2)                          # (B, V*N, C)
            mask = view_mask.repeat_interleave(N, dim=1)             # (B, V*N)
        return VisionOutput(tokens=tokens, mask=mask)
