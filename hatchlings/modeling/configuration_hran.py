"""Configuration of HRAN, the Haykin Resonant Attention Network (seed: a NumPy seq2seq chatbot, rebuilt causal)."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

ATTENTION_KINDS = ("rbf", "dot")
ACTIVATIONS = ("infomax", "gelu")


class HranConfig(PreTrainedConfig):
    r"""Hyper-parameters of an HRAN language model: a pre-norm decoder whose mechanisms come from Haykin's
    *Neural Networks and Learning Machines*, each one switchable so its share in the seed's collapse can be
    measured.

    Positions are rotary (RoPE on adjacent channel pairs of queries and keys), so there is no position table
    and no hard maximum length. A rotation keeps norms, so the RBF distance ||R_i q - R_j k||^2 still depends
    on the two positions only through their offset.

    Args:
        vocab_size: tokens in the vocabulary (259 for the hatchlings byte tokenizer; presets use `word`).
        hidden_size: D, width of the residual stream.
        num_hidden_layers: decoder blocks, each with its own weights.
        num_attention_heads: H; the head size D / H must be even (RoPE turns channel pairs).
        intermediate_size: width of the feed-forward sublayer.
        attention: "rbf" (softmax(-gamma_h ||q_i - k_j||^2), Haykin ch. 5) or "dot" (softmax(q.k / sqrt(d))),
            the toggle of the collapse study.
        rbf_gamma_init: initial gamma of every head (kept positive as softplus of a free parameter); None means
            1 / (2 sqrt(d)), where the RBF logits 2 gamma q.k - gamma ||k||^2 start at the scale of dot-product
            attention's q.k / sqrt(d).
        activation: "infomax" (f(x) = tanh(x) + alpha x, Bell-Sejnowski, ch. 10) or "gelu" in the feed-forward.
        infomax_alpha: alpha of the infomax activation (its linear leak; > 0 keeps gradients alive where tanh
            saturates).
        lateral_inhibition: apply the competitive gate (ch. 9) to the feed-forward's hidden units.
        inhibition_init: initial inhibition strength lambda in (0, 1): a unit survives only where its magnitude
            beats lambda times the mean magnitude of the layer's units for that token. Learned per layer.
        dropout: dropout on each sublayer's output before it joins the residual stream (training only; the seed's
            235 QA pairs and the 175 Alpaca tasks are small enough to memorise).
        rope_theta: base of the rotary frequencies.
        rms_norm_eps: epsilon of the RMSNorms.
        initializer_range: std of the normal init of every weight matrix.
        fused_attention: the fused SDPA kernel (the fast path); False writes the attention out in plain torch ops
            (for RBF: the pairwise squared distances) for debugging and new devices.
        tie_word_embeddings: share the input embedding with the output head.
        decoder_start_token_id: the first decoder token of the encoder-decoder variant
            (HranForConditionalGeneration); None means bos_token_id.
    """

    model_type = "hatchlings_hran"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 259
    hidden_size: int = 128
    num_hidden_layers: int = 5
    num_attention_heads: int = 4
    intermediate_size: int = 512
    attention: str = "rbf"
    rbf_gamma_init: float | None = None
    activation: str = "infomax"
    infomax_alpha: float = 0.1
    lateral_inhibition: bool = True
    inhibition_init: float = 0.5
    dropout: float = 0.0
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    fused_attention: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 256
    bos_token_id: int | None = 257
    eos_token_id: int | list[int] | None = 258
    tie_word_embeddings: bool = True
    decoder_start_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._validate_hran()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gamma_init(self) -> float:
        """The initial RBF gamma of every head (rbf_gamma_init, or 1 / (2 sqrt(head_dim)))."""
        return self.rbf_gamma_init if self.rbf_gamma_init is not None else 0.5 / math.sqrt(self.head_dim)

    def _validate_hran(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HranConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            raise ValueError(f"HranConfig.num_attention_heads={self.num_attention_heads} must divide hidden_size="
                             f"{self.hidden_size} into heads of an even size (RoPE turns channel pairs)")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"HranConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"HranConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("lateral_inhibition", "fused_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HranConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.rbf_gamma_init is not None and not _positive(self.rbf_gamma_init):
            raise ValueError(f"HranConfig.rbf_gamma_init must be a positive number or null, got {self.rbf_gamma_init!r}")
        if not _number(self.infomax_alpha) or self.infomax_alpha < 0:
            raise ValueError(f"HranConfig.infomax_alpha must be a number >= 0, got {self.infomax_alpha!r}")
        if not _number(self.inhibition_init) or not 0.0 < self.inhibition_init < 1.0:
            raise ValueError(f"HranConfig.inhibition_init must be in (0, 1), got {self.inhibition_init!r}")
        if not _number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HranConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"HranConfig.{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"HranConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        if any(e is not None and not 0 <= e < self.vocab_size for e in eos):
            raise ValueError(f"HranConfig.eos_token_id={self.eos_token_id} is outside the vocabulary "
                             f"(vocab_size={self.vocab_size})")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value) -> bool:
    return _number(value) and value > 0


__all__ = ["HranConfig"]
