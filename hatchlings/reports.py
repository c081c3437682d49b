"""Results as files: markdown tables + JSON + PNG panels, shared by the benchmarks (bench/) and the probes.

Neither owns it: both write what they measured the same way, with the machine it was measured on, so a
reader finds one format in benchmarks/results/ and in a model's probes/ folder.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from pathlib import Path

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


@dataclasses.dataclass
class Plot:
    """One panel of a results figure: named series of (x, y) points drawn as lines with markers."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float]]]
    logx: bool = False
    logy: bool = False


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def machine() -> dict:
    """What the numbers were measured on (absolute times only compare within one machine)."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"date": datetime.date.today().isoformat(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": device}


def panels_figure(plots: list[Plot]):
    """`plots` side by side in one matplotlib figure."""
    from .plotting import new_figure

    fig, axes = new_figure(len(plots), size=(6, 4.5))
    for ax, plot in zip(axes[0], plots):
        for label, (xs, ys) in plot.series.items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set(title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
        ax.set_xscale("log" if plot.logx else "linear")
        ax.set_yscale("log" if plot.logy else "linear")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_panels(plots: list[Plot], path: str | os.PathLike) -> Path:
    """Draw `plots` side by side into one PNG."""
    panels_figure(plots).savefig(path, format="png")
    return Path(path)


def write_results(name: str, tables: list[Table], output_dir: str | os.PathLike, command: str,
                  heading: str = "Benchmark", plots: list[Plot] | None = None) -> tuple[Path, Path]:
    """Write `<name>.md`, `<name>.json` (and `<name>.png` if `plots`) into `output_dir`; return the md and json
    paths. `heading` names the kind of report in the markdown title ("Benchmark", "Probe")."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = machine() | {"command": command}
    header = [f"# {heading}: {name}", "", "Measured " + ", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    if plots:
        plot_panels(plots, out / f"{name}.png")
        header += [f"![{name}]({name}.png)", ""]
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    md_path.write_text("\n".join(header) + "\n" + "\n".join(t.markdown() for t in tables))
    json_path.write_text(json.dumps({"name": name, "machine": meta,
                                     "tables": [dataclasses.asdict(t) for t in tables],
                                     "plots": [dataclasses.asdict(p) for p in plots or []]}, indent=2) + "\n")
    return md_path, json_path
