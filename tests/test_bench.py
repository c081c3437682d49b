"""`hatchlings bench bdh --quick`: writes markdown + JSON with the promised columns. Timings are never
asserted (benchmarks, not timed tests); the numerics column is, since it is a correctness claim."""

from __future__ import annotations

import json

from hatchlings.bench import run_benchmark


def test_bench_bdh_quick_writes_tables(tmp_path):
    tables = run_benchmark("bdh", ["--quick", "--output_dir", str(tmp_path)], "hatchlings bench bdh --quick").tables
    report = json.loads((tmp_path / "bdh-quick.json").read_text())
    markdown = (tmp_path / "bdh-quick.md").read_text()
    assert [t["title"].split(",")[0] for t in report["tables"]] == ["Training (forward + backward)", "Generation"]
    assert report["machine"]["command"] == "hatchlings bench bdh --quick"
    train, generation = tables
    for row in train.rows:
        assert float(row["max abs diff (logits, grads)"]) < 1e-4  # same numbers as the reference formulation
        assert row["ours tokens/s"] > 0 and row["reference tokens/s"] > 0
    assert [row["context"] for row in generation.rows] == [16, 64, 128]
    assert len({row["state MiB"] for row in generation.rows}) == 1  # the state does not grow with context
    assert "| context |" in markdown and "|---|" in markdown
