"""Contract checks: the config (DESIGN.md §2.1) and the Auto-class registration."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

import hatchlings
from contract import ArchSpec
from hatchlings.architectures import record_for


def check_config_round_trip(spec: ArchSpec, tmp_path) -> None:
    """Every field survives save_pretrained/from_pretrained and to_dict/from_dict (5.x dataclass configs
    can silently drop fields that are not declared with annotations)."""
    cfg = spec.tiny_config()
    assert cfg.model_type == spec.model_type
    cfg.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(cfg)
    loaded._name_or_path = cfg._name_or_path  # where it was loaded from: the one field that must differ
    assert loaded.to_dict() == cfg.to_dict()
    assert type(cfg).from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    on_disk = json.loads((tmp_path / "config.json").read_text())
    for key, value in cfg.to_diff_dict().items():  # every non-default value is really written
        assert on_disk.get(key) == value, key


def check_invalid_config(spec: ArchSpec, overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        spec.tiny_config(**overrides)


def check_invalid_config_json(spec: ArchSpec, tmp_path) -> None:
    """A hand-edited config.json with a bad value fails at load time, not deep inside the forward."""
    overrides, name = spec.invalid_configs[0]
    spec.tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=name):
        AutoConfig.from_pretrained(tmp_path)


def check_registry(spec: ArchSpec) -> None:
    """`import hatchlings` registers the arch with the Auto classes; unknown ids list the known ones."""
    assert hatchlings.config_class_for(spec.arch) is type(spec.tiny_config())
    with pytest.raises(ValueError, match=spec.arch):
        hatchlings.config_class_for("nope")
    kwargs = {k: v for k, v in spec.tiny_config().to_diff_dict().items() if k != "model_type"}
    cfg = AutoConfig.for_model(spec.model_type, **kwargs)
    assert type(cfg) is type(spec.tiny_config()) and cfg.to_dict() == spec.tiny_config().to_dict()
    assert isinstance(AutoModelForCausalLM.from_config(cfg), record_for(spec.arch).causal_lm_class)


def parametrizations(spec: ArchSpec) -> dict[str, pytest.MarkDecorator]:
    """check name -> the pytest parameters make_contract_tests gives it."""
    return {"invalid_config": pytest.mark.parametrize("overrides,name", spec.invalid_configs,
                                                      ids=[n for _, n in spec.invalid_configs])}
