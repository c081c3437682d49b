"""`hatchlings probe <arch> scaling`: validation bits/byte against parameter count, beside GPT-2 and Llama.

BDH's paper reports GPT-2-like scaling from 10M to 1B parameters; HoloSpectralNet's seed claims "5-10x fewer
parameters than a transformer of similar capacity". What a CPU can check is the same question a few sizes
lower: at each size, train every model through the arena runner (same text, batches, schedule and token
budget; parameter counts matched within 10%) and see how each loss falls with size. A second table puts the
claim in its honest form: for each model and size, the Llama size (interpolated in log-parameters between the
Llamas trained here) that reaches the same bits/byte, and the parameter ratio at equal quality. At this scale
and budget the result is indicative only, and the report says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..reports import Plot, Table, panels_figure

DEFAULT_SIZES = "micro,tiny,small"  # about 0.23M, 0.85M and 3.3M parameters: what 2 CPU cores train in minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scaling (MODEL is only where results go: the models are trained here)")
    group.add_argument("--sizes", default=DEFAULT_SIZES, help="arena sizes (micro, tiny, small, medium)")
    group.add_argument("--archs", default=None, help="arena models to compare (default: gpt2, llama and <arch>)")
    group.add_argument("--budget_tokens", type=int, default=150 * 16 * 256, help="training tokens per model")
    group.add_argument("--train_batch_size", type=int, default=16, help="training blocks per step")


def _settings(args, size: str):
    from ..bench.arena import DEFAULT_FILE, SIZES, Settings
    from ..errors import UsageError

    if size not in SIZES:
        raise UsageError(f"--sizes: unknown size {size!r}; known: {', '.join(SIZES)}")
    if args.budget_tokens < args.train_batch_size * args.block_size:
        raise UsageError("--budget_tokens is less than one training step")
    return Settings(file=args.file or DEFAULT_FILE, size=size, budget_tokens=args.budget_tokens,
                    batch_size=args.train_batch_size, block_size=args.block_size, seed=args.seed, timing=False)


def run(args) -> tuple[list[Table], object]:
    """Train every (model, size) pair in its own process; tabulate and plot bits/byte against parameters."""
    from ..bench.arena import ARCHS, check_file, measure_isolated, split_note
    from ..errors import UsageError

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    archs = [a.strip() for a in (args.archs or f"gpt2,llama,{args.arch}").split(",") if a.strip()]
    if not sizes or not archs or set(archs) - set(ARCHS):
        raise UsageError(f"--archs must name models from {', '.join(ARCHS)} and --sizes at least one size")
    settings = [_settings(args, size) for size in sizes]
    check_file(settings[0].file)
    results = {(arch, s.size): measure_isolated(arch, s) for s in settings for arch in archs}
    rows = [{"size": size, **{column: value for arch in archs for column, value in (
        (f"{arch} params", f"{results[arch, size]['params']:,}"),
        (f"{arch} bits/byte", results[arch, size]["val_bits_per_byte"]))}} for size in sizes]
    tokens = settings[0].steps * settings[0].tokens_per_step
    table = Table(f"Scaling: validation bits/byte vs parameters, {tokens:,} training tokens per model",
                  list(rows[0]), rows, notes=[
                      f"every model trained by the arena runner on {Path(settings[0].file).name} "
                      f"({split_note(settings[0])}), {settings[0].steps} steps of {args.train_batch_size} x "
                      f"{args.block_size}, AdamW 2e-3 warm-up + cosine (or the optimizer of a record's arena_optimization), "
                      f"seed {args.seed}",
                      "a fixed token budget per size favours small models; on a CPU and at these sizes the trend is "
                      "indicative only (the paper's claim is for 10M-1B parameters)"])
    plot = Plot("Validation bits/byte vs parameters", "parameters", "bits per byte",
                {arch: ([results[arch, s]["params"] for s in sizes], [results[arch, s]["val_bits_per_byte"]
                                                                     for s in sizes]) for arch in archs}, logx=True)
    tables = [table] + ([_llama_match(results, archs, sizes)] if "llama" in archs and len(sizes) > 1 else [])
    return tables, panels_figure([plot])


def llama_params_at(bits: float, llama: list[tuple[int, float]]) -> float | None:
    """Parameters a Llama needs for `bits` bits/byte: log-linear between the two trained Llamas around it
    ((params, bits/byte) points); None outside their range (no extrapolation)."""
    import math

    points = sorted(llama)
    for (p0, b0), (p1, b1) in zip(points, points[1:]):
        if min(b0, b1) <= bits <= max(b0, b1) and b0 != b1:
            t = (bits - b0) / (b1 - b0)
            return math.exp(math.log(p0) + t * (math.log(p1) - math.log(p0)))
    return None


def _llama_match(results: dict, archs: list[str], sizes: list[str]) -> Table:
    llama = [(results["llama", s]["params"], results["llama", s]["val_bits_per_byte"]) for s in sizes]
    rows = []
    for arch in (a for a in archs if a != "llama"):
        for size in sizes:
            own = results[arch, size]
            match = llama_params_at(own["val_bits_per_byte"], llama)
            rows.append({"model": arch, "size": size, "params": f"{own['params']:,}",
                         "bits/byte": own["val_bits_per_byte"],
                         "Llama params at equal bits/byte": f"{match:,.0f}" if match else "outside the Llamas' range",
                         "Llama params / params": match / own["params"] if match else ""})
    return Table("Parameters at equal quality: the Llama that matches each model's bits/byte", list(rows[0]), rows,
                 notes=["Llama's parameters at a bits/byte interpolated log-linearly between the two Llama sizes "
                        "trained here that bracket it; a ratio above 1 means the model needs fewer parameters than "
                        "Llama for that quality, at this budget"])
