"""HRAN exactly as its equations state it: the oracle the model's fused and cached paths must match.

Written from the math (DESIGN.md §3 hran, issue 16), not from the model's code: RMSNorm from its formula, RoPE
as a complex rotation of adjacent channel pairs with float64 angles, RBF attention one query at a time as a
softmax over the explicit squared distances -gamma ||q_t - k_s||^2 (s <= t; no augmented vectors, no fused
kernel, the ||q||^2 term never dropped), the infomax activation and the lateral-inhibition gate elementwise
by their formulas. Only the weights come from the model; no cache, no padding. The record names
`reference_logits` as HRAN's reference.
"""

from __future__ import annotations

import math

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: (T, d); channel pair (2i, 2i+1) at position t turns by t * theta^(-2i/d)."""
    T, d = x.shape
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotor = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (T, d/2)
    pairs = torch.complex(x[:, 0::2].float(), x[:, 1::2].float()) * rotor
    return torch.stack([pairs.real, pairs.imag], -1).reshape(T, d).to(x.dtype)


def attention(x: torch.Tensor, attn, cfg) -> torch.Tensor:
    """Causal attention of one sequence x (T, D), query by query: RBF or dot-product by cfg.attention."""
    T, D = x.shape
    H = cfg.num_attention_heads
    d = D // H
    q, k, v = x @ attn.q_proj.weight.T, x @ attn.k_proj.weight.T, x @ attn.v_proj.weight.T  # (T, D)
    out = []
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        qh, kh, vh = rope(q[:, cols], cfg.rope_theta), rope(k[:, cols], cfg.rope_theta), v[:, cols]
        rows = []
        for t in range(T):  # query t sees keys 0..t
            if cfg.attention == "rbf":
                gamma = torch.log1p(torch.exp(attn.gamma_raw[h]))  # softplus: positive
                diff = qh[t][None, :] - kh[:t + 1]  # (t+1, d): q_t - k_s
                logits = -gamma * (diff * diff).sum(-1)  # -gamma ||q_t - k_s||^2
            else:
                logits = kh[:t + 1] @ qh[t] / math.sqrt(d)
            rows.append(torch.softmax(logits, 0) @ vh[:t + 1])  # (d,)
        out.append(torch.stack(rows))  # (T, d)
    return torch.cat(out, -1) @ attn.o_proj.weight.T


def feed_forward(x: torch.Tensor, ffn, cfg) -> torch.Tensor:
    """W_down Inhibit(f(W_up x)): f(u) = tanh(u) + alpha u or GELU; Inhibit(h) = sign(h) relu(|h| - lambda mean|h|)."""
    u = x @ ffn.up_proj.weight.T  # (T, F)
    if cfg.activation == "infomax":
        h = torch.tanh(u) + cfg.infomax_alpha * u
    else:
        h = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
    if cfg.lateral_inhibition:
        lam = 1 / (1 + torch.exp(-ffn.inhibition_logit))  # sigmoid: in (0, 1)
        threshold = lam * h.abs().mean(-1, keepdim=True)  # (T, 1): every unit inhibits every other equally
        h = torch.sign(h) * torch.relu(h.abs() - threshold)
    return h @ ffn.down_proj.weight.T


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """input_ids (B, T) -> logits (B, T, V) with the model's weights."""
    cfg, trunk = model.config, model.model
    logits = []
    for ids in input_ids:
        x = trunk.embed_tokens.weight[ids]  # (T, D)
        for layer in trunk.layers:
            x = x + attention(rms_norm(x, layer.attn_norm.weight, cfg.rms_norm_eps), layer.attn, cfg)
            x = x + feed_forward(rms_norm(x, layer.ffn_norm.weight, cfg.rms_norm_eps), layer.ffn, cfg)
        logits.append(rms_norm(x, trunk.norm.weight, cfg.rms_norm_eps) @ model.lm_head.weight.T)
    return torch.stack(logits)
