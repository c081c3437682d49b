"""Configuration of the dummy test architecture: a small Llama-like decoder (RMSNorm, RoPE, SwiGLU)."""

from __future__ import annotations

from transformers import PreTrainedConfig


class DummyConfig(PreTrainedConfig):
    r"""Hyper-parameters of the dummy Llama-like language model.

    Args:
        vocab_size: tokens in the vocabulary (259 for the hatchlings byte tokenizer).
        hidden_size: D, width of the residual stream.
        num_hidden_layers: decoder layers, each with its own weights.
        num_attention_heads: H; the head size D / H must be even (RoPE turns pairs of channels).
        intermediate_size: width of the SwiGLU feed-forward.
        rope_theta: base of the rotary frequencies.
        rms_norm_eps: epsilon of the RMSNorms.
        initializer_range: std of the normal init of every weight matrix.
        fused_attention: scaled_dot_product_attention (the fast path); False writes softmax(q k^T / sqrt(d)) v
            out in plain torch ops (the plain-autograd path, for debugging and new devices).
    """

    model_type = "hatchlings_dummy"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 259
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 176
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    fused_attention: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 256
    bos_token_id: int | None = 257
    eos_token_id: int | list[int] | None = 258
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DummyConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"DummyConfig.num_attention_heads={self.num_attention_heads} must divide hidden_size="
                             f"{self.hidden_size} into heads of an even size")
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ValueError(f"DummyConfig.{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if isinstance(value, int) and not 0 <= value < self.vocab_size:
                raise ValueError(f"DummyConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")


__all__ = ["DummyConfig"]
