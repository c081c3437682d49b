"""Building blocks shared by every hatchlings architecture.

This file is copied next to each exported model (Hub remote code), so it may import only torch and
transformers, never the rest of hatchlings.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import RecurrentStateCache


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


def embed_inputs(embed_tokens: nn.Embedding, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
                 hidden_size: int, max_length: int | None = None) -> torch.Tensor:
    """The input rule every model's forward shares: exactly one of ids or embeddings. Ids are checked
    (validate_input_ids) and embedded; given embeddings must be (batch, seq_len>0, hidden_size), since a
    wrong width would otherwise surface as a shape error several layers down. Returns (B, T, D)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        validate_input_ids(input_ids, embed_tokens.num_embeddings, max_length)
        return embed_tokens(input_ids)
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0 or inputs_embeds.shape[-1] != hidden_size:
        raise ValueError(f"inputs_embeds must have shape (batch, seq_len>0, {hidden_size}), "
                         f"got {tuple(inputs_embeds.shape)}")
    return inputs_embeds


def forward_cache(model: nn.Module, past_key_values: RecurrentStateCache | None,
                  use_cache: bool | None) -> RecurrentStateCache | None:
    """The cache a forward writes to. A cache passed in is always used (as in Transformers' own models);
    a new one is made only when asked for, by default outside training (`config.use_cache`)."""
    if past_key_values is not None:
        return past_key_values
    if use_cache is None:
        use_cache = model.config.use_cache and not model.training
    return RecurrentStateCache() if use_cache else None


def keep_positions(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Transformers' `logits_to_keep`: an int k keeps the last k positions (0 keeps all; generation needs
    one), a tensor keeps those indices. (B, T, D) -> (B, T', D), positions on `dim`."""
    keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return hidden[(slice(None),) * dim + (keep,)]


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dim with no learned affine (BDH keeps every scale in its shared weights)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def rope_pair_rotor(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Unit complex numbers e^{i angle} that rotate adjacent pairs (2k, 2k+1) of a `dim` vector.

    Pair k turns by angle `t * theta^(-2k/dim)` at position t. The angle is reduced modulo 2*pi in
    float64 before the trig functions so that positions in the hundreds of thousands keep full float32
    accuracy, and so that every code path (parallel, chunked, token-by-token) sees bit-identical angles.

    positions: (B, T) integer positions.  Returns (B, 1, T, dim // 2) complex64, broadcast over heads.
    """
    if dim % 2:
        raise ValueError(f"rotary dimension must be even, got {dim}")
    inv_freq = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)  # (dim/2,)
    turns = positions.to(torch.float64)[..., None] * (inv_freq / (2 * math.pi))  # (B, T, dim/2), in full turns
    angles = (turns - torch.floor(turns)) * (2 * math.pi)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)[:, None]


def apply_rope_pairs(v: torch.Tensor, rotor: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dim, (a, b) -> (a cos - b sin, b cos + a sin), as one complex product.

    One fused multiply (and its conjugate in backward) instead of the half-dozen slices, products and a
    stack of the real form: on CPU the real form's elementwise passes cost as much as a matmul.
    v: (B, H, T, dim); rotor: (B, 1, T, dim // 2) from `rope_pair_rotor`. Computed in float32.
    """
    pairs = torch.view_as_complex(v.float().unflatten(-1, (-1, 2)))  # (B, H, T, dim/2): a + ib
    return torch.view_as_real(pairs * rotor).flatten(-2).to(v.dtype)


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


def causal_lm_loss(model, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None,
                   **kwargs) -> torch.Tensor:
    """The model's `loss_function` (labels shifted inside, -100 ignored), minus predictions made from padding.

    With left padding, the first real token's label would be "predicted" from a padding slot that the model
    never saw as context; it is masked to -100 so that padded and unpadded batches score the same tokens.
    logits: (B, T, V); labels, attention_mask: (B, T).
    """
    if attention_mask is not None and attention_mask.shape == labels.shape:
        labels = labels.masked_fill(F.pad(attention_mask[:, :-1] == 0, (1, 0), value=False), -100)
    return model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size, **kwargs)


# ------------------------------------------------------------- softmax attention over a growing key/value cache

def attention_layout(attention_mask: torch.Tensor | None, batch: int, length: int, past: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Where the `length` new tokens sit and which keys each may see, given `past` cached tokens.

    attention_mask: (B, past + length) over the whole sequence so far (what `generate` passes), or None when
    every token is real. Returns positions (B, T) int64 counting real tokens only (a left-padded row is
    numbered like an unpadded one), and `allowed` (B, 1, T, past + T) bool, or None when plain causal masking
    is exact (no padding, no cache). A query sees earlier-or-equal real keys and always itself, so a padding
    query attends to itself instead of to nothing (no NaN; its output is never used).
    """
    S = past + length
    if attention_mask is not None and (attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, S)):
        raise ValueError(f"attention_mask must have shape ({batch}, {S}) = (batch, cached + new tokens), "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask is None or bool(attention_mask.all()):
        positions = torch.arange(past, S, device=device).expand(batch, length)
        if past == 0:
            return positions, None
        mask = torch.ones(batch, S, dtype=torch.bool, device=device)
    else:
        mask = attention_mask.to(device).bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
    query = torch.arange(past, S, device=device)[:, None]  # (T, 1): absolute slots of the new tokens
    key = torch.arange(S, device=device)[None]  # (1, S)
    allowed = ((key <= query) & mask[:, None]) | (key == query)  # (B, T, S)
    return positions, allowed[:, None]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
                     fused: bool = True, scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q k^T, masked) v: the fused SDPA kernel, or the same equation in plain autograd ops.

    q: (B, H, T, d); k, v: (B, H, S, d) with S >= T (the last T keys are the queries' own);
    allowed: (B, 1, T, S) from `attention_layout`, or None for plain causal masking. Returns (B, H, T, d).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None, scale=scale)
    if allowed is None:
        T = q.shape[-2]
        allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T, S)
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


# ------------------------------------------------------------- helpers of hand-written autograd Functions

def record_autocast(forward):
    """Decorates an autograd.Function's forward to note the autocast state it runs under, for `replay_autocast`.

    torch.amp.custom_fwd/custom_bwd do the same but fix the device type when the class is defined; these take
    it from the first tensor argument, so one Function serves CPU and GPU.
    """
    @functools.wraps(forward)
    def wrapped(ctx, *args):
        device = next(arg.device.type for arg in args if isinstance(arg, torch.Tensor))
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        return forward(ctx, *args)
    return wrapped


def replay_autocast(backward):
    """Decorates an autograd.Function's backward to run under the autocast state of its forward (autograd runs
    it outside any autocast region): under mixed precision its products then take the same bfloat16/float16
    operands as the forward's, instead of failing on bfloat16 saved tensors against float32 gradients."""
    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        with torch.autocast(ctx.autocast[0], dtype=ctx.autocast[1], enabled=ctx.autocast[2]):
            return backward(ctx, *grads)
    return wrapped


def zero_where_inactive_(grad: torch.Tensor, relu_out: torch.Tensor) -> torch.Tensor:
    """grad *= (relu_out > 0) in place and returns grad: ReLU's own backward kernel writing into its input.

    One pass and no allocation; `grad.masked_fill_(relu_out == 0, 0)` would also allocate the mask.
    """
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad)
