"""HRM, the Hierarchical Reasoning Model (Wang et al., 2025), as a causal, cached Transformers language model.

Math, for a depth of N cycles of T fast steps (x = sqrt(D) * embedding, z_L / z_H start from learned vectors):

    for n in 1..N:
        for t in 1..T:  z_L = L(z_L + z_H + x)        fast module, T updates per cycle
        z_H = H(z_H + z_L)                              slow module, one update per cycle
    logits = lm_head(z_H)

L and H are stacks of post-norm transformer blocks, h = RMSNorm(h + Attn(h)), h = RMSNorm(h + SwiGLU(h)), with
causal multi-head softmax attention over RoPE-rotated queries and keys. The blocks' weights are reused at every
call, so the depth (N, T) is a run-time choice (`hrm_mode`). Each call of each block attends only to the keys
of the same call of the same block (position t at call c reads positions <= t at call c), which keeps every
call strictly causal and makes the KV cache exact: the cache holds one key/value slot per (module, block,
call). Memory per cached token: 2 * (N*T*L_layers + N*H_layers) * hidden_size values (keys and values), e.g.
2 * (2*2*3 + 2*3) * 256 = 9,216 floats (36 KiB in float32) for the seed shape at N = T = 2.

Nothing carries over between calls that do not share a cache: every sequence starts from the same z_L, z_H.
"""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import RecurrentStateCache
from .configuration_hrm import HrmConfig
from .layers import (apply_rope_pairs, attention_layout, causal_attention, causal_lm_loss, embed_inputs, forward_cache,
                     keep_positions, rope_pair_rotor)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a learned scale (as in the official HRM: post-norm keeps every state at unit RMS)."""
    return F.rms_norm(x, (x.shape[-1],), eps=eps)


def log_stablemax(logits: torch.Tensor) -> torch.Tensor:
    """log(s(x) / sum s(x)) with s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0): stablemax's log-probabilities.

    Cross-entropy of these log-probabilities (logsumexp of them is log 1 = 0) is exactly stablemax
    cross-entropy, so the platform's shifted loss applies unchanged. Computed in float64 like the official HRM.
    """
    x = logits.double()
    s = torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))  # clamp: no inf in the unused branch's gradient
    return (s.log() - s.sum(-1, keepdim=True).log()).to(logits.dtype if logits.dtype == torch.float64
                                                         else torch.float32)


def _noted(norms: list | None, module: str, cycle: int, step: int, before: torch.Tensor,
           after: torch.Tensor) -> torch.Tensor:
    """`after`, unchanged; when `norms` is a list, (module, cycle, step, ||after||, ||after - before||) per
    position, detached, is appended to it first (`output_states`)."""
    if norms is not None:
        with torch.no_grad():
            norms.append((module, cycle, step, after.norm(dim=-1).float(), (after - before).norm(dim=-1).float()))
    return after


class HrmAttention(nn.Module):
    """Causal multi-head softmax attention with RoPE; keys/values of cached calls come from `cache[slot]`."""

    def __init__(self, config: HrmConfig):
        super().__init__()
        D = config.hidden_size
        self.heads, self.fused = config.num_attention_heads, config.fused_attention
        self.q_proj, self.k_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.v_proj, self.o_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor, rotor: torch.Tensor, allowed: torch.Tensor | None,
                cache: RecurrentStateCache | None, slot: int) -> torch.Tensor:
        """x: (B, T, D); rotor: (B, 1, T, d/2); allowed: (B, 1, T, S) or None -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d) each
        q, k = apply_rope_pairs(q, rotor), apply_rope_pairs(k, rotor)
        if cache is not None:
            k, v = cache.append(slot, "k", k), cache.append(slot, "v", v)  # (B, H, S, d)
        out = causal_attention(q, k, v, allowed, fused=self.fused)  # (B, H, T, d)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class HrmMLP(nn.Module):
    """SwiGLU: down(SiLU(gate(x)) * up(x))."""

    def __init__(self, config: HrmConfig):
        super().__init__()
        D, F_ = config.hidden_size, config.intermediate_size
        self.gate_proj, self.up_proj = nn.Linear(D, F_, bias=False), nn.Linear(D, F_, bias=False)
        self.down_proj = nn.Linear(F_, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class HrmBlock(GradientCheckpointingLayer):
    """One post-norm transformer block; called once per (cycle, step), so checkpointing pays off."""

    def __init__(self, config: HrmConfig):
        super().__init__()
        self.self_attn, self.mlp, self.eps = HrmAttention(config), HrmMLP(config), config.rms_norm_eps

    def forward(self, x: torch.Tensor, rotor: torch.Tensor, allowed: torch.Tensor | None,
                past_key_values: RecurrentStateCache | None = None, slot: int = 0) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D). The cache is a keyword so that checkpointing drops it (training has none)."""
        x = rms_norm(x + self.self_attn(x, rotor, allowed, past_key_values, slot), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class HrmReasoningModule(nn.Module):
    """A stack of blocks applied to (state + injection): one L step or one H update."""

    def __init__(self, config: HrmConfig, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(HrmBlock(config) for _ in range(layers))

    def forward(self, state: torch.Tensor, injection: torch.Tensor, rotor, allowed, cache, first_slot: int):
        h = state + injection  # (B, T, D)
        for i, block in enumerate(self.layers):
            h = block(h, rotor, allowed, past_key_values=cache, slot=first_slot + i)
        return h


@dataclass
class HrmModelOutput(BaseModelOutputWithPast):
    """`cycle_states`: z_H after every cycle, (cycles, B, T, D): what ACT selects from. `state_norms` (with
    `output_states=True`): one (module, cycle, step, norm, change) per module call in execution order, module
    "L" or "H", cycle and step 0-based (H updates once per cycle: step 0), norm = ||z|| and change =
    ||z - z_before|| of the call's new state per position, (B, T) float tensors, detached. Post-norm makes
    ||z|| = sqrt(D) by construction, so `change` (the paper's forward residual) shows the convergence."""

    cycle_states: torch.Tensor | None = None
    state_norms: tuple | None = None


@dataclass
class HrmCausalLMOutput(CausalLMOutputWithPast):
    """`aux_loss`: ACT's Q-learning loss (unweighted; None without ACT); `halt_cycles`: (B, T) the cycle
    (1-based) each token's logits come from under ACT."""

    aux_loss: torch.FloatTensor | None = None
    halt_cycles: torch.LongTensor | None = None
    state_norms: tuple | None = None  # with output_states=True: see HrmModelOutput


class HrmPreTrainedModel(PreTrainedModel):
    config: HrmConfig
    config_class = HrmConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HrmBlock"]
    _is_stateful = True  # the cache has one slot per (module, block, call): no assisted decoding

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model creates its own RecurrentStateCache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Truncated normal (+-2 std) everywhere. The embedding has std 1/sqrt(D) and is scaled by sqrt(D), so
        x enters at unit RMS like the post-normed states it is added to; z_L/z_H start as unit-std vectors.
        The Q-head starts at q_halt = q_continue = -5 (no halting before it has learnt), as in the paper."""
        std = self.config.initializer_range
        if isinstance(module, HrmModel):
            for init in (module.z_H_init, module.z_L_init):
                nn.init.trunc_normal_(init, std=1.0, a=-2.0, b=2.0)
        elif isinstance(module, nn.Embedding):
            e = self.config.hidden_size ** -0.5
            nn.init.trunc_normal_(module.weight, std=e, a=-2 * e, b=2 * e)
        elif isinstance(module, nn.Linear):
            if module is getattr(self, "q_head", None):
                nn.init.zeros_(module.weight)
                nn.init.constant_(module.bias, -5.0)
            else:
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)


class HrmModel(HrmPreTrainedModel):
    """The HRM trunk: scaled embedding, then the L/H recurrence. Returns z_H as the last hidden state."""

    def __init__(self, config: HrmConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.L_module = HrmReasoningModule(config, config.L_layers)
        self.H_module = HrmReasoningModule(config, config.H_layers)
        self.z_L_init = nn.Parameter(torch.zeros(config.hidden_size))
        self.z_H_init = nn.Parameter(torch.zeros(config.hidden_size))
        self.gradient_checkpointing = False
        self.post_init()

    def grow(self) -> str:
        """Append one block to the smaller of L and H (L on a tie, so growth alternates); returns "L" or "H".

        Layer growth for continual learning: the block starts as the identity, so the model computes what it
        computed before (the loss on old text does not jump) and training decides what the block does. Its
        output projections start at zero, so it adds nothing to the residual, and it is appended after the last
        block of its module, whose output is already RMS-normed: the block's own post-norms then leave it
        unchanged (up to rms_norm's eps, a relative change of ~1e-5). An optimizer built afterwards sees it."""
        name = "L" if self.config.L_layers <= self.config.H_layers else "H"
        weight = self.embed_tokens.weight
        block = HrmBlock(self.config).to(device=weight.device, dtype=weight.dtype)
        block.apply(self._init_weights)
        nn.init.zeros_(block.self_attn.o_proj.weight)
        nn.init.zeros_(block.mlp.down_proj.weight)
        getattr(self, f"{name}_module").layers.append(block)
        setattr(self.config, f"{name}_layers", getattr(self.config, f"{name}_layers") + 1)
        return name

    def resolve_depth(self, hrm_mode: str | None) -> tuple[int, int]:
        """(cycles, steps) of this call: the named mode; in training without one, a depth drawn from
        train_depths; else config.hrm_mode or (H_cycles, L_cycles). ACT runs halt_max_steps cycles."""
        cfg = self.config
        if hrm_mode is not None:
            n, t = cfg.depth(hrm_mode)
        elif self.training and len(cfg.train_depths) > 1:
            n, t = random.choice(cfg.train_depths)
        else:
            n, t = cfg.depth()
        return (cfg.halt_max_steps if cfg.act else n), t

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                hrm_mode: str | None = None, return_dict: bool | None = None, output_states: bool = False,
                **kwargs) -> HrmModelOutput:
        """`inputs_embeds` are unscaled embedding rows (scaled by sqrt(D) here, like the ids' embeddings);
        `output_states=True` returns the norms of every call's new z_L / z_H (HrmModelOutput.state_norms)."""
        cfg = self.config
        inputs_embeds = embed_inputs(self.embed_tokens, input_ids, inputs_embeds, cfg.hidden_size)
        B, T, D = inputs_embeds.shape
        N, steps = self.resolve_depth(hrm_mode)
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        cache = forward_cache(self, past_key_values, use_cache)
        past = self._check_cache(cache, (N, steps))
        positions, allowed = attention_layout(attention_mask, B, T, past, inputs_embeds.device)
        rotor = rope_pair_rotor(positions, cfg.head_dim, cfg.rope_theta)  # (B, 1, T, d/2)

        x = inputs_embeds * math.sqrt(D)
        z_L = self.z_L_init.to(x.dtype).expand(B, T, D)
        z_H = self.z_H_init.to(x.dtype).expand(B, T, D)
        one_step = cfg.one_step_gradient and torch.is_grad_enabled()
        L_slots = N * steps * cfg.L_layers  # slots 0..L_slots-1 are the L calls, then the H calls
        cycle_states, norms = [], [] if output_states else None
        for n in range(N):
            for t in range(steps):
                last_L = n == N - 1 and t == steps - 1
                with torch.no_grad() if one_step and not last_L else nullcontext():
                    z_L = _noted(norms, "L", n, t, z_L,
                                 self.L_module(z_L, z_H + x, rotor, allowed, cache, (n * steps + t) * cfg.L_layers))
            with torch.no_grad() if one_step and n < N - 1 else nullcontext():
                z_H = _noted(norms, "H", n, 0, z_H,
                             self.H_module(z_H, z_L, rotor, allowed, cache, L_slots + n * cfg.H_layers))
            cycle_states.append(z_H)
        if cache is not None:
            cache.seen_tokens += T
        return HrmModelOutput(last_hidden_state=z_H, past_key_values=cache,
                              hidden_states=(x, *cycle_states) if output_hidden_states else None,
                              cycle_states=torch.stack(cycle_states) if cfg.act else None,
                              state_norms=tuple(norms) if output_states else None)

    @staticmethod
    def _check_cache(cache: RecurrentStateCache | None, depth: tuple[int, int]) -> int:
        """Tokens already cached. A cache holds the keys of one depth's calls only: another depth is refused."""
        if cache is None:
            return 0
        built = getattr(cache, "hrm_depth", None)
        if cache.is_initialized and built is not None and built != depth:
            raise ValueError(f"this cache was built at depth (N, T) = {built} and cannot continue at {depth}: "
                             "keep the hrm_mode of the prompt for the whole generation, or start a new cache")
        cache.hrm_depth = depth
        return cache.get_seq_length()


class HrmForCausalLM(HrmPreTrainedModel, GenerationMixin):
    """HRM with its language-model head on z_H (and, with ACT, a Q-head that picks each token's cycle)."""

    def __init__(self, config: HrmConfig):
        super().__init__(config)
        self.model = HrmModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = nn.Linear(config.hidden_size, 2, bias=True) if config.act else None
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                hrm_mode: str | None = None, return_dict: bool | None = None, output_states: bool = False,
                **kwargs) -> HrmCausalLMOutput:
        """`labels` are the input ids (shifted inside, -100 ignored); `hrm_mode` names a depth mode
        (config.depth_modes) for this call, also through `generate(..., hrm_mode="deep")`; `logits_to_keep=k`
        computes logits for the last k positions only; `output_states=True` fills `state_norms` (the norm and
        change of z_L / z_H at every module call, see HrmModelOutput)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
                         hrm_mode=hrm_mode, output_states=output_states)
        aux_loss = halt_cycles = None
        if self.config.act:
            kept = keep_positions(out.cycle_states, logits_to_keep, dim=2)  # (N, B, T', D)
            logits, aux_loss, halt_cycles = self._act(kept, labels, attention_mask)
        else:
            logits = self.lm_head(keep_positions(out.last_hidden_state, logits_to_keep))  # (B, T, V)
        loss = None
        if labels is not None:
            scores = log_stablemax(logits) if self.config.stablemax else logits
            loss = causal_lm_loss(self, scores, labels, attention_mask, **kwargs)
        return HrmCausalLMOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                 hidden_states=out.hidden_states, aux_loss=aux_loss, halt_cycles=halt_cycles,
                                 state_norms=out.state_norms)

    def _prepare_generation_config(self, generation_config, **kwargs):
        """GenerationMixin's, plus the depth mode: `generate(..., hrm_mode=...)`, else `generation_config.hrm_mode`,
        else config.hrm_mode. An unknown mode is a ValueError naming the valid ones.

        A GenerationConfig keeps unknown attributes, and once it has an `hrm_mode` it swallows the same-named
        `generate` keyword (which then never reaches the forward). So the mode is taken out of the generation
        config (which already holds the keyword's value: keyword > given config > model's config) and handed to
        every forward call of the generation as a model keyword.
        """
        generation_config, model_kwargs = super()._prepare_generation_config(generation_config, **kwargs)
        mode = model_kwargs.get("hrm_mode")
        if getattr(generation_config, "hrm_mode", None) is not None:
            mode = generation_config.hrm_mode
        if hasattr(generation_config, "hrm_mode"):
            del generation_config.hrm_mode
        if mode is not None:
            self.config.depth(mode)  # fail before any work
            model_kwargs["hrm_mode"] = mode
        return generation_config, model_kwargs

    def _act(self, states: torch.Tensor, labels: torch.Tensor | None, attention_mask: torch.Tensor | None):
        """Adaptive computation time over cycles, per token (causal: a token's choice reads only its own z_H).

        states: (C, B, T, D), z_H after each of C = halt_max_steps cycles. q = q_head(z_H) gives (q_halt,
        q_continue); a token halts at its first cycle with q_halt > q_continue (at C at the latest) and its
        logits are that cycle's. In training, with probability halt_exploration_prob a sequence may not halt
        before a random cycle in [2, C]. Q-learning targets (detached): q_halt -> 1 if the cycle's prediction
        of the next token is right, q_continue -> sigmoid(max(q_halt, q_continue)) of the next cycle.
        Returns logits (B, T, V), the unweighted BCE aux loss (training with labels only) and halt cycles (B, T).
        """
        C, B, T, _ = states.shape
        q = self.q_head(states).float()  # (C, B, T, 2)
        halt = q[..., 0] > q[..., 1]  # (C, B, T)
        halt[-1] = True
        if self.training and self.config.halt_exploration_prob > 0:
            explore = torch.rand(B, device=q.device) < self.config.halt_exploration_prob
            min_halt = torch.where(explore, torch.randint(2, C + 1, (B,), device=q.device), 1)  # (B,)
            halt &= torch.arange(1, C + 1, device=q.device)[:, None, None] >= min_halt[None, :, None]
            halt[-1] = True
        chosen = halt.long().argmax(0)  # (B, T): first halting cycle, 0-based
        selected = states.gather(0, chosen[None, ..., None].expand(1, B, T, states.shape[-1]))[0]  # (B, T, D)
        logits = self.lm_head(selected)
        aux = None
        if self.training and labels is not None:
            aux = self._q_loss(q, states, labels, attention_mask)
        return logits, aux, chosen + 1

    def _q_loss(self, q: torch.Tensor, states: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        """BCE of q_halt against 'this cycle predicts the next token' and of q_continue against the next
        cycle's best Q (bootstrapped), over the tokens that have a label. q: (C, B, T, 2)."""
        with torch.no_grad():
            target = labels[:, 1:]  # (B, T-1)
            valid = target != -100
            if attention_mask is not None and attention_mask.shape == labels.shape:
                valid &= attention_mask[:, :-1].bool()
            correct = (self.lm_head(states[:, :, :-1]).argmax(-1) == target).float()  # (C, B, T-1)
            best_next = torch.sigmoid(q[1:, :, :-1].max(-1).values)  # (C-1, B, T-1)
        q = q[:, :, :-1]
        weight = valid.float().expand_as(correct)
        halt_loss = F.binary_cross_entropy_with_logits(q[..., 0], correct, weight=weight, reduction="sum")
        cont_loss = F.binary_cross_entropy_with_logits(q[:-1, ..., 1], best_next, weight=weight[:-1], reduction="sum")
        return (halt_loss + cont_loss) / weight.sum().clamp(min=1)


__all__ = ["HrmForCausalLM", "HrmModel", "HrmPreTrainedModel", "log_stablemax"]
