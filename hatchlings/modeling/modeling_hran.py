"""HRAN, the Haykin Resonant Attention Network, as a Transformers causal language model.

A pre-norm decoder (RMSNorm, RoPE) whose parts come from Haykin's *Neural Networks and Learning Machines*:

    x = x + Attn(RMSNorm(x))                           RBF attention: w_ij = softmax_j(-gamma_h ||q_i - k_j||^2)
    x = x + W_down Inhibit(f(W_up RMSNorm(x)))          f(u) = tanh(u) + alpha u  (infomax)
    Inhibit(h)_j = sign(h_j) relu(|h_j| - lambda mean_k |h_k|)     (lateral inhibition, lambda learned)

The seed (a NumPy seq2seq chatbot) collapsed to "is is define is is"; every mechanism has a config switch
(`attention`, `activation`, `lateral_inhibition`) so the collapse study can turn each one off.

RBF attention runs on the fused SDPA kernel: -gamma ||q - k||^2 = 2 gamma q.k - gamma ||k||^2 - gamma ||q||^2,
and the last term is the same for every key of a query, so it cancels in the softmax. With q' = [2 gamma q, -gamma]
and k' = [k, ||k||^2] the logits are q'.k' at scale 1. Generation caches k' and v (RecurrentStateCache.append).

HranForConditionalGeneration is the seed's encoder-decoder shape from the same layers: the encoder is the layer
stack without the causal mask, the decoder layer adds cross-attention (RBF or dot) to the encoder's outputs,
whose keys and values are computed once per sequence and cached.
This file imports only torch, transformers and same-folder modules (it is copied into every export).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (BaseModelOutput, BaseModelOutputWithPast, CausalLMOutputWithPast,
                                           Seq2SeqLMOutput)

from .cache import RecurrentStateCache
from .configuration_hran import HranConfig
from .layers import (apply_rope_pairs, attention_layout, causal_attention, causal_lm_loss, embed_inputs, forward_cache,
                     keep_positions, positions_from_mask, rope_pair_rotor, validate_input_ids)

KEY, VALUE = "key", "value"  # cache entries per layer: keys (augmented with ||k||^2 for RBF) and values


# ------------------------------------------------------------------------------------------- mechanisms

def infomax(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """f(x) = tanh(x) + alpha x: Bell and Sejnowski's information-maximising nonlinearity with a linear leak, so
    the unit never saturates completely (its slope is at least alpha)."""
    return torch.tanh(x) + alpha * x


def lateral_inhibition(h: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Inhibit(h)_j = sign(h_j) * relu(|h_j| - lambda * mean_k |h_k|): a competitive, mean-field lateral inhibition.

    Every unit inhibits every other equally, by lambda times the token's mean activity magnitude: units that do
    not beat that threshold are silenced (exactly zero, a sparse code), the winners pass, reduced by the same
    amount (soft thresholding keeps the map continuous, so it is differentiable almost everywhere, also in
    lambda). h: (..., F); strength: lambda, a 0-dim tensor in (0, 1). Returns (..., F).
    """
    threshold = strength * h.abs().mean(-1, keepdim=True)  # (..., 1)
    return h - torch.maximum(torch.minimum(h, threshold), -threshold)  # == sign(h) relu(|h| - threshold)


