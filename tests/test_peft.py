"""LoRA adapters through the platform: `train.py --lora_r` trains an adapter on an exported model, the export
is an adapter folder with its own card naming the base, it reloads with PEFT's two loaders, a run from scratch
keeps its base and resumes, and mistakes are one clear line. The contract's PEFT check (checks_peft.py) runs for
every architecture through its test module (test_bdh.py, test_dummy.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from contract import random_ids
from test_bdh import SPEC
from test_cli_errors import check_result, run_cli

from hatchlings.architectures import record_for
from hatchlings.training import UsageError, parse_run_config, run_training
from hatchlings.training.adapters import LoraSettings, attach_lora, lora_config, target_kwargs

PRESET = {  # no model section: the architecture and shape come from --init_from, or are BDH's defaults below
    "data": {"block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 2},
    "training": {"max_steps": 3, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                 "learning_rate": 1e-2, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0},
    "generation": {"prompt": "The ", "max_new_tokens": 4},
}
FROM_SCRATCH = {"architecture": "bdh", "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                                 "mlp_internal_dim_multiplier": 4, "dropout": 0.0}}


def _preset(tmp: Path, **sections) -> str:
    """A preset training on a small text (a dozen validation blocks keep the final evaluation quick)."""
    text = tmp / "text.txt"
    text.write_text("The dragon hatchling reads its first book, one byte at a time.\n" * 60)
    path = tmp / "preset.yaml"
    path.write_text(yaml.safe_dump({**PRESET, **sections, "data": {**PRESET["data"], "train_file": [str(text)]}}))
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny BDH saved as a model folder (weights, config, modeling code, tokenizer): the model to adapt."""
    folder = tmp_path_factory.mktemp("base")
    SPEC.build_model().save_pretrained(folder)
    SPEC.make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    """`train.py --lora_r 4 --init_from BASE`: three steps, exported as an adapter folder."""
    tmp = tmp_path_factory.mktemp("adapter")
    out = tmp / "out"
    run_training(["--config", _preset(tmp), "--init_from", str(base), "--lora_r", "4", "--output_dir", str(out)])
    return out


def test_adapter_folder_and_card(adapter, base):
    files = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= files, files
    assert "model.safetensors" not in files  # only the adapter is exported, never a copy of the base
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base.resolve())
    assert config["r"] == 4 and config["task_type"] == "CAUSAL_LM"
    assert config["target_parameters"] == record_for("bdh").lora["target_parameters"]
    assert all("lora_" in name for name in load_file(str(adapter / "adapter_model.safetensors")))
    card = ModelCard.load(adapter / "README.md")
    assert card.data.base_model == str(base.resolve()) and card.data.library_name == "peft"
    assert {"lora", "peft", "bdh"} <= set(card.data.tags)
    assert "AutoPeftModelForCausalLM.from_pretrained" in card.text and "trust_remote_code=True" in card.text
    assert "| rank r | 4 |" in card.text and "block.encoder_v" in card.text


def test_adapter_reloads_with_both_loaders(adapter, base):
    """PeftModel on an explicitly loaded base and AutoPeftModelForCausalLM (base from the adapter's config) agree,
    and the adapter trained: its outputs differ from the base's. The base folder is untouched."""
    ids = random_ids(259, 2, 10)
    plain = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True).eval()
    with torch.no_grad():
        base_logits = plain(ids).logits
        explicit = PeftModel.from_pretrained(plain, adapter).eval()(ids).logits
        auto = AutoPeftModelForCausalLM.from_pretrained(adapter, trust_remote_code=True).eval()(ids).logits
    torch.testing.assert_close(auto, explicit)
    assert not torch.allclose(explicit, base_logits, atol=1e-4)
    fresh = SPEC.build_model().state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in load_file(str(base / "model.safetensors")).items())


