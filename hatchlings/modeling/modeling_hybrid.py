"""The Hybrid Hopfield-SSM language model (seed 002) as a Transformers causal LM, written from its description.

    h_0 = E[token] + P[position]                                  learned token and positional embeddings
    segment s = 1..S:  x = h_0;  for each layer l:
        n = LN(x)
        paths p in {ssm, hopfield, attention} (the enabled ones):  o_p = path_p(n)
        w = softmax(GatedMixer(n) + bias_s[l])                    per token, over the enabled paths
        x = x + sum_p w_p o_p
        x = x + FFN(LN(x))
    bias_1 = 0;  bias_{s+1} = HController(stopgrad(x_s))            per position: causal by construction
    logits = LN(x_S) @ W_head

Every segment starts again from the same embeddings h_0 and differs from the first only through the
controller's bias on its mixer logits ("segment 1 == no controller", as the seed's probe table shows: its
seg_1 and no_ctrl rows are equal). The bias depends on segment s's hidden state at the same position only,
never on later tokens, and is detached (the seed's stop_gradient), so only the last segment's pass needs a
graph: earlier segments run under no_grad. The paths:

- ModernSSM: a depthwise causal conv, then a selective scan with diagonal A = -exp(log_A) and input/forget
  gates (equations in its docstring); a chunked log-depth parallel scan for training, a per-token recurrence
  for generation. Left padding neither writes to nor decays the state.
- MoRHopfield: xi_0 = W_q n; xi_{k+1} = softmax(beta xi_k M^T) M over a learned memory M, K_l refinements,
  the depths mixed by a learned per-token softmax gate. Token-wise, so causal by construction.
- Causal multi-head softmax attention (SDPA) with its keys/values in the cache.

Generation keeps, per (segment, layer), the SSM's conv window and state and the attention's keys/values in a
RecurrentStateCache, so cached decoding reproduces the full forward of every segment.
This file imports only torch, transformers and its own folder (it is copied into every export).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import RecurrentStateCache
from .configuration_hybrid import HybridConfig
from .layers import attention_layout, causal_attention, causal_lm_loss, embed_inputs, forward_cache, keep_positions

CONV, SSM, KEYS, VALUES = "conv_window", "ssm_state", "keys", "values"  # cache entries per (segment, layer)


# ------------------------------------------------------------------------------------------------ the scans

def sequential_scan(decay: torch.Tensor, drive: torch.Tensor,
                    state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = decay_t * h_{t-1} + drive_t, one token at a time (the plain form; also the decoding step).

    decay, drive: (B, T, D, N); state: (B, D, N) h_0 or None (zeros). Returns every h_t (B, T, D, N) and h_T.
    """
    h = torch.zeros_like(drive[:, 0]) if state is None else state.to(drive.dtype)
    states = []
    for t in range(decay.shape[1]):
        h = decay[:, t] * h + drive[:, t]  # (B, D, N)
        states.append(h)
    return torch.stack(states, 1), h


def _shift(t: torch.Tensor, offset: int, dim: int, fill: float) -> torch.Tensor:
    """t moved `offset` steps later along `dim`, the first `offset` slots filled with `fill`."""
    kept = t.narrow(dim, 0, t.shape[dim] - offset)
    return F.pad(kept, (0, 0) * (t.dim() - 1 - dim) + (offset, 0), value=fill)


