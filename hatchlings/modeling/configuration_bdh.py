"""Configuration of BDH, the Baby Dragon Hatchling (Kosowski et al., 2025, "The Dragon Hatchling")."""

from __future__ import annotations

from transformers import PreTrainedConfig


class BdhConfig(PreTrainedConfig):
    r"""Hyper-parameters of a BDH language model.

    BDH has one block of weights shared by all `num_hidden_layers` layers. Each of the
    `num_attention_heads` heads owns `N = mlp_internal_dim_multiplier * hidden_size // num_attention_heads`
    neurons; the sparse ReLU activations of those neurons act as queries and keys of a linear attention
    whose running sum is the model's Hebbian synaptic state (N x hidden_size per head and layer).

    Args:
        vocab_size: tokens in the vocabulary (259 for the hatchlings byte tokenizer).
        hidden_size: D, width of the residual stream.
        num_hidden_layers: how many times the shared block is applied.
        num_attention_heads: H, heads; each has its own encoder slices and neurons.
        mlp_internal_dim_multiplier: neurons per head are `multiplier * D / H`.
        dropout: dropout on the sparse neuron activations (training only).
        rope_theta: base of the rotary frequencies applied to the neurons (2**16 in the paper's code).
        rope_period: neuron pairs (2k, 2k+1) turn at frequency `theta^(-2k / rope_period)`, repeating every
            `rope_period` neurons of a head; None (the default) means `N`, one frequency per pair. A model
            merged from parents by concatenating their neurons (`hatchlings.merge_bdh`) sets it to the
            parents' N, so every parent neuron keeps the frequency it was trained with.
        layer_norm_eps: epsilon of the affine-free LayerNorms.
        initializer_range: std of the normal init of every weight.
        attn_chunk_size: tokens per chunk of the chunked parallel attention (speed/memory knob only;
            results do not depend on it).
        handwritten_backward: use the hand-written backward passes (less memory and time on CPU). False runs
            the same forward math in plain torch ops and lets autograd differentiate it: for debugging, for
            torch.compile experiments and for devices the hand-written passes were not tried on.
    """

    model_type = "hatchlings_bdh"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 259
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    mlp_internal_dim_multiplier: int = 128
    dropout: float = 0.1
    rope_theta: float = 65536.0
    rope_period: int | None = None
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    attn_chunk_size: int = 64
    handwritten_backward: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 256
    bos_token_id: int | None = 257
    eos_token_id: int | list[int] | None = 258
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._validate_bdh()

    @property
    def neurons_per_head(self) -> int:
        """N: neurons each head owns."""
        return self.mlp_internal_dim_multiplier * self.hidden_size // self.num_attention_heads

    @property
    def rotary_period(self) -> int:
        """Neurons after which the rotary frequencies repeat (`rope_period`, or N when unset)."""
        return self.rope_period or self.neurons_per_head

    def _validate_bdh(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "mlp_internal_dim_multiplier", "attn_chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BdhConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BdhConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.handwritten_backward, bool):
            raise ValueError(f"BdhConfig.handwritten_backward must be true or false, got {self.handwritten_backward!r}")
        for name in ("rope_theta", "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"BdhConfig.{name} must be a positive number, got {value!r}")
        neurons = self.mlp_internal_dim_multiplier * self.hidden_size
        if neurons % self.num_attention_heads:
            raise ValueError(
                f"BdhConfig.num_attention_heads={self.num_attention_heads} must divide "
                f"mlp_internal_dim_multiplier * hidden_size = {neurons}"
            )
        if self.neurons_per_head % 2:
            raise ValueError(
                f"BdhConfig.mlp_internal_dim_multiplier gives {self.neurons_per_head} neurons per head; rotary "
                "embeddings rotate neuron pairs, so it must be even"
            )
        period = self.rope_period
        if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 2
                                   or period % 2 or self.neurons_per_head % period):
            raise ValueError(f"BdhConfig.rope_period={period!r} must be an even number of neurons that divides "
                             f"the {self.neurons_per_head} neurons per head (or None)")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"BdhConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        if any(e is not None and not 0 <= e < self.vocab_size for e in eos):
            raise ValueError(f"BdhConfig.eos_token_id={self.eos_token_id} is outside the vocabulary "
                             f"(vocab_size={self.vocab_size})")


__all__ = ["BdhConfig"]
