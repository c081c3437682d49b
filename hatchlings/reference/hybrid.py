"""The Hybrid Hopfield-SSM's equations, written out plainly: the oracle the contract compares the model with.

Written from the math in modeling_hybrid.py's docstrings, not from its code: one sequence at a time, the SSM
as a loop over time steps (conv taps summed explicitly, the state updated token by token), attention one query
at a time over its earlier keys, the Hopfield retrieval token by token, and the segments with their
controller bias. Only the weights come from the model. No cache, no padding, no fused kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x: torch.Tensor, norm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _linear(x: torch.Tensor, layer) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


def _ssm(n: torch.Tensor, ssm) -> torch.Tensor:
    """n: (T, D) one sequence -> (T, D). h_t = exp(dt A) g_f h_{t-1} + g_in dt c B_t; y_t = h_t C_t + skip c."""
    T, D = n.shape
    K = ssm.conv_weight.shape[1]
    u = n @ ssm.in_proj.weight.T  # (T, D)
    A = -torch.exp(ssm.log_A)  # (D, N)
    h = torch.zeros_like(A)
    outputs = []
    for t in range(T):
        conv = ssm.conv_bias.clone()
        for j in range(K):  # tap j reads token t - K + 1 + j (zero before the start)
            s = t - K + 1 + j
            if s >= 0:
                conv = conv + ssm.conv_weight[:, j] * u[s]
        c = conv * torch.sigmoid(conv)  # SiLU, (D,)
        dt = F.softplus(ssm.dt_up.weight @ (ssm.dt_down.weight @ c) + ssm.dt_bias)  # (D,)
        bc = ssm.bc_proj.weight @ c
        B_t, C_t = bc[: bc.shape[0] // 2], bc[bc.shape[0] // 2:]  # (N,) each
        gates = ssm.gate_proj.weight @ c + ssm.gate_bias
        g_in, g_f = torch.sigmoid(gates[:D]), torch.sigmoid(gates[D:])  # (D,) each
        h = torch.exp(dt[:, None] * A) * g_f[:, None] * h + (g_in * dt * c)[:, None] * B_t[None, :]  # (D, N)
        outputs.append(h @ C_t + ssm.skip * c)
    return torch.stack(outputs) @ ssm.out_proj.weight.T


def _hopfield(n: torch.Tensor, hop) -> torch.Tensor:
    """n: (T, D) -> (T, D), token by token: xi_k = softmax(beta xi_{k-1} M^T) M, depths mixed by the gate."""
    beta, M = torch.exp(hop.log_beta), hop.memory
    rows = []
    for t in range(n.shape[0]):
        xi = hop.query.weight @ n[t]  # (D,)
        depths = []
        for _ in range(hop.steps):
            xi = torch.softmax(beta * (M @ xi), 0) @ M
            depths.append(xi)
        if hop.depth_gate is None:
            rows.append(depths[0])
        else:
            w = torch.softmax(_linear(n[t], hop.depth_gate), 0)  # (K,)
            rows.append(sum(w[k] * depths[k] for k in range(hop.steps)))
    return torch.stack(rows)


def _attention(n: torch.Tensor, attn) -> torch.Tensor:
    """n: (T, D) -> (T, D): per head and query t, softmax over keys 0..t of q.k / sqrt(d)."""
    T, D = n.shape
    H = attn.heads
    d = D // H
    q, k, v = n @ attn.q_proj.weight.T, n @ attn.k_proj.weight.T, n @ attn.v_proj.weight.T
    out = torch.zeros(T, D, dtype=n.dtype)
    for h in range(H):
        cols = slice(h * d, (h + 1) * d)
        for t in range(T):
            scores = k[: t + 1, cols] @ q[t, cols] / math.sqrt(d)  # (t + 1,)
            out[t, cols] = torch.softmax(scores, 0) @ v[: t + 1, cols]
    return out @ attn.o_proj.weight.T


def _block(x: torch.Tensor, block, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (T, D), bias: (T, P) or None -> new x, mixer weights (T, P)."""
    n = _ln(x, block.norm)
    paths = {"ssm": lambda: _ssm(n, block.ssm), "hopfield": lambda: _hopfield(n, block.hopfield),
             "attention": lambda: _attention(n, block.attention)}
    outs = torch.stack([paths[p]() for p in block.paths], 1)  # (T, P, D)
    if block.mixer is None:
        weights = torch.ones(outs.shape[:2], dtype=x.dtype)
    else:
        logits = _linear(F.gelu(_linear(n, block.mixer.fc_in)), block.mixer.fc_out)  # (T, P)
        weights = torch.softmax(logits + (0 if bias is None else bias), -1)
    x = x + (weights[..., None] * outs).sum(1)
    f = _linear(F.gelu(_linear(_ln(x, block.ffn_norm), block.fc_in)), block.fc_out)
    return x + f, weights


def reference_hybrid(ids: torch.Tensor, model) -> torch.Tensor:
    """ids: (T,) one sequence -> logits (T, V), every segment run in full (no stop-gradient shortcuts needed:
    the controller reads a detached state, so gradients match the model's)."""
    trunk, cfg = model.model, model.config
    T = ids.shape[0]
    h0 = trunk.embed_tokens.weight[ids] + trunk.embed_positions.weight[:T]  # (T, D)
    bias = None
    for segment in range(cfg.n_segments):
        x = h0
        for layer, block in enumerate(trunk.layers):
            x, _ = _block(x, block, None if bias is None else bias[:, layer])
        if trunk.controller is not None and segment < cfg.n_segments - 1:
            ctrl, s = trunk.controller, x.detach()
            bias = _linear(torch.tanh(_linear(_ln(s, ctrl.norm), ctrl.fc_in)), ctrl.fc_out)
            bias = bias.view(T, cfg.num_hidden_layers, -1)  # (T, L, P)
    return _ln(x, trunk.norm) @ model.lm_head.weight.T


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The record's reference hook: logits (B, T, V) of `input_ids` (B, T) with `model`'s weights."""
    return torch.stack([reference_hybrid(ids, model) for ids in input_ids])