def rbf_augment(q: torch.Tensor, k: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q' = [2 gamma q, -gamma], k' = [k, ||k||^2], so that q'.k' = -gamma ||q - k||^2 + gamma ||q||^2.

    q: (B, H, T, d); k: (B, H, S, d); gamma: (H,) positive. Returns q' (B, H, T, d+1), k' (B, H, S, d+1).
    """
    g = gamma.to(q.dtype).view(1, -1, 1, 1)  # (1, H, 1, 1)
    q_aug = torch.cat([2 * g * q, (-g).expand(*q.shape[:-1], 1)], -1)
    return q_aug, augment_key(k)


def augment_key(k: torch.Tensor) -> torch.Tensor:
    """k' = [k, ||k||^2]: (B, H, S, d) -> (B, H, S, d+1). What the generation cache stores for RBF heads."""
    return torch.cat([k, k.pow(2).sum(-1, keepdim=True)], -1)


def rbf_attention(q: torch.Tensor, k_aug: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
                  allowed: torch.Tensor | None, fused: bool = True) -> torch.Tensor:
    """softmax_j(-gamma_h ||q_i - k_j||^2) v over the allowed keys.

    fused: the SDPA kernel on q' = [2 gamma q, -gamma] and k' (scale 1). SDPA's fused CPU kernel wants the value
    size equal to the key size (else it falls back to its decomposed math path), so v gets a zero channel that
    is dropped from the output. Plain: the squared distances ||q||^2 + ||k||^2 - 2 q.k, masked softmax, in plain
    autograd ops, the row-constant ||q||^2 term included.
    q: (B, H, T, d); k_aug: (B, H, S, d+1) from `augment_key`; v: (B, H, S, d); gamma: (H,);
    allowed: (B, 1, T, S) or None (plain causal). Returns (B, H, T, d).
    """
    d = q.shape[-1]
    if fused:
        q_aug = rbf_augment(q, k_aug[..., :d], gamma)[0]
        return causal_attention(q_aug, k_aug, F.pad(v, (0, 1)), allowed, fused=True, scale=1.0)[..., :d]
    k = k_aug[..., :d]
    sq_dist = q.pow(2).sum(-1, keepdim=True) + k.pow(2).sum(-1)[..., None, :] - 2 * q @ k.transpose(-1, -2)
    scores = -gamma.to(q.dtype).view(1, -1, 1, 1) * sq_dist  # (B, H, T, S)
    if allowed is None:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


# ---------------------------------------------------------------------------------------------- modules

class HranRMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class HranAttention(nn.Module):
    """Causal multi-head attention, RBF (per-head gamma = softplus(gamma_raw) > 0) or dot-product."""

    def __init__(self, config: HranConfig, layer_idx: int):
        super().__init__()
        D, self.heads = config.hidden_size, config.num_attention_heads
        self.q_proj, self.k_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.v_proj, self.o_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.rbf = config.attention == "rbf"
        if self.rbf:
            self.gamma_raw = nn.Parameter(torch.empty(self.heads))
        self.layer_idx, self.fused = layer_idx, config.fused_attention

    @property
    def gamma(self) -> torch.Tensor:
        """(H,) the RBF width of each head, positive by construction."""
        return F.softplus(self.gamma_raw)

    def forward(self, x: torch.Tensor, rotor: torch.Tensor, allowed: torch.Tensor | None,
                past_key_values: RecurrentStateCache | None = None) -> torch.Tensor:
        """x: (B, T, D); rotor: (B, 1, T, d/2); allowed: (B, 1, T, S) or None -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, T, d) each
        q, k = apply_rope_pairs(q, rotor), apply_rope_pairs(k, rotor)
        if self.rbf:
            k = augment_key(k)  # (B, H, T, d+1)
        if past_key_values is not None:
            k = past_key_values.append(self.layer_idx, KEY, k)  # (B, H, S, d or d+1)
            v = past_key_values.append(self.layer_idx, VALUE, v)  # (B, H, S, d)
        if self.rbf:
            out = rbf_attention(q, k, v, self.gamma, allowed, self.fused)
        else:
            out = causal_attention(q, k, v, allowed, fused=self.fused)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class HranFeedForward(nn.Module):
    """W_down Inhibit(f(W_up x)), f infomax or GELU, Inhibit the lateral-inhibition gate (or the identity)."""

    def __init__(self, config: HranConfig):
        super().__init__()
        D, F_ = config.hidden_size, config.intermediate_size
        self.up_proj, self.down_proj = nn.Linear(D, F_, bias=False), nn.Linear(F_, D, bias=False)
        self.activation, self.alpha = config.activation, config.infomax_alpha
        if config.lateral_inhibition:
            self.inhibition_logit = nn.Parameter(torch.empty(()))  # lambda = sigmoid(logit), in (0, 1)

    @property
    def inhibition(self) -> torch.Tensor | None:
        """lambda, the inhibition strength (0-dim), or None when the gate is off."""
        return torch.sigmoid(self.inhibition_logit) if hasattr(self, "inhibition_logit") else None

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden units after activation and inhibition: (B, T, D) -> (B, T, F)."""
        u = self.up_proj(x)
        h = infomax(u, self.alpha) if self.activation == "infomax" else F.gelu(u)
        strength = self.inhibition
        return h if strength is None else lateral_inhibition(h, strength.to(h.dtype))

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D) -> (B, T, D), and with `real` (B, T) float the share of non-zero units over real tokens."""
        h = self.hidden(x)  # (B, T, F)
        active = None
        if real is not None:
            active = ((h != 0).float().mean(-1) * real).sum() / real.sum().clamp(min=1)
        return self.down_proj(h), active


class HranDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: HranConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = HranAttention(config, layer_idx)
        self.ffn_norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn = HranFeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotor, allowed, real=None, past_key_values=None):
        """x: (B, T, D) -> (B, T, D), share of active feed-forward units (or None). The cache goes by keyword, so
        gradient checkpointing (which recomputes the layer) drops it instead of appending keys twice."""
        x = x + self.dropout(self.attn(self.attn_norm(x), rotor, allowed, past_key_values))
        out, active = self.ffn(self.ffn_norm(x), real)
        return x + self.dropout(out), active


# ----------------------------------------------------------------------------------------------- models

@dataclass
class HranModelOutput(BaseModelOutputWithPast):
    """`activity`: (num_hidden_layers,) share of non-zero feed-forward units over real tokens (only with
    `output_activity`); with lateral inhibition on, what the gate leaves active."""

    activity: torch.FloatTensor | None = None


@dataclass
class HranCausalLMOutput(CausalLMOutputWithPast):
    activity: torch.FloatTensor | None = None


class HranPreTrainedModel(PreTrainedModel):
    config: HranConfig
    config_class = HranConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HranDecoderLayer"]
    _supports_sdpa = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model creates its own RecurrentStateCache (RBF keys carry ||k||^2)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        cfg = self.config
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=cfg.initializer_range)
        elif isinstance(module, HranRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, HranAttention) and module.rbf:
            module.gamma_raw.fill_(math.log(math.expm1(cfg.gamma_init)))  # softplus^-1(gamma_init)
        elif isinstance(module, HranFeedForward) and hasattr(module, "inhibition_logit"):
            module.inhibition_logit.fill_(math.log(cfg.inhibition_init / (1 - cfg.inhibition_init)))


class HranModel(HranPreTrainedModel):
    """Embedding, the decoder layers and a final RMSNorm."""

    def __init__(self, config: HranConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HranDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                output_activity: bool = False, return_dict: bool | None = None, **kwargs) -> HranModelOutput:
        cfg = self.config
        inputs_embeds = embed_inputs(self.embed_tokens, input_ids, inputs_embeds, cfg.hidden_size)
        B, T, _ = inputs_embeds.shape
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        cache = forward_cache(self, past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        positions, allowed = attention_layout(attention_mask, B, T, past, inputs_embeds.device)  # (B, T), mask
        rotor = rope_pair_rotor(positions, cfg.head_dim, cfg.rope_theta)  # (B, 1, T, d/2)
        real = None
        if output_activity:  # (B, T) weights of the new tokens: 1 for real ones
            real = torch.ones(B, T, device=inputs_embeds.device) if attention_mask is None \
                else attention_mask[:, -T:].to(inputs_embeds.device).float()
        x, hidden, activity = inputs_embeds, [], []
        for layer in self.layers:
            hidden.append(x)
            x, active = layer(x, rotor, allowed, real, past_key_values=cache)
            activity.append(active)
        x = self.norm(x)
        if cache is not None:
            cache.seen_tokens += T
        return HranModelOutput(last_hidden_state=x, past_key_values=cache,
                               hidden_states=tuple(hidden) + (x,) if output_hidden_states else None,
                               activity=torch.stack(activity) if output_activity else None)


class HranForCausalLM(HranPreTrainedModel, GenerationMixin):
    """HRAN with its language-model head (tied to the embedding unless tie_word_embeddings=False)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HranConfig):
        super().__init__(config)
        self.model = HranModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, output_activity: bool = False,
                logits_to_keep: int | torch.Tensor = 0, return_dict: bool | None = None,
                **kwargs) -> HranCausalLMOutput:
        """`labels` are the input ids themselves (shifted inside, -100 ignored); `logits_to_keep=k` computes
        logits for the last k positions only (generation needs one)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
                         output_activity=output_activity)
        logits = self.lm_head(keep_positions(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(self, logits, labels, attention_mask, **kwargs)
        return HranCausalLMOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                  hidden_states=out.hidden_states, activity=out.activity)

    def activity_series(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """Named per-layer activity for the platform's tracking: `inhibition_active`, (L,) the share of
        feed-forward units the lateral-inhibition gate leaves non-zero (about 1 with the gate off)."""
        out = self(input_ids=input_ids, attention_mask=attention_mask, output_activity=True, use_cache=False)
        return {"inhibition_active": out.activity}


# ------------------------------------------------------------------------------ encoder-decoder variant

CROSS_KEY, CROSS_VALUE = "cross_key", "cross_value"  # cache entries per decoder layer: the encoder's keys/values


class HranCrossAttention(HranAttention):
    """Decoder queries over the encoder's outputs, RBF or dot like self-attention. No RoPE: positions of the two
    sequences are not comparable. The encoder's keys and values are computed once and kept in the cache."""

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_allowed: torch.Tensor,
                past_key_values: RecurrentStateCache | None = None) -> torch.Tensor:
        """x: (B, T, D); memory: (B, S, D); memory_allowed: (B, 1, 1, S) bool -> (B, T, D)."""
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.heads, -1).transpose(1, 2)  # (B, H, T, d)
        k = past_key_values.get(self.layer_idx, CROSS_KEY) if past_key_values is not None else None
        if k is None:
            S = memory.shape[1]
            k, v = (proj(memory).view(B, S, self.heads, -1).transpose(1, 2) for proj in (self.k_proj, self.v_proj))
            k = augment_key(k) if self.rbf else k  # (B, H, S, d+1 or d)
            if past_key_values is not None:
                past_key_values.set(self.layer_idx, CROSS_KEY, k)
                past_key_values.set(self.layer_idx, CROSS_VALUE, v)
        else:
            v = past_key_values.get(self.layer_idx, CROSS_VALUE)
        allowed = memory_allowed.expand(B, 1, T, k.shape[-2])
        if self.rbf:
            out = rbf_attention(q, k, v, self.gamma, allowed, self.fused)
        else:
            out = causal_attention(q, k, v, allowed, fused=self.fused)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class HranSeq2SeqDecoderLayer(HranDecoderLayer):
    """The decoder-only model's layer plus cross-attention to the encoder (between self-attention and FFN)."""

    def __init__(self, config: HranConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.cross_norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.cross_attn = HranCrossAttention(config, layer_idx)

    def forward(self, x, rotor, allowed, memory, memory_allowed, past_key_values=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), rotor, allowed, past_key_values))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory, memory_allowed, past_key_values))
        return x + self.dropout(self.ffn(self.ffn_norm(x))[0])


