"""The arena's report: the summary table with the ratios to GPT-2 that are its headline, the validation curve,
and the figures (see `hatchlings.bench.arena` for what is measured and how)."""

from __future__ import annotations

import math
from pathlib import Path

from ..reports import Plot, Table
from .arena import LEARNED_POSITIONS, Settings, split_note
from .runner import ms_per_token_cell, trusted_ms, trusted_points


def _ratio(value, reference) -> float | str:
    return value / reference if value is not None and reference else ""


def summary_table(results: list[dict], settings: Settings) -> Table:
    """One row per model, with the ratios to GPT-2 (first model) that the arena reports as its headline."""
    ref = next((r for r in results if r["arch"] == "gpt2"), results[0])
    rows = []
    for r in results:
        tokens_s = settings.tokens_per_step / r["median_step_s"]
        rows.append({
            "model": r["arch"], "params": f"{r['params']:,}", "params / GPT-2": _ratio(r["params"], ref["params"]),
            "val bits/byte": r["val_bits_per_byte"],
            **({} if settings.tokenizer == "byte" else {"val perplexity": math.exp(r["val_loss"])}),
            "train tokens/s": tokens_s, "tokens/s / GPT-2": _ratio(tokens_s, settings.tokens_per_step / ref["median_step_s"]),
            "peak train MiB": r["peak_memory_mib"] if r["peak_memory_mib"] is not None else "n/a",
            **(_generation_cells(r, ref, settings) if settings.timing else {}),
            "compiled": r["compiled"],
        })
    memory = "max allocated" if settings.device.startswith("cuda") else \
        "growth of peak resident memory from before the model was built (fresh process per model)"
    return Table(f"Arena: {settings.size} models, {settings.steps * settings.tokens_per_step:,} training tokens of "
                 f"{Path(settings.file).name}", list(rows[0]), rows, notes=[
        f"same data ({split_note(settings)}), same {settings.steps} batches of "
        f"{settings.batch_size} x {settings.block_size} in the same order, AdamW lr {settings.learning_rate} betas "
        f"(0.9, 0.95) wd {settings.weight_decay} on matrices, {settings.warmup_fraction:.0%} warm-up then cosine, "
        f"grad clip 1.0, seed {settings.seed}, {settings.device} {settings.precision}"
        + (", glibc malloc reusing freed memory for large tensors in every model's process (no --default-malloc)"
           if all(r.get("reused_memory") for r in results) else ""),
        *[f"{r['arch']} trains with train.py's {r['optimization'].get('name')} optimizer "
          f"({', '.join(f'{k} {v}' for k, v in r['optimization'].items() if k != 'name')}; its record's "
          "arena_optimization) on the same schedule" for r in results if r.get("optimization")],
        "val bits/byte: the whole validation split in disjoint blocks of the training length"
        + ("" if settings.tokenizer == "byte" else "; val perplexity: exp of the mean loss per token"),
        "train tokens/s: tokens per step / median step time (forward, backward, optimizer step)",
        f"peak train MiB: {memory}",
        *([_GENERATION_NOTE.format(steps=1 + settings.gen_steps, repeats=settings.repeats,
                                   prompt=settings.ttft_prompt, positions=LEARNED_POSITIONS)] if settings.timing else []),
    ])


_GENERATION_NOTE = (
    "generation: greedy `generate` with each model's cache, batch 1, after a random prompt of the given context; "
    "ms/token = slope of the time against 1 to {steps} new tokens (4 lengths), median of {repeats} repeats, ±half "
    "its interquartile range; \"noisy\" when that range exceeds half the slope or the slope is not positive (no "
    "ratio is taken from it); time to first token = prefill of a {prompt}-token prompt + one token. Timed on a "
    "fresh model of the same shape whose positions cover the longest context, except GPT-2's learned table "
    "(contexts up to {positions}: \"n/a (max positions N)\" beyond; it trains with one sized to the block)")


def _generation_cells(r: dict, ref: dict, settings: Settings) -> dict:
    """A model's generation columns, with its ratio to GPT-2 at the longest context where GPT-2's figure is
    trustworthy."""
    contexts = settings.contexts
    ref_ms = {c: trusted_ms(ref["generation"][c]) for c in contexts}
    ms = {c: trusted_ms(r["generation"][c]) for c in contexts}
    at = max((c for c in contexts if ref_ms[c] is not None), default=contexts[-1])
    return {**{f"ms/token @{c}": ms_per_token_cell(r["generation"][c]) for c in contexts},
            f"ms/token @{at} / GPT-2": _ratio(ms[at], ref_ms[at]),
            f"@{contexts[-1]} / @{contexts[0]}": _ratio(ms[contexts[-1]], ms[contexts[0]]),
            f"TTFT ms @{settings.ttft_prompt}": r["ttft_ms"] if r["ttft_ms"] is not None else "n/a"}


def curve_table(results: list[dict]) -> Table:
    """Validation bits/byte (40 fixed blocks) at each evaluation point, one column per model."""
    points = [tokens for tokens, _ in results[0]["curve"]]
    rows = [{"training tokens": f"{tokens:,}", **{r["arch"]: r["curve"][i][1] for r in results}}
            for i, tokens in enumerate(points)]
    return Table("Validation bits/byte over the budget (40 fixed validation blocks)",
                 ["training tokens", *(r["arch"] for r in results)], rows)


def plots(results: list[dict], settings: Settings) -> list[Plot]:
    curves = Plot("Validation bits/byte vs training tokens", "training tokens", "bits per byte",
                  {r["arch"]: ([t for t, _ in r["curve"]], [b for _, b in r["curve"]]) for r in results})
    if not settings.timing:
        return [curves]
    return [curves,
            Plot("Generation cost vs context (greedy, batch 1; trustworthy figures only)", "context (tokens)",
                 "ms per new token", {r["arch"]: trusted_points(r["generation"]) for r in results}, logx=True)]
