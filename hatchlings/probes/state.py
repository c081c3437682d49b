"""`hatchlings probe bdh state`: what BDH's Hebbian synaptic state holds after a prompt, and whether it
works as a working memory.

BDH carries nothing from token to token except, per layer and head, the state S = sum_s q_s (x) x_s
(N x D; q = RoPE(x_sparse), x the layer input). A later token reads a = q^T S and fires readout neurons
y = ReLU(LN(a) @ encoder_v), so W = S @ encoder_v (N x N) is the neuron-to-neuron synapse matrix the
prompt has written: W[i, j] links input neuron i (as a query) to readout neuron j. The probe shows the
pairs a prompt strengthened most relative to a control prompt of the same length.

Working memory is tested behaviourally: log P(" B" | "A is B. " + filler + "\\nA is") against the same
context without the first sentence, and against a first sentence that binds B to another name. Since S is
BDH's only memory across tokens, any gain is held in, and retrieved from, the synaptic state. Whether a
null result is BDH's or the scale's is told by `--baseline`: transformers trained on the same data and budget
(any causal LM with the byte tokenizer) take the same trials, and keep the first sentence in attention over
the exact past instead of in a fixed-size state.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from ..reference.bdh import model_weights, reference_bdh
from ..reports import Table
from ..modeling.modeling_bdh import STATE
from ..plotting import new_figure
from ..errors import UsageError
from . import common

BOOTSTRAP_RESAMPLES = 2000
CONDITIONS = ("fact", "none", "other")
CONTRASTS = (("fact", "none", "'A is B.' vs no first sentence"),
             ("fact", "other", "'A is B.' vs 'A2 is B.' (another name)"))


def hebbian_states(model, ids: torch.Tensor) -> torch.Tensor:
    """The synaptic state of every layer after reading ids (B, T): (L, B, H, N, D) float32."""
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    return torch.stack([cache.get(layer, STATE) for layer in range(model.config.num_hidden_layers)])


def synapses(states: torch.Tensor, encoder_v: torch.Tensor) -> torch.Tensor:
    """W = S @ encoder_v per layer and head: (L, B, H, N, D) states, (H, D, N) encoder_v -> (L, B, H, N, N)."""
    return torch.einsum("lbhnd,hdm->lbhnm", states, encoder_v.detach().float())


def _passages(corpus: common.Corpus, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint passages of `length` tokens at seeded places in the text: default prompt and control."""
    if len(corpus.ids) < 2 * length:
        raise UsageError(f"the text has {len(corpus.ids)} tokens; two passages of {length} are needed")
    first, second = np.random.default_rng(seed).choice(len(corpus.ids) // length, size=2, replace=False) * length
    return corpus.ids[first:first + length], corpus.ids[second:second + length]


def _prompts(args, corpus: common.Corpus) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and control ids: the given texts, else seeded passages (a default control matches the prompt's
    length, so state norms compare like with like)."""
    prompt, control = (common.byte_ids(text.encode("utf-8")) if text else None for text in (args.prompt, args.control))
    passage, other = _passages(corpus, args.block_size if prompt is None else len(prompt), args.seed)
    return (passage if prompt is None else prompt), (other if control is None else control)


def _pair_table(model, prompt: np.ndarray, w_prompt: torch.Tensor, w_control: torch.Tensor, top: int) -> Table:
    """Per layer, the `top` (head, i, j) whose synapse grew most over the control, with where in the prompt
    neuron i (x_sparse) and neuron j (y) fired most."""
    ids = torch.from_numpy(prompt)[None]  # (1, T)
    with torch.no_grad():
        _, neurons = reference_bdh(ids, model_weights(model), model.config)  # per layer (x_sparse, y): (1, H, T, N)
    data = bytes(prompt.astype(np.uint8))
    rows = []
    for layer, increase in enumerate(w_prompt - w_control):  # (H, N, N)
        n = increase.shape[-1]
        for flat in increase.flatten().topk(top).indices.tolist():
            head, i, j = flat // (n * n), flat // n % n, flat % n
            x_at = int(neurons[layer][0][0, head, :, i].argmax())
            y_at = int(neurons[layer][1][0, head, :, j].argmax())
            rows.append({"layer": layer, "head": head, "i (query)": i, "j (readout)": j,
                         "prompt": float(w_prompt[layer, head, i, j]), "control": float(w_control[layer, head, i, j]),
                         "increase": float(increase[head, i, j]),
                         "i fires most on": common.snippet(data, x_at, 20, 6),
                         "j fires most on": common.snippet(data, y_at, 20, 6)})
    return Table(f"Synapses strengthened most by the prompt (top {top} per layer)",
                 ["layer", "head", "i (query)", "j (readout)", "prompt", "control", "increase", "i fires most on",
                  "j fires most on"], rows,
                 ["W = S @ encoder_v: W[i, j] is how strongly query neuron i drives readout neuron j before the "
                  "LayerNorm that precedes encoder_v (a per-token shift and scale it leaves out).",
                  "q = RoPE(x_sparse) turns neuron pairs (2k, 2k+1) by position, so query neuron i mixes x_sparse "
                  "neurons i and its pair partner; 'fires most on' shows x_sparse neuron i, before RoPE."])


def _norm_table(s_prompt: torch.Tensor, s_control: torch.Tensor, w_prompt: torch.Tensor,
                w_control: torch.Tensor, tokens: tuple[int, int]) -> Table:
    """Frobenius norms per layer (over all heads) of the state and of the synapse matrix."""
    rows = []
    for layer in range(len(s_prompt)):
        change = (w_prompt[layer] - w_control[layer]).norm() / w_control[layer].norm().clamp_min(1e-30)
        rows.append({"layer": layer, "S norm prompt": float(s_prompt[layer].norm()),
                     "S norm control": float(s_control[layer].norm()), "W norm prompt": float(w_prompt[layer].norm()),
                     "W norm control": float(w_control[layer].norm()), "W relative change": float(change)})
    return Table("Hebbian state norms per layer (all heads)",
                 ["layer", "S norm prompt", "S norm control", "W norm prompt", "W norm control", "W relative change"],
                 rows, [f"Prompt {tokens[0]} tokens, control {tokens[1]} tokens; S = sum_s q_s (x) x_s read from the "
                        "model's cache (`past_key_values.get(layer, 'synapses')`); Frobenius norms over all heads; "
                        "W relative change = norm(W_prompt - W_control) / norm(W_control)."])


@dataclasses.dataclass
class Trial:
    """One working-memory item: name `a` is bound to word `b`; `other` is the name of the control fact."""

    a: str
    b: str
    other: str
    filler: np.ndarray  # (filler_tokens,) ids of a passage of the text

    def contexts(self) -> dict[str, bytes]:
        """Context per condition; the query is the same in all three, after the same filler."""
        query = bytes(self.filler.astype(np.uint8)) + f"\n{self.a} is".encode()
        return {"fact": f"{self.a} is {self.b}. ".encode() + query, "none": query,
                "other": f"{self.other} is {self.b}. ".encode() + query}


def make_trials(corpus: common.Corpus, n: int, filler_tokens: int, seed: int) -> list[Trial]:
    """`n` seeded trials: names are capitalised words never written lower-case (proper nouns), words are
    frequent lower-case words of 4+ letters, and each filler is a passage starting at a line start."""
    cased = Counter(m.group().decode() for m in common.WORD.finditer(corpus.data))
    lower = {w.lower() for w in cased if w.islower()}
    names = [w for w, _ in cased.most_common() if len(w) >= 3 and w.istitle() and w.isalpha()
             and w.lower() not in lower][:50]
    words = [w for w, _ in common.word_counts(corpus.data).most_common(200) if len(w) >= 4 and w in lower][:100]
    if len(names) < 2 or not words:
        raise UsageError(f"{corpus.name}: the working-memory test needs 2+ proper names and 1+ common word")
    if len(corpus.ids) <= filler_tokens + 1 or filler_tokens < 0:
        raise UsageError(f"--filler_tokens {filler_tokens} does not fit the text ({len(corpus.ids)} tokens)")
    starts = np.flatnonzero(corpus.ids[:len(corpus.ids) - filler_tokens - 1] == ord("\n")) + 1
    if not len(starts):
        starts = np.arange(len(corpus.ids) - filler_tokens)
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        a, other = rng.choice(names, size=2, replace=False)
        start = int(rng.choice(starts))
        trials.append(Trial(str(a), str(rng.choice(words)), str(other), corpus.ids[start:start + filler_tokens]))
    return trials


def target_logprob(model, context: bytes, target: bytes) -> float:
    """log P(target | context), teacher-forced, summed over the target's bytes (nats). Only `model(ids).logits`
    is read, so BDH and any causal LM whose token ids are bytes are scored by this same code."""
    ids = torch.tensor([list(context + target)])  # (1, T)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0, len(context) - 1:-1].float()  # (len(target), V)
    return float(F.log_softmax(logits, dim=-1).gather(1, ids[0, len(context):, None]).sum())


def score_trials(model, trials: list[Trial]) -> dict[str, np.ndarray]:
    """log P(" B") per condition (CONDITIONS) and trial: one model's share of the working-memory test."""
    return {condition: np.array([target_logprob(model, trial.contexts()[condition], f" {trial.b}".encode())
                                 for trial in trials]) for condition in CONDITIONS}


def _check_fits(label: str, model, trials: list[Trial]) -> None:
    """Refuse a model whose position table is shorter than the longest context plus target (GPT-2 would
    otherwise fail with an index error deep inside its embedding)."""
    longest = max(len(trial.contexts()[condition]) + len(trial.b) + 1 for trial in trials for condition in CONDITIONS)
    from ..evaluation import context_limit

    limit = context_limit(model.config)
    if limit is not None and limit < longest:
        raise UsageError(f"{label} takes {limit} positions; the working-memory test needs {longest} "
                         "(lower --filler_tokens)")


def _label(folder, model) -> str:
    """How a model is named in the table and the plot: its type and folder."""
    return f"{model.config.model_type} ({folder})"


def _baselines(args) -> list[tuple[str, object]]:
    """(label, model) per --baseline folder, loaded before any work so a bad folder fails fast. Any causal LM
    with the byte tokenizer qualifies: the test feeds it the same bytes and reads only its logits."""
    baselines = []
    for folder in filter(None, (args.baseline or "").split(",")):
        model, _ = common.load_model(folder, None, role="--baseline")
        baselines.append((_label(folder, model), model))
    return baselines


def paired_stats(diffs: np.ndarray, seed: int) -> dict[str, float]:
    """Mean paired difference, Cohen's d_z, share of positive differences and a bootstrap 95% CI of the mean."""
    std = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
    means = diffs[np.random.default_rng(seed).integers(0, len(diffs), (BOOTSTRAP_RESAMPLES, len(diffs)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diffs.mean()), "d_z": float(diffs.mean()) / std if std > 0 else float("nan"),
            "helped": float((diffs > 0).mean()), "ci_low": float(low), "ci_high": float(high)}


def _retrieval_table(trials: list[Trial], results: list[tuple[str, dict[str, np.ndarray]]], seed: int,
                     notes: list[str]) -> Table:
    """Per model (same trials), one row per contrast of conditions: mean paired difference of log P(" B"), CI,
    effect size."""
    rows = []
    for label, scores in results:
        for better, worse, contrast in CONTRASTS:
            stats = paired_stats(scores[better] - scores[worse], seed)
            rows.append({"model": label, "contrast": contrast, "pairs": len(trials),
                         "mean log P fact": float(scores[better].mean()),
                         "mean log P compared": float(scores[worse].mean()), "mean difference (nats)": stats["mean"],
                         "95% CI": f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]", "d_z": stats["d_z"],
                         "% pairs helped": 100 * stats["helped"]})
    example = trials[0].contexts()["fact"].decode("utf-8", errors="replace")
    return Table("Working memory: log P(' B' | 'A is B. ' + filler + '\\nA is')",
                 ["model", "contrast", "pairs", "mean log P fact", "mean log P compared", "mean difference (nats)",
                  "95% CI", "d_z", "% pairs helped"], rows,
                 ["log P summed over the bytes of ' B', teacher-forced; differences are paired per trial (same A, B "
                  f"and filler); CI: bootstrap of the mean ({BOOTSTRAP_RESAMPLES} resamples); d_z = mean / std.",
                  "BDH's only memory across tokens is its Hebbian state S, so any gain from the first sentence is "
                  "held in and read back from S.",
                  "The second contrast separates binding (B follows A) from mere repetition of B.",
                  *notes, "Example context: " + repr(example).replace("|", "\\|")])


def _model_notes(models: list[tuple[str, object]]) -> list[str]:
    """What the table needs to compare the models: their sizes, and where a baseline keeps the first sentence."""
    notes = ["Models (every one on the same trials): " + "; ".join(
        f"{label} {sum(p.numel() for p in model.parameters()):,} parameters" for label, model in models) + "."]
    transformers = [label for label, model in models if model.config.model_type != "hatchlings_bdh"]
    if transformers:
        notes.append(f"For {', '.join(transformers)} the memory is attention over the exact past (the keys and "
                     "values of every earlier token), not a fixed-size state: the first sentence stays readable "
                     "verbatim however long the filler.")
    return notes


def _figure(s_prompt: torch.Tensor, s_control: torch.Tensor, results: list[tuple[str, dict[str, np.ndarray]]]):
    """State norms per layer; per model, sorted paired differences and log P with the fact against without."""
    fig, axes = new_figure(3)
    layers = np.arange(len(s_prompt))
    ax = axes[0, 0]
    ax.bar(layers - 0.2, [float(s.norm()) for s in s_prompt], width=0.4, label="prompt")
    ax.bar(layers + 0.2, [float(s.norm()) for s in s_control], width=0.4, label="control")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("|S| (Frobenius, all heads)")
    ax.set_title("BDH Hebbian state norm")
    ax.legend()
    for index, (label, scores) in enumerate(results):
        color = f"C{index}"
        for (better, worse, contrast), style in zip(CONTRASTS, ("-", ":")):
            axes[0, 1].plot(np.sort(scores[better] - scores[worse]), style, color=color, marker=".", linewidth=1,
                            label=f"{label}: {contrast}")
        axes[0, 2].scatter(scores["none"], scores["fact"], s=10, color=color, label=label)
    ax = axes[0, 1]
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_xlabel("trial (sorted)")
    ax.set_ylabel("paired difference of log P(' B') (nats)")
    ax.set_title("Effect of the first sentence")
    ax.legend(fontsize=6)
    ax = axes[0, 2]
    every = np.concatenate([scores[c] for _, scores in results for c in ("none", "fact")])
    ax.plot([every.min(), every.max()], [every.min(), every.max()], color="gray", linewidth=1)
    ax.set_xlabel("log P(' B') without the first sentence")
    ax.set_ylabel("log P(' B') with 'A is B.'")
    ax.set_title("Per trial")
    ax.legend(fontsize=6)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def run(args):
    """Read out BDH's state after the prompt and the control, then run the working-memory test on BDH and on
    every --baseline with the same trials."""
    model, _ = common.load_model(args.model, "hatchlings_bdh")
    models = [(_label(args.model, model), model), *_baselines(args)]
    corpus = common.load_corpus(args.file)
    if args.pairs < 2 or args.top_pairs < 1:
        raise UsageError(f"--pairs must be >= 2 and --top_pairs >= 1, got {args.pairs} and {args.top_pairs}")
    trials = make_trials(corpus, args.pairs, args.filler_tokens, args.seed)
    for label, each in models:
        _check_fits(label, each, trials)
    prompt, control = _prompts(args, corpus)
    encoder_v = model.model.block.encoder_v
    s_prompt, s_control = (hebbian_states(model, torch.from_numpy(ids)[None])[:, 0] for ids in (prompt, control))
    w_prompt, w_control = (synapses(s[:, None], encoder_v)[:, 0] for s in (s_prompt, s_control))  # (L, H, N, N)
    results = [(label, score_trials(each, trials)) for label, each in models]
    tables = [_norm_table(s_prompt, s_control, w_prompt, w_control, (len(prompt), len(control))),
              _pair_table(model, prompt, w_prompt, w_control, args.top_pairs),
              _retrieval_table(trials, results, args.seed, _model_notes(models))]
    tables[0].notes.append(f"Text: {corpus.name}; filler {args.filler_tokens} tokens, seed {args.seed}.")
    return tables, _figure(s_prompt, s_control, results)
