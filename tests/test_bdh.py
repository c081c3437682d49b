"""BDH: the shared contract (tests/contract.py) plus checks of the BDH math itself.

The reference (hatchlings/bench/reference_bdh.py, also what `hatchlings bench bdh` times) is written from
the equations (DESIGN.md §3 bdh), not from the model's code: it materialises the full masked T x T score matrix and rotates neuron pairs with
complex numbers, so an error in the model's chunking, state carry-over or RoPE cannot hide in a shared
helper. Only the weights are taken from the model.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contract import ArchSpec, make_contract_tests, random_ids
from hatchlings import BdhConfig
from hatchlings.bench.reference_bdh import model_weights, reference_bdh, reference_rope
from hatchlings.modeling.modeling_bdh import chunked_linear_attention, recurrent_linear_attention_step

TINY = dict(vocab_size=259, hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
            num_hidden_layers=2, dropout=0.0, attn_chunk_size=8)

SPEC = ArchSpec(
    arch="bdh",
    tiny_config=lambda **overrides: BdhConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_bdh.py", "configuration_bdh.py", "layers.py", "cache.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"dropout": 2.0}, "dropout"),
        ({"num_attention_heads": 3}, "num_attention_heads"),  # does not divide 4 * 32 neurons
        ({"mlp_internal_dim_multiplier": 0}, "mlp_internal_dim_multiplier"),
        ({"attn_chunk_size": 0}, "attn_chunk_size"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"vocab_size": 100}, "pad_token_id"),  # pad id 256 no longer in the vocabulary
    ),
    # BDH's attention takes its quadratic form when T <= chunk + 2ND/(N+D) (= 4 + 43 here) and its chunked
    # form beyond: 64 tokens in chunks of 4 exercise the state carried across 16 chunks.
    causal_overrides={"attn_chunk_size": 4},
    causal_length=64,
    has_recurrent_state=True,
    repeats_layers=True,  # one block of weights applied num_hidden_layers times
)

globals().update(make_contract_tests(SPEC))


def test_reference_rope_is_a_rotation():
    """Sanity of the oracle itself: position 0 is the identity, norms of pairs are preserved, and pair 0
    at position 1 turns by exactly 1 radian."""
    v = torch.randn(1, 1, 3, 8)
    out = reference_rope(v, 10000.0)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])
    torch.testing.assert_close(out.reshape(3, 4, 2).norm(dim=-1), v.reshape(3, 4, 2).norm(dim=-1))
    a, b = v[0, 0, 1, 0], v[0, 0, 1, 1]
    torch.testing.assert_close(out[0, 0, 1, :2], torch.stack([a * math.cos(1) - b * math.sin(1),
                                                               a * math.sin(1) + b * math.cos(1)]))


@pytest.mark.parametrize("chunk", [1, 3, 16, 64, 80])
def test_matches_reference_outputs_and_gradients(chunk):
    """Forward logits and the gradient of a loss w.r.t. every parameter equal the quadratic reference,
    whatever the chunk size. T = 64: chunks 1, 3, 16 take the model's chunked path (T > chunk + 2ND/(N+D)
    = chunk + 43), 64 = T and 80 > T its single-block quadratic path."""
    model = SPEC.build_model(attn_chunk_size=chunk).train()  # train mode with dropout 0: same math
    ids = random_ids(259, 2, 64, seed=10)
    labels = random_ids(259, 2, 64, seed=11)
    out = model(ids, labels=labels, use_cache=False)
    weights = model_weights(model)
    ref_logits, _ = reference_bdh(ids, weights, model.config)
    ref_loss = F.cross_entropy(ref_logits[:, :-1].reshape(-1, 259), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-5, atol=1e-6)
    names = list(weights)
    got = torch.autograd.grad(out.loss, [weights[n] for n in names])
    want = torch.autograd.grad(ref_loss, [weights[n] for n in names])
    assert len(dict(model.named_parameters())) == len(names), "the reference misses a parameter"
    for name, g, w in zip(names, got, want):
        assert w.abs().max() > 0, f"reference gradient of {name} is zero: the check would be vacuous"
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_sparsity_matches_reference_count():
    """`output_sparsity` reports, per layer, the fraction of exactly-zero neurons of x_sparse and y."""
    model = SPEC.build_model()
    ids = random_ids(259, 2, 11, seed=12)
    with torch.no_grad():
        sparsity = model(ids, output_sparsity=True, use_cache=False).sparsity
        _, neurons = reference_bdh(ids, model_weights(model), model.config)
    assert sparsity.shape == (model.config.num_hidden_layers, 2)
    assert ((sparsity >= 0) & (sparsity <= 1)).all()
    manual = torch.tensor([[(x == 0).float().mean().item(), (y == 0).float().mean().item()] for x, y in neurons])
    assert 0 < manual.min() and manual.max() < 1, "degenerate activations make the count meaningless"
    slack = 2 / neurons[0][0].numel()  # a value within an ulp of 0 may land on either side of the ReLU
    torch.testing.assert_close(sparsity, manual, rtol=0, atol=slack)


def _attention_inputs(seed: int, B=2, H=2, T=24, N=8, D=6):
    g = torch.Generator().manual_seed(seed)
    q = torch.relu(torch.randn(B, H, T, N, generator=g)).requires_grad_()  # (B, H, T, N), sparse like x_sparse
    v = torch.randn(B, 1, T, D, generator=g).requires_grad_()  # (B, 1, T, D), shared by heads
    return q, v


def _loop_attention(q, v, state):
    """Token by token through the recurrence: a_t = q_t^T S, then S += q_t v_t^T."""
    outs = []
    for t in range(q.shape[2]):
        a, state = recurrent_linear_attention_step(q[:, :, t:t + 1], v[:, :, t:t + 1], state)
        outs.append(a)
    return torch.cat(outs, 2), state


@pytest.mark.parametrize("chunk", [1, 3, 7, 24, 32])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_attention_matches_recurrence(chunk, with_state):
    """The parallel forms equal the token-by-token recurrence in output, final state and the gradients
    w.r.t. q and v (and the incoming state). T = 24, N = 8, D = 6: chunks 1, 3, 7 take the chunked form
    (T > chunk + 2ND/(N+D) = chunk + 6.9), 24 and 32 the quadratic one; 7 leaves a ragged last chunk."""
    q, v = _attention_inputs(seed=chunk)
    B, H, T, N = q.shape
    init = torch.randn(B, H, N, v.shape[-1]).requires_grad_() if with_state else None
    loop_out, loop_state = _loop_attention(q, v, init if with_state else torch.zeros(B, H, N, v.shape[-1]))
    fast_out, fast_state = chunked_linear_attention(q, v, init, chunk, return_state=True)
    torch.testing.assert_close(fast_out, loop_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_state, loop_state, rtol=1e-5, atol=1e-5)
    inputs = [q, v] + ([init] if with_state else [])
    probe = torch.randn_like(loop_out)  # a random cotangent, so every output element matters
    want = torch.autograd.grad((loop_out * probe).sum() + loop_state.sum(), inputs)
    got = torch.autograd.grad((fast_out * probe).sum() + fast_state.sum(), inputs)
    for name, g, w in zip(["q", "v", "state"], got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_chunked_attention_is_strictly_causal():
    """a_0 = 0 (nothing earlier) and a_1 = <q_1, q_0> v_0: the diagonal is excluded."""
    q, v = _attention_inputs(seed=3)
    a, _ = chunked_linear_attention(q, v, None, 4, return_state=False)
    assert a[:, :, 0].abs().max() == 0
    expected = (q[:, :, 1] * q[:, :, 0]).sum(-1, keepdim=True) * v[:, :, 0]  # (B, H, D)
    torch.testing.assert_close(a[:, :, 1], expected)


def test_long_positions_stay_accurate():
    """Decoding far into a sequence (position ~3000) still equals the full forward: RoPE angles are
    reduced in float64, so cached and parallel paths agree at large t."""
    model = SPEC.build_model(attn_chunk_size=512)
    ids = random_ids(259, 1, 3000, seed=13)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits[:, -3:]
        out = model(ids[:, :-3], use_cache=True)
        steps = []
        for t in range(ids.shape[1] - 3, ids.shape[1]):
            out = model(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
