"""`hatchlings probe hrm quality`: how good the text each HRM depth mode writes is, next to other models.

Every mode continues the same prompts with the same sampling seed (prompt i uses --seed + i), and so does
every export given with --compare (a GPT-2 or BDH folder, any causal LM with its tokenizer). Each
continuation is cut to --new_chars characters, so models whose tokens cover more text (BPE) are scored on as
much text as a char- or byte-level one. The scores (hatchlings.probes.text_quality) are word formation
against the vocabulary of --train_file, distinct-1/2 and the repetition rate (rep-3); see that module for
their exact definitions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from ..reports import Table
from . import hrm_depth, text_quality
from .common import table_text

DEFAULT_PROMPTS = ("ROMEO:\n", "First Citizen:\nWe are ", "The king is ", "What light ", "O, my lord, ")
METRICS = ("word_formation", "distinct_1", "distinct_2", "repetition")
SHOWN_CHARS = 80  # of each sample in the samples table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import _JoinRepeated  # the package's: a repeated flag joins into one comma-separated string

    group = parser.add_argument_group("hrm quality")
    group.add_argument("--prompts_file", "--prompts-file", default=None,
                       help="one prompt per line, `\\n` for a newline inside one (default: five Shakespeare "
                            "openings)")
    group.add_argument("--train_file", "--train-file", default=None,
                       help="the model's training text: word formation counts words found in its vocabulary; "
                            "hran collapse: the instruction data (default: the preset's)")
    group.add_argument("--compare", default=None, action=_JoinRepeated,
                       help="other exports (GPT-2, BDH, ...) scored on the same prompts (repeat the flag or "
                            "separate folders with commas)")
    group.add_argument("--new_chars", type=int, default=200, help="characters generated and scored per prompt")
    group.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)")


def load_prompts(file: str | None) -> list[str]:
    """The prompts of --prompts_file (non-empty lines, literal `\\n` turned into a newline), or the defaults."""
    if file is None:
        return list(DEFAULT_PROMPTS)
    from ..evaluation import read_text

    prompts = [line.replace("\\n", "\n") for line in read_text(file).splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"{file} holds no prompt (one per line)")
    return prompts


def continuations(model, tokenizer, prompts: list[str], args, **generate_kwargs) -> list[str]:
    """One sampled continuation per prompt (seed --seed + i), cut to --new_chars characters."""
    from ..generation import generate_text

    return [generate_text(model, tokenizer, prompt, max_new_tokens=args.new_chars, temperature=args.temperature,
                          top_k=0, seed=args.seed + i, **generate_kwargs)[:args.new_chars]
            for i, prompt in enumerate(prompts)]


def _compared(value: str | None) -> list[str]:
    """--compare as a list of folders (repeated flags are joined with commas)."""
    return [folder.strip() for folder in (value or "").split(",") if folder.strip()]


def generate_all(args, prompts: list[str]) -> dict[str, list[str]]:
    """label -> continuations: "hrm <mode>" for each mode, then "<model_type> (<folder>)" per --compare."""
    from ..training.export import load_model_folder

    model, tokenizer = hrm_depth.load_hrm(args.model)
    texts = {f"hrm {mode}": continuations(model, tokenizer, prompts, args, hrm_mode=mode)
             for mode in hrm_depth.selected_modes(model.config, args.modes)}
    for folder in _compared(args.compare):
        other, other_tokenizer = load_model_folder(folder)
        texts[f"{other.config.model_type} ({folder})"] = continuations(other.eval(), other_tokenizer, prompts, args)
    return texts


def _show(value):
    return "n/a" if value is None else value


def score_table(texts: dict[str, list[str]], known: set[str], args) -> Table:
    rows = []
    for label, samples in texts.items():
        scores = text_quality.score(samples, known)
        rows.append({"model": label, "samples": scores["samples"], "words": scores["words"],
                     **{name: _show(scores[name]) for name in METRICS}})
    return Table("Generated text per depth mode and compared model", ["model", "samples", "words", *METRICS], rows,
                 [f"{len(next(iter(texts.values())))} prompts, sampled at temperature {args.temperature} with seed "
                  f"--seed + prompt index, each continuation cut to {args.new_chars} characters.",
                  f"word_formation: share of generated word occurrences in the vocabulary of {args.train_file} "
                  f"({len(known):,} words); a word cut by the length budget is not counted.",
                  "distinct_n: distinct word n-grams / all, pooled over the samples; repetition: share of word "
                  "3-grams repeating an earlier one of the same sample (rep-3). n/a: too few words to measure."])


def sample_table(texts: dict[str, list[str]], prompts: list[str]) -> Table:
    rows = [{"model": label, "prompt": table_text(prompt, SHOWN_CHARS), "continuation": table_text(sample, SHOWN_CHARS)}
            for label, samples in texts.items() for prompt, sample in zip(prompts, samples)]
    return Table(f"Samples (first {SHOWN_CHARS} characters)", ["model", "prompt", "continuation"], rows)


def _figure(table: Table):
    """One bar panel per metric, one bar per mode or compared model."""
    from ..plotting import new_figure

    fig, axes = new_figure(len(METRICS), size=(4.0, 4.0))
    labels = [row["model"] for row in table.rows]
    for ax, name in zip(axes[0], METRICS):
        values = [row[name] if isinstance(row[name], float) else 0.0 for row in table.rows]
        ax.bar(range(len(labels)), values, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), [label.split(" (")[0] for label in labels], rotation=45, ha="right")
        ax.set(title=name, ylim=(0, 1))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def run(args):
    """Generate and score; returns (tables, figure)."""
    from ..evaluation import read_text

    if args.train_file is None:
        raise UsageError("--train_file is required: word formation counts the words found in the training text")
    if args.new_chars < 1 or args.temperature < 0:
        raise UsageError("--new_chars must be at least 1 and --temperature at least 0")
    known = text_quality.vocabulary(read_text(args.train_file))
    prompts = load_prompts(args.prompts_file)
    texts = generate_all(args, prompts)
    scores = score_table(texts, known, args)
    scores.notes.append("Prompts: " + "; ".join(repr(p) for p in prompts) + f"; training text: {Path(args.train_file)}")
    return [scores, sample_table(texts, prompts)], _figure(scores)
