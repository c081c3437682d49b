"""Causal-LM losses in one place: shifted cross-entropy, label smoothing and z-loss, for any model.

Why not Trainer's `label_smoothing_factor`: Trainer shifts labels for smoothing only when the model's class
name is in Transformers' own causal-LM mapping. For a custom architecture (BDH, ...) it smooths logits[t]
against labels[t], i.e. it trains the model to predict the *current* token. `make_compute_loss` plugs the
correct shifted loss in through `Trainer(compute_loss_func=...)` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0, z_loss: float = 0.0,
                   num_items_in_batch: torch.Tensor | int | None = None, ignore_index: int = -100) -> torch.Tensor:
    """Next-token cross-entropy: logits[:, t] scored against labels[:, t + 1]; `ignore_index` targets skipped.

    logits: (B, T, V), any float dtype (computed in fp32); labels: (B, T), the input ids themselves.
    label_smoothing: weight of the uniform distribution in the target (torch's definition, on shifted targets).
    z_loss: coefficient of logsumexp(logits)² (PaLM), which keeps the softmax normaliser near 1 (log Z near 0)
    and logits from drifting upwards; added per scored position.
    num_items_in_batch: the number of scored targets in the whole accumulated (and, with
    `average_tokens_across_devices`, all-process) batch, as Trainer counts it. When given the loss is
    sum / num_items_in_batch, so summing micro-batch gradients equals the gradient of the full-batch mean
    (gradient accumulation correctness); otherwise the mean over this batch's scored targets.
    Returns a scalar.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    shift_logits = logits[:, :-1].float().flatten(0, 1)  # (B*(T-1), V)
    targets = labels[:, 1:].to(logits.device).flatten()  # (B*(T-1),)
    scored = targets != ignore_index  # (B*(T-1),)
    total = F.cross_entropy(shift_logits, targets, ignore_index=ignore_index, reduction="sum",
                            label_smoothing=label_smoothing)
    if z_loss:
        log_z = torch.logsumexp(shift_logits[scored], dim=-1)  # (n_scored,)
        total = total + z_loss * log_z.square().sum()
    if num_items_in_batch is None:
        return total / scored.sum().clamp_min(1)  # a batch with nothing to score gives 0, not NaN
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def make_compute_loss(label_smoothing: float = 0.0, z_loss: float = 0.0, *, regularize_eval: bool = False):
    """A `compute_loss_func` for `Trainer(compute_loss_func=...)` applying `causal_lm_loss`.

    Trainer (5.23) pops `labels` from the batch before the forward pass (so the model computes no loss
    of its own) and calls `fn(outputs, labels, num_items_in_batch=...)`, in training *and* in evaluation.
    Smoothing and z-loss are training regularisers: unless `regularize_eval`, calls made without
    gradients (evaluation, under `torch.no_grad`) return the plain cross-entropy, so `eval_loss`,
    perplexity and bits per byte stay comparable across runs.

    Note: a model that masks its own labels (BDH ignores targets predicted from a left-padding slot when an
    attention_mask is given) does not get that masking here; packed training blocks have no padding.
    """

    def compute_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        regularize = regularize_eval or torch.is_grad_enabled()
        return causal_lm_loss(logits, labels, label_smoothing=label_smoothing if regularize else 0.0,
                              z_loss=z_loss if regularize else 0.0, num_items_in_batch=num_items_in_batch)

    compute_loss.label_smoothing, compute_loss.z_loss = label_smoothing, z_loss
    return compute_loss


def declare_causal_lm_loss(model) -> None:
    """Set `model.loss_type = "ForCausalLM"` when the model left it unset (GPT2LMHeadModel does); call before Trainer.

    Trainer (5.23) counts the targets behind `num_items_in_batch` over `labels[..., 1:]` only if the model's
    `loss_type` maps to the causal-LM loss; otherwise it counts every label, one per row too many, and both
    the training loss and `eval_loss` come out scaled by (T - 1) / T (0.875 at T = 8). Models whose class
    name ends in "ForCausalLM" get the right type automatically; this fixes the others. Encoder-decoder
    models are left alone (their targets are not shifted).
    """
    config = getattr(model, "config", None)
    if getattr(model, "loss_type", None) is None and not getattr(config, "is_encoder_decoder", False):
        model.loss_type = "ForCausalLM"
