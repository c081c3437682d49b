"""HoloSpectralNet exactly as its equations state it, one time step at a time: the oracle the FFT paths match.

Written from the math (DESIGN.md §3 holospectral; issue 14), not from the model's code, and sharing none of its
helpers: binding and unbinding are explicit index sums over the features, the gate's kernel is the inverse DFT
of the full (Hermitian) L-point spectrum summed term by term, and both the holographic bundle and the causal
convolution are Python loops over time. Only the weights come from the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reference_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate feature pair (2i, 2i+1) of the token at position t by t * theta^(-2i/D). x: (B, T, D)."""
    B, T, D = x.shape
    i = torch.arange(D // 2, dtype=torch.float64)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2 * i / D)  # (T, D/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(B, T, D)


def bind_matrix(key: torch.Tensor) -> torch.Tensor:
    """M[i, j] = key[(i - j) mod D]: (M v)[i] = sum_j v[j] key[(i - j) mod D], the circular convolution."""
    D = key.shape[0]
    return key[torch.tensor([[(i - j) % D for j in range(D)] for i in range(D)])]


def unbind_matrix(key: torch.Tensor) -> torch.Tensor:
    """M[i, m] = key[(m - i) mod D]: (M v)[i] = sum_j key[j] v[(i + j) mod D], the circular correlation."""
    D = key.shape[0]
    return key[torch.tensor([[(m - i) % D for m in range(D)] for i in range(D)])]


def reference_kernel(gate: torch.Tensor, length: int) -> torch.Tensor:
    """h[j] = (1/L) sum_{m=0}^{L-1} G[m] cos(2 pi m j / L), j = 0..L//2, with the full Hermitian spectrum
    G[m] = sigmoid(gate[min(m, L - m)]): the real filter's non-negative lags."""
    gains = torch.sigmoid(gate)
    spectrum = gains[torch.tensor([min(m, length - m) for m in range(length)])]  # (L,)
    m = torch.arange(length, dtype=torch.float64)
    taps = []
    for j in range(length // 2 + 1):
        taps.append((spectrum * torch.cos(2 * math.pi * m * j / length).to(gate.dtype)).sum() / length)
    return torch.stack(taps)


def reference_holospectral(ids: torch.Tensor, w: dict, cfg) -> torch.Tensor:
    """ids (B, T) -> logits (B, T, V), every layer's mixer and gate as loops over time."""
    B, T = ids.shape
    eps = cfg.layer_norm_eps
    x = reference_rope(w["embed"][ids], cfg.rope_theta)  # (B, T, D)
    for layer in w["layers"]:
        n = F.layer_norm(x, x.shape[-1:], layer["mixer_norm.weight"], layer["mixer_norm.bias"], eps)
        bind, unbind = bind_matrix(layer["mixer.bind_key"]), unbind_matrix(layer["mixer.unbind_key"])
        bundle, mixed = torch.zeros_like(x[:, 0]), []
        for t in range(T):  # the hologram: sum of the bound tokens so far, read as a mean
            bundle = bundle + n[:, t] @ bind.T
            mixed.append((bundle / (t + 1)) @ unbind.T)
        x = x + torch.stack(mixed, 1)

        u = F.layer_norm(x, x.shape[-1:], layer["gate_norm.weight"], layer["gate_norm.bias"], eps)
        h = reference_kernel(layer["gate.gate"], cfg.max_position_embeddings)  # (K,)
        gated = []
        for t in range(T):  # y_t = sum_{j=0}^{min(t, K-1)} h[j] u_{t-j}
            y = torch.zeros_like(u[:, 0])
            for j in range(min(t, h.shape[0] - 1) + 1):
                y = y + h[j] * u[:, t - j]
            gated.append(y)
        x = x + torch.stack(gated, 1)

        c = F.layer_norm(x, x.shape[-1:], layer["channel_norm.weight"], layer["channel_norm.bias"], eps)
        hidden = F.gelu(c @ layer["channel_mix.down.weight"].T)
        x = x + layer["channel_mix.scale"] * (hidden @ layer["channel_mix.up.weight"].T)
    x = F.layer_norm(x, x.shape[-1:], w["norm.weight"], w["norm.bias"], eps)
    return x @ w["lm_head"].T


def model_weights(model) -> dict:
    """The parameters the reference reads, by name (the model's own tensors, so gradients reach them)."""
    trunk = model.model
    return {"embed": trunk.embed_tokens.weight, "lm_head": model.lm_head.weight,
            "norm.weight": trunk.norm.weight, "norm.bias": trunk.norm.bias,
            "layers": [dict(block.named_parameters()) for block in trunk.layers]}


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The record's reference hook: logits (B, T, V) of `input_ids` (B, T) with `model`'s weights."""
    return reference_holospectral(input_ids, model_weights(model), model.config)
