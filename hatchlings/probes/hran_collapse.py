"""`hatchlings probe hran collapse RUNS_DIR`: which of HRAN's mechanisms could have made the seed collapse.

The seed (a NumPy seq2seq chatbot of ~1M parameters) ended at loss ~5.85 and answered "is is define is is".
This trains HRAN as a chatbot on the instruction tasks once with every mechanism on (the seed's recipe) and
once per mechanism switched off, at the same budget and for each seed, through train.py itself (the preset
`--config`, default configs/hran-chat.yaml, with the variant written into a copy of it), then answers the
held-out tasks' instructions (the run's validation rows: the last fraction of the examples) and scores:

- validation loss: train.py's final evaluation, mean cross-entropy per answer token (nats);
- distinct-1 / distinct-2: distinct words / word pairs over all words / pairs of the answers;
- repetition: the share of each answer's word 3-grams that repeat an earlier one in the same answer;
- one-word answers: the share of answers (of 4+ words) in which a single word makes up half or more of the
  words -- the seed's "is is define is is".
- blank answers: the share of answers without a single word (only whitespace or punctuation): the same
  collapse onto one token when that token is a newline.

Answers are greedy (the decoding most prone to loops, and deterministic), up to --new_tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

import yaml

from ..errors import UsageError
from ..reports import Table
from . import text_quality as tq
from .common import table_text

# variant -> (model overrides, optimization overrides); "all on" is the seed's set of mechanisms
ALL_ON = ({"attention": "rbf", "activation": "infomax", "lateral_inhibition": True},
          {"wiener_snr": True, "hebbian_seed": True})
VARIANTS = {
    "all on": ({}, {}),
    "dot-product attention": ({"attention": "dot"}, {}),
    "no Wiener-SNR": ({}, {"wiener_snr": False}),
    "no Hebbian seed": ({}, {"hebbian_seed": False}),
    "no lateral inhibition": ({"lateral_inhibition": False}, {}),
    "GELU activation": ({"activation": "gelu"}, {}),
}
ONE_WORD_MIN_WORDS, ONE_WORD_SHARE = 4, 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hran collapse (MODEL is where the runs go: they are trained here)")
    group.add_argument("--config", default="configs/hran-chat.yaml", help="the chat preset every variant starts from")
    # --train_file (default: the preset's) and --steps (training steps per run) are shared with other probes
    group.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    group.add_argument("--variants", default=None, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    group.add_argument("--new_tokens", type=int, default=60, help="tokens per generated answer")


def one_word_answer(words: list[str]) -> bool:
    """An answer of 4+ words in which one word makes up half or more of them."""
    return len(words) >= ONE_WORD_MIN_WORDS and Counter(words).most_common(1)[0][1] >= ONE_WORD_SHARE * len(words)


def answer_scores(answers: list[str]) -> dict:
    """distinct-1/2, repetition and the one-word share of a list of answers."""
    samples = [tq.words(a, drop_partial=False) for a in answers]
    return {"distinct-1": tq.distinct_n(samples, 1), "distinct-2": tq.distinct_n(samples, 2),
            "repetition": tq.repetition_rate(samples),
            "one-word answers": sum(map(one_word_answer, samples)) / max(1, len(samples)),
            "blank answers": sum(not words for words in samples) / max(1, len(samples))}


def held_out_prompts(train_file: str, fraction: float) -> list[str]:
    """The user turns of the run's validation rows: the last `fraction` of the examples, as train.py splits."""
    from ..training.data import flatten_instructions

    records = [json.loads(line) for line in Path(train_file).read_text().splitlines() if line.strip()]
    keys = ("instruction", "instances", "input", "output")
    flat = flatten_instructions({k: [r.get(k) for r in records] for k in keys})
    n_val = max(1, round(len(flat["instruction"]) * fraction))
    return [i + ("\n\n" + x if x else "") for i, x in zip(flat["instruction"][-n_val:], flat["input"][-n_val:])]


def answers(folder: Path, prompts: list[str], new_tokens: int) -> list[str]:
    """Greedy answers of the export in `folder` to each prompt, rendered with its chat template."""
    from ..generation import generate_text
    from ..training.export import load_model_folder

    model, tokenizer = load_model_folder(folder)
    model.eval()
    out = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(generate_text(model, tokenizer, ids, max_new_tokens=new_tokens, temperature=0, top_k=0))
    return out


