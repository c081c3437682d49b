"""`hatchlings probe bdh neurons`: are BDH's neurons monosemantic, and more so than a GPT-2's?

A neuron is selective for a concept when its activation mass sits on that concept's positions more than
the concept's frequency alone explains. Per neuron and concept c:

    score(c) = (mass_share(c) - base_rate(c)) / (1 - base_rate(c))

mass_share(c) is the neuron's positive activation summed over positions of concept c, divided by its
total; base_rate(c) is the share of probed positions that have concept c. A neuron whose activation just
follows how often each concept occurs scores 0; one whose whole mass is on c scores 1. A neuron's score
for a concept family is its best concept of that family. Neurons active on fewer than `--min_support`
positions are not scored, so firing twice on one word does not pass as selectivity.

Families: the class of the current byte, the word it belongs to (most frequent words only) and, in a
play, the current speaker. The same score on a GPT-2's MLP neurons (positive part of the GELU output)
gives the baseline the claim needs: "monosemantic" only means something relative to another model.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from ..reference.bdh import model_weights, reference_bdh
from ..reports import Table
from ..plotting import new_figure
from ..errors import UsageError
from . import common

CONTEXTS_SHOWN = 3
CONTEXT_CANDIDATES = 16  # largest activations kept per neuron, to find CONTEXTS_SHOWN that do not overlap
CONTEXT_GAP = 24  # bytes between two contexts shown (neighbouring bytes of one word would repeat a context)


class ConceptMass:
    """Per-neuron statistics accumulated over batches of positions: activation mass per concept, total mass,
    positions where the neuron is active (its support) and the positions of its largest activations."""

    def __init__(self, n_concepts: int, n_neurons: int, keep: int = CONTEXT_CANDIDATES):
        self.mass = torch.zeros(n_concepts, n_neurons)  # (C, M)
        self.total = torch.zeros(n_neurons)  # (M,)
        self.support = torch.zeros(n_neurons, dtype=torch.long)  # (M,)
        self.concept_positions = torch.zeros(n_concepts)  # (C,) probed positions having each concept
        self.positions = 0
        self.top_value = torch.full((keep, n_neurons), -float("inf"))  # (keep, M), largest first
        self.top_position = torch.zeros(keep, n_neurons, dtype=torch.long)

    def update(self, act: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> None:
        """act: (P, M) activations, only the positive part counts; labels: (F, P) concept per family or -1;
        positions: (P,) where each row sits in the text."""
        act = act.float().clamp_min(0)
        self.total += act.sum(0)
        self.support += (act > 0).sum(0)
        for family_labels in labels:
            has = family_labels >= 0
            self.mass.index_add_(0, family_labels[has], act[has])
            self.concept_positions += torch.bincount(family_labels[has], minlength=len(self.concept_positions))
        self.positions += act.shape[0]
        values, rows = act.topk(min(len(self.top_value), act.shape[0]), dim=0)  # (k, M)
        values, candidates = torch.cat([self.top_value, values]), torch.cat([self.top_position, positions[rows]])
        self.top_value, order = values.topk(len(self.top_value), dim=0)
        self.top_position = candidates.gather(0, order)

    def contexts(self, neuron: int) -> list[int]:
        """Up to CONTEXTS_SHOWN positions of the neuron's largest activations, CONTEXT_GAP bytes apart."""
        chosen: list[int] = []
        for position, value in zip(self.top_position[:, neuron].tolist(), self.top_value[:, neuron].tolist()):
            if value > 0 and len(chosen) < CONTEXTS_SHOWN and all(abs(position - c) >= CONTEXT_GAP for c in chosen):
                chosen.append(position)
        return chosen

    def base_rate(self) -> torch.Tensor:
        """(C,) share of probed positions that have each concept."""
        return self.concept_positions / max(self.positions, 1)


def selectivity(mass: torch.Tensor, total: torch.Tensor, base_rate: torch.Tensor) -> torch.Tensor:
    """Score of every neuron for every concept: (C, M) mass, (M,) total, (C,) base rate -> (C, M).

    0 when the neuron's mass is spread like the concepts' frequencies, 1 when all of it is on the concept;
    negative when the concept gets less than its share. A concept on every position (base rate 1) scores 0.
    """
    share = mass / total.clamp_min(torch.finfo(total.dtype).tiny)  # (C, M)
    base = base_rate[:, None]  # (C, 1)
    return torch.where(base < 1, (share - base) / (1 - base).clamp_min(1e-12), torch.zeros_like(share))


