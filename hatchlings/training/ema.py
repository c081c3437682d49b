"""Exponential moving average (EMA) of the weights, kept beside training and saved with every checkpoint.

The average of the last ~1/(1 - decay) optimizer steps is usually a better model than the last step's
weights (it averages out the noise of the final updates), at the cost of one fp32 copy of the trainable
weights. The shadow lives in fp32 whatever the training dtype, so tiny (1 - decay) increments are not
rounded away in bf16.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

EMA_FILE = "ema.safetensors"


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> trainable parameter; `named_parameters` lists a tied weight once, under its first name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class EmaCallback(TrainerCallback):
    """Keeps `shadow = decay * shadow + (1 - decay) * weights` after every optimizer step.

    Trainer calls `on_step_end` once per optimizer step (after all gradient-accumulation micro-batches),
    `on_save` right after writing `output_dir/checkpoint-<step>/`, where the shadow goes as `ema.safetensors`.
    On resume, `on_train_begin` reloads that file from `output_dir/checkpoint-<global_step>` unless
    `load_from_checkpoint` was called first (needed when resuming from a folder outside `output_dir`).
    """

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None  # name -> fp32 tensor, the parameter's shape
        self._pending: dict[str, torch.Tensor] | None = None  # loaded from a checkpoint before training began

    # --- Trainer hooks -------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._pending is None and state.global_step > 0:  # resumed: find the checkpoint's EMA
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isfile(os.path.join(path, EMA_FILE)):
                self.load_from_checkpoint(path)
            elif self.shadow is None:
                logger.warning("resuming at step %d without %s: EMA restarts from the current weights",
                               state.global_step, os.path.join(path, EMA_FILE))
        if self._pending is not None:
            self._adopt(self._pending, model)
            self._pending = None
        elif self.shadow is None:
            self.reset(model)

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.shadow is None:
            self.reset(model)
            return
        for name, p in _trainable(model).items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)  # s += (1 - d) (w - s)

    def on_save(self, args, state, control, **kwargs):
        if self.shadow is not None and args.should_save:
            self.save(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    # --- state ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at the model's current weights."""
        self.shadow = {name: p.detach().float().clone() for name, p in _trainable(model).items()}

    def save(self, folder: str) -> str:
        """Write the shadow to `folder/ema.safetensors` atomically (tmp file + os.replace); return the path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, EMA_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.shadow.items()}, tmp,
                  metadata={"decay": repr(self.decay), "format": "pt"})
        os.replace(tmp, path)
        return path

    def load_from_checkpoint(self, path: str) -> None:
        """Read `path/ema.safetensors` (or that file itself); applied to the model at train begin if not yet built."""
        file = path if path.endswith(".safetensors") else os.path.join(path, EMA_FILE)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no EMA weights at {file}")
        loaded = load_file(file)
        if self.shadow is None:
            self._pending = loaded
        else:
            self._adopt(loaded, None)

    def _adopt(self, loaded: dict[str, torch.Tensor], model: nn.Module | None) -> None:
        """Take loaded tensors as the shadow, checked against the model (or current shadow) names and shapes."""
        reference = ({n: p.detach() for n, p in _trainable(model).items()} if model is not None else self.shadow)
        missing, unexpected = sorted(set(reference) - set(loaded)), sorted(set(loaded) - set(reference))
        bad = [n for n in reference if n in loaded and loaded[n].shape != reference[n].shape]
        if missing or unexpected or bad:
            raise ValueError(f"EMA checkpoint does not match the model: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}, shape mismatch {bad[:5]}")
        self.shadow = {n: loaded[n].to(reference[n].device, torch.float32).clone() for n in reference}

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """name -> fp32 EMA tensor (a copy) for every trainable parameter; tied weights under one name."""
        if self.shadow is None:
            raise RuntimeError("no EMA weights yet: the callback has not seen a training step or checkpoint")
        return {name: t.clone() for name, t in self.shadow.items()}

    @torch.no_grad()
    def swap_into(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Copy the EMA weights into `model` in place (cast to each parameter's dtype); return the raw weights.

        In place, so tied weights stay tied and an exporter can call `save_pretrained` as usual;
        `restore(model, returned)` puts the raw weights back.
        """
        shadow = self.ema_state_dict()
        params = _trainable(model)
        raw = {name: p.detach().clone() for name, p in params.items()}
        for name, p in params.items():
            p.copy_(shadow[name])
        return raw

    @staticmethod
    @torch.no_grad()
    def restore(model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
        """Undo `swap_into` with the dict it returned."""
        for name, p in _trainable(model).items():
            p.copy_(raw[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """`with ema.applied(model): model.save_pretrained(...)` exports EMA weights, then restores the raw ones."""
        raw = self.swap_into(model)
        try:
            yield model
        finally:
            self.restore(model, raw)
