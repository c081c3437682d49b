"""Contract check: the model equals its architecture's plain-equation reference (the record's `reference`,
hatchlings/reference/<arch>.py) in logits and in every parameter's gradient, on the fast path and on the
plain-autograd path alike.

Written once, after BDH's original model-vs-reference test; architecture test modules reuse
`assert_matches_reference` for their own sweeps (e.g. BDH over attention chunk sizes).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contract import ArchSpec, close, random_ids
from hatchlings.architectures import record_for, resolve


def autograd_node_names(tensor: torch.Tensor) -> set[str]:
    """The class names of every node in the backward graph of `tensor` (custom Functions show as
    `<Function>Backward`)."""
    names, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(child for child, _ in node.next_functions)
    return names


def _shifted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits (B, T, V) against labels (B, T)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())


def assert_matches_reference(spec: ArchSpec, overrides: dict, fast_ops: tuple[str, ...] = (),
                             absent_ops: tuple[str, ...] = ()) -> None:
    """The model built with `overrides` (in train mode: the training path, deterministic by the spec) gives the
    reference's logits (1e-5) and the gradient of a loss w.r.t. every parameter (rtol 1e-4, atol 1e-6), float32.

    Guards against a vacuous pass: the reference's logits vary over positions and rows, every parameter gets a
    nonzero reference gradient, and the backward graph holds every op of `fast_ops` and none of `absent_ops`
    (the path under test is the one really taken).
    """
    model = spec.build_model(**overrides).train()
    V, T = model.config.vocab_size, spec.causal_length
    ids, labels = random_ids(V, 2, T, seed=10), random_ids(V, 2, T, seed=11)  # (B, T) each
    logits = model(ids, use_cache=False).logits  # (B, T, V)
    reference = resolve(record_for(spec.arch).reference)(model, ids)  # (B, T, V)
    assert reference.shape == logits.shape, (reference.shape, logits.shape)
    assert (reference - reference[:1, :1]).abs().amax() > 1e-3, "reference logits are constant: a vacuous check"
    close(logits, reference, 1e-5, "logits vs reference")
    loss, ref_loss = _shifted_loss(logits, labels), _shifted_loss(reference, labels)
    nodes = autograd_node_names(loss)
    assert set(fast_ops) <= nodes, f"the fast path was not taken: {sorted(set(fast_ops) - nodes)} missing"
    assert not set(absent_ops) & nodes, f"fast-path ops on the plain path: {sorted(set(absent_ops) & nodes)}"
    names, params = zip(*model.named_parameters())
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(ref_loss, params, allow_unused=True)
    for name, g, w in zip(names, got, want):
        assert w is not None and w.abs().max() > 0, f"the reference gives {name} no gradient: a vacuous check"
        assert g is not None, f"the model gives {name} no gradient"
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"grad of {n}: {m}")


def check_matches_reference(spec: ArchSpec, path: str) -> None:
    """Logits and every parameter's gradient equal the record's reference, on the fast path (its fused or
    hand-written ops really in the graph) and on the plain-autograd path (none of them in the graph)."""
    assert spec.fast_path_ops and spec.plain_path, "the spec must name its fast-path ops and its plain-path flag"
    if path == "fast":
        assert_matches_reference(spec, spec.causal_overrides, fast_ops=spec.fast_path_ops)
    else:
        assert_matches_reference(spec, {**spec.causal_overrides, **spec.plain_path}, absent_ops=spec.fast_path_ops)


def parametrizations(spec: ArchSpec) -> dict[str, pytest.MarkDecorator]:
    """check name -> the pytest parameters make_contract_tests gives it."""
    return {"matches_reference": pytest.mark.parametrize("path", ["fast", "plain"])}
