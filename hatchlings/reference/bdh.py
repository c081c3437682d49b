"""BDH exactly as the paper's equations state it: the unoptimized formulation we test and measure against.

Written from the math (DESIGN.md §3, bdh), not from the model's code: every layer materialises the full
masked T x T score matrix and rotates neuron pairs with complex numbers, so an error in the model's
chunking, state carry-over or RoPE cannot hide in a shared helper. Only the weights come from the model.
No chunks, no state, no cache: generating a token recomputes the whole prefix. The tests use it as the
oracle the chunked and recurrent paths must match; `hatchlings bench bdh` times it (bench/reference.py). BDH's record names
`reference_logits` as its reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modeling import BdhConfig


def reference_rope(v: torch.Tensor, theta: float, period: int | None = None) -> torch.Tensor:
    """Rotate neuron pair (2k, 2k+1) at position t by t * theta^(-2k'/P), k' = k mod P/2, as a complex product.

    P = `period` (default N): the frequencies repeat every P neurons (a merged model's parents each keep theirs).
    v: (B, H, T, N) -> (B, H, T, N). Angles in float64, then cast to v's dtype.
    """
    T, N = v.shape[2], v.shape[3]
    P = period or N
    k = torch.arange(N // 2, dtype=torch.float64) % (P // 2)
    angles = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2 * k / P)  # (T, N/2)
    rotor = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (T, N/2), e^{i angle}
    pairs = torch.view_as_complex(v.reshape(*v.shape[:-1], N // 2, 2).contiguous())  # a + ib per pair
    return torch.view_as_real(pairs * rotor).reshape(v.shape)


def reference_bdh(ids: torch.Tensor, weights: dict[str, torch.Tensor], cfg: BdhConfig):
    """The BDH equations, verbatim and quadratic. ids: (B, T) -> logits (B, T, V), per-layer (x_sparse, y)."""
    def ln(t):
        return F.layer_norm(t, (t.shape[-1],), eps=cfg.layer_norm_eps)

    enc, enc_v, dec = weights["encoder"], weights["encoder_v"], weights["decoder"]  # (H,D,N), (H,D,N), (H*N,D)
    B, T = ids.shape
    H, D, N = enc.shape
    x = ln(weights["embed"][ids])  # (B, T, D)
    neurons = []
    for _ in range(cfg.num_hidden_layers):  # the same weights in every layer
        x_sparse = torch.relu(torch.einsum("btd,hdn->bhtn", x, enc))  # (B, H, T, N)
        qr = reference_rope(x_sparse, cfg.rope_theta, cfg.rotary_period)  # queries == keys
        scores = (qr @ qr.transpose(-1, -2)).tril(-1)  # (B, H, T, T), strictly earlier tokens, no softmax
        a = ln(scores @ x[:, None])  # (B, H, T, D); the values are x itself, shared by all heads
        y = torch.relu(torch.einsum("bhtd,hdn->bhtn", a, enc_v))  # (B, H, T, N)
        z = (x_sparse * y).transpose(1, 2).reshape(B, T, H * N) @ dec  # (B, T, D)
        x = ln(x + ln(z))
        neurons.append((x_sparse, y))
    return x @ weights["lm_head"].T, neurons


def reference_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """The record's reference hook: logits (B, T, V) of `input_ids` (B, T) with `model`'s weights."""
    return reference_bdh(input_ids, model_weights(model), model.config)[0]


def model_weights(model) -> dict[str, torch.Tensor]:
    """The parameters the reference reads, by the names of the equations (the model's own tensors)."""
    block = model.model.block
    return {"embed": model.model.embed_tokens.weight, "encoder": block.encoder, "encoder_v": block.encoder_v,
            "decoder": block.decoder, "lm_head": model.lm_head.weight}
