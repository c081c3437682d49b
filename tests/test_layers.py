"""Shared softmax-attention helpers (hatchlings/modeling/layers.py, cache.py) that the attention-based
architectures build on: padding-aware positions and masks, fused vs plain equation, and cached decoding."""

from __future__ import annotations

import pytest
import torch

from hatchlings.modeling.cache import RecurrentStateCache
from hatchlings.modeling.layers import attention_layout, causal_attention

MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, 6, 4, generator=g, dtype=torch.float64) for _ in range(3)]


def test_positions_count_real_tokens_only():
    positions, allowed = attention_layout(MASK, 2, 6, 0, torch.device("cpu"))
    assert positions.tolist() == [[0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    assert not allowed[0, 0, 3, 1] and allowed[0, 0, 3, 2] and not allowed[1, 0, 2, 3]  # no padding, no future
    assert attention_layout(None, 2, 6, 0, torch.device("cpu"))[1] is None  # plain causal: the kernel's own mask


@pytest.mark.parametrize("mask", [None, MASK], ids=["unpadded", "left-padded"])
def test_fused_equals_plain_equation(mask):
    q, k, v = _qkv()
    allowed = attention_layout(mask, 2, 6, 0, torch.device("cpu"))[1]
    torch.testing.assert_close(causal_attention(q, k, v, allowed), causal_attention(q, k, v, allowed, fused=False))


def test_cached_decoding_equals_full_attention():
    """Token by token through RecurrentStateCache.append gives the full sequence's outputs, padding included."""
    q, k, v = _qkv(1)
    full = causal_attention(q, k, v, attention_layout(MASK, 2, 6, 0, torch.device("cpu"))[1])
    cache, steps = RecurrentStateCache(), []
    for t in range(6):
        allowed = attention_layout(MASK[:, :t + 1], 2, 1, t, torch.device("cpu"))[1]
        keys, values = cache.append(0, "key", k[:, :, t:t + 1]), cache.append(0, "value", v[:, :, t:t + 1])
        steps.append(causal_attention(q[:, :, t:t + 1], keys, values, allowed))
    real = MASK.bool()[:, None, :, None].expand_as(full)  # padding queries' outputs are never used
    torch.testing.assert_close(torch.cat(steps, 2)[real], full[real])


def test_mask_of_wrong_shape_is_named():
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        attention_layout(MASK[:, :4], 2, 6, 0, torch.device("cpu"))
