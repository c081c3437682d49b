"""FSDP2 training with 2 real gloo processes, launched with the shipped configs/accelerate/fsdp.yaml: the
parameters really are shards (DTensors) during training, the sharded checkpoint resumes, and the exported
weights load as an ordinary model equal to a 1-process run of the same global batch.

accelerate 1.15 alone would silently train these CPU processes with DDP; HatchlingsTrainer restores the FSDP
plugin (see trainer._restore_fsdp_on_cpu), and this test fails if that fallback ever comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from hatchlings.training import run_training
from test_training import REPO, TINY_PRESET, write_preset

pytestmark = pytest.mark.slow  # two `accelerate launch` runs of 2 processes and one in-process run: ~2-4 min

# Constant learning rate: the first 2 steps of a 4-step run then equal a 2-step run, so "2 steps, resume to 4"
# must land exactly where "4 steps" does. Per-device batch 2 on 2 ranks = global batch 4 of the 1-process run.
PRESET = dict(TINY_PRESET, data=dict(TINY_PRESET["data"], block_size=32),
              training=dict(TINY_PRESET["training"], max_steps=2, per_device_train_batch_size=2,
                            per_device_eval_batch_size=2, lr_scheduler_type="constant", logging_steps=1,
                            eval_strategy="no", save_strategy="steps", save_steps=2),
              generation={"prompt": "The ", "max_new_tokens": 5})
# AdamW moves each weight by up to ~lr = 3e-3 per step. Sharded and unsharded runs differ only in the order of
# float32 sums (two half-batch gradient means averaged by reduce-scatter vs one full-batch mean): ~1e-7 measured.
# 1e-4 is far above that noise and far below what one missing or differently batched step would change.
WEIGHT_TOLERANCE = 1e-4


def launch_fsdp(argv: list[str], probe: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` with the shipped FSDP config on 2 CPU processes (bf16 autocast is a GPU setting)."""
    probe.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_DIR=str(probe))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/fsdp.yaml",
           "--num_processes", "2", "--mixed_precision", "no", str(Path(__file__).with_name("fsdp_probe.py")),
           *argv]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def logged_losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_fsdp2_trains_sharded_resumes_and_matches_one_process(tmp_path, real_text):
    text = tmp_path / "text.txt"
    text.write_text(real_text)
    base = ["--config", str(write_preset(tmp_path / "p.yaml", PRESET)), "--train_file", str(text)]
    out, probe = tmp_path / "fsdp", tmp_path / "probe"

    launch_fsdp([*base, "--output_dir", str(out)], probe)
    shards = sorted(p.name for p in (out / "checkpoint-2" / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"], "the checkpoint is not one shard per rank"
    assert not (out / "checkpoint-2" / "model.safetensors").exists()
    assert not (out / ".staging").exists(), "the sharded checkpoint was not staged and renamed into place"

    resumed = launch_fsdp([*base, "--output_dir", str(out), "--max_steps", "4", "--resume"], probe)
    assert "resuming from" in resumed.stdout and str(out / "checkpoint-2") in resumed.stdout
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [4, 4]
    assert all(r["wrapper"].startswith("FSDP") and r["parameters"] == ["DTensor"] for r in ranks), ranks

    sharded = AutoModelForCausalLM.from_pretrained(out)
    total = sharded.num_parameters()
    assert sum(r["local_numel"] for r in ranks) == total and all(r["local_numel"] < total for r in ranks)

    single = tmp_path / "single"
    run_training([*base, "--output_dir", str(single), "--max_steps", "4", "--per_device_train_batch_size", "4"])
    assert logged_losses(out / "checkpoint-4") == pytest.approx(logged_losses(single / "checkpoint-4"), abs=1e-4)
    reference = AutoModelForCausalLM.from_pretrained(single).state_dict()
    for name, tensor in sharded.state_dict().items():
        assert type(tensor) is torch.Tensor  # an ordinary model: no DTensor survived the export
        torch.testing.assert_close(tensor, reference[name], atol=WEIGHT_TOLERANCE, rtol=0, msg=name)
