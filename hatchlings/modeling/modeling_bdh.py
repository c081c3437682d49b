"""BDH, the Baby Dragon Hatchling, as a Transformers causal language model.

Math (Kosowski et al., 2025), per layer, with one block of weights shared by every layer:

    x_sparse = ReLU(x @ encoder)                      (B, H, T, N)  sparse positive neurons
    q        = RoPE(x_sparse)                         queries == keys
    a_t      = sum_{s<t} <q_t, q_s> x_s               (B, H, T, D)  linear attention, strictly earlier tokens
    y_sparse = ReLU(LN(a) @ encoder_v)                (B, H, T, N)
    x        = LN(x + LN((x_sparse * y_sparse) @ decoder))

The attention is a running Hebbian state: S_h = sum_{s<t} q_s (x) x_s (N x D per head and layer), read
as a_t = q_t^T S_h before the token writes itself in. Training uses a chunked parallel form (quadratic
inside a chunk, the state carried across chunks); generation uses the recurrence, so a token costs the
same at context 50 and 5,000.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import RecurrentStateCache
from .configuration_bdh import BdhConfig
from .layers import (apply_rope_pairs, causal_lm_loss, embed_inputs, forward_cache, keep_positions, layer_norm,
                     positions_from_mask, record_autocast, replay_autocast, rope_pair_rotor, zero_where_inactive_)

STATE = "synapses"  # cache entry per layer: the (B, H, N, D) Hebbian state
SEEN = "real_tokens"  # cache entry (layer -1): (B,) real (non-pad) tokens consumed, for RoPE positions


def _causal_attention(q: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out = tril(q q^T, -1) @ v. q: (H, M, T, N); v: (M, T, D), shared by the heads. Returns out (H, M, T, D)
    and the masked scores (H, M, T, T), kept for `_causal_attention_backward` (smaller than q when T < N)."""
    scores = torch.matmul(q, q.transpose(-1, -2)).tril_(diagonal=-1)  # (H, M, T, T)
    return torch.matmul(scores, v), scores


