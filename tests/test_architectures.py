"""Every registered architecture's record fills every field with something the platform can use.

Runs over `RECORDS` as registered by `import hatchlings` plus the test-only dummy architecture's record, so a
new architecture is checked the moment its record module exists. The dummy is not registered here: that would
add it to every registry-driven list (the arena's models) for the rest of the session.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from dummy_arch.record import RECORD as DUMMY
from hatchlings.architectures import RECORDS, TOKENIZER_KINDS, ArchitectureRecord, record_for, resolve

ALL = {**RECORDS, DUMMY.arch: DUMMY}
# an architecture may offer none; each one it names must resolve
OPTIONAL = {"probes", "chat_commands", "generation_controls", "seq2seq_class", "growth", "eval_variants",
            "arena_optimization"}


@pytest.mark.parametrize("arch", sorted(ALL))
def test_record_fills_every_field(arch):
    record = ALL[arch]
    for f in dataclasses.fields(ArchitectureRecord):
        if f.name not in OPTIONAL:
            assert getattr(record, f.name), f"{arch}: record field {f.name!r} is empty"
    assert record.arch == arch and record.tokenizer in TOKENIZER_KINDS
    assert record.config_class.model_type == f"hatchlings_{arch}"
    assert issubclass(record.model_class, torch.nn.Module) and issubclass(record.causal_lm_class, torch.nn.Module)
    assert len(record.summary.split()) >= 10, f"{arch}: the card summary should say what the architecture is"
    if record.seq2seq_class is not None:  # an encoder-decoder variant loads through its own Auto class
        assert AutoModelForSeq2SeqLM._model_mapping[record.config_class] is record.seq2seq_class
    reference = resolve(record.reference)
    assert list(inspect.signature(reference).parameters)[:2] == ["model", "input_ids"], record.reference
    assert set(record.lora) & {"target_modules", "target_parameters"}, f"{arch}: lora names no adapter targets"
    for kind, targets in (("probe", record.probes), ("chat command", record.chat_commands)):
        for name, target in targets.items():
            assert callable(resolve(target)), f"{arch}: {kind} {name} -> {target} is not callable"
    for hook in (record.growth, record.eval_variants):
        assert hook is None or callable(resolve(hook)), f"{arch}: {hook} is not callable"


@pytest.mark.parametrize("arch", sorted(ALL))
def test_arena_shape_builds_the_registered_model(arch):
    """The arena's shape for a width is a valid config of the architecture, of that width, that builds."""
    record = ALL[arch]
    config = record.config_class(**record.arena_shape(64))
    assert config.hidden_size == 64
    assert record.causal_lm_class(config).num_parameters() > 0


@pytest.mark.parametrize("arch", sorted(ALL))
def test_lora_targets_exist_in_the_model(arch):
    """Every LoRA target the record names is a module or parameter of a freshly built model."""
    record = ALL[arch]
    model = record.causal_lm_class(record.config_class(**record.arena_shape(32)))
    names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()]
    for target in [*record.lora.get("target_modules", []), *record.lora.get("target_parameters", [])]:
        assert any(n == target or n.endswith("." + target) for n in names), f"{arch}: no {target!r} in the model"


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*bdh"):
        record_for("nope")


def test_record_validates_its_fields():
    """A wrong tokenizer kind or a config whose model_type is not hatchlings_<arch> is refused at once."""
    base = dataclasses.asdict(DUMMY) | {"config_class": DUMMY.config_class, "model_class": DUMMY.model_class,
                                          "causal_lm_class": DUMMY.causal_lm_class}
    with pytest.raises(ValueError, match="tokenizer"):
        ArchitectureRecord(**{**base, "tokenizer": "sentencepiece"})
    with pytest.raises(ValueError, match="model_type"):
        ArchitectureRecord(**{**base, "arch": "other"})
