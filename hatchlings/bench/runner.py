"""The one benchmark runner: timing, machine description, markdown + JSON output.

Every benchmark (`hatchlings bench bdh`, later the arena and the other architectures) returns tables
through this module, so timing methodology and file format are defined once. Times are medians of
repeated runs after a warm-up: a shared CPU is noisy, and the median is what a user would see.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


@dataclasses.dataclass
class Table:
    """One result table: rows are dicts keyed by `columns`."""

    title: str
    columns: list[str]
    rows: list[dict]
    notes: list[str] = dataclasses.field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in self.columns) + " |" for row in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes] + [""])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    """What the numbers were measured on (absolute times only compare within one machine)."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"date": datetime.date.today().isoformat(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": device}


def write_results(name: str, tables: list[Table], output_dir: str | os.PathLike, command: str,
                  heading: str = "Benchmark") -> tuple[Path, Path]:
    """Write `<name>.md` and `<name>.json` into `output_dir`; return both paths. `heading` names the kind of
    report in the markdown title ("Benchmark", "Probe")."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = machine() | {"command": command}
    header = [f"# {heading}: {name}", "", "Measured " + ", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    md_path.write_text("\n".join(header) + "\n" + "\n".join(t.markdown() for t in tables))
    json_path.write_text(json.dumps({"name": name, "machine": meta,
                                     "tables": [dataclasses.asdict(t) for t in tables]}, indent=2) + "\n")
    return md_path, json_path


def run_benchmark(what: str, output_dir: str | os.PathLike = "benchmarks/results", quick: bool = False) -> list[Table]:
    """Run the named benchmark, print its tables and write them as markdown + JSON."""
    from ..training.errors import UsageError
    from . import bdh

    benchmarks = {"bdh": bdh.run}
    if what not in benchmarks:
        raise UsageError(f"unknown benchmark {what!r}; known: {', '.join(sorted(benchmarks))}")
    tables = benchmarks[what](quick=quick)
    name = f"{what}-quick" if quick else what
    md_path, json_path = write_results(name, tables, output_dir,
                                       command=f"hatchlings bench {what}" + (" --quick" if quick else ""))
    for table in tables:
        print(table.markdown())
    print(f"wrote {md_path} and {json_path}")
    return tables
