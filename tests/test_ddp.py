"""Data-parallel training with 2 real gloo processes under `accelerate launch`: each rank sees different
batches, gradients are all-reduced (identical weights at the end), gradient accumulation works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_training import REPO, TINY_PRESET, write_preset


def test_two_ranks_see_different_data_and_end_identical(tmp_path):
    preset = dict(TINY_PRESET, training=dict(TINY_PRESET["training"], max_steps=3, eval_steps=100,
                                             gradient_accumulation_steps=2, per_device_train_batch_size=4))
    probe = tmp_path / "probe"
    probe.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_DIR=str(probe))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(Path(__file__).with_name("ddp_probe.py")), "--config", str(write_preset(tmp_path / "p.yaml", preset)),
           "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [3, 3]
    for r in ranks:  # 3 optimizer steps x 2 accumulated micro-batches of 4 blocks (the loader may prefetch more)
        assert len(r["batches"]) >= 6 and all(len(b) == 4 for b in r["batches"][:6])
    rows = [{tuple(row) for batch in r["batches"][:6] for row in batch} for r in ranks]
    assert not rows[0] & rows[1], "both ranks trained on the same blocks"
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged: gradients were not all-reduced"
    assert (tmp_path / "out" / "model.safetensors").is_file()