def family_scores(acc: ConceptMass, concepts: common.Concepts,
                  min_support: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per family: the best score of each neuron over the family's concepts (NaN below min_support) and
    the global index of that concept. Both (M,)."""
    scores = selectivity(acc.mass, acc.total, acc.base_rate())  # (C, M)
    families = np.array(concepts.families)
    result = {}
    for family in concepts.labels:
        index = torch.from_numpy(np.flatnonzero(families == family))  # this family's concepts
        best, which = scores[index].max(dim=0)  # (M,), (M,)
        result[family] = (best.masked_fill(acc.support < min_support, float("nan")), index[which])
    return result


def bdh_activations(model):
    """A function ids (B, T) -> {"x_sparse": (B*T, L*H*N), "y": ...}, from the reference equations."""
    weights, cfg = model_weights(model), model.config

    def activations(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        _, neurons = reference_bdh(ids, weights, cfg)  # per layer (x_sparse, y), each (B, H, T, N)
        return {kind: torch.stack([pair[k] for pair in neurons], dim=2)  # (B, H, L, T, N)
                .permute(0, 3, 2, 1, 4).flatten(0, 1).flatten(1)  # (B*T, L*H*N), neuron index (l, h, n)
                for k, kind in enumerate(("x_sparse", "y"))}
    return activations


def gpt2_activations(model):
    """A function ids (B, T) -> {"GPT-2 MLP": (B*T, L*I)}: each block's MLP activation (GELU output)."""
    def activations(ids: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = []
        hooks = [block.mlp.act.register_forward_hook(lambda _mod, _inp, out: outputs.append(out))
                 for block in model.transformer.h]
        try:
            model(ids, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
        return {"GPT-2 MLP": torch.stack(outputs, dim=2).flatten(0, 1).flatten(1)}  # (B, T, L, I) -> (B*T, L*I)
    return activations


def scan(activations, corpus: common.Corpus, concepts: common.Concepts, starts: np.ndarray,
         block_size: int, batch_size: int) -> dict[str, ConceptMass]:
    """Run `activations` over the blocks and accumulate ConceptMass per kind of neuron."""
    labels = torch.from_numpy(np.stack(list(concepts.labels.values())))  # (F, n)
    accs: dict[str, ConceptMass] = {}
    with torch.no_grad():
        for ids, positions in common.batches(corpus.ids, starts, block_size, batch_size):
            for kind, act in activations(ids).items():
                if kind not in accs:
                    accs[kind] = ConceptMass(len(concepts.names), act.shape[1])
                accs[kind].update(act, labels[:, positions], positions)
    return accs


def _neuron_name(index: int, shape: tuple[int, int, int]) -> str:
    """`L2 h1 n305`: layer, head and neuron of BDH neuron `index` (flattened (L, H, N))."""
    layer, head, neuron = np.unravel_index(index, shape)
    return f"L{layer} h{head} n{neuron}"


def _top_table(kind: str, acc: ConceptMass, scores: dict, concepts: common.Concepts, data: bytes,
               top_k: int, shape: tuple[int, ...]) -> Table:
    """The top_k neurons of each family by score, with their concept and strongest contexts."""
    share = acc.mass / acc.total.clamp_min(1e-30)  # (C, M)
    base = acc.base_rate()
    rows = []
    for family, (best, concept) in scores.items():
        ranked = torch.nan_to_num(best, nan=-float("inf"))
        for m in ranked.topk(min(top_k, int((~best.isnan()).sum()))).indices.tolist():
            c = int(concept[m])
            contexts = [common.snippet(data, p) for p in acc.contexts(m)]
            rows.append({"neuron": _neuron_name(m, shape), "family": family, "concept": repr(concepts.names[c]),
                         "score": float(best[m]), "mass on concept %": 100 * float(share[c, m]),
                         "base rate %": 100 * float(base[c]), "active positions": int(acc.support[m]),
                         "strongest contexts": " · ".join(contexts)})
    return Table(f"Most selective {kind} neurons (top {top_k} per concept family)",
                 ["neuron", "family", "concept", "score", "mass on concept %", "base rate %", "active positions",
                  "strongest contexts"], rows,
                 ["Contexts: the positions of the neuron's largest activations over all probed text, the "
                  "activating byte in «» (⏎ = newline)."])


def _summary_table(results: dict, concepts: common.Concepts, threshold: float, min_support: int) -> Table:
    """Per kind of neuron and family: how many neurons were scored, how many are selective and for what."""
    rows = []
    for kind, (_, scores) in results.items():
        for family, (best, concept) in scores.items():
            scored, selective = best[~best.isnan()], best > threshold  # NaN compares False
            common_concepts = Counter(concepts.names[c] for c in concept[selective].tolist()).most_common(3)
            rows.append({"neurons": kind, "family": family, "count": len(best), "scored": len(scored),
                         f"score > {threshold}": int(selective.sum()),
                         "% of scored": 100 * int(selective.sum()) / max(len(scored), 1),
                         "median score": float(scored.median()) if len(scored) else float("nan"),
                         "max score": float(scored.max()) if len(scored) else float("nan"),
                         "selective for (neurons)": ", ".join(f"{name!r} {n}" for name, n in common_concepts)})
    return Table(f"Selective neurons (score > {threshold}) per concept family",
                 ["neurons", "family", "count", "scored", f"score > {threshold}", "% of scored", "median score",
                  "max score", "selective for (neurons)"], rows,
                 ["score = (mass_share(c) - base_rate(c)) / (1 - base_rate(c)), best concept c of the family: 0 when "
                  "a neuron's positive activation mass follows concept frequencies, 1 when it is all on one concept.",
                  f"scored: neurons active on >= {min_support} probed positions (--min_support).",
                  "A broad concept can score 1 too: a neuron silent on every non-letter byte is fully selective for "
                  "'lowercase' (see the base rates in the tables below).",
                  "BDH shares one block of weights across layers; each layer's activation of a neuron is counted "
                  "as its own neuron (as GPT-2's per-layer MLP units are)."])


def _figure(results: dict, families: list[str], threshold: float):
    """Histogram of family scores per kind of neuron, one panel per family."""
    fig, axes = new_figure(len(families))
    bins = np.linspace(-0.2, 1.0, 49)
    for ax, family in zip(axes[0], families):
        for kind, (_, scores) in results.items():
            best = scores[family][0]
            values = best[~best.isnan()].clamp(-0.2, 1.0).numpy()
            if len(values):
                ax.hist(values, bins=bins, histtype="step", density=True, linewidth=1.4, label=kind)
        ax.axvline(threshold, color="gray", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("selectivity score (clipped at -0.2)")
        ax.set_ylabel("density of scored neurons")
        ax.set_title(f"family: {family}")
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _baseline(args):
    """The GPT-2 baseline's activation function, or None; refused when it cannot read the same blocks."""
    if args.baseline is None:
        return None
    gpt2, _ = common.load_model(args.baseline, "gpt2", role="--baseline")
    if gpt2.config.n_positions < args.block_size or gpt2.config.vocab_size < 256:
        raise UsageError(f"--baseline {args.baseline}: context {gpt2.config.n_positions} / vocabulary "
                         f"{gpt2.config.vocab_size} cannot read blocks of {args.block_size} byte tokens")
    return gpt2_activations(gpt2)


def run(args):
    """Score every neuron of the model (and the baseline); returns (tables, figure)."""
    model, _ = common.load_model(args.model, "hatchlings_bdh")
    baseline = _baseline(args)
    corpus = common.load_corpus(args.file)
    concepts = common.concept_labels(corpus.data)
    starts = common.block_starts(len(corpus.ids), args.block_size, args.max_tokens)
    cfg = model.config
    shape = (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.neurons_per_head)  # BDH neuron index (l, h, n)
    accs = scan(bdh_activations(model), corpus, concepts, starts, args.block_size, args.batch_size)
    if baseline is not None:
        accs |= scan(baseline, corpus, concepts, starts, args.block_size, args.batch_size)
    results = {kind: (acc, family_scores(acc, concepts, args.min_support)) for kind, acc in accs.items()}
    summary = _summary_table(results, concepts, args.threshold, args.min_support)
    summary.notes.insert(0, f"Text: {corpus.name}; {len(starts)} blocks of {args.block_size} tokens spread evenly "
                            f"over {len(corpus.ids):,}; families: {', '.join(concepts.labels)}.")
    summary.notes.append(f"Baseline: GPT-2 at {args.baseline}, MLP GELU outputs (positive part as mass)."
                         if baseline is not None else "No --baseline given: no GPT-2 comparison was made.")
    tables = [summary] + [_top_table(kind, results[kind][0], results[kind][1], concepts, corpus.data, args.top_k,
                                     shape) for kind in ("x_sparse", "y")]
    return tables, _figure(results, list(concepts.labels), args.threshold)
