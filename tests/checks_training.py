"""Contract checks on training (DESIGN.md §2.8): the Trainer lowers the loss, checkpointing keeps the
gradients, torch.compile works forward and backward."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import Trainer, TrainingArguments

from contract import ArchSpec, close, random_ids


def check_trainer_lowers_loss(spec: ArchSpec, tmp_path, real_text: str, block: int = 64) -> None:
    """A few real Trainer steps on real text lower the loss on a fixed batch."""
    model, tok = spec.build_model(), spec.make_tokenizer()
    ids = torch.tensor(tok(real_text)["input_ids"])
    blocks = ids[: len(ids) // block * block].view(-1, block)[:64]  # (n_blocks, 64)
    data = [{"input_ids": b, "labels": b} for b in blocks]
    fixed = blocks[:8]
    with torch.no_grad():
        before = model(fixed, labels=fixed, use_cache=False).loss.item()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=8, learning_rate=3e-3, per_device_train_batch_size=8,
                             lr_scheduler_type="constant", report_to=[], use_cpu=True, save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=data).train()
    with torch.no_grad():
        after = model.eval()(fixed, labels=fixed, use_cache=False).loss.item()
    print(f"loss before {before:.4f} after {after:.4f}")
    assert after < before - 0.2, (before, after)


def _grads(model, ids) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of the LM loss, and how many tensor elements autograd saved for backward."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, labels=ids, use_cache=False).loss
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, sum(saved)


def check_gradient_checkpointing(spec: ArchSpec) -> None:
    """Checkpointing (recompute the layers in backward) changes memory, never gradients."""
    if not spec.repeats_layers:
        pytest.skip(f"{spec.arch} does not repeat layers")
    model = spec.build_model().train()  # tiny_config is deterministic in train mode
    ids = random_ids(model.config.vocab_size, 2, 16, seed=6)
    plain, plain_saved = _grads(model, ids)
    model.activation_checkpointing_enable()  # 5.x name of gradient_checkpointing_enable; what Trainer calls
    assert model.is_activation_checkpointing
    checkpointed, checkpointed_saved = _grads(model, ids)
    assert checkpointed_saved < plain_saved, "checkpointing saved no activations: it is not active"
    assert plain.keys() == checkpointed.keys() and plain
    close(checkpointed, plain, 1e-6, "gradients with checkpointing")


def _logits_and_grads(run, model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of `run(ids)` and the gradients its LM loss leaves on `model`'s parameters."""
    model.zero_grad(set_to_none=True)
    out = run(ids, labels=ids, use_cache=False)
    out.loss.backward()
    return out.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def check_compile(spec: ArchSpec) -> None:
    """torch.compile (default inductor backend) of the forward and backward matches eager: logits and every
    parameter's gradient to 1e-4. A compile error fails the test; an architecture that cannot compile says
    why in its spec (`compile_unsupported`)."""
    from torch._dynamo.utils import counters

    if spec.compile_unsupported:
        pytest.skip(f"{spec.arch} declares torch.compile unsupported: {spec.compile_unsupported}")
    model = spec.build_model(**spec.causal_overrides).train()  # tiny_config is deterministic in train mode
    ids = random_ids(model.config.vocab_size, 2, spec.causal_length, seed=7)
    eager_logits, eager_grads = _logits_and_grads(model, model, ids)
    torch._dynamo.reset()
    counters.clear()
    start = time.perf_counter()
    logits, grads = _logits_and_grads(torch.compile(model), model, ids)
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    print(f"torch.compile (inductor): {graphs} graphs, {breaks} graph breaks, {time.perf_counter() - start:.1f}s")
    assert graphs >= 1, "dynamo compiled nothing: the forward ran eagerly"
    close(logits, eager_logits, 1e-4, "compiled vs eager logits")
    assert grads.keys() == eager_grads.keys() and grads
    close(grads, eager_grads, 1e-4, "compiled vs eager gradients")
