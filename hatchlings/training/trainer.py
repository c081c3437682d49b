"""The Trainer every hatchlings architecture trains with: Transformers' own, plus bits-per-byte metrics."""

from __future__ import annotations

from transformers import Trainer

from .metrics import lm_metrics


class HatchlingsTrainer(Trainer):
    """`Trainer` whose evaluations also report perplexity and bits per byte of the evaluated text.

    Added in `evaluation_loop` (not a callback) so the numbers are in the same log line and in
    `trainer.evaluate()`'s return value, without gathering logits as `compute_metrics` would.
    """

    def __init__(self, *args, bytes_per_token: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bytes_per_token = bytes_per_token

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        loss = output.metrics.get(f"{metric_key_prefix}_loss")
        if loss is not None:
            for name, value in lm_metrics(loss, self.bytes_per_token).items():
                output.metrics[f"{metric_key_prefix}_{name}"] = value
        return output
