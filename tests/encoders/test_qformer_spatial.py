"""DiseaseQFormer's spatial head: a linear map of each view's token grid, averaged over valid views."""
from __future__ import annotations

import pytest
import torch

from cxr.observations import OBSERVATIONS
from encoders.qformer import DiseaseQFormer, QFormerConfig
from generator.config import ModelConfig

B, n, C = 3, 4, 8


def _pair(seed: int = 0) -> tuple[DiseaseQFormer, DiseaseQFormer]:
    """The same Q-Former with and without the spatial head (shared weights)."""
    torch.manual_seed(seed)
    spatial = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, spatial_head=True, encoder_tokens=n)).eval()
    plain = DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C)).eval()
    plain.load_state_dict({k: v for k, v in spatial.state_dict().items() if not k.startswith("spatial.")})
    return spatial, plain


def test_spatial_logits_are_the_linear_map_of_the_grid_added_to_the_query_logits():
    spatial, plain = _pair()
    tokens = torch.randn(B, n, C)
    expected = plain(tokens).logits + spatial.spatial(tokens.reshape(B, n * C))
    torch.testing.assert_close(spatial(tokens).logits, expected)


def test_spatial_head_knows_where_a_token_is():
    """Swapping two grid positions changes its logits; the plain queries' pooling does not see it."""
    spatial, plain = _pair(1)
    tokens = torch.randn(1, n, C)
    swapped = tokens[:, [1, 0, 2, 3]]
    torch.testing.assert_close(plain(swapped).logits, plain(tokens).logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(spatial(swapped).logits, spatial(tokens).logits, atol=1e-4)


def test_concatenated_views_average_over_the_valid_ones():
    spatial, plain = _pair(2)
    views = torch.randn(B, 2, n, C)
    mask = torch.ones(B, 2 * n, dtype=torch.bool)
    mask[1, n:] = False                        # study 1 has one view
    views[1, 1] = 50.0                         # whatever the padding holds, it must not count
    got = spatial(views.reshape(B, 2 * n, C), mask).logits - plain(views.reshape(B, 2 * n, C), mask).logits
    per_view = spatial.spatial(views.reshape(B, 2, n * C))
    torch.testing.assert_close(got[0], per_view[0].mean(0))
    torch.testing.assert_close(got[1], per_view[1, 0])


def test_token_count_that_is_not_whole_views_is_an_error():
    spatial, _ = _pair()
    with pytest.raises(ValueError, match="not whole views of 4 tokens"):
        spatial(torch.randn(1, n + 1, C))


def test_spatial_head_needs_the_token_count():
    with pytest.raises(ValueError, match="needs encoder_tokens"):
        DiseaseQFormer(QFormerConfig.debug(encoder_hidden_size=C, spatial_head=True))
    with pytest.raises(ValueError, match="encoder_tokens must be ≥ 0"):
        QFormerConfig(encoder_tokens=-1)


def test_model_config_derives_the_tokens_per_view():
    derived = ModelConfig().derive(vision_dim=C, text_dim=16, vision_tokens=n)
    assert derived.qformer.encoder_tokens == n and derived.qformer.encoder_hidden_size == C
    assert derived.derive(vision_dim=C, text_dim=16).qformer.encoder_tokens == n
    assert len(OBSERVATIONS) == derived.qformer.num_queries
