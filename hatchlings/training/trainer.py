"""The Trainer every hatchlings architecture trains with: Transformers' own, plus bits-per-byte metrics,
a model's auxiliary loss, atomic checkpoints, and a clean stop on Ctrl+C / SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..metrics.lm_perplexity.lm_perplexity import lm_metrics  # the one formula, shared with `hatchlings eval`
from ..errors import UsageError
from .optim import decay_parameter_names

STAGING = ".staging"  # checkpoints are written here, then renamed into place


class HatchlingsTrainer(Trainer):
    """`Trainer` whose evaluations also report perplexity and bits per byte, which trains on a model's auxiliary
    loss too, and whose checkpoints are atomic.

    Metrics are added in `evaluation_loop` (not a callback) so they are in the same log line and in
    `trainer.evaluate()`'s return value, without gathering logits as `compute_metrics` would.

    Auxiliary loss (Mixtral's convention): a model whose output has `aux_loss` (a scalar tensor, *unweighted*,
    never already part of its `loss`) trains on LM loss + `config.aux_loss_coef` (default 1.0) x aux_loss, where
    the LM loss is whatever Trainer computes (the model's own, or `compute_loss_func`'s smoothed / z-loss one,
    which read only the logits and would otherwise drop it). Training logs get the unweighted `aux_loss` as
    its own entry; `loss` is the whole objective. Evaluation leaves it out, so `eval_loss` stays comparable.
    """

    def __init__(self, *args, bytes_per_token: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bytes_per_token = bytes_per_token
        self.aux_loss_coef = aux_loss_coef(self.model)
        self._aux_sum, self._aux_count = 0.0, 0  # since the last training log line

    def get_decay_parameter_names(self, model) -> list[str]:
        """The one decay rule (`optim.decay_parameter_names`) for Trainer's own optimizers too: by tensor shape
        and the model's embeddings, not by parameter names, which differ between architectures."""
        return decay_parameter_names(model)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """Trainer's loss, plus `aux_loss_coef` x the model's `aux_loss` when training (see the class docstring).

        The LM loss may already be normalised over the whole accumulated batch (then Trainer does not divide
        by the accumulation steps afterwards); the auxiliary loss is a per-micro-batch mean, so it is divided
        here in that case, making its gradient the mean over micro-batches either way.
        """
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        aux = outputs.get("aux_loss") if isinstance(outputs, dict) else None
        if aux is not None and torch.is_grad_enabled():
            self._aux_sum, self._aux_count = self._aux_sum + aux.detach().float(), self._aux_count + 1
            weight = self.aux_loss_coef
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                weight = weight / getattr(self, "current_gradient_accumulation_steps", 1)  # set by the training loop
            loss = loss + weight * aux.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def _loss_is_scaled_for_ga(self, num_items_in_batch) -> bool:
        """Trainer's own test (training_step, Transformers 5.23) of whether it will divide the loss by the
        accumulation steps: not when the loss was normalised by `num_items_in_batch` or by `compute_loss_func`."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
            or self.compute_loss_func is not None

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Add the mean unweighted `aux_loss` since the last training log line to that line (mean over processes)."""
        if "loss" in logs and self._aux_count:
            mean = torch.as_tensor(self._aux_sum / self._aux_count, device=self.args.device)
            logs = {**logs, "aux_loss": self.accelerator.reduce(mean, reduction="mean").item()}
            self._aux_sum, self._aux_count = 0.0, 0
        super().log(logs, *args, **kwargs)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        _restore_fsdp_on_cpu(self)

    def unsharded_model(self):
        """The trained model as an ordinary module to export and sample from; every rank must call it.

        Under FSDP the parameters are shards (DTensors), so a forward or `save_pretrained` is a collective that
        rank 0 cannot run alone: the full weights are gathered (every rank takes part) into a fresh model on
        rank 0, and the other ranks get None. Without FSDP this is `self.model` itself.
        """
        if not self.is_fsdp_enabled:
            return self.model
        full = self.accelerator.get_state_dict(self.model)  # complete on rank 0, empty elsewhere
        if not self.is_world_process_zero():
            return None
        model = AutoModelForCausalLM.from_config(self.model.config)
        model.load_state_dict(full)
        return model.to(self.args.device)

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


def aux_loss_coef(model) -> float:
    """The weight of the model's `aux_loss` in the training objective: `config.aux_loss_coef`, 1.0 when unset.

    In the model's config (like Mixtral's `router_aux_loss_coef`), because the weight is part of the
    architecture's objective and travels with the exported model; a preset sets it in its `model` section.
    """
    coef = getattr(getattr(model, "config", None), "aux_loss_coef", 1.0)
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not coef >= 0:
        raise UsageError(f"model.aux_loss_coef must be a number >= 0, got {coef!r}")
    return float(coef)


def _restore_fsdp_on_cpu(trainer: Trainer) -> None:
    """Shard on CPU processes when FSDP was asked for, instead of the DDP accelerate 1.15 silently falls back to.

    `AcceleratorState` turns FSDP on only for GPU-like device types (MULTI_GPU, MULTI_XPU, ...): a gloo CPU run
    is MULTI_CPU, so the plugin from `accelerate launch --config_file fsdp.yaml` (or `--fsdp`) is dropped and
    Trainer wraps the model in DDP. torch's `fully_shard` works on CPU with gloo, so the plugin is put back and
    the run shards, checkpoints and resumes as it would on GPUs (the CPU test of the sharded path).
    """
    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU or os.environ.get("ACCELERATE_USE_FSDP") != "true":
        return
    plugin = FullyShardedDataParallelPlugin(**(trainer.args.fsdp_plugin_args or {}))  # the rest from FSDP_* env
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    # Both Borg states, as accelerate does on GPUs: every `AcceleratorState()` re-reads PartialState's type.
    state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


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
