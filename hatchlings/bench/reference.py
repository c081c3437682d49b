"""`hatchlings bench <arch>`: an architecture against its own plain-equation reference, same weights.

Every registered architecture gets this benchmark from its record's `reference` hook (the oracle the tests
compare with): training is tokens/s of forward + backward of the loss, after checking that logits and
gradients agree; generation is ms per new token at several context lengths, the model's cache (`generate`)
against the reference, which has no cache and must recompute the whole prefix for every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from ..architectures import record_for, resolve
from ..reports import Table
from ..evaluation import context_limit
from .runner import Report, generation_timing, median_seconds

FULL_WIDTH, QUICK_WIDTH = 128, 32  # the arena's tiny shape (~0.85M parameters), and a smoke-test shape


def _model(arch: str, width: int):
    torch.manual_seed(0)
    record = record_for(arch)
    return AutoModelForCausalLM.from_config(record.config_class(**record.arena_shape(width)))


def _loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _train_step(model, reference, ids: torch.Tensor, use_reference: bool) -> list[torch.Tensor]:
    """One forward + backward; returns (logits, *gradients) for the numerics check."""
    model.zero_grad(set_to_none=True)
    logits = reference(model, ids) if use_reference else model(ids).logits
    _loss(logits, ids).backward()
    return [logits.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _cache_mib(cache) -> float:
    """Memory of a generation cache's tensors (RecurrentStateCache keeps them all in `states`)."""
    return sum(t.numel() * t.element_size() for t in getattr(cache, "states", {}).values()) / 2**20


def training_table(arch: str, width: int, batches: list[tuple[int, int]], repeats: int) -> Table:
    model = _model(arch, width).train()
    reference, vocab, rows = resolve(record_for(arch).reference), model.config.vocab_size, []
    for batch, length in batches:
        ids = torch.randint(0, vocab, (batch, length))
        ours, ref = _train_step(model, reference, ids, False), _train_step(model, reference, ids, True)
        max_diff = max(float((a - b).abs().max()) for a, b in zip(ours, ref))
        t_ours = median_seconds(lambda: _train_step(model, reference, ids, False), repeats)
        t_ref = median_seconds(lambda: _train_step(model, reference, ids, True), repeats)
        tokens = batch * length
        rows.append({"batch x length": f"{batch} x {length}", "ours tokens/s": tokens / t_ours,
                     "reference tokens/s": tokens / t_ref, "speed-up": t_ref / t_ours,
                     "max abs diff (logits, grads)": f"{max_diff:.1e}"})
    return Table(f"Training (forward + backward), {model.num_parameters():,} parameters", list(rows[0]), rows,
                 notes=[f"{arch} against its reference ({record_for(arch).reference}), same weights and inputs"])


def generation_table(arch: str, width: int, contexts: list[int], steps: int, repeats: int) -> Table:
    model = _model(arch, width).eval()
    reference, vocab, limit = resolve(record_for(arch).reference), model.config.vocab_size, context_limit(model.config)
    contexts = [c for c in contexts if limit is None or c + steps + 1 <= limit]
    ours, rows = generation_timing(model, contexts, steps, repeats, vocab=vocab), []
    with torch.no_grad():
        for context in contexts:
            ids = torch.randint(0, vocab, (1, context + 1))
            recompute = median_seconds(lambda: reference(model, ids), max(1, repeats // 2))
            cache = model(ids[:, :context], use_cache=True).past_key_values
            rows.append({"context": context, "ours ms/token (cache)": ours[context]["ms_per_token"],
                         "reference ms/token (recompute prefix)": recompute * 1e3,
                         "cache MiB": round(_cache_mib(cache), 2)})
    growth = rows[-1]["ours ms/token (cache)"] / rows[0]["ours ms/token (cache)"]
    return Table("Generation, batch 1", list(rows[0]), rows,
                 notes=[f"ours at context {contexts[-1]} / context {contexts[0]}: {growth:.2f}x (flat = 1.0)",
                        "ours: `generate` with the model's cache (the runner's shared timing); the reference "
                        "recomputes the prefix for every token"])


class ReferenceBenchmark:
    """The `hatchlings bench <arch>` entry of one architecture (what runner.py lists next to the arena)."""

    def __init__(self, arch: str):
        self.arch = arch
        self.__doc__ = f"{arch} against its plain-equation reference (training tokens/s, generation ms/token)."

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--quick", action="store_true", help="small shapes, for smoke tests")

    def run(self, args) -> Report:
        if args.quick:
            return Report(f"{self.arch}-quick", [training_table(self.arch, QUICK_WIDTH, [(2, 32), (1, 128)], 2),
                                                 generation_table(self.arch, QUICK_WIDTH, [16, 64, 128], 4, 2)])
        return Report(self.arch, [training_table(self.arch, FULL_WIDTH, [(16, 256), (4, 1024), (2, 2048)], 5),
                                  generation_table(self.arch, FULL_WIDTH, [64, 512, 4096], 20, 5)])
