"""Per-layer activity statistics over training, for any architecture whose model reports them.

Sparse positive activations are why one picks BDH, so a run should show whether they stay sparse (or
die, or saturate) as it learns; other architectures have their own such numbers (HRAN's inhibition
sparsity, the Hybrid's mixer gates). A model reports them with a method
`activity_series(input_ids, attention_mask=None) -> {name: (num_layers,) tensor}` (values are fractions in
[0, 1], e.g. BDH's `x_active` and `y_active`). At every evaluation and at the end of training the model
reads the same few validation blocks; each series goes into the Trainer's log history per layer and as a
mean (`sparsity/<name>_layer<i>`, `sparsity/<name>_mean`), hence into trainer_state.json, reporters, and the
model card's plot and table.
"""

from __future__ import annotations

from itertools import islice

import torch
from transformers import Trainer, TrainerCallback

from ..model_cards import sparsity_log_key

SPARSITY_BLOCKS = 4  # a fixed handful of blocks: enough for stable fractions, negligible next to an evaluation
_MODEL_INPUTS = ("input_ids", "attention_mask")  # labels would only add a loss nobody reads


def reports_activity(model) -> bool:
    """Whether the model has `activity_series`, i.e. reports named per-layer activity statistics."""
    return callable(getattr(model, "activity_series", None))


class SparsityCallback(TrainerCallback):
    """Logs every series of the model's `activity_series` per layer and as its mean over layers.

    The batch is taken once, so every point of the curve is measured on the same tokens and differences
    come from the weights alone.

    Every process measures: under FSDP the forward gathers sharded weights collectively, so a rank
    that skipped it would hang the others; under DDP it is a local call on the unwrapped model. All
    ranks see the same weights and batch, hence the same numbers, and `Trainer.log` records them
    like any metric (trainer_state.json is written by the main process only).
    """

    def __init__(self, trainer: Trainer, eval_dataset, n_blocks: int = SPARSITY_BLOCKS):
        blocks = list(islice(iter(eval_dataset), n_blocks))
        if not blocks:
            raise ValueError("sparsity tracking needs at least one validation block")
        batch = trainer.data_collator(blocks)
        self.inputs = {k: batch[k] for k in _MODEL_INPUTS if k in batch}
        self._log = trainer.log  # Trainer's own: adds step and epoch, tells reporters (wandb, tensorboard)
        self._measured_step: int | None = None

    @torch.no_grad()
    def activity(self, model) -> dict[str, list[float]]:
        """{name: per-layer values} of the model's `activity_series` on the fixed batch, in eval mode.

        Eval mode, so dropout cannot change what is measured; the previous mode is restored after.
        """
        was_training = model.training
        model.eval()
        try:
            inputs = {k: v.to(model.device) for k, v in self.inputs.items()}
            return {name: values.float().cpu().tolist() for name, values in model.activity_series(**inputs).items()}
        finally:
            model.train(was_training)

    def measure(self, state, model) -> None:
        """Log the activity series at the current step."""
        logs = {}
        for name, values in self.activity(model).items():
            logs.update({sparsity_log_key(name, layer): value for layer, value in enumerate(values)})
            logs[sparsity_log_key(name)] = sum(values) / len(values)
        self._measured_step = state.global_step
        self._log(logs)

    # --- Trainer hooks -------------------------------------------------------------------------------------
    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.measure(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        """The end point of the curve, unless the last evaluation already measured these weights."""
        if self._measured_step != state.global_step:
            self.measure(state, model)


def track_sparsity(trainer: Trainer, n_blocks: int = SPARSITY_BLOCKS) -> SparsityCallback | None:
    """Add a `SparsityCallback` on the first `n_blocks` validation blocks to `trainer` if its model reports
    activity and there is validation data; return it (None when not added, so other models are unaffected)."""
    if trainer.eval_dataset is None or not reports_activity(trainer.model):
        return None
    callback = SparsityCallback(trainer, trainer.eval_dataset, n_blocks)
    trainer.add_callback(callback)
    return callback
