"""`hatchlings probe hybrid ablate|shuffle|segments|controller|gates`: the seed's analyses on a trained Hybrid.

Seed 002 reports validation cross-entropy for its 107M word-level model under interventions made at
evaluation time only (the weights never change). Each probe here makes the same intervention on one of our
exports and scores a text with `hatchlings eval`'s sliding window, the seed's number beside ours:

- ablate: a path's mixer weight is set to zero in every block and the remaining weights are renormalized
  (each single path, each pair, all three);
- shuffle: one path's output is permuted across the positions of each window (the same permutation in every
  block), destroying where its information sits while keeping what it is;
- segments: the block stack runs 1, 2 or 3 times (the controller's bias carried from one to the next);
- controller: its bias as computed, permuted across positions, replaced by Gaussian noise of the same mean and
  spread, or zero (no controller: segment 2 then repeats segment 1 exactly);
- gates: the mean mixer weight of each path per layer and segment (training logs the last segment's as the
  `gate_<path>` series).

Interventions are forward hooks on the loaded model, so the probed code is the exported modeling file itself.
Cross-entropies of different data, tokenizers and sizes are not comparable with the seed's in level; the
probe compares patterns: the change from the full model, and the order of the rows.
"""

from __future__ import annotations

import contextlib
import itertools

import torch

from ..errors import UsageError
from ..reports import Table

# seed 002, "Table 2 - Probe Results" (validation CE, WikiText-103 word level, ~107M parameters, 2 segments)
SEED_BASELINE = 3.6043
SEED_PATHS = {("ssm",): 9.8124, ("hopfield",): 7.7175, ("attention",): 9.1533, ("ssm", "hopfield"): 5.4290,
              ("ssm", "attention"): 9.5113, ("hopfield", "attention"): 7.4022}
SEED_SHUFFLE = {None: 3.59, "attention": 4.35, "ssm": 6.00, "hopfield": 8.01}  # its shuffle table
SEED_SEGMENTS = {1: 3.8902, 2: 3.6136, 3: 3.6043}
SEED_CONTROLLER = {"normal": 3.6043, "shuffled": 3.7270, "random": 4.1094, "none": 3.8902}
CONTROLLER_MODES = tuple(SEED_CONTROLLER)


def load_hybrid(folder):
    """Model (eval mode) and tokenizer of a Hybrid export with at least two paths; others are refused."""
    from ..training.export import load_model_folder

    model, tokenizer = load_model_folder(folder)
    if model.config.model_type != "hatchlings_hybrid":
        raise UsageError(f"model {folder} is a {model.config.model_type!r} model; this probe needs 'hatchlings_hybrid'")
    if len(model.config.enabled_paths) < 2:
        raise UsageError(f"model {folder} has one path ({model.config.enabled_paths[0]}): no mixer to probe")
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------- interventions

@contextlib.contextmanager
def _hooked(modules, hook):
    """`hook` as a forward hook on every module of `modules` for the duration of the block."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def keep_paths(model, kept: tuple[str, ...]):
    """Zero the mixer weight of every path not in `kept` and renormalize the rest, in every block."""
    mask = torch.tensor([p in kept for p in model.config.enabled_paths], dtype=torch.float32)  # (P,)

    def hook(module, inputs, weights):  # weights (B, T, P)
        kept_weights = weights * mask.to(weights)
        return kept_weights / kept_weights.sum(-1, keepdim=True)

    return _hooked([block.mixer for block in model.model.layers], hook)


def shuffle_path(model, path: str, seed: int):
    """Permute `path`'s output across positions: one permutation per window length, shared by every block."""
    permutations: dict[int, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)

    def hook(module, inputs, out):  # out (B, T, D)
        T = out.shape[1]
        if T not in permutations:
            permutations[T] = torch.randperm(T, generator=generator)
        return out[:, permutations[T].to(out.device)]

    return _hooked([getattr(block, path) for block in model.model.layers], hook)


