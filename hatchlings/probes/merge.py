"""`hatchlings probe bdh merge`: does merging two BDH models by concatenating their neurons work?

Two parents fine-tuned from one model on different texts (or given), merged by `merge_bdh`
(hatchlings/modeling/merge_bdh.py), compared with each parent and with plain weight averaging on both texts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..reports import Table
from ..modeling.merge_bdh import average_bdh, merge_bdh


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("merge")
    group.add_argument("--other", default=None, help="second parent (a BDH folder); without it both parents are "
                       "fine-tuned from MODEL, one on --file and one on --other_file")
    group.add_argument("--other_file", default=None, help="the second parent's text")
    group.add_argument("--steps", type=int, default=100, help="fine-tuning steps per parent (without --other); hran collapse: training steps per run")
    group.add_argument("--learning_rate", type=float, default=1e-3, help="fine-tuning learning rate")


def _fine_tune(base, split: tuple, args, label: str):
    """A copy of `base` trained `args.steps` steps on a (train, validation, bytes/token) split with the arena's
    loop (the same batches for a given seed)."""
    import copy

    from ..bench.arena import Settings, train

    model = copy.deepcopy(base).train()
    settings = Settings(budget_tokens=args.steps * args.batch_size * args.block_size, batch_size=args.batch_size,
                        block_size=args.block_size, learning_rate=args.learning_rate, eval_points=1,
                        seed=args.seed)
    train_ids, val_ids, bytes_per_token = split
    train(model, train_ids, val_ids, settings, bytes_per_token, label)
    return model.eval()


def _parents(args, base, tokenizer, splits: dict[str, tuple], output: Path):
    """The two parents: MODEL and --other, or MODEL fine-tuned on each text (saved under output)."""
    from .common import load_model

    if args.other:
        return base, load_model(args.other, "hatchlings_bdh", role="--other")[0], "given"
    parents = []
    for (name, split), tag in zip(splits.items(), ("a", "b")):
        parent = _fine_tune(base, split, args, f"parent {tag} ({name})")
        parent.save_pretrained(output / f"parent-{tag}")
        tokenizer.save_pretrained(output / f"parent-{tag}")
        parents.append(parent)
    return *parents, f"fine-tuned from MODEL for {args.steps} steps each (saved in {output}/parent-a, parent-b)"


def run(args) -> tuple[list[Table], object]:
    """Loss of each parent, the neuron-concatenated merge and the weight average on both texts."""
    from ..bench.arena import load_split, mean_loss
    from ..metrics.lm_perplexity.lm_perplexity import lm_metrics
    from ..errors import UsageError
    from .common import load_model

    if not args.file or not args.other_file:
        raise UsageError("probe merge needs two texts: --file (first parent's) and --other_file (second's)")
    base, tokenizer = load_model(args.model, "hatchlings_bdh")
    splits = {Path(f).name: load_split(f) for f in (args.file, args.other_file)}  # name -> (train, val, bytes/token)
    output = Path(args.output_dir) if args.output_dir else Path(args.model) / "probes"
    a, b, origin = _parents(args, base, tokenizer, splits, output)
    try:
        models = {"parent a": a, "parent b": b, "merged (neurons concatenated)": merge_bdh(a, b),
                  "averaged weights": average_bdh(a, b)}
    except ValueError as err:
        raise UsageError(str(err)) from None
    rows = []
    for label, model in models.items():
        row = {"model": label, "params": f"{model.num_parameters():,}"}
        for name, (_, val, bytes_per_token) in splits.items():
            n = min(len(val), args.max_tokens) // args.block_size * args.block_size
            loss = mean_loss(model, val[:n].view(-1, args.block_size), args.batch_size)
            row[f"bits/byte on {name}"] = lm_metrics(loss, bytes_per_token)["bits_per_byte"]
        rows.append(row)
    table = Table("Merging two BDH parents", list(rows[0]), rows, notes=[
        f"parents: {origin}; parent a's text is {args.file}, parent b's {args.other_file}",
        "validation: the last 10% of each text, disjoint blocks of --block_size (at most --max_tokens tokens)",
        "merged: each head's neurons of a then b (encoder, encoder_v, decoder concatenated; embedding and LM head "
        "averaged), no training after the merge; averaged: every weight the mean of the parents'"])
    return [table], _figure(rows, list(splits))


def _figure(rows: list[dict], texts: list[str]):
    from ..plotting import new_figure

    fig, axes = new_figure(size=(8, 4.5))
    ax = axes[0, 0]
    width = 0.8 / len(texts)
    for i, name in enumerate(texts):
        ax.bar([k + i * width for k in range(len(rows))], [r[f"bits/byte on {name}"] for r in rows], width,
               label=name)
    ax.set_xticks([k + width * (len(texts) - 1) / 2 for k in range(len(rows))], [r["model"] for r in rows],
                  fontsize=8)
    ax.set(ylabel="validation bits per byte", title="BDH merge: parents, concatenated neurons, averaged weights")
    ax.legend()
    fig.tight_layout()
    return fig
