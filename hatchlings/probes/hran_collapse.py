"""`hatchlings probe hran collapse RUNS_DIR`: which of HRAN's mechanisms could have made the seed collapse.

The seed (a NumPy seq2seq chatbot of ~1M parameters) ended at loss ~5.85 and answered "is is define is is".
This trains HRAN as a chatbot once with every mechanism on (RBF attention, infomax, lateral inhibition,
Wiener-SNR, Hebbian seed: the seed's set) and once per mechanism switched off -- and once with the word
tokenizer, once without pretraining -- at the same budget and for each seed, through train.py itself:

1. pretraining on plain text (`--pretrain_config`, default configs/hran-pretrain.yaml: its model and tokenizer
   sections define the model; `--pretrain_steps`, 0 for none), then
2. instruction tuning (`--config`, default configs/hran-chat.yaml, run with `--init_from` the pretrained
   export; without pretraining it gets the pretraining preset's model and tokenizer sections instead).

Each variant's change is written into copies of the presets. It then answers the held-out tasks'
instructions (the chat run's validation rows: the last fraction of the examples) greedily and scores the
answers (hatchlings.training.answers: distinct-1/2, repetition, one-word and blank answers) next to the
validation loss per answer token, the unigram loss of the same split (the level of a model that learned only
token frequencies: where the seed's loss sat), bits per answer byte, and the share of <|unk|> answer tokens
(without which a word vocabulary's bits per byte cannot be read).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import Counter
from pathlib import Path

import yaml

from ..errors import UsageError
from ..reports import Table
from ..tokenization import ROLE_MARKERS
from ..training.answers import answer_scores
from .common import table_text

# what every run has on: the seed's mechanisms ("model": the architecture, "optimization": train.py's)
ALL_ON = {"model": {"attention": "rbf", "activation": "infomax", "lateral_inhibition": True},
          "optimization": {"wiener_snr": True, "hebbian_seed": True}}
# variant -> its change: "model", "optimization", "tokenizer" entries, or "pretrain": False
VARIANTS = {
    "all on": {},
    "dot-product attention": {"model": {"attention": "dot"}},
    "no Wiener-SNR": {"optimization": {"wiener_snr": False}},
    "no Hebbian seed": {"optimization": {"hebbian_seed": False}},
    "no lateral inhibition": {"model": {"lateral_inhibition": False}},
    "GELU activation": {"model": {"activation": "gelu"}},
    "word tokenizer": {"tokenizer": {"kind": "word"}},
    "no pretraining": {"pretrain": False},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hran collapse (MODEL is where the runs go: they are trained here)")
    group.add_argument("--config", default="configs/hran-chat.yaml", help="the instruction-tuning preset")
    group.add_argument("--pretrain_config", default="configs/hran-pretrain.yaml",
                       help="the pretraining preset (its model and tokenizer sections define the model)")
    group.add_argument("--pretrain_steps", type=int, default=None,
                       help="pretraining steps per run (default: the preset's max_steps; 0: no pretraining)")
    # --train_file (default: the chat preset's) and --steps (instruction-tuning steps) are shared with other probes
    group.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    group.add_argument("--variants", default=None, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    group.add_argument("--new_tokens", type=int, default=60, help="tokens per generated answer")


def answer_tokens(rows) -> list[int]:
    """The scored (answer) tokens of instruction rows, in order."""
    return [label for row in rows for label in row["labels"] if label != -100]


def unigram_loss(train, validation, vocab_size: int) -> float:
    """Cross-entropy (nats per answer token) of the held-out answers under the training answers' token
    frequencies (add-one smoothed): what a model that learned nothing but word frequencies scores. The seed's
    loss sat at this level, and greedy decoding of such a model repeats its most frequent token."""
    counts, held_out = Counter(answer_tokens(train)), answer_tokens(validation)
    total = sum(counts.values()) + vocab_size
    return -sum(math.log((counts[token] + 1) / total) for token in held_out) / len(held_out)


def held_out_answers(folder: Path, data: dict, new_tokens: int) -> tuple[list[str], list[str], dict]:
    """The instructions of the chat run's validation rows (train.py's own split, after any over-long example was
    dropped), the greedy answers of the export in `folder` to them, and the split's unigram loss and share of
    unknown answer tokens (a word vocabulary's <|unk|> stands for every word it lacks, at little cost)."""
    from ..training import DataConfig
    from ..training.answers import generate_answers, instruction_prompts
    from ..training.data import build_datasets
    from ..training.export import load_model_folder

    model, tokenizer = load_model_folder(folder)
    train, validation, _ = build_datasets(DataConfig(**data), tokenizer)
    prompts = instruction_prompts(validation, limit=len(validation))
    _, user, assistant = ROLE_MARKERS
    markup = (tokenizer.bos_token, tokenizer.eos_token, user)  # the user's turn is shown, <|unk|> included
    shown = [tokenizer.decode(ids).split(assistant)[0] for ids in prompts]
    for mark in markup:
        shown = [text.replace(mark, "") for text in shown]
    held_out = answer_tokens(validation)
    split = {"unigram loss": unigram_loss(train, validation, len(tokenizer)),
             "unknown tokens": sum(t == tokenizer.unk_token_id for t in held_out) / len(held_out)}
    return [text.strip() for text in shown], generate_answers(model, tokenizer, prompts, new_tokens), split


def presets(variant: str, chat: dict, pretrain: dict, pretraining: bool) -> tuple[dict | None, dict]:
    """The variant's pretraining preset (None: no pretraining) and instruction-tuning preset.

    The model, tokenizer and Hebbian seed belong to the run that creates the model: pretraining, or without it
    the chat run; Wiener-SNR is an optimizer setting of every run."""
    change = VARIANTS[variant]
    optimization = {**ALL_ON["optimization"], **change.get("optimization", {})}
    creates = {"model": {**pretrain.get("model", {}), **ALL_ON["model"], **change.get("model", {})},
               "tokenizer": {**pretrain.get("tokenizer", {}), **change.get("tokenizer", {})}}
    if not (pretraining and change.get("pretrain", True)):
        return None, {**chat, **creates, "optimization": {**chat.get("optimization", {}), **optimization}}
    return ({**pretrain, **creates, "optimization": {**pretrain.get("optimization", {}), **optimization}},
            {**chat, "optimization": {**chat.get("optimization", {}), "wiener_snr": optimization["wiener_snr"]}})


def _train(preset: dict, argv: list[str], folder: Path) -> dict:
    """One run of train.py on `preset` (written into `folder`) with `argv`; returns its final validation metrics.

    A folder that already holds a finished run of the same preset and flags is reused (`run.json`, written
    last), so an interrupted study continues where it stopped."""
    from ..training import run_training

    argv = ["--config", str(folder / "preset.yaml"), "--output_dir", str(folder), "--eval_strategy", "no", *argv]
    done, run = folder / "run.json", {"preset": preset, "argv": argv}
    finished = json.loads(done.read_text()) if done.is_file() else None
    if finished is not None and finished["run"] == run:
        return finished["metrics"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preset.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    metrics = run_training(argv)
    done.write_text(json.dumps({"run": run, "metrics": metrics}, indent=2))
    return metrics


def _train_variant(stages: tuple[dict | None, dict], seed: int, args, folder: Path) -> dict:
    """Pretrain (if the variant does) into folder/pretrain, then instruction-tune into `folder`."""
    first, chat = stages
    common = ["--seed", str(seed)]
    argv = common + ["--max_steps", str(args.steps), "--logging_steps", str(max(1, args.steps // 4))]
    if first is not None:
        steps = args.pretrain_steps or first["training"]["max_steps"]
        _train(first, common + ["--max_steps", str(steps), "--logging_steps", str(max(1, steps // 4))],
               folder / "pretrain")
        argv += ["--init_from", str(folder / "pretrain")]
    if args.train_file:
        argv += ["--train_file", args.train_file]
    return _train(chat, argv, folder)


def _selected(args) -> tuple[list[str], list[int]]:
    variants = list(VARIANTS) if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if unknown or not variants or not seeds or args.steps < 1 or args.new_tokens < 1 or (args.pretrain_steps or 0) < 0:
        raise UsageError(f"--variants must name some of: {', '.join(VARIANTS)} (unknown: {', '.join(unknown)}); "
                         "--seeds at least one seed; --steps and --new_tokens at least 1; --pretrain_steps >= 0")
    return variants, seeds


def run(args):
    """Train and score every (variant, seed); one row per variant (means over seeds) and the answers."""
    from ..training.config import load_preset

    variants, seeds = _selected(args)
    chat, pretrain = load_preset(args.config), load_preset(args.pretrain_config)
    data = chat.get("data", {})
    train_file = args.train_file or data.get("train_file")
    if not train_file:
        raise UsageError(f"{args.config} names no train_file: give --train_file")
    if chat.get("model"):
        raise UsageError(f"{args.config} has a model section, but the model comes from {args.pretrain_config} "
                         "(the chat runs continue the pretrained export): remove it")
    data = {**data, "train_file": [train_file] if isinstance(train_file, str) else list(train_file)}
    pretraining = args.pretrain_steps != 0
    results, samples = {}, []
    for variant in variants:
        for seed in seeds:
            folder = Path(args.model) / variant.replace(" ", "-") / f"seed{seed}"
            metrics = _train_variant(presets(variant, chat, pretrain, pretraining), seed, args, folder)
            prompts, said, split = held_out_answers(folder, data, args.new_tokens)
            results[variant, seed] = {"val loss": metrics["eval_loss"], "unigram loss": split["unigram loss"],
                                      "val bits/byte": metrics["eval_bits_per_byte"],
                                      "unknown tokens": split["unknown tokens"], **answer_scores(said)}
            samples += [{"variant": variant, "seed": seed, "prompt": table_text(p, 60), "answer": table_text(a, 160)}
                        for p, a in list(zip(prompts, said))[:3]]
    return [_summary(results, variants, seeds, args, len(prompts)),
            Table("Answers (first three held-out prompts, greedy)", ["variant", "seed", "prompt", "answer"],
                  samples)], None


def _summary(results: dict, variants: list[str], seeds: list[int], args, n_prompts: int) -> Table:
    columns = ["val loss", "unigram loss", "val bits/byte", "unknown tokens", "distinct-1", "distinct-2", "repetition",
               "one-word answers", "blank answers"]
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
    budget = (f"{args.pretrain_steps if args.pretrain_steps is not None else 'preset'} pretraining + "
              f"{args.steps} instruction steps")
    return Table(f"Mechanisms toggled one at a time ({budget}, seeds {', '.join(map(str, seeds))})",
                 shown, rows, notes=[
                     f"Each run: {args.pretrain_config} then {args.config}, every mechanism on (RBF attention, "
                     "infomax, lateral inhibition, Wiener-SNR, Hebbian seed) except the change named; means over "
                     "the seeds, spread = max - min.",
                     "val loss: nats per answer token of the held-out tasks (depends on the tokenizer); unigram "
                     "loss: the same answers under the training answers' token frequencies (add-one smoothed), "
                     "the level of a model that learned nothing else; "
                     "val bits/byte: per answer byte, comparable across tokenizers except that the word "
                     "tokenizer's <|unk|> stands for every word it lacks at the price of one token (unknown "
                     "tokens: their share of the held-out answer tokens).",
                     f"Answers: greedy, up to {args.new_tokens} tokens, to the {n_prompts} held-out instructions. "
                     "Seed for comparison: loss ~5.85 (perplexity ~348), answers like \"is is define is is\"."])


__all__ = ["VARIANTS", "held_out_answers", "presets", "run", "unigram_loss", "answer_tokens"]
