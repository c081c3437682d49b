"""HoloSpectralNet (HSN) as a Transformers causal language model: no attention, no softmax over tokens.

Per block (pre-norm residual branches; x is the residual stream, (B, T, D)):

    x = x + HolographicMixer(LN(x))     unbind(k_u, mean_{s<=t} bind(k_b, n_s)): a causal running mean of
                                         the tokens, each bound to a learned key by circular convolution over
                                         the D features and read back by circular correlation with a second key
    x = x + SpectralGate(LN(x))         y_t = sum_{j=0}^{K-1} h[j] u_{t-j}: a causal long convolution over time
                                         whose kernel h comes from L//2+1 learned frequency gates
    x = x + s * up(GELU(down(LN(x))))   LiteChannelMix, rank r, s a learned per-channel scale

The token embeddings are rotated by parameter-free RoPE (positions count real tokens only) before the first
block; a final LayerNorm and the tied embedding give the logits.

What is fixed relative to the seed (004, s3nh/holospectral-net):
* The seed's gate, irfft(rfft(x over time) * sigmoid(g)), is a circular filter over the whole sequence: token t
  sees the future. Here the L//2+1 gates g (the seed's budget, L = max_position_embeddings) define the real,
  symmetric filter h = irfft(sigmoid(g), n=L); its lags L//2+1..L-1 are its negative lags wrapped around, so the
  causal kernel keeps lags 0..L//2 (K = L//2+1 taps, no window; for even L the lag L//2 tap is kept whole). The
  map g -> h[0..L//2] is a cosine transform of full rank: every causal kernel of K taps is reachable (up to the
  sigmoid's range), and no tap is forced to mirror another. Training applies it by FFT with zero padding to the
  next power of two >= T + K - 1 (< 2T when K <= T): O(T log T).
* The bundle is a running mean (the sum divided by the number of real tokens so far), not a sum that grows with
  length; padding writes nothing.

Generation: the mixer keeps its running bundle (one D-vector per layer) and the real-token count: O(D log D) per
token. The gate keeps its last K-1 inputs per layer, a fixed (B, K-1, D) window (zeros before the first token):
O(K * D) multiply-adds and K*D floats of memory per layer and token, independent of the context length.
Longer inputs than max_position_embeddings: accepted (a documented extension, tested): the kernel is finite and
causal, the mixer a running mean, RoPE needs no table. L is the context the model was built for and that chat
and tokenizers respect; quality beyond the trained length is not promised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import RecurrentStateCache
from .configuration_holospectral import HolospectralConfig
from .layers import (apply_rope_pairs, causal_lm_loss, embed_inputs, forward_cache, keep_positions, positions_from_mask,
                     rope_pair_rotor)

BUNDLE = "bundle"  # cache entry per layer: (B, D) running sum of the bound tokens (float32)
HISTORY = "gate_history"  # cache entry per layer: (B, K-1, D) the gate's last K-1 inputs (float32)
SEEN = "real_tokens"  # cache entry (layer -1): (B,) real tokens consumed: RoPE positions and the mixer's count


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half inputs (CPU FFTs need it; running sums must not be half), float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


# ----------------------------------------------------------------------------- holographic binding (features)

def circular_conv(x: torch.Tensor, key: torch.Tensor, fused: bool) -> torch.Tensor:
    """Bind: (x (*) k)[i] = sum_j x[j] k[(i - j) mod D], over the last dim. x: (..., D); key: (D,).
    fused: by rfft (O(D log D)); else as x @ C with the circulant C[j, i] = k[(i - j) mod D]."""
    D = x.shape[-1]
    if fused:
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * torch.fft.rfft(key), n=D, dim=-1)
    return x @ circulant(key)


def circular_corr(x: torch.Tensor, key: torch.Tensor, fused: bool) -> torch.Tensor:
    """Unbind: (x (#) k)[i] = sum_j k[j] x[(i + j) mod D], the adjoint of binding with k. x: (..., D); key: (D,)."""
    D = x.shape[-1]
    if fused:
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * torch.fft.rfft(key).conj(), n=D, dim=-1)
    return x @ circulant(key).T


def circulant(key: torch.Tensor) -> torch.Tensor:
    """(D, D) matrix C with C[j, i] = key[(i - j) mod D], so that x @ C is the circular convolution x (*) key."""
    D = key.shape[0]
    index = (torch.arange(D, device=key.device)[None, :] - torch.arange(D, device=key.device)[:, None]) % D
    return key[index]


# ------------------------------------------------------------------------------------ spectral gate (time)

def gate_kernel(gate_logits: torch.Tensor, length: int, fused: bool) -> torch.Tensor:
    """The causal kernel h[0..L//2] (K = L//2+1 taps) of the real filter irfft(sigmoid(g), n=L).

    fused: torch.fft.irfft; else the same cosine sum written out,
    h[j] = (1/L) sum_k w_k sigmoid(g_k) cos(2 pi k j / L), w_0 = 1, w_{L/2} = 1 (L even), else 2.
    gate_logits: (L//2+1,) -> (L//2+1,).
    """
    gains = torch.sigmoid(gate_logits)
    taps = length // 2 + 1
    if fused:
        return torch.fft.irfft(gains, n=length)[:taps]
    k = torch.arange(gains.shape[0], dtype=torch.float64, device=gains.device)
    weight = torch.full_like(k, 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    lags = torch.arange(taps, dtype=torch.float64, device=gains.device)
    basis = weight * torch.cos(2 * math.pi * lags[:, None] * k[None, :] / length) / length  # (K, G)
    return basis.to(gains.dtype) @ gains


def causal_conv_fft(x: torch.Tensor, kernel: torch.Tensor, new: int) -> torch.Tensor:
    """y_t = sum_{j>=0} kernel[j] x_{t-j} for the last `new` steps of x (B, N, D), by FFT over time.

    Only min(K, N) taps can reach inside the window. Zero padding to n >= N + taps - 1 makes the circular
    convolution of the FFT a linear one (no wrap-around, hence causal). Returns (B, new, D).
    """
    N = x.shape[1]
    taps = min(kernel.shape[0], N)
    n = 1 << (N + taps - 2).bit_length()  # the next power of two >= N + taps - 1
    spectrum = torch.fft.rfft(x, n=n, dim=1) * torch.fft.rfft(kernel[:taps], n=n)[:, None]  # (B, n//2+1, D)
    return torch.fft.irfft(spectrum, n=n, dim=1)[:, N - new:N]


def causal_conv_direct(x: torch.Tensor, kernel: torch.Tensor, new: int) -> torch.Tensor:
    """The same convolution as an explicit (new, N) Toeplitz matrix W[t, s] = kernel[t' - s] (0 <= t' - s < K,
    t' = N - new + t): O(new * N * D). The plain path, and the generation step (new = 1, N = K: O(K * D))."""
    N, K = x.shape[1], kernel.shape[0]
    lag = torch.arange(N - new, N, device=x.device)[:, None] - torch.arange(N, device=x.device)[None, :]
    valid = (lag >= 0) & (lag < K)
    toeplitz = torch.where(valid, kernel[lag.clamp(0, K - 1)], kernel.new_zeros(()))  # (new, N)
    return torch.einsum("ts,bsd->btd", toeplitz, x)


# --------------------------------------------------------------------------------------------------- modules

class HolographicMixer(nn.Module):
    """out_t = unbind(k_u, H_t / c_t), H_t = sum_{s<=t, real} bind(k_b, n_s), c_t = real tokens so far.

    Causal by construction (a prefix sum); its recurrent form keeps H (one D-vector) and c. 2D parameters.
    """

    def __init__(self, config: HolospectralConfig, layer_idx: int):
        super().__init__()
        self.bind_key = nn.Parameter(torch.empty(config.hidden_size))
        self.unbind_key = nn.Parameter(torch.empty(config.hidden_size))
        self.layer_idx, self.fused = layer_idx, config.fused

    def forward(self, n: torch.Tensor, mask: torch.Tensor | None, count: torch.Tensor,
                past_key_values: RecurrentStateCache | None = None) -> torch.Tensor:
        """n: (B, T, D) normed input; mask: (B, T) of the new tokens or None; count: (B,) real tokens before."""
        B, T, D = n.shape
        dtype, work = n.dtype, _work_dtype(n)
        real = torch.ones(B, T, dtype=work, device=n.device) if mask is None else mask.to(work)
        n = n.to(work) * real[..., None]  # padding writes nothing into the hologram
        bind_key, unbind_key = self.bind_key.to(work), self.unbind_key.to(work)
        bundle = past_key_values.get(self.layer_idx, BUNDLE) if past_key_values is not None else None
        if self.fused:
            # binding is linear and acts on features only, so it commutes with the sum over time: bind the prefix
            # sums (one rfft), add the cached bundle's spectrum, unbind (one irfft): half the FFTs of bind-then-sum
            spectrum = torch.fft.rfft(n.cumsum(1), dim=-1) * torch.fft.rfft(bind_key)  # (B, T, D//2+1): F(H_t)
            if bundle is not None:
                spectrum = spectrum + torch.fft.rfft(bundle.to(work), dim=-1)[:, None]
            if past_key_values is not None:
                past_key_values.set(self.layer_idx, BUNDLE, torch.fft.irfft(spectrum[:, -1], n=D, dim=-1))
            read = torch.fft.irfft(spectrum * torch.fft.rfft(unbind_key).conj(), n=D, dim=-1)  # (B, T, D)
        else:
            bound = circular_conv(n, bind_key, fused=False)  # (B, T, D)
            running = torch.ones(T, T, dtype=work, device=n.device).tril() @ bound  # H_t, (B, T, D)
            if bundle is not None:
                running = running + bundle.to(work)[:, None]
            if past_key_values is not None:
                past_key_values.set(self.layer_idx, BUNDLE, running[:, -1].contiguous())
            read = circular_corr(running, unbind_key, fused=False)
        counts = real.cumsum(1) + count.to(work)[:, None]  # (B, T) real tokens so far
        return (read / counts.clamp(min=1)[..., None]).to(dtype)  # a mean: the scale does not grow with length


class SpectralGate(nn.Module):
    """y_t = sum_{j=0}^{K-1} h[j] u_{t-j}, h = gate_kernel(g): causal, shared by the D channels. L//2+1 parameters."""

    def __init__(self, config: HolospectralConfig, layer_idx: int):
        super().__init__()
        self.gate = nn.Parameter(torch.empty(config.gate_size))
        self.length = config.max_position_embeddings
        self.layer_idx, self.fused = layer_idx, config.fused

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None,
                past_key_values: RecurrentStateCache | None = None) -> torch.Tensor:
        """u: (B, T, D) normed input; mask: (B, T) or None. Padded slots are zeroed: the kernel index is a
        relative lag, so a left-padded row then convolves exactly like the bare row."""
        B, T, D = u.shape
        work = _work_dtype(u)
        x = u.to(work) if mask is None else u.to(work) * mask.to(work)[..., None]
        kernel = gate_kernel(self.gate.to(work), self.length, self.fused)  # (K,)
        K = kernel.shape[0]
        history = past_key_values.get(self.layer_idx, HISTORY) if past_key_values is not None else None
        window = x if history is None else torch.cat([history.to(work), x], 1)  # (B, K-1+T, D) with a history
        if T == 1 and history is not None:
            y = causal_conv_direct(window, kernel, 1)  # the generation step: K * D multiply-adds
        elif self.fused:
            y = causal_conv_fft(window, kernel, T)
        else:
            y = causal_conv_direct(window, kernel, T)
        if past_key_values is not None:
            if history is None:  # a fixed window from the start: zeros stand for "before the first token"
                window = torch.cat([x.new_zeros(B, K - 1, D), x], 1)
            past_key_values.set(self.layer_idx, HISTORY, window[:, window.shape[1] - (K - 1):].contiguous())
        return y.to(u.dtype)


class LiteChannelMix(nn.Module):
    """s * up(GELU(down(n))): a rank-r bottleneck instead of a 4x feed-forward. 2*D*r + D parameters."""

    def __init__(self, config: HolospectralConfig):
        super().__init__()
        self.down = nn.Linear(config.hidden_size, config.channel_rank, bias=False)
        self.up = nn.Linear(config.channel_rank, config.hidden_size, bias=False)
        self.scale = nn.Parameter(torch.empty(config.hidden_size))

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.gelu(self.down(n)))


