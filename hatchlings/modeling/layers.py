"""Building blocks shared by every hatchlings architecture.

This file is copied next to each exported model (Hub remote code), so it may import only torch and
transformers, never the rest of hatchlings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def validate_input_ids(input_ids: torch.Tensor, vocab_size: int, max_length: int | None = None) -> None:
    """Reject inputs that would otherwise fail deep inside a kernel or silently produce garbage.

    An out-of-range id on CPU raises an opaque IndexError from the embedding; on CUDA it is a device-side
    assert that poisons the whole process. Checking here gives the user the actual problem.
    """
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): nothing to process")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"input_ids contain id {hi if hi >= vocab_size else lo} outside [0, {vocab_size}) (vocab_size)")
    if max_length is not None and input_ids.shape[1] > max_length:
        raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings={max_length}")


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim with no learned affine (BDH keeps every scale in its shared weights)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def rope_pair_cos_sin(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines for rotary embeddings that rotate adjacent pairs (2k, 2k+1) of a `dim` vector.

    Pair k turns by angle `t * theta^(-2k/dim)` at position t. The angle is reduced modulo 2*pi in
    float64 before the trig functions so that positions in the hundreds of thousands keep full float32
    accuracy, and so that every code path (parallel, chunked, token-by-token) sees bit-identical angles.

    positions: (B, T) integer positions.  Returns cos, sin: (B, 1, T, dim // 2) float32.
    """
    if dim % 2:
        raise ValueError(f"rotary dimension must be even, got {dim}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # (dim/2,)
    turns = positions.to(torch.float64)[..., None] * (inv_freq / (2 * math.pi))  # (B, T, dim/2), in full turns
    angles = (turns - torch.floor(turns)) * (2 * math.pi)
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    return cos[:, None], sin[:, None]


def apply_rope_pairs(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dim: (a, b) -> (a cos - b sin, b cos + a sin).

    v: (B, H, T, dim); cos, sin: (B, 1, T, dim // 2), broadcast over heads. Computed in v's dtype.
    """
    pairs = v.unflatten(-1, (-1, 2))  # (B, H, T, dim/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(v.dtype), sin.to(v.dtype)
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)


def positions_from_mask(attention_mask: torch.Tensor | None, batch: int, length: int, offset: torch.Tensor | None,
                        device: torch.device) -> torch.Tensor:
    """Positions that count only real tokens, so a left-padded row is numbered exactly like an unpadded one.

    offset: (B,) number of real tokens already consumed (from a cache), or None. Returns (B, T) int64;
    padded slots get the position of the next real token (they are masked out anyway).
    """
    if attention_mask is None:
        pos = torch.arange(length, device=device).expand(batch, length)
    else:
        pos = (attention_mask.long().cumsum(-1) - attention_mask.long()).to(device)
    if offset is not None:
        pos = pos + offset.to(device)[:, None]
    return pos