def _hillis_steele(a: torch.Tensor, b: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan of the steps h -> a h + b along `dim`: returns (prod of a up to t, h_t from a zero state).

    The step composes as (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2). Level j combines every position with the
    partial result 2^j positions earlier (the identity (1, 0) before the start); ceil(log2 n) levels.
    """
    offset = 1
    while offset < a.shape[dim]:
        b = b + a * _shift(b, offset, dim, 0.0)
        a = a * _shift(a, offset, dim, 1.0)
        offset *= 2
    return a, b


def parallel_scan(decay: torch.Tensor, drive: torch.Tensor, state: torch.Tensor | None,
                  chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The same recurrence as `sequential_scan` with no loop over tokens: a chunked Hillis-Steele scan.

    Inside each chunk of `chunk` tokens a log-depth scan (`_hillis_steele`) gives every h_t from a zero state and
    the running product of decays; across chunks the same scan over the chunks' summaries (their last entries)
    gives the state entering each chunk, which the running product carries in: h_t = b_t + a_t h_chunk_start.
    The loops run over log2(chunk) and log2(T / chunk) levels, never over tokens. Only products of decays in
    (0, 1] appear: stable in float32 at any length and decay, unlike the exp(cumsum) factorisation, whose
    exp(-cumsum) overflows under strong forgetting. Chunking halves the full-size levels of a flat scan.

    decay, drive: (B, T, D, N); state: (B, D, N) or None. Returns every h_t (B, T, D, N) and h_T (B, D, N).
    """
    B, T = decay.shape[:2]
    pad = -T % chunk
    if pad:  # identity steps (decay 1, drive 0) after the end change nothing before it
        decay = F.pad(decay, (0, 0, 0, 0, 0, pad), value=1.0)  # (B, T + pad, D, N)
        drive = F.pad(drive, (0, 0, 0, 0, 0, pad), value=0.0)
    a, b = _hillis_steele(decay.unflatten(1, (-1, chunk)), drive.unflatten(1, (-1, chunk)), 2)  # (B, nc, C, D, N)
    if state is None:
        state = torch.zeros_like(b[:, 0, 0])
    carried_a, carried_b = _hillis_steele(a[:, :, -1], b[:, :, -1], 1)  # (B, nc, D, N): chunk c's end state
    ends = carried_b + carried_a * state[:, None].to(b.dtype)  # state after each chunk, h_0 included
    starts = torch.cat([state[:, None].to(b.dtype), ends[:, :-1]], 1)  # (B, nc, D, N) state entering chunk c
    h = (b + a * starts[:, :, None]).flatten(1, 2)[:, :T]  # (B, T, D, N)
    return h, h[:, -1]


# ------------------------------------------------------------------------------------------------ the paths

class ModernSSM(nn.Module):
    r"""Depthwise causal conv prefilter + selective scan with input and forget gates.

    Per token t and channel d (state entries n = 1..N), with n_t the block's normalized input:

        u_t   = W_u n_t                             (zero at padding)
        c_t   = SiLU(b_conv + sum_{j<K} w_j * u_{t-K+1+j})    depthwise, causal (zeros before the start)
        dt_t  = softplus(W_up W_down c_t + b_dt)      (D,)   input-dependent step size
        B_t, C_t = W_B c_t, W_C c_t                   (N,)   input-dependent input/readout vectors
        g_in  = sigmoid(W_in c_t + b_in)            (D,)   input gate: how much of the token is written
        g_f   = sigmoid(W_f c_t + b_f)              (D,)   forget gate: extra decay on top of exp(dt A)
        A     = -exp(log_A)                         (D, N) diagonal, negative by construction
        h_t[d, n] = exp(dt_t[d] A[d, n]) * g_f[d] * h_{t-1}[d, n] + g_in[d] dt_t[d] c_t[d] B_t[n]
        y_t[d] = sum_n C_t[n] h_t[d, n] + skip[d] c_t[d];      output W_o y_t

    So the forget gate multiplies the discretised decay exp(dt A) (in log space: dt A + log g_f), and the
    input gate scales the discretised input dt c B. At a padding slot decay = 1 and drive = 0: the state passes
    unchanged. State for generation: the last K-1 values of u (conv window) and h (float32).
    """

    def __init__(self, config: HybridConfig):
        super().__init__()
        D, N, K, R = config.hidden_size, config.ssm_state_size, config.ssm_conv_kernel, config.ssm_dt_rank
        self.in_proj = nn.Linear(D, D, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(D, K))  # tap K-1 applies to the current token
        self.conv_bias = nn.Parameter(torch.empty(D))
        self.dt_down = nn.Linear(D, R, bias=False)
        self.dt_up = nn.Linear(R, D, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(D))
        self.bc_proj = nn.Linear(D, 2 * N, bias=False)
        self.gate_proj = nn.Linear(D, 2 * D, bias=False)
        self.gate_bias = nn.Parameter(torch.empty(2 * D))  # input gate, then forget gate
        self.log_A = nn.Parameter(torch.empty(D, N))
        self.skip = nn.Parameter(torch.empty(D))
        self.out_proj = nn.Linear(D, D, bias=False)
        self.kernel, self.sequential, self.chunk = K, config.scan_impl == "sequential", config.scan_chunk_size

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, cache: RecurrentStateCache | None,
                layer_id: int) -> torch.Tensor:
        """x: (B, T, D); keep: (B, T) 1 for real tokens, 0 for padding, or None -> (B, T, D)."""
        B, T, D = x.shape
        u = self.in_proj(x)  # (B, T, D)
        if keep is not None:
            u = u * keep[..., None]
        window = cache.get(layer_id, CONV) if cache is not None else None
        if window is None:
            window = u.new_zeros(B, self.kernel - 1, D)
        full = torch.cat([window.to(u.dtype), u], 1)  # (B, K-1+T, D)
        c = F.silu(F.conv1d(full.transpose(1, 2), self.conv_weight[:, None], self.conv_bias, groups=D)
                   .transpose(1, 2))  # (B, T, D)
        dt = F.softplus(self.dt_up(self.dt_down(c)) + self.dt_bias).float()  # (B, T, D)
        Bt, Ct = self.bc_proj(c).float().chunk(2, -1)  # (B, T, N) each
        g_in, g_forget = (self.gate_proj(c) + self.gate_bias).float().chunk(2, -1)  # (B, T, D) logits each
        A = -torch.exp(self.log_A.float())  # (D, N)
        log_decay = dt[..., None] * A + F.logsigmoid(g_forget)[..., None]  # (B, T, D, N)
        drive = (torch.sigmoid(g_in) * dt * c.float())[..., None] * Bt[:, :, None]  # (B, T, D, N)
        if keep is not None:
            log_decay, drive = log_decay * keep[..., None, None], drive * keep[..., None, None]
        state = cache.get(layer_id, SSM) if cache is not None else None
        if self.sequential or (T == 1 and state is not None):
            h, last = sequential_scan(torch.exp(log_decay), drive, state)  # (B, T, D, N), (B, D, N)
        else:
            h, last = parallel_scan(torch.exp(log_decay), drive, state, self.chunk)
        if cache is not None:
            cache.set(layer_id, CONV, full[:, full.shape[1] - (self.kernel - 1):])
            cache.set(layer_id, SSM, last)
        y = torch.einsum("btdn,btn->btd", h, Ct).to(x.dtype) + self.skip * c  # (B, T, D)
        return self.out_proj(y)