def test_from_scratch_keeps_its_base_and_resumes(tmp_path, capsys):
    """From scratch the base is written to output_dir/base; checkpoints hold the adapter only; --resume reloads
    that base and continues; resuming it without the LoRA flags is refused."""
    out = tmp_path / "out"
    preset = _preset(tmp_path, **FROM_SCRATCH)
    args = ["--config", preset, "--lora_r", "2", "--output_dir", str(out), "--save_strategy", "steps",
            "--save_steps", "2"]
    run_training([*args, "--max_steps", "2"])
    assert (out / "base" / "model.safetensors").is_file() and (out / "checkpoint-2" / "adapter_config.json").is_file()
    assert not (out / "checkpoint-2" / "model.safetensors").exists()
    base_weights = load_file(str(out / "base" / "model.safetensors"))
    run_training([*args, "--max_steps", "4", "--resume"])
    assert "resuming from" in capsys.readouterr().out
    assert (out / "checkpoint-4").is_dir()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((out / "base").resolve())
    after = load_file(str(out / "base" / "model.safetensors"))
    assert all(torch.equal(after[k], v) for k, v in base_weights.items())  # resuming did not re-initialise the base
    with pytest.raises(UsageError, match="holds a LoRA adapter"):
        run_training(["--config", preset, "--output_dir", str(out), "--max_steps", "5", "--resume"])


def test_bad_target_is_one_line(tmp_path, capsys):
    status, out, err = run_cli(["train", "--config", _preset(tmp_path, **FROM_SCRATCH), "--lora_r", "4",
                                "--lora_targets", "block.encoder,nope", "--output_dir", str(tmp_path / "o")], capsys)
    check_result(status, out, err, "--lora_targets: 'nope' names no module or parameter", 2)
    assert "block.encoder_v" in err  # the message lists what there is to target
    assert not (tmp_path / "o").exists()  # nothing was written

def test_targets_are_sorted_into_modules_and_parameters():
    """A name is looked up in the model: raw tensors go to target_parameters, modules (lm_head) to target_modules."""
    model = SPEC.build_model()
    assert target_kwargs(model, None) == dict(record_for("bdh").lora)
    assert target_kwargs(model, ["block.decoder", "lm_head"]) == {"target_parameters": ["block.decoder"],
                                                                   "target_modules": ["lm_head"]}
    assert target_kwargs(model, ["all-linear", "block.encoder"]) == {"target_modules": "all-linear",
                                                                    "target_parameters": ["block.encoder"]}
    with pytest.raises(UsageError, match="all-linear already names every linear module"):
        target_kwargs(model, ["all-linear", "lm_head"])


@pytest.mark.parametrize("flags, message", [
    (["--lora_alpha", "16"], "alpha given without a rank"),
    (["--lora_r", "-1"], "need r >= 0"),
    (["--lora_r", "four"], "r must be an integer"),
    (["--lora_r", "4", "--lora_dropout", "1.5"], "0 <= dropout < 1"),
])
def test_bad_lora_settings(tmp_path, flags, message):
    with pytest.raises(UsageError, match=message):
        parse_run_config(["--config", _preset(tmp_path, **FROM_SCRATCH), "--output_dir", str(tmp_path), *flags])


def test_preset_section_and_flags(tmp_path):
    """The `lora` section is read like every other one: checked keys, and flags win over it."""
    run = parse_run_config(["--config", _preset(tmp_path, **FROM_SCRATCH, lora={"r": 8, "alpha": 16}),
                            "--lora_targets", "block.encoder, block.decoder", "--output_dir", str(tmp_path)])
    assert run.lora == LoraSettings(r=8, alpha=16.0, dropout=0.0, targets=["block.encoder", "block.decoder"])
    with pytest.raises(UsageError, match="unknown key.*'lora': rank"):
        parse_run_config(["--config", _preset(tmp_path, **FROM_SCRATCH, lora={"rank": 8}), "--output_dir", "x"])


def test_peft_refusals_are_usage_errors(monkeypatch):
    """What PEFT refuses (dropout on raw-parameter targets) and a missing peft are one-line errors."""
    model = SPEC.build_model()
    with pytest.raises(UsageError, match="lora_dropout"):
        attach_lora(model, lora_config(model, LoraSettings(r=2, dropout=0.1)))
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(UsageError, match=r"pip install hatchlings\[peft\]"):
        lora_config(model, LoraSettings(r=2))
