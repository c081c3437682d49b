"""Contract checks on what a model reports besides its logits, for the platform to train on and log:
an auxiliary loss (`aux_loss`, added by HatchlingsTrainer) and named per-layer activity (`activity_series`,
logged by SparsityCallback). Both are optional; a model that has one must follow the convention."""

from __future__ import annotations

import torch

from contract import ArchSpec, random_ids
from hatchlings.model_cards import sparsity_log_key
from hatchlings.training.trainer import aux_loss_coef


def check_aux_loss_is_an_unweighted_scalar_with_a_gradient(spec: ArchSpec) -> None:
    """`aux_loss`, when returned in training: a finite scalar that backpropagates into the weights; its weight,
    `config.aux_loss_coef`, valid. (That `loss` leaves it out is `check_loss_matches_manual`'s business.)"""
    model = spec.build_model().train()
    ids = random_ids(model.config.vocab_size, 2, 10, seed=4)  # (B, T)
    aux = model(ids, use_cache=False).get("aux_loss")
    aux_loss_coef(model)  # raises UsageError on a bad coefficient
    if aux is None:
        return
    assert aux.dim() == 0 and torch.isfinite(aux), f"aux_loss must be a finite scalar, got {aux}"
    aux.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), \
        "aux_loss reaches no parameter"


def check_activity_series_are_named_per_layer_fractions(spec: ArchSpec) -> None:
    """`activity_series(input_ids, attention_mask)`, when present: {name: (num_hidden_layers,) values in [0, 1]}
    with names the log keys accept, padding included."""
    model = spec.build_model()
    if not callable(getattr(model, "activity_series", None)):
        return
    ids = random_ids(model.config.vocab_size, 2, 12, seed=5)  # (B, T)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding in the first row
    with torch.no_grad():
        series = model.activity_series(input_ids=ids, attention_mask=mask)
    assert series, "activity_series returned no series"
    for name, values in series.items():
        sparsity_log_key(name)  # raises on a name the log keys cannot carry
        assert values.shape == (model.config.num_hidden_layers,), (name, tuple(values.shape))
        assert ((values >= 0) & (values <= 1)).all(), (name, values)
