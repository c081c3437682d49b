"""`hatchlings bench <arch> --quick`: writes markdown + JSON with the promised columns. Timings are never
asserted (benchmarks, not timed tests); the numerics column is, since it is a correctness claim, and so is the
runner's timing arithmetic, fed scripted times."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hatchlings.architectures import RECORDS
from hatchlings.bench import run_benchmark, runner


@pytest.mark.parametrize("arch", sorted(RECORDS))
def test_bench_arch_quick_writes_tables_and_matches_its_reference(arch, tmp_path):
    command = f"hatchlings bench {arch} --quick"
    tables = run_benchmark(arch, ["--quick", "--output_dir", str(tmp_path)], command).tables
    report = json.loads((tmp_path / f"{arch}-quick.json").read_text())
    markdown = (tmp_path / f"{arch}-quick.md").read_text()
    assert [t["title"].split(",")[0] for t in report["tables"]] == ["Training (forward + backward)", "Generation"]
    assert report["machine"]["command"] == command
    train, generation = tables
    for row in train.rows:
        assert float(row["max abs diff (logits, grads)"]) < 1e-4  # same numbers as the reference formulation
        assert row["ours tokens/s"] > 0 and row["reference tokens/s"] > 0
    assert [row["context"] for row in generation.rows] == [16, 64, 128]
    assert all(row["cache MiB"] > 0 for row in generation.rows)
    assert "| context |" in markdown and "|---|" in markdown


def test_bdh_state_does_not_grow_with_context(tmp_path):
    generation = run_benchmark("bdh", ["--quick", "--output_dir", str(tmp_path)], "bench").tables[1]
    assert len({row["cache MiB"] for row in generation.rows}) == 1


# --- generation timing (the arithmetic and the verdicts; no clock is read) -------------------------------------
def scripted_clock(monkeypatch, seconds_per_call: list[float]) -> None:
    """`decode_timing` sees these times, in order, instead of timing `generate` (which is not run at all)."""
    times = iter(seconds_per_call)
    monkeypatch.setattr(runner, "_greedy", lambda model, prompt, n, generate_kwargs=None: None)
    monkeypatch.setattr(runner, "_timed", lambda fn: next(times))


def test_ms_per_token_is_the_slope_over_lengths_and_first_token_time_the_one_token_run(monkeypatch):
    # lengths 1, 6, 12, 17 new tokens (steps 16); 2 ms per token on top of a 50 ms prefill, ± jitter per repeat
    jitter = [0.0, 0.0004, -0.0003]
    scripted_clock(monkeypatch, [0.05 + 0.002 * n + j for j in jitter for n in (1, 6, 12, 17)])
    timing = runner.decode_timing(None, None, steps=16, repeats=3)
    assert timing["ms_per_token"] == pytest.approx(2.0) and timing["iqr_ms"] == pytest.approx(0.0)
    assert not timing["noisy"] and timing["ttft_ms"] == pytest.approx(52.0)
    assert runner.ms_per_token_cell(timing) == "2 ±0%"


def test_a_slope_that_cannot_be_true_or_varies_a_lot_is_marked_noisy_not_printed(monkeypatch):
    scripted_clock(monkeypatch, [0.05 - 0.001 * n for _ in range(3) for n in (1, 6, 12, 17)])  # faster when longer
    falling = runner.decode_timing(None, None, steps=16, repeats=3)
    assert falling["noisy"] and runner.ms_per_token_cell(falling).startswith("noisy (slope -1")
    slopes = [1.0, 3.0, 0.5, 2.0]  # ms/token per repeat: median 1.5, IQR 1.875 > half of it
    scripted_clock(monkeypatch, [0.05 + s * 1e-3 * n for s in slopes for n in (1, 6, 12, 17)])
    spread = runner.decode_timing(None, None, steps=16, repeats=4)
    assert spread["ms_per_token"] == pytest.approx(1.5) and spread["noisy"]
    assert runner.ms_per_token_cell(spread) == f"noisy (1.5 ±{spread['iqr_ms'] / 3:.0%})"


def test_contexts_beyond_the_models_positions_are_not_applicable():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).eval()
    timing = runner.generation_timing(model, [8, 16, 40], steps=2, repeats=1, vocab=64)
    assert timing[40] == {"max_positions": 32} and runner.ms_per_token_cell(timing[40]) == "n/a (max positions 32)"
    assert {"ms_per_token", "iqr_ms", "noisy", "ttft_ms"} <= set(timing[16])  # 16 + 3 tokens fit in 32
