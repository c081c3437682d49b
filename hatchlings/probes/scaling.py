"""`hatchlings probe bdh scaling`: validation bits/byte against parameter count, BDH beside GPT-2 and Llama.

The paper reports GPT-2-like scaling from 10M to 1B parameters. What a CPU can check is the same question a
few sizes lower: at each size, train every model through the arena runner (same text, batches, schedule and
token budget; parameter counts matched within 10%) and see whether BDH's loss falls with size like the
transformers' do. At this scale and budget the result is indicative only, and the report says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..reports import Plot, Table, panels_figure

DEFAULT_SIZES = "micro,tiny,small"  # about 0.23M, 0.85M and 3.3M parameters: what 2 CPU cores train in minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scaling (MODEL is only where results go: the models are trained here)")
    group.add_argument("--sizes", default=DEFAULT_SIZES, help="arena sizes (micro, tiny, small, medium)")
    group.add_argument("--archs", default="gpt2,llama,bdh", help="arena models to compare")
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
    from ..bench.arena import ARCHS, check_file, measure_isolated
    from ..errors import UsageError

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
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
                      f"every model trained by the arena runner on {Path(settings[0].file).name} (byte tokens, first 90% "
                      f"train, last 10% validation), {settings[0].steps} steps of {args.train_batch_size} x "
                      f"{args.block_size}, AdamW 2e-3 warm-up + cosine, seed {args.seed}",
                      "a fixed token budget per size favours small models; on a CPU and at these sizes the trend is "
                      "indicative only (the paper's claim is for 10M-1B parameters)"])
    plot = Plot("Validation bits/byte vs parameters", "parameters", "bits per byte",
                {arch: ([results[arch, s]["params"] for s in sizes], [results[arch, s]["val_bits_per_byte"]
                                                                     for s in sizes]) for arch in archs}, logx=True)
    return [table], panels_figure([plot])