class MoRHopfield(nn.Module):
    """Mixture-of-recursions modern-Hopfield retrieval over a learned memory M (num_memories x D).

    xi_0 = W_q n_t;  xi_k = softmax(beta xi_{k-1} M^T) M for k = 1..K;  out = sum_k softmax(W_g n_t + b_g)_k xi_k.
    beta = exp(log_beta) > 0 is learned. With K = 1 the gate is a constant 1 and is left out.
    """

    def __init__(self, config: HybridConfig, steps: int):
        super().__init__()
        D = config.hidden_size
        self.query = nn.Linear(D, D, bias=False)
        self.memory = nn.Parameter(torch.empty(config.num_memories, D))
        self.log_beta = nn.Parameter(torch.empty(1))
        self.depth_gate = nn.Linear(D, steps) if steps > 1 else None
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        xi, beta, depths = self.query(x), self.log_beta.exp(), []
        for _ in range(self.steps):
            xi = torch.softmax(beta * (xi @ self.memory.T), -1) @ self.memory  # (B, T, M) @ (M, D)
            depths.append(xi)
        if self.depth_gate is None:
            return depths[0]
        weights = torch.softmax(self.depth_gate(x), -1)  # (B, T, K)
        return torch.einsum("btk,kbtd->btd", weights, torch.stack(depths))


