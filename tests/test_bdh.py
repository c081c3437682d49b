"""BDH: the shared contract (tests/contract.py, tests/checks_*.py) plus checks of the BDH math itself.

The reference (hatchlings/reference/bdh.py, also what `hatchlings bench bdh` times) is written from
the equations (DESIGN.md §3 bdh), not from the model's code: it materialises the full masked T x T score matrix and rotates neuron pairs with
complex numbers, so an error in the model's chunking, state carry-over or RoPE cannot hide in a shared
helper. Only the weights are taken from the model.
"""

from __future__ import annotations

import math

import pytest
import torch

from checks_reference import assert_matches_reference
from contract import ArchSpec, make_contract_tests, random_ids
from hatchlings import BdhConfig
from hatchlings.reference.bdh import model_weights, reference_bdh, reference_rope
from hatchlings.modeling.layers import rope_pair_rotor
from hatchlings.modeling.modeling_bdh import (_ChunkedAttention, _GatedReadout, _SparseEncoder,
                                             _StrictlyCausalAttention, chunked_linear_attention,
                                             recurrent_linear_attention_step)

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
    plain_path={"handwritten_backward": False},
    fast_path_ops=("_SparseEncoderBackward", "_ChunkedAttentionBackward", "_GatedReadoutBackward"),
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
def test_matches_reference_at_every_chunk_size(chunk):
    """The contract's reference check (logits and every gradient), whatever the chunk size. T = 64: chunks
    1, 3, 16 take the model's chunked path (T > chunk + 2ND/(N+D) = chunk + 43), 64 = T and 80 > T its
    single-block quadratic path; the graph shows which was taken."""
    attention = "_ChunkedAttentionBackward" if chunk < 64 - 43 else "_StrictlyCausalAttentionBackward"
    assert_matches_reference(SPEC, {"attn_chunk_size": chunk},
                             fast_ops=("_SparseEncoderBackward", attention, "_GatedReadoutBackward"))