@contextlib.contextmanager
def set_segments(model, n: int):
    """Run the block stack `n` times (the config's n_segments, read by every forward) for the block."""
    saved = model.config.n_segments
    model.config.n_segments = n
    try:
        yield
    finally:
        model.config.n_segments = saved


def replace_bias(model, mode: str, seed: int):
    """The controller's bias (B, T, L, P) as computed ("normal"), permuted across positions ("shuffled"),
    Gaussian with its mean and standard deviation ("random"), or zero ("none")."""
    if mode not in CONTROLLER_MODES:
        raise ValueError(f"controller mode must be one of {CONTROLLER_MODES}, got {mode!r}")
    generator = torch.Generator().manual_seed(seed)

    def hook(module, inputs, bias):
        if mode == "shuffled":
            return bias[:, torch.randperm(bias.shape[1], generator=generator).to(bias.device)]
        if mode == "random":
            noise = torch.randn(bias.shape, generator=generator).to(bias)
            return bias.mean() + bias.std() * noise
        return torch.zeros_like(bias) if mode == "none" else bias

    return _hooked([model.model.controller], hook)


# ---------------------------------------------------------------------------------------------- measuring

def _score(model, tokenizer, args) -> dict:
    from ..data_sources import default_file
    from ..evaluation import evaluate_file

    file = default_file("tinyshakespeare") if args.file is None else args.file
    return evaluate_file(model, file, block_size=args.block_size, batch_size=args.batch_size,
                         max_tokens=args.max_tokens, tokenizer=tokenizer)


def _table(model, tokenizer, args, title: str, rows: list[tuple[str, object, float | None]]) -> Table:
    """Score the text under each (label, intervention context, seed CE); the first row is the reference."""
    measured = []
    for label, context, seed_ce in rows:
        with context:
            measured.append((label, _score(model, tokenizer, args), seed_ce))
    ref, seed_ref = measured[0][1]["loss"], rows[0][2]
    out = [{"configuration": label, "val CE": r["loss"], "CE - reference": r["loss"] - ref,
            "perplexity": r["perplexity"], "bits/byte": r["bits_per_byte"],
            "seed CE": "" if seed_ce is None else seed_ce,
            "seed CE - reference": "" if seed_ce is None or seed_ref is None else seed_ce - seed_ref}
           for label, r, seed_ce in measured]
    first = measured[0][1]
    notes = [f"Scored: {first['file']}, {first['tokens']:,} tokens in windows of {first['block_size']} advancing "
             f"{first['stride']} (`hatchlings eval`); CE in nats per token, reference = first row.",
             "Seed: seed 002's Table 2 (WikiText-103 word level, ~107M parameters); only the differences and the "
             "order of the rows compare across models.", _order_note(out)]
    return Table(title, list(out[0]), out, notes)


def _order_note(rows: list[dict]) -> str:
    """Whether our rows rank like the seed's (worst first), with the pairs that swap."""
    seeded = [r for r in rows if r["seed CE"] != ""]
    ours = [r["configuration"] for r in sorted(seeded, key=lambda r: -r["val CE"])]
    seed = [r["configuration"] for r in sorted(seeded, key=lambda r: -r["seed CE"])]
    swapped = [f"{a} / {b}" for a, b in itertools.combinations(seed, 2) if ours.index(a) > ours.index(b)]
    return (f"Order, worst first: ours {' > '.join(ours)}; seed {' > '.join(seed)}; "
            + (f"pairs ordered differently: {', '.join(swapped)}." if swapped else "the same order."))


def _label(paths) -> str:
    return " + ".join(paths)


# ------------------------------------------------------------------------------------------------ probes

def ablate(args):
    """Every non-empty subset of the enabled paths, the full model first."""
    model, tokenizer = load_hybrid(args.model)
    paths = tuple(model.config.enabled_paths)
    subsets = [s for k in range(len(paths) - 1, 0, -1) for s in itertools.combinations(paths, k)]
    rows = [(f"all ({_label(paths)})", contextlib.nullcontext(), SEED_BASELINE if len(paths) == 3 else None)]
    rows += [(f"only {_label(s)}", keep_paths(model, s), SEED_PATHS.get(s) if len(paths) == 3 else None)
             for s in subsets]
    return [_table(model, tokenizer, args, "Path ablations (mixer weight zeroed, the rest renormalized)", rows)], None