class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax attention; positions come from the learned embedding, so no rotation."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        D = config.hidden_size
        self.heads, self.fused = config.num_attention_heads, config.fused_attention
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(D, D, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None, cache: RecurrentStateCache | None,
                layer_id: int) -> torch.Tensor:
        """x: (B, T, D); allowed: (B, 1, T, S) from attention_layout or None -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d) each
        if cache is not None:
            k, v = cache.append(layer_id, KEYS, k), cache.append(layer_id, VALUES, v)  # (B, H, S, d)
        out = causal_attention(q, k, v, allowed, fused=self.fused)  # (B, H, T, d)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class GatedMixer(nn.Module):
    """Per-token softmax weights over the enabled paths from a small FFN, plus the controller's bias."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.mixer_hidden_size)
        self.fc_out = nn.Linear(config.mixer_hidden_size, len(config.enabled_paths))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, D); bias: (B, T, P) or None -> weights (B, T, P)."""
        logits = self.fc_out(F.gelu(self.fc_in(x)))
        return torch.softmax(logits if bias is None else logits + bias.to(logits.dtype), -1)


class HybridBlock(GradientCheckpointingLayer):
    """LN -> enabled paths -> GatedMixer -> residual, then LN -> GELU FFN -> residual."""

    def __init__(self, config: HybridConfig, layer: int):
        super().__init__()
        D, self.paths = config.hidden_size, config.enabled_paths
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.ssm = ModernSSM(config) if "ssm" in self.paths else None
        self.hopfield = MoRHopfield(config, config.hopfield_steps[layer]) if "hopfield" in self.paths else None
        self.attention = CausalSelfAttention(config) if "attention" in self.paths else None
        self.mixer = GatedMixer(config) if len(self.paths) > 1 else None
        self.ffn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.fc_in = nn.Linear(D, config.intermediate_size)
        self.fc_out = nn.Linear(config.intermediate_size, D)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, allowed: torch.Tensor | None,
                keep: torch.Tensor | None, layer_id: int = 0,
                past_key_values: RecurrentStateCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, D); bias: (B, T, P) or None -> new x (B, T, D), mixer weights (B, T, P)."""
        n = self.norm(x)
        outs = []
        for path in self.paths:
            if path == "ssm":
                outs.append(self.ssm(n, keep, past_key_values, layer_id))
            elif path == "hopfield":
                outs.append(self.hopfield(n))
            else:
                outs.append(self.attention(n, allowed, past_key_values, layer_id))
        outs = torch.stack(outs, 2)  # (B, T, P, D)
        weights = self.mixer(n, bias) if self.mixer is not None else outs.new_ones(outs.shape[:3])
        x = x + (weights[..., None] * outs).sum(2)
        return x + self.fc_out(F.gelu(self.fc_in(self.ffn_norm(x)))), weights


class HController(nn.Module):
    """Segment s's hidden state at each position -> a bias on segment s+1's mixer logits there, per layer."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.layers, self.paths = config.num_hidden_layers, len(config.enabled_paths)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc_in = nn.Linear(config.hidden_size, config.controller_hidden_size)
        self.fc_out = nn.Linear(config.controller_hidden_size, self.layers * self.paths)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D), detached by the caller -> bias (B, T, L, P)."""
        return self.fc_out(torch.tanh(self.fc_in(self.norm(h)))).unflatten(-1, (self.layers, self.paths))


