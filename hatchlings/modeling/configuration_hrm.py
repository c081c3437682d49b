"""Configuration of HRM, the Hierarchical Reasoning Model (Wang et al., 2025), as a causal character-level LM."""

from __future__ import annotations

from transformers import PreTrainedConfig

DEFAULT_DEPTH_MODES = {"fast": [1, 1], "normal": [2, 2], "deep": [3, 2], "extreme": [6, 4]}


class HrmConfig(PreTrainedConfig):
    r"""Hyper-parameters of an HRM language model.

    Two modules of post-norm transformer blocks run as a nested recurrence over the whole sequence: the fast
    L module updates `L_cycles` (T) times per cycle from z_L + z_H + x, the slow H module once per cycle from
    z_H + z_L, for `H_cycles` (N) cycles; the head reads z_H. The blocks' weights are reused at every call,
    so the depth (N, T) can change at inference without changing the parameters.

    Args:
        vocab_size: tokens in the vocabulary (the char tokenizer's ~100 by default; any size works).
        hidden_size: D, width of z_L, z_H and the embedding.
        num_attention_heads: heads of every attention; D / heads must be even (RoPE turns channel pairs).
        L_layers, H_layers: transformer blocks in the L and H modules.
        H_cycles: N, cycles of the default depth (one H update each).
        L_cycles: T, L updates per cycle of the default depth.
        expansion: SwiGLU width factor; the hidden width is round(expansion * D * 2/3) rounded up to a multiple
            of 64 (the official HRM's rule, with a smaller multiple so that small widths stay small).
        rope_theta, rms_norm_eps, initializer_range: RoPE base, RMSNorm epsilon, std of the truncated-normal
            init of the linear layers.
        depth_modes: name -> [N, T] depth presets, chosen with `generate(..., hrm_mode=name)` or
            `generation_config.hrm_mode`.
        hrm_mode: the mode used when a call names none (None: [H_cycles, L_cycles]); `hatchlings chat`'s
            `/mode` sets it.
        train_depths: [[N, T], ...] depths sampled uniformly per training step, so that every mode is trained
            (default: [[H_cycles, L_cycles]], no sampling).
        one_step_gradient: run every L and H update but the last of each under no_grad (HRM's one-step
            gradient approximation: memory independent of depth).
        act: adaptive computation time: a Q-head on z_H scores halt/continue after every cycle; its Q-learning
            loss goes out as `aux_loss`, and each token's logits read z_H from the cycle where it halts (decided
            per token, causally). An ACT model runs halt_max_steps cycles at every call (N of the depth mode is
            not used, T is): every cycle's keys are cached, since later tokens may halt later.
        halt_max_steps: cycles an ACT model runs (training and inference).
        halt_exploration_prob: share of training sequences whose minimum halting cycle is drawn at random.
        stablemax: train with stablemax cross-entropy (s(x) = x + 1 for x >= 0, 1 / (1 - x) below) in place of
            softmax's exp; the logits are unchanged (same argmax).
        fused_attention: scaled_dot_product_attention (fast path); False writes the masked softmax in plain ops.
        growth_chars: layer growth in continual learning: a run continued from an export (`--init_from`) on new
            text adds one block per `growth_chars` characters of it, to L and H alternately (`HrmModel.grow`);
            0 never grows. The seed grows every 3M characters.
    """

    model_type = "hatchlings_hrm"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 100
    hidden_size: int = 256
    num_attention_heads: int = 8
    L_layers: int = 3
    H_layers: int = 3
    H_cycles: int = 2
    L_cycles: int = 2
    expansion: float = 2.5
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    depth_modes: dict | None = None
    hrm_mode: str | None = None
    train_depths: list | None = None
    one_step_gradient: bool = False
    act: bool = False
    halt_max_steps: int = 8
    halt_exploration_prob: float = 0.1
    stablemax: bool = False
    fused_attention: bool = True
    growth_chars: int = 3_000_000
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.depth_modes is None:
            self.depth_modes = {name: list(depth) for name, depth in DEFAULT_DEPTH_MODES.items()}
        if self.train_depths is None:
            self.train_depths = [[self.H_cycles, self.L_cycles]]
        super().__post_init__(**kwargs)
        self._validate_hrm()

    @property
    def intermediate_size(self) -> int:
        """SwiGLU hidden width: round(expansion * D * 2/3), rounded up to a multiple of 64."""
        return -(-round(self.expansion * self.hidden_size * 2 / 3) // 64) * 64

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def depth(self, mode: str | None = None) -> tuple[int, int]:
        """(N, T) of `mode`, of `hrm_mode` when None, or (H_cycles, L_cycles) when both are None."""
        mode = self.hrm_mode if mode is None else mode
        if mode is None:
            return self.H_cycles, self.L_cycles
        if mode not in self.depth_modes:
            raise ValueError(f"unknown hrm_mode {mode!r}; valid modes: {', '.join(self.depth_modes)}")
        n, t = self.depth_modes[mode]
        return int(n), int(t)

    def _validate_hrm(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "L_layers", "H_layers", "H_cycles",
                     "L_cycles", "halt_max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HrmConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.growth_chars, bool) or not isinstance(self.growth_chars, int) or self.growth_chars < 0:
            raise ValueError(f"HrmConfig.growth_chars must be an integer >= 0 (0: no growth), got {self.growth_chars!r}")
        if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
            raise ValueError(f"HrmConfig.num_attention_heads={self.num_attention_heads} must divide hidden_size="
                             f"{self.hidden_size} into heads of an even size")
        for name in ("expansion", "rope_theta", "rms_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"HrmConfig.{name} must be a positive number, got {value!r}")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"HrmConfig.halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob!r}")
        for name in ("one_step_gradient", "act", "stablemax", "fused_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HrmConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.depth_modes, dict) or not self.depth_modes:
            raise ValueError(f"HrmConfig.depth_modes must be a non-empty dict name -> [N, T], got {self.depth_modes!r}")
        self.depth_modes = {name: self._depth_pair("depth_modes", d) for name, d in self.depth_modes.items()}
        if not isinstance(self.train_depths, (list, tuple)) or not self.train_depths:
            raise ValueError(f"HrmConfig.train_depths must be a non-empty list of [N, T], got {self.train_depths!r}")
        self.train_depths = [self._depth_pair("train_depths", d) for d in self.train_depths]
        if self.hrm_mode is not None and self.hrm_mode not in self.depth_modes:
            raise ValueError(f"HrmConfig.hrm_mode={self.hrm_mode!r} is not a depth mode; valid modes: "
                             f"{', '.join(self.depth_modes)}")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"HrmConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")
        eos = self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id]
        if any(e is not None and not 0 <= e < self.vocab_size for e in eos):
            raise ValueError(f"HrmConfig.eos_token_id={self.eos_token_id} is outside the vocabulary "
                             f"(vocab_size={self.vocab_size})")

    @staticmethod
    def _depth_pair(field: str, depth) -> list[int]:
        """[N, T] as a list of two positive ints (JSON keeps lists, so tuples are normalised for round trips)."""
        if (not isinstance(depth, (list, tuple)) or len(depth) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in depth)):
            raise ValueError(f"HrmConfig.{field} entries must be [N, T] with positive integers, got {depth!r}")
        return [int(depth[0]), int(depth[1])]


__all__ = ["HrmConfig"]