class HranEncoder(nn.Module):
    """The decoder-only model's layers without the causal mask: every real token sees every real token."""

    main_input_name = "input_ids"  # what generate asks of an encoder

    def __init__(self, config: HranConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self._embed = [embed_tokens]  # a reference, not a submodule: the parent owns (and saves) the embedding
        self.layers = nn.ModuleList(HranDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None,
                return_dict=None, **kwargs) -> BaseModelOutput:
        cfg = self.config
        inputs_embeds = embed_inputs(self._embed[0], input_ids, inputs_embeds, cfg.hidden_size)
        B, S, _ = inputs_embeds.shape
        mask = _memory_mask(attention_mask, B, S, inputs_embeds.device)  # (B, S) bool
        rotor = rope_pair_rotor(positions_from_mask(mask.long(), B, S, None, inputs_embeds.device),
                                cfg.head_dim, cfg.rope_theta)
        allowed = mask[:, None, None, :] | torch.eye(S, dtype=torch.bool, device=mask.device)  # (B, 1, S, S)
        x, hidden = inputs_embeds, []
        for layer in self.layers:
            hidden.append(x)
            x = layer(x, rotor, allowed)[0]
        x = self.norm(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) + (x,) if output_hidden_states else None)


def _memory_mask(attention_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """The encoder's padding mask as (B, S) bool, checked against the encoder input."""
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have the encoder input's shape ({batch}, {length}), "
                         f"got {tuple(attention_mask.shape)}")
    return attention_mask.to(device).bool()


