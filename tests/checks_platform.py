"""Contract check: the platform runs the architecture end to end through its record alone.

`run_training` (a tiny preset: the architecture id and its tiny config's own fields) -> the exported Hub
folder (its card says what the record's summary says) -> `load_model_folder` -> `generate`.
"""

from __future__ import annotations

import math

import torch
import yaml

from contract import ArchSpec
from hatchlings.architectures import record_for

TOKEN_FIELDS = {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"}  # the run's tokenizer sets these


def tiny_model_section(spec: ArchSpec) -> dict:
    """The preset's `model:` section for the spec's tiny config: the fields its config class declares and the
    tiny config changes, less those the tokenizer decides."""
    config = spec.tiny_config()
    declared = set(type(config).__annotations__)
    return {k: v for k, v in config.to_diff_dict().items() if k in declared and k not in TOKEN_FIELDS}


def check_platform_end_to_end(spec: ArchSpec, tmp_path, real_text: str) -> None:
    """run_training -> export -> load_model_folder -> generate, with the architecture's own tokenizer kind."""
    from hatchlings.training import run_training
    from hatchlings.training.export import load_model_folder

    record = record_for(spec.arch)
    text = tmp_path / "text.txt"
    text.write_text(real_text[:8000])
    preset = {
        "architecture": spec.arch,
        "model": tiny_model_section(spec),
        "data": {"train_file": str(text), "block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 4},
        "training": {"max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                     "learning_rate": 3e-3, "logging_steps": 2, "save_strategy": "no", "report_to": "none",
                     "seed": 0},
        "generation": {"prompt": "The ", "max_new_tokens": 8},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(preset))
    out = tmp_path / "export"
    metrics = run_training(["--config", str(tmp_path / "tiny.yaml"), "--output_dir", str(out)])
    assert math.isfinite(metrics["eval_loss"]), metrics
    assert " ".join(record.summary.split()) in " ".join((out / "README.md").read_text().split()), \
        "the model card does not carry the record's summary"
    model, tokenizer = load_model_folder(out)
    assert type(model) is record.causal_lm_class
    enc = tokenizer("The dragon", return_tensors="pt")
    with torch.no_grad():
        ids = model.eval().generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
    assert ids.shape == (1, enc["input_ids"].shape[1] + 8)
    assert torch.equal(ids[:, :enc["input_ids"].shape[1]], enc["input_ids"])
