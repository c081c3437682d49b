"""Contract checks: the platform runs the architecture end to end through its record alone.

`run_training` (a tiny preset: the architecture id and its tiny config's own fields) -> the exported Hub
folder (its card says what the record's summary says; `hatchlings push`'s pre-flight check passes) ->
`hatchlings eval` -> `load_model_folder` -> `generate`; and an interrupted run (Muon + AdamW) resumes to
bitwise the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from contract import ArchSpec
from hatchlings.architectures import record_for

TOKEN_FIELDS = {"vocab_size", "pad_token_id", "bos_token_id", "eos_token_id"}  # the run's tokenizer sets these


def tiny_model_section(spec: ArchSpec) -> dict:
    """The preset's `model:` section for the spec's tiny config: the fields its config class declares and the
    tiny config changes, less those the tokenizer decides."""
    config = spec.tiny_config()
    declared = set(type(config).__annotations__)
    return {k: v for k, v in config.to_diff_dict().items() if k in declared and k not in TOKEN_FIELDS}


class SignalAtStep(TrainerCallback):
    """Sends the process a real signal at the end of `step`, as a user's Ctrl+C or a scheduler's SIGTERM."""

    def __init__(self, step: int, sig: int = signal.SIGINT):
        self.step, self.sig = step, sig

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def _tiny_run(spec: ArchSpec, tmp_path, real_text: str, **training) -> Path:
    """A tiny preset for the architecture on 8 kB of real text, written to tmp_path; returns its path."""
    text = tmp_path / "text.txt"
    text.write_text(real_text[:8000])
    preset = {
        "architecture": spec.arch,
        "model": tiny_model_section(spec),
        "data": {"train_file": str(text), "block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 4},
        "training": {"max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                     "learning_rate": 3e-3, "logging_steps": 2, "save_strategy": "no", "report_to": "none",
                     "seed": 0, **training},
        "generation": {"prompt": "The ", "max_new_tokens": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def check_platform_end_to_end(spec: ArchSpec, tmp_path, real_text: str) -> None:
    """run_training -> export -> push pre-flight -> eval -> load_model_folder -> generate, with the
    architecture's own tokenizer kind."""
    from hatchlings.evaluation import evaluate_file
    from hatchlings.hub import check_hub_folder
    from hatchlings.training import run_training
    from hatchlings.training.export import load_model_folder

    record = record_for(spec.arch)
    out = tmp_path / "export"
    metrics = run_training(["--config", str(_tiny_run(spec, tmp_path, real_text)), "--output_dir", str(out)])
    assert math.isfinite(metrics["eval_loss"]), metrics
    assert " ".join(record.summary.split()) in " ".join((out / "README.md").read_text().split()), \
        "the model card does not carry the record's summary"
    assert set(spec.modeling_files) <= set(check_hub_folder(out)), "the push would leave modeling files behind"
    scored = evaluate_file(out, tmp_path / "text.txt", block_size=32, max_tokens=200)
    assert scored["tokens"] == min(200, scored["file_tokens"]) - 1 and math.isfinite(scored["bits_per_byte"])
    model, tokenizer = load_model_folder(out)
    assert type(model) is record.causal_lm_class
    enc = tokenizer("The dragon", return_tensors="pt")
    with torch.no_grad():
        ids = model.eval().generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
    assert ids.shape == (1, enc["input_ids"].shape[1] + 8)
    assert torch.equal(ids[:, :enc["input_ids"].shape[1]], enc["input_ids"])


def check_interrupted_run_resumes_exactly(spec: ArchSpec, tmp_path, real_text: str) -> None:
    """SIGTERM at step 2 saves a checkpoint; `--resume` ends on bitwise the weights of an uninterrupted run,
    with Muon + AdamW (the optimizer whose state has the most parts to restore)."""
    from hatchlings.training import run_training

    preset = str(_tiny_run(spec, tmp_path, real_text))
    flags = ["--config", preset, "--optimizer", "muon"]
    run_training([*flags, "--output_dir", str(tmp_path / "straight")])
    assert run_training([*flags, "--output_dir", str(tmp_path / "cut")], callbacks=[SignalAtStep(2, signal.SIGTERM)]) == {}
    assert (tmp_path / "cut" / "checkpoint-2").is_dir() and not (tmp_path / "cut" / "model.safetensors").exists()
    run_training([*flags, "--output_dir", str(tmp_path / "cut"), "--resume"])
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:  # same optimizer, scheduler, RNG and data position: bitwise the same on CPU
        assert torch.equal(straight[name], resumed[name]), name