class HranForConditionalGeneration(HranPreTrainedModel, GenerationMixin):
    """Encoder-decoder HRAN, as in the seed: the encoder is the decoder-only model's layer stack unmasked, the
    decoder adds cross-attention; one embedding serves both and the head. Sets config.is_encoder_decoder."""

    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    _no_split_modules = ["HranDecoderLayer", "HranSeq2SeqDecoderLayer"]

    def __init__(self, config: HranConfig):
        config.is_encoder_decoder = True
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = HranEncoder(config, self.embed_tokens)
        self.layers = nn.ModuleList(HranSeq2SeqDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = HranRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self, modality: str | None = None):
        return self.encoder

    def _start_id(self) -> int:
        start = self.config.decoder_start_token_id
        return self.config.bos_token_id if start is None else start

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, labels=None, use_cache=None, output_hidden_states=None,
                logits_to_keep: int | torch.Tensor = 0, return_dict=None, **kwargs) -> Seq2SeqLMOutput:
        """`labels` are the target ids: decoder inputs are labels shifted right behind the start token when not
        given, and the loss is the unshifted cross-entropy of logits against labels (-100 ignored)."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        memory = encoder_outputs[0]  # (B, S, D)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels")
            decoder_input_ids = F.pad(labels[:, :-1], (1, 0), value=self._start_id())
            decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == -100, self.config.pad_token_id or 0)
        validate_input_ids(decoder_input_ids, self.config.vocab_size)
        B, T = decoder_input_ids.shape
        memory_allowed = _memory_mask(attention_mask, B, memory.shape[1], memory.device)[:, None, None, :]
        cache = forward_cache(self, past_key_values, use_cache)
        past = cache.get_seq_length() if cache is not None else 0
        positions, allowed = attention_layout(decoder_attention_mask, B, T, past, memory.device)
        rotor = rope_pair_rotor(positions, self.config.head_dim, self.config.rope_theta)
        x = self.embed_tokens(decoder_input_ids)
        for layer in self.layers:
            x = layer(x, rotor, allowed, memory, memory_allowed, past_key_values=cache)
        if cache is not None:
            cache.seen_tokens += T
        logits = self.lm_head(keep_positions(self.norm(x), logits_to_keep))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits, past_key_values=cache,
                               encoder_last_hidden_state=memory)


__all__ = ["HranForCausalLM", "HranForConditionalGeneration", "HranModel", "HranPreTrainedModel", "augment_key", "infomax", "lateral_inhibition",
           "rbf_attention", "rbf_augment"]
