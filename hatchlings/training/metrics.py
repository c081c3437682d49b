"""Language-model metrics from a mean cross-entropy, kept as plain functions (no `evaluate` dependency)."""

from __future__ import annotations

import math


def lm_metrics(mean_loss_nats: float, bytes_per_token: float) -> dict[str, float]:
    """Perplexity per token and bits per byte (comparable across tokenizers: what one byte of text costs)."""
    return {
        "perplexity": math.exp(min(mean_loss_nats, 700.0)),
        "bits_per_byte": mean_loss_nats / math.log(2) / bytes_per_token,
    }
