"""The one benchmark runner: timing, machine description, markdown + JSON + PNG output.

Every benchmark (`hatchlings bench <arch>`, `hatchlings bench arena`, the probes) returns its results
through this module, so timing methodology and file format are defined once. Times are medians of
repeated runs after a warm-up: a shared CPU is noisy, and the median is what a user would see.
Generation is always timed through `model.generate` (what users call), the same way for every model.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Callable

import torch

from ..evaluation import context_limit
from ..reports import Plot, Table, write_results


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(repeats))


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _greedy(model, prompt: torch.Tensor, new_tokens: int, generate_kwargs: dict | None = None) -> None:
    """Exactly `new_tokens` greedy tokens after `prompt`, with the model's cache (eos cannot stop it early);
    `generate_kwargs` (an architecture's extras, such as HRM's `hrm_mode`) go to `generate` as they are."""
    with torch.no_grad():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                       pad_token_id=model.config.pad_token_id or 0, **(generate_kwargs or {}))


NOISY_SPREAD = 0.5  # a slope whose IQR over repeats exceeds half its value is reported as noisy


def _slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def _timed(fn: Callable[[], object]) -> float:
    """Wall time of one `fn()`, including the device work it queued."""
    start = time.perf_counter()
    fn()
    _synchronize()
    return time.perf_counter() - start


def decode_timing(model, prompt: torch.Tensor, steps: int, repeats: int, lengths: int = 4,
                  generate_kwargs: dict | None = None) -> dict:
    """ms per new token as the slope of `generate` time against the number of new tokens, after `prompt`.

    Each repeat times every length (1 to 1 + `steps` new tokens, `lengths` of them, in one pass so that a
    load change on the machine hits all of them alike) and fits a line: its slope is the decoding cost per
    token, its intercept the prefill (a difference of two medians instead can come out negative on a loaded
    machine). Returns {"ms_per_token": median slope, "iqr_ms": interquartile
    range of the slopes (min-max below 4 repeats), "noisy": slope <= 0 or IQR > NOISY_SPREAD x slope,
    "ttft_ms": median time of one new token (prefill + one token)}. `generate_kwargs` go to every `generate`.
    """
    counts = sorted({1 + round(steps * k / (lengths - 1)) for k in range(lengths)})
    _greedy(model, prompt, counts[-1], generate_kwargs)  # warm-up: allocator, caches, lazy initialisation
    slopes, firsts = [], []
    for _ in range(repeats):
        times = [_timed(lambda: _greedy(model, prompt, n, generate_kwargs)) for n in counts]
        slopes.append(_slope(counts, times) * 1e3)
        firsts.append(times[0] * 1e3)
    slope = statistics.median(slopes)
    low, high = statistics.quantiles(slopes, n=4)[::2] if len(slopes) >= 4 else (min(slopes), max(slopes))
    return {"ms_per_token": slope, "iqr_ms": high - low, "noisy": slope <= 0 or high - low > NOISY_SPREAD * slope,
            "ttft_ms": statistics.median(firsts)}


def generation_timing(model, contexts: list[int], steps: int, repeats: int, vocab: int = 256) -> dict[int, dict]:
    """`decode_timing` at each context length, through `generate` with the model's cache; a context the
    model's positions cannot hold (with the new tokens) gets {"max_positions": N} instead of times."""
    device, limit = next(model.parameters()).device, context_limit(model.config)
    results = {}
    for context in contexts:
        if limit is not None and context + steps + 1 > limit:
            results[context] = {"max_positions": limit}
            continue
        prompt = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(context)).to(device)
        results[context] = decode_timing(model, prompt, steps, repeats)
    return results


def ms_per_token_cell(timing: dict) -> str:
    """How a table shows one `generation_timing` entry: "1.23 ±4%" (± half the IQR), marked "noisy (...)" when
    it is, "noisy (slope ... <= 0)" when it cannot be true, "n/a (max positions N)" when not measurable."""
    if "max_positions" in timing:
        return f"n/a (max positions {timing['max_positions']})"
    ms, iqr = timing["ms_per_token"], timing["iqr_ms"]
    if ms <= 0:
        return f"noisy (slope {ms:.2g} <= 0)"
    figure = f"{ms:.3g} ±{iqr / 2 / ms:.0%}"
    return f"noisy ({figure})" if timing["noisy"] else figure


def trusted_ms(timing: dict) -> float | None:
    """ms/token of one `generation_timing` entry when it is a trustworthy figure (measured, not noisy): the
    only ones a ratio or a plot may use."""
    return None if "max_positions" in timing or timing["noisy"] else timing["ms_per_token"]


def trusted_points(timings: dict[int, dict]) -> tuple[list[int], list[float]]:
    """(contexts, ms/token) of the trustworthy figures of `generation_timing`'s result, to plot: a noisy or
    unmeasurable one is no point at all."""
    points = [(c, ms) for c, timing in sorted(timings.items()) if (ms := trusted_ms(timing)) is not None]
    return [c for c, _ in points], [ms for _, ms in points]


@dataclasses.dataclass
class Report:
    """What a benchmark returns: the file stem to write under, its tables and (optionally) its plots."""

    name: str
    tables: list[Table]
    plots: list[Plot] = dataclasses.field(default_factory=list)


def _benchmarks() -> dict:
    """name -> object with `add_arguments(parser)` and `run(args) -> Report`: the arena, and one
    reference benchmark per registered architecture (its record's reference hook)."""
    from ..architectures import RECORDS
    from . import arena
    from .reference import ReferenceBenchmark

    return {"arena": arena, **{arch: ReferenceBenchmark(arch) for arch in RECORDS}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`hatchlings bench <name> [its flags]`; each benchmark's flags are parsed by its own parser (`--help`)."""
    parser.add_argument("what", help="benchmark: " + ", ".join(_benchmarks()))
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's flags (see `hatchlings bench <name> -h`)")


def _benchmark_args(what: str, options: list[str]) -> argparse.Namespace:
    from ..errors import UsageError

    benchmarks = _benchmarks()
    if what not in benchmarks:
        raise UsageError(f"unknown benchmark {what!r}; known: {', '.join(sorted(benchmarks))}")
    module = benchmarks[what]
    parser = argparse.ArgumentParser(prog=f"hatchlings bench {what}", description=module.__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--output_dir", "--output-dir", default="benchmarks/results")
    module.add_arguments(parser)
    return parser.parse_args(options, namespace=argparse.Namespace(what=what))


def run_benchmark(what: str, options: list[str], command: str) -> Report:
    """Run benchmark `what` with its command-line `options`, print its tables and write them as markdown + JSON
    (+ PNG)."""
    args = _benchmark_args(what, options)
    report = _benchmarks()[what].run(args)
    md_path, json_path = write_results(report.name, report.tables, args.output_dir, command=command,
                                       plots=report.plots)
    for table in report.tables:
        print(table.markdown())
    print(f"wrote {md_path} and {json_path}" + (f" (+ {report.name}.png)" if report.plots else ""))
    return report
