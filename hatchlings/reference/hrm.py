"""HRM's equations written out plainly: the oracle the contract compares the model with.

Written from the math (DESIGN.md §3 hrm, issue 13), not from modeling_hrm.py: one sequence at a time, the
cycles and steps as plain loops, every block as its formulas, RoPE as a complex rotation of channel pairs
(2k, 2k+1), and attention one query at a time as an explicit softmax over the keys up to it. Only the
weights come from the model; no cache, no padding, no fused kernels, the config's default depth.

    x = sqrt(D) * E[ids];  z_L, z_H = the model's initial vectors
    for n in 1..N:  (for t in 1..T: z_L = L(z_L + z_H + x));  z_H = H(z_H + z_L)
    logits = z_H W_head^T
"""

from __future__ import annotations

import math

import torch


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: (T, d); the pair (2k, 2k+1) at position t turns by t * theta^(-2k/d)."""
    T, d = x.shape
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotor = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (T, d/2)
    return torch.view_as_real(torch.view_as_complex(x.reshape(T, d // 2, 2).contiguous()) * rotor).reshape(T, d)


def _attention(h: torch.Tensor, attn, heads: int, theta: float) -> torch.Tensor:
    """Causal softmax attention of one sequence h (T, D): query t sees keys 0..t."""
    T, D = h.shape
    d = D // heads
    q, k, v = h @ attn.q_proj.weight.T, h @ attn.k_proj.weight.T, h @ attn.v_proj.weight.T  # (T, D)
    out = []
    for head in range(heads):
        cols = slice(head * d, (head + 1) * d)
        qh, kh, vh = _rope(q[:, cols], theta), _rope(k[:, cols], theta), v[:, cols]
        rows = []
        for t in range(T):
            scores = kh @ qh[t] / math.sqrt(d)  # (T,)
            scores = scores.masked_fill(torch.arange(T) > t, float("-inf"))
            weights = torch.exp(scores - scores.max())
            rows.append((weights / weights.sum()) @ vh)
        out.append(torch.stack(rows))  # (T, d)
    return torch.cat(out, -1) @ attn.o_proj.weight.T


def _block(h: torch.Tensor, block, cfg) -> torch.Tensor:
    """Post-norm: h = RMS(h + Attn(h)); h = RMS(h + W_down(SiLU(W_gate h) * W_up h))."""
    h = _rms(h + _attention(h, block.self_attn, cfg.num_attention_heads, cfg.rope_theta), cfg.rms_norm_eps)
    mlp = block.mlp
    gate, up = h @ mlp.gate_proj.weight.T, h @ mlp.up_proj.weight.T
    return _rms(h + (gate * torch.sigmoid(gate) * up) @ mlp.down_proj.weight.T, cfg.rms_norm_eps)


def _module(state: torch.Tensor, injection: torch.Tensor, module, cfg) -> torch.Tensor:
    h = state + injection
    for block in module.layers:
        h = _block(h, block, cfg)
    return h


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The record's reference hook: input_ids (B, T) -> logits (B, T, V) at the config's default depth."""
    cfg, trunk = model.config, model.model
    N, steps = cfg.depth()
    logits = []
    for ids in input_ids:
        x = trunk.embed_tokens.weight[ids] * math.sqrt(cfg.hidden_size)  # (T, D)
        z_L = trunk.z_L_init.expand_as(x)
        z_H = trunk.z_H_init.expand_as(x)
        for _ in range(N):
            for _ in range(steps):
                z_L = _module(z_L, z_H + x, trunk.L_module, cfg)
            z_H = _module(z_H, z_L, trunk.H_module, cfg)
        logits.append(z_H @ model.lm_head.weight.T)
    return torch.stack(logits)
