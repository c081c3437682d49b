"""Configuration of the Hybrid Hopfield-SSM language model (seed 002: SSM + modern Hopfield + attention)."""

from __future__ import annotations

from transformers import PreTrainedConfig

PATHS = ("ssm", "hopfield", "attention")
SCAN_IMPLS = ("parallel", "sequential")


class HybridConfig(PreTrainedConfig):
    r"""Hyper-parameters of a Hybrid Hopfield-SSM language model.

    Each of the `num_hidden_layers` HybridBlocks runs up to three paths on the same normalized input (a
    selective-scan SSM, a mixture-of-recursions Hopfield retrieval and causal softmax attention), mixes
    them with per-token softmax weights from a small gating FFN, then applies a feed-forward sublayer.
    The block stack runs `n_segments` times over the same embeddings; a controller turns each segment's
    hidden states (per position, detached) into a bias on the next segment's mixer logits.

    Args:
        vocab_size: tokens in the vocabulary (259 for the hatchlings byte tokenizer).
        hidden_size: D, width of the residual stream.
        num_hidden_layers: L, HybridBlocks (each with its own weights; all segments share them).
        num_attention_heads: heads of the attention path (must divide hidden_size).
        intermediate_size: width of the GELU feed-forward sublayer.
        max_position_embeddings: rows of the learned positional embedding: the longest sequence (prompt plus
            generated tokens) the model takes.
        paths: the enabled paths, a non-empty subset of ["ssm", "hopfield", "attention"] (ablations switch
            paths off here; the mixer's softmax then runs over the enabled ones only).
        ssm_state_size: N, state entries per channel of the selective scan.
        ssm_conv_kernel: taps of the depthwise causal convolution before the scan.
        ssm_dt_rank: rank of the low-rank projection that produces the step size dt.
        ssm_dt_min, ssm_dt_max: range the initial dt (softplus of the dt bias) is drawn from, log-uniformly.
        num_memories: rows of each layer's learned Hopfield memory.
        hopfield_beta: initial inverse temperature of the retrieval softmax (learned, kept positive through a
            log parameter); None means 1/sqrt(hidden_size).
        hopfield_steps: K per layer, the number of retrieval refinements (seed: [3, 2, 2, ..., 1]; layer 0 the
            deepest). None gives that schedule. Its length must equal num_hidden_layers.
        mixer_hidden_size: hidden width of the GatedMixer's FFN.
        n_segments: passes of the block stack (seed: 2); 1 disables the controller.
        controller_hidden_size: hidden width of the HController.
        rectified_flow: add the rectified-flow regularizer (a small velocity network; its loss, defined in
            modeling_hybrid.RectifiedFlow, is returned unweighted as `aux_loss` in training mode).
        aux_loss_coef: the trainer's weight on `aux_loss` (hatchlings' HatchlingsTrainer reads it).
        scan_impl: "parallel" (the training form: a chunked log-depth parallel scan, no loop over tokens) or
            "sequential" (the plain per-token loop of the recurrence: debugging, new devices).
        scan_chunk_size: tokens per chunk of the parallel scan (a speed knob; results do not depend on it).
        fused_attention: scaled_dot_product_attention (fast path); False writes the masked softmax out in plain
            torch ops. With scan_impl="sequential" this is the plain-autograd path.
        layer_norm_eps: epsilon of the LayerNorms.
        initializer_range: std of the normal init of the weight matrices.
        tie_word_embeddings: share the token embedding with the LM head.
    """

    model_type = "hatchlings_hybrid"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 259
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_position_embeddings: int = 2048
    paths: list[str] | None = None
    ssm_state_size: int = 16
    ssm_conv_kernel: int = 4
    ssm_dt_rank: int = 16
    ssm_dt_min: float = 0.001
    ssm_dt_max: float = 0.1
    num_memories: int = 64
    hopfield_beta: float | None = None
    hopfield_steps: list[int] | None = None
    mixer_hidden_size: int = 64
    n_segments: int = 2
    controller_hidden_size: int = 64
    rectified_flow: bool = False
    aux_loss_coef: float = 0.1
    scan_impl: str = "parallel"
    scan_chunk_size: int = 16
    fused_attention: bool = True
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = 256
    bos_token_id: int | None = 257
    eos_token_id: int | list[int] | None = 258
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.paths is None:
            self.paths = list(PATHS)
        if self.hopfield_steps is None and isinstance(self.num_hidden_layers, int) and self.num_hidden_layers > 0:
            self.hopfield_steps = seed_hopfield_schedule(self.num_hidden_layers)
        super().__post_init__(**kwargs)
        self._validate_hybrid()

    @property
    def enabled_paths(self) -> list[str]:
        """The enabled paths in the canonical order ssm, hopfield, attention (the mixer's logit order)."""
        return [p for p in PATHS if p in self.paths]

    @property
    def beta_init(self) -> float:
        return self.hopfield_beta if self.hopfield_beta is not None else self.hidden_size ** -0.5

    def _validate_hybrid(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "ssm_state_size", "ssm_conv_kernel", "ssm_dt_rank", "num_memories",
                     "mixer_hidden_size", "n_segments", "controller_hidden_size", "scan_chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HybridConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"HybridConfig.num_attention_heads={self.num_attention_heads} must divide "
                             f"hidden_size={self.hidden_size}")
        if (not isinstance(self.paths, (list, tuple)) or not self.paths or len(set(self.paths)) != len(self.paths)
                or any(p not in PATHS for p in self.paths)):
            raise ValueError(f"HybridConfig.paths must be a non-empty list of distinct names from {list(PATHS)}, "
                             f"got {self.paths!r}")
        self.paths = list(self.paths)
        steps = self.hopfield_steps
        if (not isinstance(steps, (list, tuple)) or len(steps) != self.num_hidden_layers
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in steps)):
            raise ValueError(f"HybridConfig.hopfield_steps must list one positive integer per layer "
                             f"({self.num_hidden_layers}), got {steps!r}")
        self.hopfield_steps = list(steps)
        for name in ("ssm_dt_min", "ssm_dt_max", "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"HybridConfig.{name} must be a positive number, got {value!r}")
        if self.ssm_dt_min > self.ssm_dt_max:
            raise ValueError(f"HybridConfig.ssm_dt_min={self.ssm_dt_min} must not exceed ssm_dt_max={self.ssm_dt_max}")
        beta = self.hopfield_beta
        if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0):
            raise ValueError(f"HybridConfig.hopfield_beta must be a positive number or None, got {beta!r}")
        if self.scan_impl not in SCAN_IMPLS:
            raise ValueError(f"HybridConfig.scan_impl must be one of {list(SCAN_IMPLS)}, got {self.scan_impl!r}")
        coef = self.aux_loss_coef
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
            raise ValueError(f"HybridConfig.aux_loss_coef must be a number >= 0, got {coef!r}")
        for name in ("fused_attention", "rectified_flow"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HybridConfig.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"HybridConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        if any(e is not None and not 0 <= e < self.vocab_size for e in eos):
            raise ValueError(f"HybridConfig.eos_token_id={self.eos_token_id} is outside the vocabulary "
                             f"(vocab_size={self.vocab_size})")


def seed_hopfield_schedule(layers: int) -> list[int]:
    """The seed's refinement schedule [3, 2, 2, ..., 1]: layer 0 deepest, the last layer one step."""
    if layers == 1:
        return [3]
    return [3] + [2] * (layers - 2) + [1]


__all__ = ["HybridConfig"]
