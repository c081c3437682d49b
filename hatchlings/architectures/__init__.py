"""One record per architecture: every fact the platform needs about a model family, in one place.

The modeling folder (`hatchlings/modeling/`) holds only what a saved model needs at load time, and is copied
into every export, so it must not import platform code. Everything else the platform knows about an
architecture — the model card's summary, the arena's shape for a width, the tokenizer kind, the plain-equation
reference, the probes, the LoRA targets, the chat extras — lives in its `ArchitectureRecord`, in a module of
this package named after the architecture (`hatchlings/architectures/bdh.py` defines `RECORD`). Modules here
are found by listing the package, so adding an architecture edits no list anywhere: write its modeling files,
its record module, its tests and its presets.

Heavy code (references, probes, chat commands) is named as "module:function" and imported on first use, so
`import hatchlings` stays as cheap as the Auto-class registration it performs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Mapping

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

TOKENIZER_KINDS = ("byte", "char", "word", "bpe")


@dataclass(frozen=True)
class ArchitectureRecord:
    """What the platform knows about one architecture.

    arch: the id used on the command line and in presets (`bdh`); model_type is `hatchlings_<arch>`.
    config_class, model_class, causal_lm_class: the Transformers classes (registered with the Auto classes).
    summary: one paragraph for the model card: what the architecture is and why it differs.
    arena_shape: width -> config fields for `hatchlings bench arena` (the rest of the shape is the arena's).
    tokenizer: the kind presets default to (one of TOKENIZER_KINDS).
    reference: "module:function" of `reference(model, input_ids) -> logits`, the plain equations (per time
        step where the math is recurrent; no fused kernels or hand-written autograd) that tests compare with.
    lora: `peft.LoraConfig` keyword arguments naming the default adapter targets.
    probes: probe name -> "module:function" of `run(args) -> (tables, figure)` (`hatchlings probe <arch> <name>`).
    chat_commands: generation extras: chat command -> "module:function" of `command(session, argument) -> str`.
    seq2seq_class: an encoder-decoder variant on the same config (AutoModelForSeq2SeqLM), or None.
    generation_controls: extra inputs the playground (`hatchlings serve`, an export's app.py) shows:
        label -> (kind, default, generate kwarg). kind is "int", "float", "bool", a tuple of choices, or
        "config:<attribute>" (choices: the keys of that config attribute, read per model at export time);
        default None leaves the model's own default. Exports write them to playground.json (hatchlings.serve).
    growth: "module:function" of `grow(model, characters) -> (blocks_added, message)`, or None: what a run
        continued from an export (`--init_from`) on new data of `characters` characters adds to the model
        before training (HRM adds identity-initialised blocks); the run's optimizer is built afterwards.
    eval_variants: "module:function" of `variants(config) -> {label: config overrides}`, or None: settings a
        trained model is also evaluated under at the end of a run, each reported in the card as
        "bits_per_byte (<label>)" (HRM: every depth mode).
    arena_optimization: `optimization` fields (OptimConfig) the arena trains this architecture with, where its
        recipe needs more than the baselines' AdamW (HoloSpectralNet: Muon on the 2-D hidden matrices, as its
        seed prescribes); the arena's schedule, data and budget stay the same, and the report names it.
    """

    arch: str
    config_class: type
    model_class: type
    causal_lm_class: type
    summary: str
    arena_shape: Callable[[int], dict]
    tokenizer: str
    reference: str
    lora: Mapping[str, object]
    probes: Mapping[str, str] = field(default_factory=dict)
    chat_commands: Mapping[str, str] = field(default_factory=dict)
    seq2seq_class: type | None = None
    generation_controls: Mapping[str, tuple] = field(default_factory=dict)
    growth: str | None = None
    eval_variants: str | None = None
    arena_optimization: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"{self.arch}: tokenizer must be one of {TOKENIZER_KINDS}, got {self.tokenizer!r}")
        if self.config_class.model_type != f"hatchlings_{self.arch}":
            raise ValueError(f"{self.arch}: config model_type must be 'hatchlings_{self.arch}', "
                             f"got {self.config_class.model_type!r}")


RECORDS: dict[str, ArchitectureRecord] = {}


def register_architecture(record: ArchitectureRecord) -> ArchitectureRecord:
    """Make an architecture known to the platform and to Transformers' Auto classes.

    `register_for_auto_class` makes `save_pretrained` write `auto_map` and copy the modeling files, so exports
    load with `trust_remote_code=True` where hatchlings is not installed.
    """
    config_cls, model_cls, lm_cls = record.config_class, record.model_class, record.causal_lm_class
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, model_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, lm_cls, exist_ok=True)
    config_cls.register_for_auto_class()
    model_cls.register_for_auto_class("AutoModel")
    lm_cls.register_for_auto_class("AutoModelForCausalLM")
    if record.seq2seq_class is not None:
        AutoModelForSeq2SeqLM.register(config_cls, record.seq2seq_class, exist_ok=True)
        record.seq2seq_class.register_for_auto_class("AutoModelForSeq2SeqLM")
    RECORDS[record.arch] = record
    return record


def record_for(arch: str) -> ArchitectureRecord:
    """The record of an architecture id, or a ValueError that lists the known ids."""
    if arch not in RECORDS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(RECORDS))}")
    return RECORDS[arch]


def config_class_for(arch: str) -> type:
    """The config class of an architecture id, or a ValueError that lists the known ids."""
    return record_for(arch).config_class


def record_of_model(model) -> ArchitectureRecord:
    """The record of a model (or config) by its model_type `hatchlings_<arch>`."""
    model_type = getattr(getattr(model, "config", model), "model_type", "")
    return record_for(model_type.removeprefix("hatchlings_"))


def resolve(target: str) -> Callable:
    """Import "package.module:function" on first use (keeps references, probes and plots out of start-up)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _discover() -> None:
    """Import every module of this package; each registers its `RECORD`."""
    for info in pkgutil.iter_modules(__path__):
        register_architecture(importlib.import_module(f"{__name__}.{info.name}").RECORD)


_discover()
