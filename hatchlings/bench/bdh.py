"""`hatchlings bench bdh`: our BDH against the unoptimized reference formulation, same weights.

Training: tokens/s of forward + backward of the loss, after checking that logits and gradients agree.
Generation: ms per new token at several context lengths, our recurrent cache (one state read and write
per token) against the reference, which must recompute the whole prefix for every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from ..reference.bdh import model_weights, reference_bdh
from ..reports import Table
from .runner import Report, generation_timing, median_seconds

TINY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, mlp_internal_dim_multiplier=16,
            dropout=0.0, attn_chunk_size=64)  # configs/bdh-tiny.yaml
QUICK = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_internal_dim_multiplier=8,
             dropout=0.0, attn_chunk_size=16)


def _model(shape: dict):
    import hatchlings  # noqa: F401  (registers hatchlings_bdh)

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model("hatchlings_bdh", **shape))


def _loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _train_step(model, ids: torch.Tensor, reference: bool) -> list[torch.Tensor]:
    """One forward + backward; returns (logits, *gradients) for the numerics check."""
    model.zero_grad(set_to_none=True)
    logits = reference_bdh(ids, model_weights(model), model.config)[0] if reference else model(ids).logits
    _loss(logits, ids).backward()
    return [logits.detach()] + [p.grad.clone() for p in model.parameters()]


def training_table(shape: dict, batches: list[tuple[int, int]], repeats: int) -> Table:
    model = _model(shape).train()
    rows = []
    for batch, length in batches:
        ids = torch.randint(0, 256, (batch, length))
        ours, ref = _train_step(model, ids, False), _train_step(model, ids, True)
        max_diff = max(float((a - b).abs().max()) for a, b in zip(ours, ref))
        t_ours = median_seconds(lambda: _train_step(model, ids, False), repeats)
        t_ref = median_seconds(lambda: _train_step(model, ids, True), repeats)
        tokens = batch * length
        rows.append({"batch x length": f"{batch} x {length}", "ours tokens/s": tokens / t_ours,
                     "reference tokens/s": tokens / t_ref, "speed-up": t_ref / t_ours,
                     "max abs diff (logits, grads)": f"{max_diff:.1e}"})
    return Table(f"Training (forward + backward), {model.num_parameters():,} parameters", list(rows[0]), rows,
                 notes=["same weights and inputs; the reference builds the full T x T score matrix per layer",
                        "ours: quadratic form below the cost-model threshold, chunked Hebbian-state form above it"])


def generation_table(shape: dict, contexts: list[int], steps: int, repeats: int) -> Table:
    model = _model(shape).eval()
    ours = generation_timing(model, contexts, steps, repeats)
    weights, rows = model_weights(model), []
    with torch.no_grad():
        for context in contexts:
            ids = torch.randint(0, 256, (1, context + 1))
            recompute = median_seconds(lambda: reference_bdh(ids, weights, model.config), max(1, repeats // 2))
            cache = model(ids[:, :context], use_cache=True).past_key_values
            state_mb = sum(t.numel() * t.element_size() for t in cache.states.values()) / 2**20
            rows.append({"context": context, "ours ms/token (cached state)": ours[context]["ms_per_token"],
                         "reference ms/token (recompute prefix)": recompute * 1e3,
                         "state MiB": round(state_mb, 2)})
    flat = rows[-1]["ours ms/token (cached state)"] / rows[0]["ours ms/token (cached state)"]
    return Table("Generation, batch 1", list(rows[0]), rows,
                 notes=[f"ours at context {contexts[-1]} / context {contexts[0]}: {flat:.2f}x (flat = 1.0)",
                        "ours: `generate` with the recurrent cache (the runner's shared timing); the state has a "
                        "fixed size, so cost per token does not grow with context"])


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small shapes, for smoke tests")


def run(args) -> Report:
    if args.quick:
        return Report("bdh-quick", [training_table(QUICK, [(2, 32), (1, 128)], repeats=2),
                                    generation_table(QUICK, [16, 64, 128], steps=4, repeats=2)])
    return Report("bdh", [training_table(TINY, [(16, 256), (4, 1024), (2, 2048)], repeats=5),
                          generation_table(TINY, [64, 512, 4096], steps=20, repeats=5)])
