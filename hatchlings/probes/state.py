"""`hatchlings probe bdh state`: what BDH's Hebbian synaptic state holds after a prompt, and whether it
works as a working memory.

BDH carries nothing from token to token except, per layer and head, the state S = sum_s q_s (x) x_s
(N x D; q = RoPE(x_sparse), x the layer input). A later token reads a = q^T S and fires readout neurons
y = ReLU(LN(a) @ encoder_v), so W = S @ encoder_v (N x N) is the neuron-to-neuron synapse matrix the
prompt has written: W[i, j] links input neuron i (as a query) to readout neuron j. The probe shows the
pairs a prompt strengthened most relative to a control prompt of the same length.

Working memory is tested behaviourally: log P(" B" | "A is B. " + filler + "\\nA is") against the same
context without the first sentence, and against a first sentence that binds B to another name. Since S is
BDH's only memory across tokens, any gain is held in, and retrieved from, the synaptic state.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from ..bench.reference_bdh import model_weights, reference_bdh
from ..bench.runner import Table
from ..modeling.modeling_bdh import STATE
from ..training.errors import UsageError
from . import common

BOOTSTRAP_RESAMPLES = 2000
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


def _text_ids(text: str) -> np.ndarray:
    """Byte-tokenizer ids of `text`: its UTF-8 bytes."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def _prompts(args, corpus: common.Corpus) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and control ids: the given texts, else seeded passages (a default control matches the prompt's
    length, so state norms compare like with like)."""
    prompt = _text_ids(args.prompt) if args.prompt else None
    passage, other = _passages(corpus, args.block_size if prompt is None else len(prompt), args.seed)
    return (passage if prompt is None else prompt), (_text_ids(args.control) if args.control else other)


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
    """log P(target | context), teacher-forced, summed over the target's bytes (nats)."""
    ids = torch.tensor([list(context + target)])  # (1, T)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0, len(context) - 1:-1].float()  # (len(target), V)
    return float(F.log_softmax(logits, dim=-1).gather(1, ids[0, len(context):, None]).sum())


def paired_stats(diffs: np.ndarray, seed: int) -> dict[str, float]:
    """Mean paired difference, Cohen's d_z, share of positive differences and a bootstrap 95% CI of the mean."""
    std = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
    means = diffs[np.random.default_rng(seed).integers(0, len(diffs), (BOOTSTRAP_RESAMPLES, len(diffs)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diffs.mean()), "d_z": float(diffs.mean()) / std if std > 0 else float("nan"),
            "helped": float((diffs > 0).mean()), "ci_low": float(low), "ci_high": float(high)}


def _retrieval_table(trials: list[Trial], scores: dict[str, np.ndarray], seed: int) -> Table:
    """One row per contrast of conditions: mean paired difference of log P(" B"), CI, effect size."""
    rows = []
    for better, worse, label in CONTRASTS:
        stats = paired_stats(scores[better] - scores[worse], seed)
        rows.append({"contrast": label, "pairs": len(trials), "mean log P fact": float(scores[better].mean()),
                     "mean log P compared": float(scores[worse].mean()), "mean difference (nats)": stats["mean"],
                     "95% CI": f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]", "d_z": stats["d_z"],
                     "% pairs helped": 100 * stats["helped"]})
    example = trials[0].contexts()["fact"].decode("utf-8", errors="replace")
    return Table("Working memory: log P(' B' | 'A is B. ' + filler + '\\nA is')",
                 ["contrast", "pairs", "mean log P fact", "mean log P compared", "mean difference (nats)", "95% CI",
                  "d_z", "% pairs helped"], rows,
                 ["log P summed over the bytes of ' B', teacher-forced; differences are paired per trial (same A, B "
                  f"and filler); CI: bootstrap of the mean ({BOOTSTRAP_RESAMPLES} resamples); d_z = mean / std.",
                  "BDH's only memory across tokens is its Hebbian state S, so any gain from the first sentence is "
                  "held in and read back from S.",
                  "The second contrast separates binding (B follows A) from mere repetition of B.",
                  "Example context: " + repr(example).replace("|", "\\|")])


def _figure(s_prompt: torch.Tensor, s_control: torch.Tensor, scores: dict[str, np.ndarray]):
    """State norms per layer; sorted paired differences; log P with the fact against without."""
    fig, axes = common.new_figure(3)
    layers = np.arange(len(s_prompt))
    ax = axes[0, 0]
    ax.bar(layers - 0.2, [float(s.norm()) for s in s_prompt], width=0.4, label="prompt")
    ax.bar(layers + 0.2, [float(s.norm()) for s in s_control], width=0.4, label="control")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("|S| (Frobenius, all heads)")
    ax.set_title("Hebbian state norm")
    ax.legend()
    ax = axes[0, 1]
    for better, worse, label in CONTRASTS:
        ax.plot(np.sort(scores[better] - scores[worse]), marker=".", linewidth=1, label=label)
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_xlabel("trial (sorted)")
    ax.set_ylabel("paired difference of log P(' B') (nats)")
    ax.set_title("Effect of the first sentence")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    ax.scatter(scores["none"], scores["fact"], s=10)
    lims = [min(scores["none"].min(), scores["fact"].min()), max(scores["none"].max(), scores["fact"].max())]
    ax.plot(lims, lims, color="gray", linewidth=1)
    ax.set_xlabel("log P(' B') without the first sentence")
    ax.set_ylabel("log P(' B') with 'A is B.'")
    ax.set_title("Per trial")
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def run(args):
    """Read out the state after the prompt and the control, then run the working-memory test."""
    model, _ = common.load_model(args.model, "hatchlings_bdh")
    corpus = common.load_corpus(args.file)
    if args.pairs < 2 or args.top_pairs < 1:
        raise UsageError(f"--pairs must be >= 2 and --top_pairs >= 1, got {args.pairs} and {args.top_pairs}")
    prompt, control = _prompts(args, corpus)
    encoder_v = model.model.block.encoder_v
    s_prompt, s_control = (hebbian_states(model, torch.from_numpy(ids)[None])[:, 0] for ids in (prompt, control))
    w_prompt, w_control = (synapses(s[:, None], encoder_v)[:, 0] for s in (s_prompt, s_control))  # (L, H, N, N)
    trials = make_trials(corpus, args.pairs, args.filler_tokens, args.seed)
    scores = {condition: np.array([target_logprob(model, trial.contexts()[condition], f" {trial.b}".encode())
                                   for trial in trials]) for condition in ("fact", "none", "other")}
    tables = [_norm_table(s_prompt, s_control, w_prompt, w_control, (len(prompt), len(control))),
              _pair_table(model, prompt, w_prompt, w_control, args.top_pairs),
              _retrieval_table(trials, scores, args.seed)]
    tables[0].notes.append(f"Text: {corpus.name}; filler {args.filler_tokens} tokens, seed {args.seed}.")
    return tables, _figure(s_prompt, s_control, scores)