class HolospectralBlock(GradientCheckpointingLayer):
    """Three pre-norm residual branches: holographic mixer, spectral gate, channel mix."""

    def __init__(self, config: HolospectralConfig, layer_idx: int):
        super().__init__()
        D, eps = config.hidden_size, config.layer_norm_eps
        self.mixer_norm, self.gate_norm, self.channel_norm = (nn.LayerNorm(D, eps=eps) for _ in range(3))
        self.mixer = HolographicMixer(config, layer_idx)
        self.gate = SpectralGate(config, layer_idx)
        self.channel_mix = LiteChannelMix(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, count: torch.Tensor,
                past_key_values: RecurrentStateCache | None = None) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D)."""
        x = x + self.mixer(self.mixer_norm(x), mask, count, past_key_values)
        x = x + self.gate(self.gate_norm(x), mask, past_key_values)
        return x + self.channel_mix(self.channel_norm(x))


# ------------------------------------------------------------------------------------------------- models

class HolospectralPreTrainedModel(PreTrainedModel):
    config: HolospectralConfig
    config_class = HolospectralConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HolospectralBlock"]
    _is_stateful = True  # the running bundle cannot be rolled back (no assisted decoding)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model creates its own RecurrentStateCache

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, HolographicMixer):
            # HRR keys: i.i.d. N(0, 1/D) make binding norm-preserving on average (|FFT(k)|^2 has mean 1)
            for key in (module.bind_key, module.unbind_key):
                nn.init.normal_(key, mean=0.0, std=module.bind_key.shape[0] ** -0.5)
        elif isinstance(module, SpectralGate):
            # the seed's init (gates at sigmoid(1) = 0.73, a scaled identity filter), slightly perturbed
            nn.init.normal_(module.gate, mean=1.0, std=std)
        elif isinstance(module, LiteChannelMix):
            nn.init.ones_(module.scale)


class HolospectralModel(HolospectralPreTrainedModel):
    """The HSN trunk: embedding + RoPE, the blocks, a final LayerNorm."""

    def __init__(self, config: HolospectralConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HolospectralBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPast:
        cfg = self.config
        inputs_embeds = embed_inputs(self.embed_tokens, input_ids, inputs_embeds, cfg.hidden_size)
        B, T, _ = inputs_embeds.shape
        device = inputs_embeds.device
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        cache = forward_cache(self, past_key_values, use_cache)
        mask = self._key_mask(attention_mask, B, T, cache.get_seq_length() if past_key_values is not None else 0)
        offset = cache.get(-1, SEEN) if cache is not None else None
        rotor = rope_pair_rotor(positions_from_mask(mask, B, T, offset, device), cfg.hidden_size, cfg.rope_theta)
        x = apply_rope_pairs(inputs_embeds[:, None], rotor)[:, 0]  # (B, T, D), rotated by real-token position
        count = offset if offset is not None else torch.zeros(B, dtype=torch.long, device=device)
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, mask, count, past_key_values=cache)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.norm(x)
        if output_hidden_states:
            hidden_states[-1] = x
        if cache is not None:
            real = mask.sum(-1).long() if mask is not None else torch.full((B,), T, device=device)
            cache.set(-1, SEEN, count + real)
            cache.seen_tokens += T
        return BaseModelOutputWithPast(last_hidden_state=x, past_key_values=cache,
                                       hidden_states=tuple(hidden_states) if output_hidden_states else None)

    @staticmethod
    def _key_mask(attention_mask: torch.Tensor | None, batch: int, length: int, past: int) -> torch.Tensor | None:
        """The mask of the new tokens, (B, T), or None when every token is real. `generate` passes the mask of
        the whole sequence so far (`past` cached tokens + `length` new ones); its last `length` columns are new."""
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, past + length):
            raise ValueError(f"attention_mask must have shape ({batch}, {past + length}) = (batch, cached + new "
                             f"tokens), got {tuple(attention_mask.shape)}")
        mask = attention_mask[:, -length:]
        return None if bool(mask.all()) else mask


class HolospectralForCausalLM(HolospectralPreTrainedModel, GenerationMixin):
    """HSN with its language-model head, tied to the embedding (config.tie_word_embeddings, the default)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HolospectralConfig):
        super().__init__(config)
        self.model = HolospectralModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                past_key_values: RecurrentStateCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_dict: bool | None = None, **kwargs) -> CausalLMOutputWithPast:
        """`labels` are the input ids themselves (shifted inside, -100 ignored); `logits_to_keep=k` computes
        logits for the last k positions only (generation needs one)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states)
        logits = self.lm_head(keep_positions(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = causal_lm_loss(self, logits, labels, attention_mask, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                      hidden_states=out.hidden_states)


__all__ = ["HolospectralForCausalLM", "HolospectralModel", "HolospectralPreTrainedModel", "causal_conv_direct",
           "causal_conv_fft", "circular_conv", "circular_corr", "gate_kernel"]
