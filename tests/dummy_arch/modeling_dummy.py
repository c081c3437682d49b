"""The dummy test architecture: a Llama-like causal LM written from the math.

Per layer:  h = x + Attn(RMSNorm(x)),  x' = h + W_down (SiLU(W_gate n) * (W_up n)),  n = RMSNorm(h)
Attention is causal softmax attention over RoPE-rotated queries and keys; generation keeps the keys and values
in a Transformers DynamicCache. Positions count real tokens only, so a left-padded row is numbered like a bare
one. This file imports only torch, transformers and its own configuration (it is copied into every export).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_dummy import DummyConfig


def _validate_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """A ValueError that names the problem instead of an IndexError from the embedding."""
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError("input_ids is empty: nothing to process")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"input_ids contain id {lo if lo < 0 else hi} outside [0, {vocab_size}) (vocab_size)")


class DummyRMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE with channel i paired with i + d/2. x: (B, H, T, d); cos, sin: (B, 1, T, d)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], -1) * sin


class DummyAttention(nn.Module):
    def __init__(self, config: DummyConfig, layer_idx: int):
        super().__init__()
        D, self.heads = config.hidden_size, config.num_attention_heads
        self.q_proj, self.k_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.v_proj, self.o_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.layer_idx, self.fused = layer_idx, config.fused_attention

    def forward(self, x, cos, sin, allowed, cache):
        """x: (B, T, D); allowed: (B, 1, T, S) bool, S = cached + new keys -> (B, T, D)."""
        B, T, D = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, -1).transpose(1, 2) for proj in (self.q_proj, self.k_proj,
                                                                                     self.v_proj))  # (B, H, T, d)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, S, d)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
            out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class DummyDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: DummyConfig, layer_idx: int):
        super().__init__()
        D, F_ = config.hidden_size, config.intermediate_size
        self.input_norm = DummyRMSNorm(D, config.rms_norm_eps)
        self.attn = DummyAttention(config, layer_idx)
        self.mlp_norm = DummyRMSNorm(D, config.rms_norm_eps)
        self.gate_proj, self.up_proj = nn.Linear(D, F_, bias=False), nn.Linear(D, F_, bias=False)
        self.down_proj = nn.Linear(F_, D, bias=False)

    def forward(self, x, cos, sin, allowed, cache):
        h = x + self.attn(self.input_norm(x), cos, sin, allowed, cache)
        n = self.mlp_norm(h)
        return h + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class DummyPreTrainedModel(PreTrainedModel):
    config: DummyConfig
    config_class = DummyConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DummyDecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, DummyRMSNorm):
            nn.init.ones_(module.weight)


class DummyModel(DummyPreTrainedModel):
    def __init__(self, config: DummyConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DummyDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = DummyRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, output_hidden_states=None, return_dict=None, **kwargs) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            _validate_input_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.embed_tokens(input_ids)
        B, T, _ = inputs_embeds.shape
        use_cache = (self.config.use_cache and not self.training) if use_cache is None else use_cache
        cache = past_key_values if past_key_values is not None else (DynamicCache() if use_cache else None)
        past = cache.get_seq_length() if cache is not None else 0
        cos, sin, allowed = self._positions(attention_mask, B, T, past, inputs_embeds)
        x, hidden = inputs_embeds, [inputs_embeds]
        for layer in self.layers:
            x = layer(x, cos, sin, allowed, cache)
            hidden.append(x)
        x = self.norm(x)
        return BaseModelOutputWithPast(last_hidden_state=x, past_key_values=cache,
                                       hidden_states=tuple(hidden[:-1]) + (x,) if output_hidden_states else None)

    def _positions(self, attention_mask, B: int, T: int, past: int, like: torch.Tensor):
        """RoPE cos/sin (B, 1, T, d) at real-token positions, and which keys each query sees (B, 1, T, past+T):
        earlier or equal real tokens, and always itself (a padding query then attends to itself, not to nothing)."""
        S = past + T
        if attention_mask is None:
            mask = torch.ones(B, S, dtype=torch.long, device=like.device)
        elif attention_mask.dim() != 2 or tuple(attention_mask.shape) != (B, S):
            raise ValueError(f"attention_mask must have shape ({B}, {S}) = (batch, cached + new tokens), "
                             f"got {tuple(attention_mask.shape)}")
        else:
            mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
        d = self.config.hidden_size // self.config.num_attention_heads
        inv_freq = self.config.rope_theta ** (-torch.arange(0, d, 2, device=like.device, dtype=torch.float64) / d)
        angles = positions[..., None].double() * inv_freq  # (B, T, d/2)
        angles = torch.cat([angles, angles], -1)[:, None]  # (B, 1, T, d)
        query = torch.arange(past, S, device=like.device)[:, None]  # (T, 1) absolute slots of the queries
        key = torch.arange(S, device=like.device)[None]  # (1, S)
        allowed = ((key <= query) & mask[:, None].bool()) | (key == query)  # (B, T, S)
        return angles.cos().to(like.dtype), angles.sin().to(like.dtype), allowed[:, None]


class DummyForCausalLM(DummyPreTrainedModel, GenerationMixin):
    def __init__(self, config: DummyConfig):
        super().__init__(config)
        self.model = DummyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                use_cache=None, output_hidden_states=None, logits_to_keep=0, return_dict=None,
                **kwargs) -> CausalLMOutputWithPast:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(out.last_hidden_state[:, keep])
        loss = None
        if labels is not None:
            if attention_mask is not None and attention_mask.shape == labels.shape:
                # a target predicted from a padding slot (the first real token after left padding) is no prediction
                labels = labels.masked_fill(F.pad(attention_mask[:, :-1] == 0, (1, 0), value=False), -100)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states)


__all__ = ["DummyForCausalLM", "DummyModel", "DummyPreTrainedModel"]