def _train(preset: dict, variant: str, seed: int, args, folder: Path) -> dict:
    """One run of train.py on the variant's copy of the preset; returns its final validation metrics.

    A folder that already holds a finished run of the same preset and flags is reused (`run.json`, written
    last), so an interrupted study continues where it stopped."""
    from ..training import run_training

    model_overrides, optim_overrides = VARIANTS[variant]
    config = dict(preset, model={**preset.get("model", {}), **ALL_ON[0], **model_overrides},
                  optimization={**preset.get("optimization", {}), **ALL_ON[1], **optim_overrides})
    argv = ["--config", str(folder / "preset.yaml"), "--seed", str(seed), "--max_steps", str(args.steps),
            "--output_dir", str(folder), "--eval_strategy", "no", "--logging_steps", str(max(1, args.steps // 4))]
    if args.train_file:
        argv += ["--train_file", args.train_file]
    done, run = folder / "run.json", {"preset": config, "argv": argv}
    finished = json.loads(done.read_text()) if done.is_file() else None
    if finished is not None and finished["run"] == run:
        return finished["metrics"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preset.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = run_training(argv)
    done.write_text(json.dumps({"run": run, "metrics": metrics}, indent=2))
    return metrics


def _selected(args) -> tuple[list[str], list[int]]:
    variants = list(VARIANTS) if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if unknown or not variants or not seeds or args.steps < 1 or args.new_tokens < 1:
        raise UsageError(f"--variants must name some of: {', '.join(VARIANTS)} (unknown: {', '.join(unknown)}); "
                         "--seeds at least one seed; --steps and --new_tokens at least 1")
    return variants, seeds


def run(args):
    """Train and score every (variant, seed); one row per variant (means over seeds) and the answers."""
    from ..training.config import load_preset

    variants, seeds = _selected(args)
    preset = load_preset(args.config)
    data = preset.get("data", {})
    train_file = args.train_file or data.get("train_file")
    if not train_file:
        raise UsageError(f"{args.config} names no train_file: give --train_file")
    prompts = held_out_prompts(train_file, data.get("validation_fraction", 0.1))
    results, samples = {}, []
    for variant in variants:
        for seed in seeds:
            folder = Path(args.model) / variant.replace(" ", "-") / f"seed{seed}"
            metrics = _train(preset, variant, seed, args, folder)
            said = answers(folder, prompts, args.new_tokens)
            results[variant, seed] = {"val loss": metrics["eval_loss"], **answer_scores(said)}
            samples += [{"variant": variant, "seed": seed, "prompt": table_text(p, 60), "answer": table_text(a, 160)}
                        for p, a in list(zip(prompts, said))[:3]]
    return [_summary(results, variants, seeds, args, len(prompts)),
            Table("Answers (first three held-out prompts, greedy)", ["variant", "seed", "prompt", "answer"],
                  samples)], None


def _summary(results: dict, variants: list[str], seeds: list[int], args, n_prompts: int) -> Table:
    columns = ["val loss", "distinct-1", "distinct-2", "repetition", "one-word answers", "blank answers"]
    rows = []
    for variant in variants:
        row = {"variant": variant}
        for column in columns:
            values = [results[variant, s][column] for s in seeds if results[variant, s][column] is not None]
            row[column] = statistics.mean(values) if values else "n/a"
            if len(values) > 1:
                row[f"{column} spread"] = max(values) - min(values)
        rows.append(row)
    shown = ["variant"] + [c for column in columns for c in (column, f"{column} spread") if c in rows[0]]
    return Table(f"Mechanisms toggled one at a time ({args.steps} steps, seeds {', '.join(map(str, seeds))})",
                 shown, rows, notes=[
                     f"Each run: {args.config} with every mechanism on (RBF attention, infomax, lateral inhibition, "
                     "Wiener-SNR, Hebbian seed) except the one named; means over the seeds, spread = max - min.",
                     f"Answers: greedy, up to {args.new_tokens} tokens, to the {n_prompts} held-out instructions. "
                     "Seed for comparison: loss ~5.85 (perplexity ~348), answers like \"is is define is is\"."])


__all__ = ["VARIANTS", "answer_scores", "held_out_prompts", "one_word_answer", "run"]