def _causal_attention_backward(q: torch.Tensor, v: torch.Tensor, scores: torch.Tensor,
                               dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `_causal_attention` w.r.t. q (H, M, T, N) and v (M, T, D), given dout (H, M, T, D).

    Autograd differentiates q q^T as a product of two different matrices: two T x T x N matmuls for dq.
    The score matrix is symmetric before masking, so with G = tril(dout v^T, -1) the two terms are one:
    dq = (G + G^T) q, half the cost of the largest product in the backward pass.
    """
    g = torch.matmul(dout, v.transpose(-1, -2)).tril_(diagonal=-1)  # (H, M, T, T)
    dq = torch.matmul(g + g.transpose(-1, -2), q)  # (H, M, T, N)
    dv = torch.matmul(scores.transpose(-1, -2), dout).sum(0)  # (M, T, D), summed over the heads
    return dq, dv


class _StrictlyCausalAttention(torch.autograd.Function):
    """`_causal_attention` with its hand-written backward. q: (H, M, T, N), H heads over M sequences;
    v: (M, T, D). Returns (H, M, T, D)."""

    @staticmethod
    @record_autocast
    def forward(ctx, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out, scores = _causal_attention(q, v)
        ctx.save_for_backward(q, v, scores)
        return out

    @staticmethod
    @replay_autocast
    def backward(ctx, dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _causal_attention_backward(*ctx.saved_tensors, dout)

    @staticmethod
    def plain(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _causal_attention(q, v)[0]


class _ChunkedAttention(torch.autograd.Function):
    """The chunked form: `_causal_attention` inside each chunk of C tokens, plus q_i S_i, the read of the
    state S_i = state + sum_{j<i} q_j^T v_j written by the earlier chunks.

    The states are scanned chunk by chunk and never stored: one (H, B, N, D) float32 tensor, small enough
    to stay in cache, instead of an (H, B, n_chunks, N, D) tensor (larger than q) written, summed over
    chunks and read back, twice over in the backward pass. The backward pass scans twice: backwards for
    dS_i = d_final + sum_{k>i} q_k^T dout_k, the gradient of what chunk i wrote (dq_i += v_i dS_i^T,
    dv_i += q_i dS_i), then forwards to rebuild S_i (dq_i += dout_i S_i^T) exactly as the forward pass did.

    q: (H, B, nc, C, N); v: (B, nc, C, D), shared by the heads; state: (H, B, N, D) float32 or None.
    Returns out (H, B, nc, C, D) and the state after the last chunk (H, B, N, D), see `_initial_state`.
    """

    @staticmethod
    @record_autocast
    def forward(ctx, q, v, state):
        H, B, n_chunks, C, _ = q.shape
        out, scores = _causal_attention(q.flatten(1, 2), v.flatten(0, 1))  # (H, B*nc, C, D)
        out = out.view(H, B, n_chunks, C, -1)
        S = _initial_state(state, q, v)
        for i in range(n_chunks):
            q_i = q[:, :, i].to(S.dtype)  # (H, B, C, N)
            out[:, :, i] += (q_i @ S).to(out.dtype)
            _add_outer_(S, q_i, v[:, i])
        ctx.save_for_backward(q, v, state, scores)
        return out, S

    @staticmethod
    @replay_autocast
    def backward(ctx, dout, d_final):
        q, v, state, scores = ctx.saved_tensors
        dq, dv = _causal_attention_backward(q.flatten(1, 2), v.flatten(0, 1), scores, dout.flatten(1, 2))
        dq, dv = dq.view(q.shape), dv.view(v.shape)  # (H, B, nc, C, N), (B, nc, C, D)
        dS = d_final.clone(memory_format=torch.contiguous_format)  # (H, B, N, D)
        for i in reversed(range(q.shape[2])):
            q_i, v_i, dout_i = q[:, :, i].to(dS.dtype), v[:, i].to(dS.dtype), dout[:, :, i].to(dS.dtype)
            dq[:, :, i] += (v_i @ dS.transpose(-1, -2)).to(dq.dtype)  # (H, B, C, N)
            dv[:, i] += (q_i @ dS).sum(0).to(dv.dtype)  # (B, C, D)
            _add_outer_(dS, q_i, dout_i)
        S = _initial_state(state, q, v)
        for i in range(q.shape[2]):
            q_i = q[:, :, i].to(S.dtype)
            dq[:, :, i] += (dout[:, :, i].to(S.dtype) @ S.transpose(-1, -2)).to(dq.dtype)
            _add_outer_(S, q_i, v[:, i])
        return dq, dv, dS if ctx.needs_input_grad[2] else None

    @staticmethod
    def plain(q, v, state):
        H, B, n_chunks, C, _ = q.shape
        out = _causal_attention(q.flatten(1, 2), v.flatten(0, 1))[0].view(H, B, n_chunks, C, -1)
        S, reads = _initial_state(state, q, v), []
        for i in range(n_chunks):
            q_i = q[:, :, i].to(S.dtype)  # (H, B, C, N)
            reads.append(q_i @ S)  # (H, B, C, D)
            S = S + q_i.transpose(-1, -2) @ v[:, i].to(S.dtype)  # (H, B, N, D); v_i (B, C, D) shared by heads
        return out + torch.stack(reads, 2).to(out.dtype), S


def _add_outer_(S: torch.Tensor, q_i: torch.Tensor, v_i: torch.Tensor) -> None:
    """S += q_i^T v_i in place, with no temporary. S: (H, B, N, D); q_i: (H, B, C, N); v_i: (B, C, D) shared
    by the heads, or (H, B, C, D)."""
    H, B, C, N = q_i.shape
    v_i = v_i.to(S.dtype).expand(H, B, C, S.shape[-1]).reshape(H * B, C, -1)  # a copy: v_i is small
    S.view(H * B, N, -1).baddbmm_(q_i.flatten(0, 1).transpose(1, 2), v_i)


def _initial_state(state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous (H, B, N, D) copy of `state` (zeros if None) to update in place, in float32 (float64
    for float64 inputs): the state sums every token, so it never runs in half precision."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    if state is None:
        return q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1], dtype=dtype)
    return state.to(dtype).clone(memory_format=torch.contiguous_format)


class _SparseEncoder(torch.autograd.Function):
    """x_sparse = ReLU(x @ encoder_h) (zero at padding) and its rotated copy q = RoPE(x_sparse), per head.

    x_sparse reaches the loss twice, through the readout and (as q) through the attention. Autograd would
    allocate a tensor for each step back (un-rotate, sum of the two gradients, ReLU mask); here the
    un-rotation allocates once and the sum and mask happen in place.

    x: (B, T, D); encoder: (H, D, N); rotor: (B, 1, T, N/2) from `rope_pair_rotor`; key_mask: (B, T) or None.
    Returns x_sparse, q: (H, B, T, N) each, head-major so that every product below is one batched GEMM.
    """

    @staticmethod
    @record_autocast
    def forward(ctx, x, encoder, rotor, key_mask):
        B, T, D = x.shape
        H, _, N = encoder.shape
        rows = x.reshape(1, B * T, D).expand(H, B * T, D)  # (H, B*T, D), a stride-0 view shared by heads
        x_sparse = torch.bmm(rows, encoder).relu_().view(H, B, T, N)
        if key_mask is not None:  # padding neither writes to the state nor is read by later tokens
            x_sparse.mul_(key_mask[None, :, :, None].to(x_sparse.dtype))
        rotor = rotor.transpose(0, 1)  # (1, B, T, N/2)
        q = apply_rope_pairs(x_sparse, rotor)
        ctx.save_for_backward(rows, encoder, rotor, x_sparse)
        return x_sparse, q

    @staticmethod
    @replay_autocast
    def backward(ctx, d_x_sparse, dq):
        rows, encoder, rotor, x_sparse = ctx.saved_tensors
        H, B, T, N = x_sparse.shape
        grad = apply_rope_pairs(dq, rotor.conj()).add_(d_x_sparse)  # (H, B, T, N); un-rotating is rotating back
        zero_where_inactive_(grad, x_sparse)  # the ReLU's and the padding's backward
        grad = grad.reshape(H, B * T, N)  # a copy only if dq came in another layout
        dx = torch.addbmm(grad.new_empty(()), grad, encoder.transpose(1, 2), beta=0).view(B, T, -1) \
            if ctx.needs_input_grad[0] else None
        d_encoder = torch.bmm(rows.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return dx, d_encoder, None, None

    @staticmethod
    def plain(x, encoder, rotor, key_mask):
        x_sparse = torch.relu(torch.einsum("btd,hdn->hbtn", x, encoder))  # (H, B, T, N)
        if key_mask is not None:
            x_sparse = x_sparse * key_mask[None, :, :, None].to(x_sparse.dtype)
        return x_sparse, apply_rope_pairs(x_sparse, rotor.transpose(0, 1))


class _GatedReadout(torch.autograd.Function):
    """z = sum_h (x_sparse_h * ReLU(a_h @ encoder_v_h)) @ decoder_h, with a backward that works in place.

    The (H, B*T, N) neuron tensors are the largest in the model; on CPU a fresh one costs more (page
    faults) than the elementwise pass that fills it. Autograd's backward of these few lines allocates four;
    this one allocates two (dz @ decoder^T and the x_sparse gradient) and masks in place.
    Also returns y_sparse (no gradient), for sparsity statistics.

    x_sparse: (H, M, N), M = B*T rows; a: (H, M, D); encoder_v: (H, D, N); decoder: (H, N, D);
    keep: (H, M, N) dropout mask scaled by 1/(1-p), or None. Returns z (M, D), y_sparse (H, M, N).
    """

    @staticmethod
    @record_autocast
    def forward(ctx, x_sparse, a, encoder_v, decoder, keep):
        y_sparse = torch.bmm(a, encoder_v).relu_()  # (H, M, N)
        xy = x_sparse * y_sparse  # (H, M, N)
        if keep is not None:
            xy.mul_(keep)
        ctx.save_for_backward(x_sparse, a, encoder_v, decoder, y_sparse, xy, keep)
        ctx.mark_non_differentiable(y_sparse)
        ctx.set_materialize_grads(False)
        # bmm + sum rather than addbmm (the sum inside the GEMM): addbmm runs one parallel region per head, which
        # costs little in training but doubled the per-token time of generation on a busy 2-core machine
        z = torch.bmm(xy, decoder).sum(0)  # (M, D)
        return z, y_sparse  # (M, D), (H, M, N)

    @staticmethod
    @replay_autocast
    def backward(ctx, dz, _):
        if dz is None:  # z did not reach the loss (y_sparse never carries a gradient)
            return None, None, None, None, None
        x_sparse, a, encoder_v, decoder, y_sparse, xy, keep = ctx.saved_tensors
        dz = dz.expand(x_sparse.shape[0], *dz.shape)  # (H, M, D), a stride-0 view
        d_decoder = torch.bmm(xy.transpose(1, 2), dz)  # (H, N, D)
        dxy = torch.bmm(dz, decoder.transpose(1, 2))  # (H, M, N)
        if keep is not None:
            dxy.mul_(keep)
        d_x_sparse = dxy * y_sparse
        du = zero_where_inactive_(dxy.mul_(x_sparse), y_sparse)  # (H, M, N), gradient before the ReLU
        d_a = torch.bmm(du, encoder_v.transpose(1, 2))  # (H, M, D)
        d_encoder_v = torch.bmm(a.transpose(1, 2), du)  # (H, D, N)
        return d_x_sparse, d_a, d_encoder_v, d_decoder, None

    @staticmethod
    def plain(x_sparse, a, encoder_v, decoder, keep):
        y_sparse = torch.relu(torch.bmm(a, encoder_v))  # (H, M, N)
        xy = x_sparse * y_sparse if keep is None else x_sparse * y_sparse * keep
        return torch.bmm(xy, decoder).sum(0), y_sparse.detach()


def _apply(function: type[torch.autograd.Function], handwritten: bool, *args):
    """`function` with its hand-written backward, or (config.handwritten_backward=False) its `plain` twin: the
    same forward math in plain torch ops, differentiated by autograd, for debugging and new devices."""
    return function.apply(*args) if handwritten else function.plain(*args)


def chunked_linear_attention(q: torch.Tensor, v: torch.Tensor, state: torch.Tensor | None, chunk_size: int,
                             return_state: bool, handwritten: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """a_t = sum_{s<t} <q_t, q_s> v_s  (+ q_t^T state), without ever forming a T x T x N tensor.

    Two exact formulations, chosen by cost: per token and head the quadratic form costs T (N + D)
    multiply-adds, the chunked form C (N + D) for the (C x C) block inside its chunk plus 2 N D to read
    and write the running state S = sum_s q_s v_s^T. Short sequences use the former, long ones the latter,
    so training is never slower than the plain quadratic form and is linear in T beyond it. Both have
    hand-written backward passes (`_StrictlyCausalAttention`, `_ChunkedAttention`), or with `handwritten=False`
    plain autograd.

    q: (B, H, T, N), any layout (the transposed view of a contiguous (H, B, T, N) tensor, which BdhBlock
    passes, needs no copies); v: (B, 1, T, D), shared by every head; state: (B, H, N, D) float32 or None.
    Returns a: (B, H, T, D) (a view of a head-major tensor) and, if `return_state`, the state after the
    last token (float32, contiguous).
    """
    B, H, T, N = q.shape
    D = v.shape[-1]
    q, v = q.transpose(0, 1), v[:, 0]  # (H, B, T, N), (B, T, D): every product below is a plain batched GEMM
    if T * (N + D) <= chunk_size * (N + D) + 2 * N * D:
        out = _apply(_StrictlyCausalAttention, handwritten, q, v)  # (H, B, T, D)
        if state is not None:
            out = out + (q.float() @ state.transpose(0, 1)).to(out.dtype)
        if return_state:
            write = (q.transpose(-1, -2).float() @ v.float()).transpose(0, 1)  # (B, H, N, D)
            state = (write if state is None else state + write).contiguous()
        return out.transpose(0, 1), (state if return_state else None)

    pad = -T % chunk_size
    if pad:
        q, v = F.pad(q, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))  # zero rows write nothing to the state
    qc, vc = q.unflatten(2, (-1, chunk_size)), v.unflatten(1, (-1, chunk_size))  # (H, B, nc, C, N), (B, nc, C, D)
    out, final = _apply(_ChunkedAttention, handwritten, qc, vc, None if state is None else state.transpose(0, 1))
    out = out.flatten(2, 3)[:, :, :T]  # (H, B, T, D)
    return out.transpose(0, 1), (final.transpose(0, 1).contiguous() if return_state else None)


def recurrent_linear_attention_step(q: torch.Tensor, v: torch.Tensor,
                                    state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence: read a = q^T S, then write S += q (x) v. Cost is independent of context.

    q: (B, H, 1, N); v: (B, 1, 1, D); state: (B, H, N, D) float32. Returns a: (B, H, 1, D), new state.
    """
    read = (q.float() @ state).to(q.dtype)
    return read, state + q.transpose(-1, -2).float() @ v.float()


@dataclass
class BdhModelOutput(BaseModelOutputWithPast):
    """`sparsity`: (num_hidden_layers, 2) fraction of exactly-zero neurons over real tokens, column 0 for
    x_sparse (encoder ReLU) and column 1 for y_sparse (attention-readout ReLU); only with `output_sparsity`."""

    sparsity: torch.FloatTensor | None = None


@dataclass
class BdhCausalLMOutput(CausalLMOutputWithPast):
    """Causal-LM output plus the per-layer neuron sparsity of `BdhModelOutput`."""

    sparsity: torch.FloatTensor | None = None


class BdhBlock(GradientCheckpointingLayer):
    """The one block of weights every BDH layer shares. Called once per layer with that layer's state."""

    def __init__(self, config: BdhConfig):
        super().__init__()
        H, D, N = config.num_attention_heads, config.hidden_size, config.neurons_per_head
        self.encoder = nn.Parameter(torch.empty(H, D, N))
        self.encoder_v = nn.Parameter(torch.empty(H, D, N))
        self.decoder = nn.Parameter(torch.empty(H * N, D))
        self.dropout = nn.Dropout(config.dropout)
        self.eps = config.layer_norm_eps
        self.chunk_size = config.attn_chunk_size
        self.handwritten = config.handwritten_backward

    def forward(self, x: torch.Tensor, rotor: torch.Tensor, key_mask: torch.Tensor | None,
                state: torch.Tensor | None = None, return_state: bool = False, output_sparsity: bool = False):
        """x: (B, T, D) -> new x (B, T, D), new state (B, H, N, D) or None, zero fractions (2,) or None."""
        B, T, D = x.shape
        H, _, N = self.encoder.shape
        x_sparse, q = _apply(_SparseEncoder, self.handwritten, x, self.encoder, rotor, key_mask)  # (H, B, T, N) each
        q = q.transpose(0, 1)  # (B, H, T, N) view
        if T == 1 and state is not None:
            a, state = recurrent_linear_attention_step(q, x[:, None], state)
        else:
            a, state = chunked_linear_attention(q, x[:, None], state, self.chunk_size, return_state, self.handwritten)
        a = layer_norm(a.transpose(0, 1), self.eps).reshape(H, B * T, D)  # (H, B*T, D)
        rows = x_sparse.view(H, B * T, N)
        keep = None  # dropout of x_sparse * y_sparse, as a mask scaled by 1 / (1 - p)
        if self.training and self.dropout.p > 0:
            keep = rows.new_empty(rows.shape).bernoulli_(1 - self.dropout.p).div_(1 - self.dropout.p)
        z, y_sparse = _apply(_GatedReadout, self.handwritten, rows, a, self.encoder_v, self.decoder.view(H, N, D),
                             keep)  # (B*T, D), (H, B*T, N)
        y_sparse = y_sparse.view(H, B, T, N)
        x = layer_norm(x + layer_norm(z.view(B, T, D), self.eps), self.eps)
        stats = _zero_fractions(x_sparse.transpose(0, 1), y_sparse.transpose(0, 1), key_mask) \
            if output_sparsity else None
        return x, state, stats


def _zero_fractions(x_sparse: torch.Tensor, y_sparse: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Fraction of exactly-zero neurons in x_sparse and y_sparse, over real tokens only. Returns (2,)."""
    weight = torch.ones(x_sparse.shape[0], x_sparse.shape[2], device=x_sparse.device) if key_mask is None \
        else key_mask.float()  # (B, T)
    total = weight.sum() * x_sparse.shape[1] * x_sparse.shape[3]
    return torch.stack([((t == 0).float().sum(dim=(1, 3)) * weight).sum() / total for t in (x_sparse, y_sparse)])


class BdhPreTrainedModel(PreTrainedModel):
    """Embedding/head accessors come from PreTrainedModel: they find `embed_tokens`, `model.embed_tokens`
    and `lm_head` by name, so every architecture here keeps that layout."""

    config: BdhConfig
    config_class = BdhConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BdhBlock"]
    _is_stateful = True  # recurrent state cannot be rolled back (no assisted decoding)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model creates its own RecurrentStateCache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, BdhBlock):
            for weight in (module.encoder, module.encoder_v, module.decoder):
                nn.init.normal_(weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            # unit-variance embeddings as in the paper's code; a LayerNorm follows, so only direction matters
            nn.init.normal_(module.weight, mean=0.0, std=1.0)


class BdhModel(BdhPreTrainedModel):
    """The BDH trunk: byte/token embedding, then the shared block applied `num_hidden_layers` times."""

    def __init__(self, config: BdhConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.block = BdhBlock(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                output_sparsity: bool = False, return_dict: bool | None = None, **kwargs) -> BdhModelOutput:
        cfg = self.config
        inputs_embeds = embed_inputs(self.embed_tokens, input_ids, inputs_embeds, cfg.hidden_size)
        B, T, _ = inputs_embeds.shape
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        cache = forward_cache(self, past_key_values, use_cache)
        key_mask = self._key_mask(attention_mask, B, T, past_key_values.get_seq_length() if past_key_values is not None else 0)
        offset = cache.get(-1, SEEN) if cache is not None else None
        rotor = rope_pair_rotor(positions_from_mask(key_mask, B, T, offset, inputs_embeds.device),
                                cfg.rotary_period, cfg.rope_theta)  # (B, 1, T, period / 2)
        rotor = rotor.repeat(1, 1, 1, cfg.neurons_per_head // cfg.rotary_period)  # one frequency set per period

        x = layer_norm(inputs_embeds, cfg.layer_norm_eps)
        hidden_states, sparsity = [x] if output_hidden_states else None, []
        for layer in range(cfg.num_hidden_layers):
            state = cache.get(layer, STATE) if cache is not None else None
            x, state, stats = self.block(x, rotor, key_mask, state, return_state=cache is not None,
                                         output_sparsity=output_sparsity)
            if cache is not None:
                cache.set(layer, STATE, state)
            if output_hidden_states:
                hidden_states.append(x)
            sparsity.append(stats)
        if cache is not None:
            real = key_mask.sum(-1).long() if key_mask is not None else torch.full((B,), T, device=x.device)
            cache.set(-1, SEEN, real if offset is None else offset + real)
            cache.seen_tokens += T
        return BdhModelOutput(last_hidden_state=x, past_key_values=cache,
                              hidden_states=tuple(hidden_states) if output_hidden_states else None,
                              sparsity=torch.stack(sparsity) if output_sparsity else None)

    @staticmethod
    def _key_mask(attention_mask: torch.Tensor | None, batch: int, length: int, past: int) -> torch.Tensor | None:
        """The mask of the new tokens, (B, T), or None when every token is real.

        `generate` passes the mask of the whole sequence so far (`past` cached tokens + `length` new ones);
        only its last `length` columns are new.
        """
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, past + length):
            raise ValueError(f"attention_mask must have shape ({batch}, {past + length}) = (batch, cached + new "
                             f"tokens), got {tuple(attention_mask.shape)}")
        mask = attention_mask[:, -length:]
        return None if bool(mask.all()) else mask


class BdhForCausalLM(BdhPreTrainedModel, GenerationMixin):
    """BDH with its language-model head (a separate D x V matrix, as in the paper's code)."""

    def __init__(self, config: BdhConfig):
        super().__init__(config)
        self.model = BdhModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, output_sparsity: bool = False,
                logits_to_keep: int | torch.Tensor = 0, return_dict: bool | None = None,
                **kwargs) -> BdhCausalLMOutput:
        """`labels` are the input ids themselves (shifted inside, -100 ignored); `logits_to_keep=k` computes
        logits for the last k positions only (generation needs one)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
                         output_sparsity=output_sparsity)
        hidden = out.last_hidden_state
        logits = self.lm_head(keep_positions(hidden, logits_to_keep))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(self, logits, labels, attention_mask, **kwargs)
        return BdhCausalLMOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                 hidden_states=out.hidden_states, sparsity=out.sparsity)

    def activity_series(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """Named per-layer activity for the platform's tracking (hatchlings.training.sparsity): the share of
        active (non-zero) encoder neurons `x_active` and attention-readout neurons `y_active`, (L,) each."""
        zero = self(input_ids=input_ids, attention_mask=attention_mask, output_sparsity=True,
                    use_cache=False).sparsity  # (L, 2)
        return {"x_active": 1 - zero[:, 0], "y_active": 1 - zero[:, 1]}


__all__ = ["BdhForCausalLM", "BdhModel", "BdhPreTrainedModel", "chunked_linear_attention",
           "recurrent_linear_attention_step"]
