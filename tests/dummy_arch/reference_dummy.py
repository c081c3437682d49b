"""The dummy architecture's equations, written out plainly: the oracle the contract compares the model with.

Independent of modeling_dummy.py's code: RMSNorm from its formula, RoPE as a complex rotation of the channel
pairs (i, i + d/2), and attention one query position at a time over the keys up to it. Only the weights come
from the model; no cache, no padding.
"""

from __future__ import annotations

import math

import torch


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: (T, d); channel pair (i, i + d/2) at position t turns by t * theta^(-2i/d)."""
    T, d = x.shape
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    turned = torch.complex(x[:, :d // 2], x[:, d // 2:]) * torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    return torch.cat([turned.real, turned.imag], -1)


def _attention(x: torch.Tensor, attn, heads: int, theta: float) -> torch.Tensor:
    """Causal softmax attention of one sequence x (T, D), query by query."""
    T, D = x.shape
    d = D // heads
    q, k, v = x @ attn.q_proj.weight.T, x @ attn.k_proj.weight.T, x @ attn.v_proj.weight.T  # (T, D)
    out = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        qh, kh, vh = _rope(q[:, cols], theta), _rope(k[:, cols], theta), v[:, cols]
        rows = []
        for t in range(T):  # query t sees keys 0..t
            weights = torch.softmax(kh[:t + 1] @ qh[t] / math.sqrt(d), 0)  # (t + 1,)
            rows.append(weights @ vh[:t + 1])
        out.append(torch.stack(rows))  # (T, d)
    return torch.cat(out, -1) @ attn.o_proj.weight.T


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids (B, T) -> logits (B, T, V) with the model's weights."""
    cfg = model.config
    logits = []
    for ids in input_ids:
        x = model.model.embed_tokens.weight[ids]  # (T, D)
        for layer in model.model.layers:
            x = x + _attention(_rms(x, layer.input_norm.weight, cfg.rms_norm_eps), layer.attn,
                               cfg.num_attention_heads, cfg.rope_theta)
            n = _rms(x, layer.mlp_norm.weight, cfg.rms_norm_eps)
            gate, up = n @ layer.gate_proj.weight.T, n @ layer.up_proj.weight.T
            x = x + (gate * torch.sigmoid(gate) * up) @ layer.down_proj.weight.T
        logits.append(_rms(x, model.model.norm.weight, cfg.rms_norm_eps) @ model.lm_head.weight.T)
    return torch.stack(logits)
