"""BDH exactly as the paper's equations state it: the unoptimized formulation we measure against.

Written directly from the math (DESIGN.md §3, bdh), sharing only the weights of a `BdhForCausalLM`:
every layer builds the full T x T score matrix between rotated sparse neurons and masks it to strictly
earlier tokens. No chunks, no state, no cache: generating a token recomputes the whole prefix. The
tests use it as the oracle our chunked and recurrent paths must match; `hatchlings bench bdh` times it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rotate(v: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE on neuron pairs (2k, 2k+1) by angle t * theta^(-2k/N); v: (B, H, T, N), positions: (T,)."""
    n = v.shape[-1]
    k = torch.arange(n // 2, dtype=torch.float64)
    angle = torch.remainder(positions.double()[:, None] * theta ** (-2 * k / n), 2 * math.pi)  # (T, N/2)
    cos = torch.cos(angle).repeat_interleave(2, dim=-1).to(v.dtype)  # (T, N)
    sin = torch.sin(angle).repeat_interleave(2, dim=-1).to(v.dtype)
    swapped = torch.stack((-v[..., 1::2], v[..., 0::2]), dim=-1).reshape(v.shape)  # (-b, a) per pair
    return v * cos + swapped * sin


def reference_bdh_forward(model, input_ids: torch.Tensor, return_activations: bool = False):
    """Logits (B, T, V) of `model` (a BdhForCausalLM) computed by the reference equations.

    With `return_activations`, also returns a list of (x_sparse, y_sparse) per layer, each (B, H, T, N).
    """
    cfg = model.config
    block = model.model.block
    eps = cfg.layer_norm_eps
    ln = lambda t: F.layer_norm(t, (t.shape[-1],), eps=eps)  # noqa: E731  (affine-free LayerNorm)
    B, T = input_ids.shape
    H, D, N = block.encoder.shape

    x = ln(model.model.embed_tokens.weight[input_ids])[:, None]  # (B, 1, T, D)
    positions = torch.arange(T)
    activations = []
    for _ in range(cfg.num_hidden_layers):
        x_sparse = F.relu(x @ block.encoder)  # (B, H, T, N)
        q = _rotate(x_sparse, positions, cfg.rope_theta)
        scores = (q @ q.transpose(-1, -2)).tril(diagonal=-1)  # (B, H, T, T): strictly earlier tokens
        a = ln(scores @ x)  # (B, H, T, D)
        y_sparse = F.relu(a @ block.encoder_v)  # (B, H, T, N)
        xy = (x_sparse * y_sparse).transpose(1, 2).reshape(B, 1, T, H * N)
        x = ln(x + ln(xy @ block.decoder))  # (B, 1, T, D)
        activations.append((x_sparse, y_sparse))
    logits = x[:, 0] @ model.lm_head.weight.T  # (B, T, V)
    return (logits, activations) if return_activations else logits
