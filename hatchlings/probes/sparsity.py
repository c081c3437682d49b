"""`hatchlings probe bdh sparsity`: how many of BDH's neurons are active (non-zero) per token.

BDH's claim is sparse positive activations: after the ReLUs only a few percent of the neurons of x_sparse
(encoder) and y (attention readout) are non-zero. The mean alone hides whether every token uses a few
neurons or a few tokens use many, so the per-token distribution is reported too (percentiles, histogram),
plus the mean per byte class and the neurons that never fire. Activations come from the reference
equations (hatchlings.reference.bdh); the model's own `output_sparsity` statistic is measured on the
same blocks as a cross-check that both count the same thing.
"""

from __future__ import annotations

import numpy as np
import torch

from ..reference.bdh import model_weights, reference_bdh
from ..reports import Table
from ..plotting import new_figure
from . import common

KINDS = ("x_sparse", "y")


def measure(model, corpus: common.Corpus, block_size: int, max_tokens: int, batch_size: int) -> dict:
    """Per-token active fractions and more, from the reference equations on evenly spread blocks.

    Returns active (L, 2, P) per-token active fraction (kind 0 x_sparse, 1 y) over the P probed positions,
    positions (P,), ever_active (L, 2, H*N) bool, and model_active (L, 2): 1 - output_sparsity.
    """
    cfg, weights = model.config, model_weights(model)
    starts = common.block_starts(len(corpus.ids), block_size, max_tokens)
    active, positions, ever, model_zero = [], [], None, 0.0
    with torch.no_grad():
        for ids, pos in common.batches(corpus.ids, starts, block_size, batch_size):
            _, neurons = reference_bdh(ids, weights, cfg)  # per layer (x_sparse, y), each (B, H, T, N)
            fired = torch.stack([torch.stack(pair) > 0 for pair in neurons])  # (L, 2, B, H, T, N)
            active.append(fired.float().mean(dim=(3, 5)).flatten(2))  # (L, 2, B*T)
            fired_any = fired.any(dim=(2, 4)).flatten(2)  # (L, 2, H*N)
            ever = fired_any if ever is None else ever | fired_any
            sparsity = model(ids, use_cache=False, output_sparsity=True).sparsity  # (L, 2) zero fractions
            model_zero = model_zero + sparsity.double() * ids.numel()
            positions.append(pos)
    n = sum(len(p) for p in positions)
    return {"active": torch.cat(active, dim=2).numpy(), "positions": torch.cat(positions).numpy(),
            "ever_active": ever.numpy(), "model_active": (1 - model_zero / n).numpy(), "blocks": len(starts)}


def _layer_table(stats: dict, neurons: int) -> Table:
    """Mean, percentiles and dead neurons per layer and kind, with the model's own statistic beside the mean."""
    rows = []
    for layer, kinds in enumerate(stats["active"]):
        for k, kind in enumerate(KINDS):
            mean = float(kinds[k].mean())
            rows.append({"layer": layer, "neurons": kind, "count": neurons, "active %": 100 * mean,
                         "output_sparsity active %": 100 * float(stats["model_active"][layer, k]),
                         "abs diff": abs(mean - float(stats["model_active"][layer, k])),
                         **{q: 100 * v for q, v in common.percentiles(kinds[k]).items()},
                         "max %": 100 * float(kinds[k].max()),
                         "never active": int((~stats["ever_active"][layer, k]).sum())})
    return Table("Active neurons per token, per layer (percent of the layer's neurons)",
                 ["layer", "neurons", "count", "active %", "output_sparsity active %", "abs diff", "p1", "p10",
                  "p50", "p90", "p99", "max %", "never active"], rows,
                 ["active %: mean over tokens of the share of non-zero neurons, from the reference equations; "
                  "output_sparsity active %: 1 - the model's own zero fraction on the same blocks (cross-check).",
                  "p1..p99: percentiles of the per-token active share; never active: neurons zero on every probed "
                  "token. The first token of each block reads an empty state, so all its y neurons are zero.",
                  "BDH shares one block of weights across layers, so neuron n is the same encoder column in "
                  "every layer; it is counted per layer because its input differs."])


def _class_table(stats: dict, classes: np.ndarray) -> Table:
    """Mean active share per byte class of the current byte, per layer and kind."""
    present = [c for c in range(len(common.BYTE_CLASSES)) if (classes == c).any()]
    share = {common.BYTE_CLASSES[c]: 100 * float((classes == c).mean()) for c in present}
    rows = [{"layer": "share of tokens %", **share}]
    for layer, kinds in enumerate(stats["active"]):
        for k, kind in enumerate(KINDS):
            rows.append({"layer": f"{layer} {kind}",
                         **{common.BYTE_CLASSES[c]: 100 * float(kinds[k][classes == c].mean()) for c in present}})
    return Table("Active neurons % by class of the current byte", ["layer"] + list(share), rows,
                 ["First row: how many probed tokens fall in each class; other rows: mean active share of "
                  "tokens of that class."])


def _figure(stats: dict):
    """Histograms of the per-token active share, one line per layer, for x_sparse and y."""
    fig, axes = new_figure(len(KINDS))
    for k, kind in enumerate(KINDS):
        ax = axes[0, k]
        values = 100 * stats["active"][:, k]  # (L, P)
        bins = np.linspace(0, max(float(values.max()), 1e-3), 50)
        for layer, row in enumerate(values):
            ax.hist(row, bins=bins, histtype="step", linewidth=1.3, label=f"layer {layer}")
        ax.set_xlabel("active neurons per token (%)")
        ax.set_ylabel("tokens")
        ax.set_title(f"{kind}: share of non-zero neurons")
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def run(args):
    """Measure and tabulate; returns (tables, figure)."""
    model, _ = common.load_model(args.model, "hatchlings_bdh")
    corpus = common.load_corpus(args.file)
    stats = measure(model, corpus, args.block_size, args.max_tokens, args.batch_size)
    cfg = model.config
    layer_table = _layer_table(stats, cfg.num_attention_heads * cfg.neurons_per_head)
    layer_table.notes.insert(0, f"Text: {corpus.name}; {stats['blocks']} blocks of {args.block_size} tokens "
                                f"({len(stats['positions']):,} tokens) spread evenly over {len(corpus.ids):,}.")
    classes = common.byte_classes(corpus.data)[stats["positions"]]
    return [layer_table, _class_table(stats, classes)], _figure(stats)