class RectifiedFlow(nn.Module):
    r"""The optional rectified-flow regularizer (config.rectified_flow), returned unweighted as `aux_loss`.

    With x_0 the block stack's input (token + position embedding) and x_1 the last block's output in the last
    segment (before the final LayerNorm), per real token and t ~ U(0, 1):

        x_t = (1 - t) x_0 + t x_1,   v(x_t, t) = W_2 GELU(W_1 x_t + t e),
        L_RF = mean over real tokens of (1/D) || v(x_t, t) - (x_1 - x_0) ||^2

    the velocity-matching loss of rectified flow (Liu et al., 2022) along the straight path between the two
    hidden states. Its gradient reaches the velocity network and, through both ends, the trunk: it favours a
    stack whose displacement x_1 - x_0 one velocity field can predict from any point of the straight path.
    Computed in training mode only (t is random); the LM loss never includes it.
    """

    def __init__(self, config: HybridConfig):
        super().__init__()
        D = config.hidden_size
        self.fc_in, self.fc_out = nn.Linear(D, D), nn.Linear(D, D)
        self.time = nn.Parameter(torch.zeros(D))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """x0, x1: (B, T, D); keep: (B, T) or None -> scalar loss."""
        t = torch.rand(x0.shape[:2] + (1,), device=x0.device, dtype=x0.dtype)  # (B, T, 1)
        xt = (1 - t) * x0 + t * x1
        velocity = self.fc_out(F.gelu(self.fc_in(xt) + t * self.time))
        err = (velocity - (x1 - x0)).pow(2).mean(-1)  # (B, T)
        return err.mean() if keep is None else (err * keep).sum() / keep.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------ the model

@dataclass
class HybridModelOutput(BaseModelOutputWithPast):
    """`gates`: (L, B, T, P) the last segment's mixer weights per layer, only with `output_gates`;
    `aux_loss`: the unweighted rectified-flow loss (training mode, config.rectified_flow)."""

    gates: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None


@dataclass
class HybridCausalLMOutput(CausalLMOutputWithPast):
    """Causal-LM output plus the last segment's mixer weights (`output_gates`) and the unweighted `aux_loss`."""

    gates: torch.FloatTensor | None = None
    aux_loss: torch.FloatTensor | None = None


class HybridPreTrainedModel(PreTrainedModel):
    config: HybridConfig
    config_class = HybridConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridBlock"]
    _is_stateful = True  # the SSM state cannot be rolled back (no assisted decoding)
    _supports_sdpa = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model creates its own RecurrentStateCache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        cfg, std = self.config, self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ModernSSM):
            D, N = module.log_A.shape
            nn.init.normal_(module.conv_weight, mean=0.0, std=module.kernel ** -0.5)
            nn.init.zeros_(module.conv_bias)
            # dt log-uniform in [dt_min, dt_max] (as Mamba), stored as softplus^-1(dt) = dt + log(1 - exp(-dt))
            lo, hi = math.log(cfg.ssm_dt_min), math.log(cfg.ssm_dt_max)
            dt = torch.exp(torch.rand(D) * (hi - lo) + lo)
            module.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            module.gate_bias[:D].zero_()  # input gate starts at 1/2
            module.gate_bias[D:].fill_(3.0)  # forget gate starts at sigmoid(3) = 0.95: keep most of the state
            module.log_A.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(D, N))
            nn.init.ones_(module.skip)
        elif isinstance(module, MoRHopfield):
            nn.init.normal_(module.memory, mean=0.0, std=std)
            module.log_beta.fill_(math.log(cfg.beta_init))