def shuffle(args):
    """Each path's output permuted across positions, after the unshuffled model."""
    model, tokenizer = load_hybrid(args.model)
    rows = [("no shuffle", contextlib.nullcontext(), SEED_SHUFFLE[None])]
    rows += [(f"shuffle {p}", shuffle_path(model, p, args.seed), SEED_SHUFFLE[p]) for p in model.config.enabled_paths]
    return [_table(model, tokenizer, args, "Shuffle probes (one path's output permuted across positions)", rows)], None


def segments(args):
    """The trained number of segments first, then 1, 2, 3."""
    model, tokenizer = load_hybrid(args.model)
    trained = model.config.n_segments
    rows = [(f"{trained} (trained)", contextlib.nullcontext(), SEED_SEGMENTS.get(trained))]
    rows += [(str(n), set_segments(model, n), SEED_SEGMENTS[n]) for n in SEED_SEGMENTS if n != trained]
    return [_table(model, tokenizer, args, "Segments (passes of the block stack)", rows)], None


def controller(args):
    """The controller's bias as computed, shuffled, random and absent."""
    model, tokenizer = load_hybrid(args.model)
    if model.model.controller is None:
        raise UsageError(f"model {args.model} has no controller (n_segments = {model.config.n_segments})")
    rows = [(mode, replace_bias(model, mode, args.seed), SEED_CONTROLLER[mode]) for mode in CONTROLLER_MODES]
    return [_table(model, tokenizer, args, "Controller bias (segment 2's mixer logits)", rows)], None


def mean_gates(model, tokenizer, args) -> tuple[torch.Tensor, dict]:
    """(S, L, P) mean mixer weight per segment, layer and path over every scored window, and the score."""
    calls: list[torch.Tensor] = []  # per mixer call, in call order (segment-major): (P,) summed weights

    def hook(module, inputs, weights):  # (B, T, P)
        calls.append(weights.float().mean((0, 1)).cpu())

    with _hooked([block.mixer for block in model.model.layers], hook):
        score = _score(model, tokenizer, args)
    S, L = model.config.n_segments, model.config.num_hidden_layers
    per_call = torch.stack(calls).view(-1, S, L, len(model.config.enabled_paths))  # (forward calls, S, L, P)
    return per_call.mean(0), score


def gates(args):
    """Mean mixer weight per path, per layer and segment; a heat map of the last segment."""
    from ..plotting import new_figure

    model, tokenizer = load_hybrid(args.model)
    paths = model.config.enabled_paths
    means, score = mean_gates(model, tokenizer, args)
    rows = [{"segment": s + 1, "layer": layer, **{p: float(means[s, layer, i]) for i, p in enumerate(paths)}}
            for s in range(means.shape[0]) for layer in range(means.shape[1])]
    table = Table("Mean mixer weight per path", ["segment", "layer", *paths], rows, [
        f"Over {score['tokens']:,} tokens of {score['file']} (windows of {score['block_size']}); each forward "
        "call weighs the same. The seed publishes no gate values; it reads Hopfield as position-sensitive and "
        "attention as content-sensitive from its shuffle table."])
    fig, axes = new_figure(1, size=(6, 4.5))
    ax = axes[0, 0]
    image = ax.imshow(means[-1].numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set(title="Mean mixer weight, last segment", xlabel="path", ylabel="layer",
           xticks=range(len(paths)), xticklabels=paths, yticks=range(means.shape[1]))
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return [table], fig


__all__ = ["ablate", "controller", "gates", "keep_paths", "load_hybrid", "mean_gates", "replace_bias", "segments",
           "set_segments", "shuffle", "shuffle_path"]
