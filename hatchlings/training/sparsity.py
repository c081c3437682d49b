"""Neuron sparsity over training, for architectures whose forward takes `output_sparsity` (BDH).

Sparse positive activations are why one picks BDH, so a run should show whether they stay sparse (or
die, or saturate) as it learns. At every evaluation and at the end of training the model reads the
same few validation blocks with `output_sparsity=True`; the per-layer share of active (non-zero)
neurons goes into the Trainer's log history, hence into trainer_state.json, reporters, and the model
card's sparsity plot and table.
"""

from __future__ import annotations

import inspect
from itertools import islice

import torch
from transformers import Trainer, TrainerCallback

from ..model_cards import sparsity_log_key

SPARSITY_BLOCKS = 4  # a fixed handful of blocks: enough for stable fractions, negligible next to an evaluation
_MODEL_INPUTS = ("input_ids", "attention_mask")  # labels would only add a loss nobody reads


def accepts_output_sparsity(model) -> bool:
    """Whether `model.forward` takes `output_sparsity`, i.e. reports its zero-neuron fractions."""
    return "output_sparsity" in inspect.signature(model.forward).parameters


class SparsityCallback(TrainerCallback):
    """Logs `sparsity/{x,y}_active_layer<i>` and `sparsity/{x,y}_active_mean` (1 - zero fraction).

    x is the encoder ReLU's output, y the attention readout's (columns 0 and 1 of the model's
    `(num_hidden_layers, 2)` `.sparsity`). The batch is taken once, so every point of the curve is
    measured on the same tokens and differences come from the weights alone.

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
    def active_fractions(self, model) -> torch.Tensor:
        """(num_hidden_layers, 2) share of non-zero x and y neurons on the fixed batch, in eval mode.

        Eval mode, so dropout cannot change what is measured; the previous mode is restored after.
        """
        was_training = model.training
        model.eval()
        try:
            inputs = {k: v.to(model.device) for k, v in self.inputs.items()}
            return 1.0 - model(**inputs, output_sparsity=True, use_cache=False).sparsity.float().cpu()
        finally:
            model.train(was_training)

    def measure(self, state, model) -> None:
        """Log the active fractions at the current step."""
        active = self.active_fractions(model)
        logs = {}
        for column, kind in enumerate(("x", "y")):
            logs.update({sparsity_log_key(kind, layer): value for layer, value in enumerate(active[:, column].tolist())})
            logs[sparsity_log_key(kind)] = active[:, column].mean().item()
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
    sparsity and there is validation data; return it (None when not added, so other models are unaffected)."""
    if trainer.eval_dataset is None or not accepts_output_sparsity(trainer.model):
        return None
    callback = SparsityCallback(trainer, trainer.eval_dataset, n_blocks)
    trainer.add_callback(callback)
    return callback
