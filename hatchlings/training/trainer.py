"""The Trainer every hatchlings architecture trains with: Transformers' own, plus bits-per-byte metrics,
atomic checkpoints, and a clean stop on Ctrl+C / SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..metrics.lm_perplexity.lm_perplexity import lm_metrics  # the one formula, shared with `hatchlings eval`

STAGING = ".staging"  # checkpoints are written here, then renamed into place


class HatchlingsTrainer(Trainer):
    """`Trainer` whose evaluations also report perplexity and bits per byte, and whose checkpoints are atomic.

    Metrics are added in `evaluation_loop` (not a callback) so they are in the same log line and in
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

    def _save_checkpoint(self, model, trial) -> None:
        """Write `checkpoint-N` into a staging folder, rename it into place, and only then drop old ones.

        Trainer writes straight into `checkpoint-N` and rotates afterwards, so a kill mid-save leaves a
        torn newest checkpoint that `--resume` would pick. A directory rename is atomic: readers see
        either no `checkpoint-N` or a complete one, and the previous checkpoint is never touched first.
        """
        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, STAGING)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # leftovers of a save that was killed
        _barrier()
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        self._get_output_dir = lambda trial=None: staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
            self.args.save_total_limit = limit
        _barrier()  # every rank has written its RNG state into the staged folder
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(os.path.join(staging, name), final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        _barrier()


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class GracefulStop(TrainerCallback):
    """Ctrl+C or SIGTERM: finish the current step, save a checkpoint, stop. A second signal aborts.

    Under several processes the signal may reach ranks at different steps, so the decision is agreed
    on with an all-reduce every step; otherwise one rank would wait forever in the other's collective.
    """

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: the user really means it
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[hatchlings] {signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              "(send it again to abort without saving)", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([float(self.requested)], device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and state.global_step < state.max_steps:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control