@pytest.mark.parametrize("chunk", [4, 80])
def test_plain_autograd_path_agrees(chunk):
    """handwritten_backward=False runs the same math: with dropout (the same seeded masks) and a left-padded
    row, logits and every parameter's gradient equal the hand-written path's."""
    ids = random_ids(259, 2, 64, seed=16)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[1, :7] = 0
    results = []
    for handwritten in (True, False):
        model = SPEC.build_model(attn_chunk_size=chunk, dropout=0.3, handwritten_backward=handwritten).train()
        torch.manual_seed(1)
        out = model(ids, attention_mask=mask, labels=ids, use_cache=False)
        out.loss.backward()
        results.append((out.logits, {name: p.grad for name, p in model.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = results
    torch.testing.assert_close(plain, fast, rtol=1e-5, atol=1e-5)
    for name, grad in fast_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(plain_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


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
@pytest.mark.parametrize("head_major", [False, True])
def test_chunked_attention_matches_recurrence(chunk, with_state, head_major):
    """The parallel forms equal the token-by-token recurrence in output, final state and the gradients
    w.r.t. q and v (and the incoming state). T = 24, N = 8, D = 6: chunks 1, 3, 7 take the chunked form
    (T > chunk + 2ND/(N+D) = chunk + 6.9), 24 and 32 the quadratic one; 7 leaves a ragged last chunk.
    `head_major` passes q as the (B, H, T, N) view of an (H, B, T, N) tensor, the layout BdhBlock uses."""
    q, v = _attention_inputs(seed=chunk)
    B, H, T, N = q.shape
    init = torch.randn(B, H, N, v.shape[-1]).requires_grad_() if with_state else None
    loop_out, loop_state = _loop_attention(q, v, init if with_state else torch.zeros(B, H, N, v.shape[-1]))
    q_in = q.transpose(0, 1).contiguous().transpose(0, 1) if head_major else q
    fast_out, fast_state = chunked_linear_attention(q_in, v, init, chunk, return_state=True)
    assert fast_state.is_contiguous(), "the cache keeps (B, H, N, D) states that later decoding steps read"
    torch.testing.assert_close(fast_out, loop_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_state, loop_state, rtol=1e-5, atol=1e-5)
    inputs = [q, v] + ([init] if with_state else [])
    probe = torch.randn_like(loop_out)  # a random cotangent, so every output element matters
    want = torch.autograd.grad((loop_out * probe).sum() + loop_state.sum(), inputs)
    got = torch.autograd.grad((fast_out * probe).sum() + fast_state.sum(), inputs)
    for name, g, w in zip(["q", "v", "state"], got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"grad of {n}: {m}")


def _naive_causal_attention(q, v):
    """tril(q q^T, -1) @ v by plain autograd; v (M, T, D) broadcasts over the heads of q (H, M, T, N)."""
    return (q @ q.transpose(-1, -2)).tril(-1) @ v


def test_strictly_causal_attention_gradcheck():
    """The hand-written backward (dq = (G + G^T) q, dv summed over heads) is the true gradient: finite
    differences in float64, with v shared by the heads."""
    g = torch.Generator().manual_seed(20)
    q = torch.randn(2, 3, 6, 4, dtype=torch.float64, generator=g).requires_grad_()  # (H, M, T, N)
    v = torch.randn(3, 6, 5, dtype=torch.float64, generator=g).requires_grad_()  # (M, T, D)
    assert torch.autograd.gradcheck(_StrictlyCausalAttention.apply, (q, v))


def test_strictly_causal_attention_matches_autograd():
    """float32, the sizes the model runs: output and gradients equal autograd of the naive formula."""
    g = torch.Generator().manual_seed(21)
    q = torch.relu(torch.randn(3, 2, 40, 16, generator=g)).requires_grad_()  # (H, M, T, N)
    v = torch.randn(2, 40, 8, generator=g).requires_grad_()  # (M, T, D)
    probe = torch.randn(3, 2, 40, 8, generator=g)
    fast, naive = _StrictlyCausalAttention.apply(q, v), _naive_causal_attention(q, v)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad((fast * probe).sum(), (q, v)),
                         torch.autograd.grad((naive * probe).sum(), (q, v))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_attention_gradcheck(with_state):
    """The chunked form's two-scan backward is the true gradient of both outputs (the attention and the
    final state) w.r.t. q, the shared v and the carried-in state: float64 finite differences, 3 chunks."""
    g = torch.Generator().manual_seed(24)
    q = torch.relu(torch.randn(2, 2, 3, 4, 5, dtype=torch.float64, generator=g)).requires_grad_()  # (H,B,nc,C,N)
    v = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=g).requires_grad_()  # (B, nc, C, D)
    state = torch.randn(2, 2, 5, 3, dtype=torch.float64, generator=g).requires_grad_() if with_state else None
    assert torch.autograd.gradcheck(_ChunkedAttention.apply, (q, v, state))


def _readout_inputs(dtype, H=2, M=7, D=3, N=4, dropout=False, seed=22):
    g = torch.Generator().manual_seed(seed)
    x_sparse = torch.relu(torch.randn(H, M, N, dtype=dtype, generator=g)).requires_grad_()
    a, enc_v, dec = (torch.randn(*shape, dtype=dtype, generator=g).requires_grad_()
                     for shape in ((H, M, D), (H, D, N), (H, N, D)))
    keep = (torch.rand(H, M, N, generator=g) > 0.5).to(dtype) * 2 if dropout else None  # p = 0.5, scaled
    return x_sparse, a, enc_v, dec, keep


@pytest.mark.parametrize("dropout", [False, True])
def test_gated_readout_gradcheck(dropout):
    """z = sum_h (x_sparse * ReLU(a @ encoder_v) * keep) @ decoder: the in-place backward is the true
    gradient w.r.t. all four inputs (float64 finite differences), with and without a dropout mask."""
    inputs = _readout_inputs(torch.float64, dropout=dropout)
    assert torch.autograd.gradcheck(lambda *args: _GatedReadout.apply(*args)[0], inputs)


@pytest.mark.parametrize("dropout", [False, True])
def test_gated_readout_matches_autograd(dropout):
    """float32: z, y_sparse and every gradient equal plain autograd of the formula."""
    x_sparse, a, enc_v, dec, keep = _readout_inputs(torch.float32, H=3, M=50, D=8, N=32, dropout=dropout)
    inputs = (x_sparse, a, enc_v, dec)
    y = torch.relu(a @ enc_v)
    naive = torch.einsum("hmn,hnd->md", x_sparse * y * (1 if keep is None else keep), dec)
    fast, fast_y = _GatedReadout.apply(*inputs, keep)
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_y, y)
    probe = torch.randn_like(naive)
    for got, want in zip(torch.autograd.grad((fast * probe).sum(), inputs),
                         torch.autograd.grad((naive * probe).sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sparse_encoder_matches_autograd():
    """x_sparse = ReLU(x @ encoder) (zero at padding) and q = RoPE(x_sparse), head-major: outputs and the
    gradients w.r.t. x and encoder, through both outputs at once, equal autograd of the naive formula with
    the reference rotation. float32 only: the rotation is computed in float32 whatever the input dtype."""
    g = torch.Generator().manual_seed(23)
    B, T, D, H, N = 2, 9, 6, 3, 8
    x = torch.randn(B, T, D, generator=g).requires_grad_()
    encoder = torch.randn(H, D, N, generator=g).requires_grad_()
    key_mask = torch.ones(B, T)
    key_mask[1, :3] = 0  # left padding
    rotor = rope_pair_rotor(torch.arange(T).expand(B, T), N, 100.0)  # (B, 1, T, N/2)
    x_sparse, q = _SparseEncoder.apply(x, encoder, rotor, key_mask)
    naive_x = torch.relu(torch.einsum("btd,hdn->bhtn", x, encoder)) * key_mask[:, None, :, None]  # (B, H, T, N)
    naive_q = reference_rope(naive_x, 100.0)
    torch.testing.assert_close(x_sparse, naive_x.transpose(0, 1))
    torch.testing.assert_close(q, naive_q.transpose(0, 1), rtol=1e-5, atol=1e-6)
    assert (x_sparse[:, 1, :3] == 0).all()
    probe_x, probe_q = torch.randn(H, B, T, N, generator=g), torch.randn(H, B, T, N, generator=g)
    got = torch.autograd.grad((x_sparse * probe_x).sum() + (q * probe_q).sum(), (x, encoder))
    want = torch.autograd.grad((naive_x.transpose(0, 1) * probe_x).sum() + (naive_q.transpose(0, 1) * probe_q).sum(),
                               (x, encoder))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 80])
def test_backward_under_bf16_autocast(chunk):
    """Training under CPU bfloat16 autocast (`--bf16`): the hand-written backward passes run under the
    forward's autocast state, so they neither fail on mixed dtypes nor drift from the float32 gradients
    by more than bfloat16 rounding (up to ~5% here, as with plain autograd of the same formulas).
    T = 64: chunk 4 takes the chunked form, 80 the quadratic one."""
    model = SPEC.build_model(attn_chunk_size=chunk).train()
    ids = random_ids(259, 2, 64, seed=15)
    model(ids, labels=ids, use_cache=False).loss.backward()
    want = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, labels=ids, use_cache=False).loss
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32, name
        assert (p.grad - want[name]).norm() < 0.1 * want[name].norm(), name


def test_dropout_only_in_training():
    """Dropout on x_sparse * y_sparse: random in train mode (and still differentiable), absent in eval."""
    model = SPEC.build_model(dropout=0.5)
    ids = random_ids(259, 2, 16, seed=14)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, use_cache=False).logits, model(ids, use_cache=False).logits)
    model.train()
    first, second = model(ids, labels=ids, use_cache=False), model(ids, use_cache=False)
    assert not torch.allclose(first.logits, second.logits)
    first.loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


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