class HybridModel(HybridPreTrainedModel):
    """Embeddings, the HybridBlock stack run `n_segments` times under the controller, and a final LayerNorm."""

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(HybridBlock(config, layer) for layer in range(config.num_hidden_layers))
        uses_bias = config.n_segments > 1 and len(config.enabled_paths) > 1
        self.controller = HController(config) if uses_bias else None
        self.flow = RectifiedFlow(config) if config.rectified_flow else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None, output_gates: bool = False,
                return_dict: bool | None = None, **kwargs) -> HybridModelOutput:
        cfg = self.config
        inputs_embeds = embed_inputs(self.embed_tokens, input_ids, inputs_embeds, cfg.hidden_size,
                                     cfg.max_position_embeddings)
        B, T, _ = inputs_embeds.shape
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        cache = forward_cache(self, past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        positions, allowed = attention_layout(attention_mask, B, T, past, inputs_embeds.device)  # (B, T), mask
        if int(positions.max()) >= cfg.max_position_embeddings:
            raise ValueError(f"position {int(positions.max())} exceeds max_position_embeddings="
                             f"{cfg.max_position_embeddings} (the learned positional embedding's rows)")
        keep = None
        if attention_mask is not None and not bool(attention_mask[:, -T:].all()):
            keep = attention_mask[:, -T:].to(inputs_embeds.device, torch.float32)  # (B, T)
        h0 = inputs_embeds + self.embed_positions(positions)  # (B, T, D)

        L, bias = cfg.num_hidden_layers, None
        for segment in range(cfg.n_segments):
            last = segment == cfg.n_segments - 1
            # the controller reads a detached state, so earlier segments need no graph
            context = contextlib.nullcontext() if last else torch.no_grad()
            x, hidden, gates = h0, [h0], []
            with context:
                for layer, block in enumerate(self.layers):
                    x, weights = block(x, None if bias is None else bias[:, :, layer], allowed, keep,
                                       layer_id=segment * L + layer, past_key_values=cache)
                    hidden.append(x)
                    gates.append(weights)
            if not last and self.controller is not None:
                bias = self.controller(x.detach())  # (B, T, L, P)
        aux = self.flow(h0, x, keep) if self.flow is not None and self.training else None
        x = self.norm(x)
        if cache is not None:
            cache.seen_tokens += T
        return HybridModelOutput(last_hidden_state=x, past_key_values=cache,
                                 hidden_states=tuple(hidden[:-1]) + (x,) if output_hidden_states else None,
                                 gates=torch.stack(gates) if output_gates else None, aux_loss=aux)


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    """The Hybrid trunk with its language-model head (tied to the token embedding if the config says so)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, output_gates: bool = False,
                logits_to_keep: int | torch.Tensor = 0, return_dict: bool | None = None,
                **kwargs) -> HybridCausalLMOutput:
        """`labels` are the input ids themselves (shifted inside, -100 ignored); `logits_to_keep=k` computes
        logits for the last k positions only (generation needs one)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
                         output_gates=output_gates)
        logits = self.lm_head(keep_positions(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(self, logits, labels, attention_mask, **kwargs)
        return HybridCausalLMOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                    hidden_states=out.hidden_states, gates=out.gates, aux_loss=out.aux_loss)

    @torch.no_grad()
    def activity_series(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """The mean mixer weight of each enabled path per layer (last segment, real tokens only):
        `gate_ssm`, `gate_hopfield`, `gate_attention`, (L,) each."""
        gates = self(input_ids=input_ids, attention_mask=attention_mask, output_gates=True,
                     use_cache=False).gates  # (L, B, T, P)
        weight = torch.ones(gates.shape[1:3], device=gates.device) if attention_mask is None \
            else attention_mask.to(gates.device, gates.dtype)  # (B, T)
        mean = (gates * weight[None, ..., None]).sum((1, 2)) / weight.sum()  # (L, P)
        return {f"gate_{path}": mean[:, i] for i, path in enumerate(self.config.enabled_paths)}


__all__ = ["HybridForCausalLM", "HybridModel", "HybridPreTrainedModel", "parallel_scan", "sequential_scan"]
