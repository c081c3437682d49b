"""`lm_perplexity`: loss, perplexity and bits per byte of a language model from summed token NLLs.

Why this takes summed negative log-likelihoods rather than a model id and texts (as the Hub's `perplexity`
metric does): the caller (`hatchlings.evaluation`) already runs the model with a strided sliding window and
knows exactly which tokens it scored and how many UTF-8 bytes they stand for. The metric then only has to
aggregate, which keeps it model-agnostic, offline and exact: windows are weighted by their token counts, not
averaged as equals.

Why the arithmetic lives here: `evaluate.load(<folder>)` copies this script into its own module cache and
imports it from there, where `hatchlings` may not be importable (the script must also work when shared on
its own). So this file owns `lm_metrics`, and the Trainer's evaluation imports it from here: one formula.
"""

from __future__ import annotations

import math

import datasets
import evaluate

_DESCRIPTION = """\
Aggregates per-window negative log-likelihoods of a causal language model into the mean loss (nats per
token), perplexity (exp of that loss), bits per token and bits per byte. Bits per byte divides by the number
of UTF-8 bytes the scored tokens cover, so it is comparable across tokenizers (a byte-level model and a BPE
model can be ranked on the same text).
"""

_KWARGS_DESCRIPTION = """
Args:
    nll_sum (`list` of `float`): per window, the sum of the negative log-likelihoods (natural log) of the
        tokens scored in that window.
    n_tokens (`list` of `int`): per window, how many tokens that sum covers.
    n_bytes (`list` of `int`): per window, how many UTF-8 bytes of text those tokens stand for.
Returns:
    loss (`float`): mean negative log-likelihood per token, in nats.
    perplexity (`float`): exp(loss) (capped at exp(700) to stay finite).
    bits_per_token (`float`): loss / ln 2.
    bits_per_byte (`float`): loss / ln 2 / (bytes per token); NaN if the tokens cover no bytes.
    tokens (`int`): number of tokens scored.
    bytes (`int`): number of UTF-8 bytes those tokens cover.
Examples:
    >>> metric = evaluate.load("path/to/hatchlings/metrics/lm_perplexity")
    >>> metric.compute(nll_sum=[2.0, 1.0], n_tokens=[2, 1], n_bytes=[2, 1])["loss"]
    1.0
"""

_CITATION = ""


def lm_metrics(mean_loss_nats: float, bytes_per_token: float) -> dict[str, float]:
    """Perplexity per token and bits per byte (comparable across tokenizers: what one byte of text costs)."""
    return {
        "perplexity": math.exp(min(mean_loss_nats, 700.0)),
        "bits_per_byte": mean_loss_nats / math.log(2) / bytes_per_token,
    }


def aggregate(nll_sum, n_tokens, n_bytes) -> dict[str, float]:
    """Token-weighted totals of the windows, then the metrics of the mean loss (plain Python, no `evaluate`)."""
    tokens, n_bytes_total = int(sum(n_tokens)), int(sum(n_bytes))
    if tokens <= 0:
        raise ValueError("lm_perplexity: no tokens were scored (n_tokens sums to 0)")
    loss = float(math.fsum(nll_sum)) / tokens
    if n_bytes_total > 0:
        result = lm_metrics(loss, n_bytes_total / tokens)
    else:
        result = {"perplexity": lm_metrics(loss, 1.0)["perplexity"], "bits_per_byte": float("nan")}
    return {"loss": loss, **result, "bits_per_token": loss / math.log(2), "tokens": tokens, "bytes": n_bytes_total}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LmPerplexity(evaluate.Metric):
    """`evaluate` wrapper of `aggregate`: one row per scored window."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "nll_sum": datasets.Value("float64"),
                "n_tokens": datasets.Value("int64"),
                "n_bytes": datasets.Value("int64"),
            }),
            reference_urls=["https://huggingface.co/docs/transformers/perplexity"],
        )

    def _compute(self, nll_sum, n_tokens, n_bytes):
        return aggregate(nll_sum, n_tokens, n_bytes)
