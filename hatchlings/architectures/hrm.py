"""HRM's record: what the platform needs to know about the Hierarchical Reasoning Model."""

from ..errors import UsageError
from ..modeling.configuration_hrm import HrmConfig
from ..modeling.modeling_hrm import HrmForCausalLM, HrmModel
from . import ArchitectureRecord


def set_mode(session, argument: str) -> str:
    """`/mode NAME` in `hatchlings chat`: the depth (N cycles x T steps) of the following replies, passed to
    `generate` as `hrm_mode`. Without an argument (and in `/status`) it lists the modes."""
    config = session.model.config
    modes = ", ".join(f"{name} {n}x{t}" for name, (n, t) in config.depth_modes.items())
    if not argument:
        current = session.generate_kwargs.get("hrm_mode") or config.hrm_mode or \
            f"default {config.H_cycles}x{config.L_cycles}"
        return f"depth mode: {current}; modes (N cycles x T steps): {modes}"
    if argument not in config.depth_modes:
        raise UsageError(f"unknown mode {argument!r}; valid modes: {modes}")
    session.generate_kwargs["hrm_mode"] = argument
    n, t = config.depth_modes[argument]
    return f"depth mode: {argument} ({n} cycles x {t} steps)"


def grow(model, characters: int) -> tuple[int, str | None]:
    """Layer growth for a run continued on new text: one identity-initialised block per `growth_chars`
    characters of it, to L and H alternately (HrmModel.grow)."""
    every = model.config.growth_chars
    count = characters // every if every else 0
    if not count:
        return 0, None
    grown = [model.model.grow() for _ in range(count)]
    return count, (f"layer growth: {characters:,} new characters at one block per {every:,} -> added "
                   f"{', '.join(grown)}; now {model.config.L_layers} L and {model.config.H_layers} H blocks, "
                   f"{model.num_parameters():,} parameters")


def depth_variants(config) -> dict[str, dict]:
    """Every depth mode, for the card's validation bits/byte per mode."""
    return {f"hrm_mode {name}": {"hrm_mode": name} for name in config.depth_modes}


def _arena_shape(width: int) -> dict:
    """885,760 parameters at width 128 with the byte vocabulary (259): 3 L + 2 H blocks of 4 heads, the seed's
    SwiGLU expansion 2.5 (256 wide), N = T = 2."""
    return dict(hidden_size=width, num_attention_heads=4, L_layers=3, H_layers=2, H_cycles=2, L_cycles=2,
                expansion=2.5)


RECORD = ArchitectureRecord(
    arch="hrm",
    config_class=HrmConfig,
    model_class=HrmModel,
    causal_lm_class=HrmForCausalLM,
    summary=("HRM (Hierarchical Reasoning Model; Wang et al., 2025) as a causal language model: a fast L module "
             "of transformer blocks updates T times per cycle from its state, the slow H state and the input, "
             "and a slow H module updates once per cycle from L, for N cycles; the same weights run at any depth "
             "(N x T), chosen at generation time, with a key/value cache per module call."),
    arena_shape=_arena_shape,
    tokenizer="char",
    reference="hatchlings.reference.hrm:reference_logits",
    lora={"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    probes={"depth": "hatchlings.probes.hrm_depth:run", "quality": "hatchlings.probes.hrm_quality:run"},
    chat_commands={"mode": "hatchlings.architectures.hrm:set_mode"},
    generation_controls={"depth mode": ("config:depth_modes", None, "hrm_mode")},
    growth="hatchlings.architectures.hrm:grow",
    eval_variants="hatchlings.architectures.hrm:depth_variants",
)
