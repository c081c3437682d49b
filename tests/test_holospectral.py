"""HoloSpectralNet: the shared contract (tests/contract.py, tests/checks_*.py) plus checks of its own mechanisms.

The reference (hatchlings/reference/holospectral.py) loops over time and writes binding, unbinding and the
gate's inverse DFT as explicit sums; the model's fast path uses FFTs over the features (binding) and over time
(the gate's causal convolution), its plain path explicit circulant/Toeplitz matrices. Every pair is compared here
in outputs and gradients, for sequences shorter and longer than the gate's kernel (K = L//2 + 1 taps) and longer
than max_position_embeddings (the documented extension).
"""

from __future__ import annotations

import pytest
import torch

from checks_reference import assert_matches_reference
from contract import ArchSpec, make_contract_tests, random_ids
from hatchlings.modeling.cache import RecurrentStateCache
from hatchlings.modeling.configuration_holospectral import PRESETS, HolospectralConfig
from hatchlings.modeling.modeling_holospectral import (causal_conv_direct, causal_conv_fft, circular_conv,
                                                      circular_corr, gate_kernel)
from hatchlings.reference.holospectral import bind_matrix, reference_kernel, reference_logits, unbind_matrix

TINY = dict(vocab_size=259, hidden_size=32, num_hidden_layers=2, channel_rank=8, max_position_embeddings=64)

SPEC = ArchSpec(
    arch="holospectral",
    tiny_config=lambda **overrides: HolospectralConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_holospectral.py", "configuration_holospectral.py", "layers.py", "cache.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": 33}, "hidden_size"),  # odd: RoPE turns pairs
        ({"channel_rank": 0}, "channel_rank"),
        ({"max_position_embeddings": 1}, "max_position_embeddings"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"fused": "yes"}, "fused"),
        ({"vocab_size": 100}, "pad_token_id"),  # pad id 256 no longer in the vocabulary
    ),
    # L = 32: the gate's kernel has K = 17 taps and the FFT runs at n = 64 >= T + K - 1; T = 40 is longer than
    # the kernel and than L itself (the extension), so the causality, padding, decoding and reference checks
    # cross the kernel's end. The mode {"max_position_embeddings": 128} (K = 65 > T) checks causality for a
    # sequence shorter than the kernel; {"fused": False} the plain path.
    causal_overrides={"max_position_embeddings": 32},
    causal_length=40,
    depth_modes=({}, {"max_position_embeddings": 128}, {"fused": False}),
    # The cache is fixed from the first token: a (B, D) bundle per layer, the gate's (B, K-1, D) input window
    # (zeros before the first token) and a (B,) count. K - 1 = L // 2 bounds the gate's history, so nothing grows.
    has_recurrent_state=True,
    repeats_layers=True,  # a stack of identical blocks: gradient checkpointing applies
    max_length=None,  # longer inputs are a documented, tested extension (test_longer_than_max_position_embeddings)
    plain_path={"fused": False},
    fast_path_ops=("FftR2CBackward0", "FftC2RBackward0"),
)

globals().update(make_contract_tests(SPEC))


# ------------------------------------------------------------------------------------------- spectral gate

def _loop_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{j=0}^{min(t, K-1)} kernel[j] x_{t-j}, one time step at a time. x: (B, T, D)."""
    out = []
    for t in range(x.shape[1]):
        out.append(sum(kernel[j] * x[:, t - j] for j in range(min(t, kernel.shape[0] - 1) + 1)))
    return torch.stack(out, 1)


@pytest.mark.parametrize("T", [1, 5, 17, 40, 100])
def test_causal_conv_fft_equals_direct_equals_loop(T):
    """The FFT convolution (zero-padded to a power of two >= T + K - 1) equals the Toeplitz product and the
    per-step loop, outputs and gradients (x and kernel), for T shorter than, equal to and longer than K = 17."""
    g = torch.Generator().manual_seed(T)
    x = torch.randn(2, T, 3, generator=g, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(17, generator=g, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, T, 3, generator=g, dtype=torch.float64)
    results = []
    for conv in (lambda: causal_conv_fft(x, kernel, T), lambda: causal_conv_direct(x, kernel, T),
                 lambda: _loop_conv(x, kernel)):
        y = conv()
        results.append((y, *torch.autograd.grad((y * probe).sum(), (x, kernel))))
    for got in results[:2]:
        for a, b, what in zip(got, results[2], ("output", "grad x", "grad kernel")):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, w=what: f"T={T} {w}: {m}")


@pytest.mark.parametrize("T", [3, 17, 30])
def test_causal_conv_with_history_equals_full(T):
    """Convolving the new steps behind a window of the previous K-1 inputs (the generation cache) gives the
    corresponding rows of the convolution of the whole sequence."""
    g = torch.Generator().manual_seed(T)
    full = torch.randn(2, 50, 4, generator=g, dtype=torch.float64)
    kernel = torch.randn(9, generator=g, dtype=torch.float64)
    want = _loop_conv(full, kernel)[:, -T:]
    window = full[:, 50 - T - 8:]  # the last K - 1 = 8 old inputs, then the T new ones
    torch.testing.assert_close(causal_conv_fft(window, kernel, T), want)
    torch.testing.assert_close(causal_conv_direct(window, kernel, T), want)


@pytest.mark.parametrize("length", [2, 7, 32, 33])
def test_gate_kernel_is_the_causal_half_of_the_filter(length):
    """gate_kernel (irfft and its written-out cosine sum) equals the reference's full inverse DFT, outputs and
    gradients; the whole filter irfft(gains, n=L) is symmetric, h[L-j] = h[j], so its lags beyond L//2 are the
    negative lags wrapped around and the kernel keeps exactly lags 0..L//2."""
    logits = torch.randn(length // 2 + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(length),
                         requires_grad=True)
    want = reference_kernel(logits, length)
    assert want.shape == (length // 2 + 1,)
    want_grad = torch.autograd.grad((want * torch.arange(1.0, len(want) + 1)).sum(), logits)[0]
    for fused in (True, False):
        got = gate_kernel(logits, length, fused)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.autograd.grad((got * torch.arange(1.0, len(got) + 1)).sum(), logits)[0],
                                   want_grad)
    whole = torch.fft.irfft(torch.sigmoid(logits.detach()), n=length)
    torch.testing.assert_close(whole[1:], whole[1:].flip(0))


def test_gate_step_by_step_equals_full_forward():
    """The SpectralGate through the cache, one token at a time, equals its full forward, for a sequence longer
    than the kernel; the cached window keeps its (B, K-1, D) size throughout."""
    model = SPEC.build_model(max_position_embeddings=16)  # K = 9
    with torch.no_grad():
        gate = model.model.layers[0].gate
        gate.gate.normal_(0.0, 2.0)  # a kernel with weight at every lag
        u = torch.randn(2, 30, 32)
        full = gate(u, None, None)
        cache, steps = RecurrentStateCache(), []
        for t in range(30):
            steps.append(gate(u[:, t:t + 1], None, cache))
            assert cache.get(0, "gate_history").shape == (2, 8, 32)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- holographic mixer

def test_binding_fft_equals_circulant_equals_index_sums():
    """circular_conv / circular_corr by rfft and by circulant matrices equal the reference's index sums (outputs
    and gradients), and unbinding is the adjoint of binding: <bind(x, k), y> = <x, unbind(y, k)>."""
    g = torch.Generator().manual_seed(3)
    x, y = (torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(2))
    key = torch.randn(10, generator=g, dtype=torch.float64, requires_grad=True)
    want_bind, want_unbind = x @ bind_matrix(key).T, y @ unbind_matrix(key).T
    want = torch.autograd.grad((want_bind * y).sum() + (want_unbind ** 2).sum(), key)[0]
    for fused in (True, False):
        bound, unbound = circular_conv(x, key, fused), circular_corr(y, key, fused)
        torch.testing.assert_close(bound, want_bind)
        torch.testing.assert_close(unbound, want_unbind)
        torch.testing.assert_close(torch.autograd.grad((bound * y).sum() + (unbound ** 2).sum(), key)[0], want)
    torch.testing.assert_close((circular_conv(x, key, True) * y).sum(), (x * circular_corr(y, key, True)).sum())


def test_mixer_parallel_equals_recurrent():
    """The mixer's cumulative-sum form (fused and plain) equals its recurrence token by token (running bundle
    + count in the cache), with a left-padded row whose real tokens are averaged over real tokens only."""
    torch.manual_seed(0)
    n = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0
    outs = []
    for fused in (True, False):
        mixer = SPEC.build_model(fused=fused).model.layers[0].mixer
        outs.append(mixer(n, mask, torch.zeros(2, dtype=torch.long), None))
        cache, steps, count = RecurrentStateCache(), [], torch.zeros(2, dtype=torch.long)
        for t in range(12):
            steps.append(mixer(n[:, t:t + 1], mask[:, t:t + 1], count, cache))
            count = count + mask[:, t]
        torch.testing.assert_close(torch.cat(steps, 1)[mask.bool()], outs[-1][mask.bool()], rtol=1e-5, atol=1e-6)
        assert cache.get(0, "bundle").shape == (2, 32)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    mixer = SPEC.build_model().model.layers[0].mixer  # the padded row's real tokens equal the bare row's
    bare = mixer(n[1:, 4:], None, torch.zeros(1, dtype=torch.long), None)
    torch.testing.assert_close(outs[0][1, 4:], bare[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- whole model

@pytest.mark.parametrize("max_positions", [16, 128])
def test_matches_reference_shorter_and_longer_than_the_kernel(max_positions):
    """The contract's reference check (logits and every gradient, fast path) with T = 40 longer than the kernel
    and than L (L = 16: K = 9) and shorter than it (L = 128: K = 65)."""
    assert_matches_reference(SPEC, {"max_position_embeddings": max_positions}, fast_ops=SPEC.fast_path_ops)


def test_plain_path_agrees_with_padding():
    """fused=False runs the same math without FFTs: with a left-padded row, logits and every parameter's
    gradient equal the FFT path's."""
    ids = random_ids(259, 2, 40, seed=16)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :7] = 0
    results = []
    for fused in (True, False):
        model = SPEC.build_model(max_position_embeddings=32, fused=fused).train()
        out = model(ids, attention_mask=mask, labels=ids, use_cache=False)
        out.loss.backward()
        results.append((out.logits, {name: p.grad for name, p in model.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = results
    torch.testing.assert_close(plain, fast, rtol=1e-5, atol=1e-5)
    for name, grad in fast_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(plain_grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_longer_than_max_position_embeddings():
    """The extension beyond L: a 50-token input to a model with L = 16 runs, equals the reference and the
    token-by-token decoding, and the state keeps its size (the gate's window stays K - 1 = 8 inputs)."""
    model = SPEC.build_model(max_position_embeddings=16)
    ids = random_ids(259, 2, 50, seed=8)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        torch.testing.assert_close(full, reference_logits(model, ids), rtol=1e-5, atol=1e-5)
        out = model(ids[:, :1], use_cache=True)
        cache, steps = out.past_key_values, [out.logits]
        for t in range(1, 50):
            out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
        assert cache.get(0, "gate_history").shape == (2, 8, 32) and cache.get(0, "bundle").shape == (2, 32)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------- sizes and optimizer

def _formula(V: int, D: int, depth: int, r: int, L: int = 512) -> int:
    """Tied embedding V*D + final LayerNorm 2D + per block: 3 LayerNorms 6D, mixer keys 2D, L//2+1 gates,
    channel mix down/up 2*D*r and its per-channel scale D."""
    return V * D + 2 * D + depth * (6 * D + 2 * D + (L // 2 + 1) + 2 * D * r + D)


# the seed's claims (at vocab 32000): tiny ~400K, small ~1.5M, base ~8M
TRUE_COUNTS = {("tiny", 259): 55_428, ("small", 259): 180_486, ("base", 259): 696_840,
               ("tiny", 32000): 4_118_276, ("small", 32000): 8_306_182, ("base", 32000): 16_948_232}


@pytest.mark.parametrize("preset,vocab", sorted(TRUE_COUNTS))
def test_preset_parameter_counts(preset, vocab):
    """The presets' true counts: built model == config formula == the formula above == the table."""
    from hatchlings.modeling.modeling_holospectral import HolospectralForCausalLM

    config = HolospectralConfig.from_preset(preset, vocab_size=vocab)
    shape = PRESETS[preset]
    expected = _formula(vocab, shape["hidden_size"], shape["num_hidden_layers"], shape["channel_rank"])
    with torch.device("meta"):
        model = HolospectralForCausalLM(config)
    assert model.num_parameters() == config.num_parameters() == expected == TRUE_COUNTS[(preset, vocab)]


def test_arena_shape_is_gpt2_sized():
    """The arena's width-128 shape (8 blocks, rank 384, L 512) has 831,112 parameters, within 10% of the arena's
    GPT-2 (859,264)."""
    from hatchlings.bench.arena import build_model

    model = build_model("holospectral", "tiny", positions=256)
    assert model.num_parameters() == _formula(259, 128, 8, 384) == 831_112
    assert abs(model.num_parameters() / 859_264 - 1) < 0.10


def test_muon_split_is_the_seeds_diagram():
    """Muon gets exactly the channel-mix down/up matrices; AdamW the embedding/head, norms, keys, gates, scales."""
    from hatchlings.training.optim import split_muon_params
    from hatchlings.modeling.modeling_holospectral import HolospectralForCausalLM

    model = HolospectralForCausalLM(HolospectralConfig.from_preset("small"))
    muon, adamw, report = split_muon_params(model)
    print(report)
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[id(p)].rsplit(".", 2)[-2] for p in muon) == ["down"] * 6 + ["up"] * 6
    assert sum(p.numel() for p in muon) == 6 * 2 * 256 * 32
    assert sum(p.numel() for p in muon) + sum(p.numel() for p in adamw) == model.num_parameters()


def test_inputs_longer_than_the_kernel_are_no_limit_anywhere(tmp_path):
    """max_position_embeddings sizes the gate's kernel, not a context: evaluation, chat and the benchmarks'
    timing all read `accepts_longer_inputs` through one helper (a GPT-2 config keeps its position limit)."""
    from transformers import GPT2Config

    from hatchlings.chat import context_limit as chat_limit
    from hatchlings.evaluation import context_limit, evaluate_file
    from hatchlings.modeling.modeling_holospectral import HolospectralForCausalLM
    from hatchlings.tokenization import build_byte_tokenizer

    model = HolospectralForCausalLM(SPEC.tiny_config(max_position_embeddings=16)).eval()
    assert context_limit(model.config) is None and context_limit(GPT2Config(n_positions=32)) == 32
    assert chat_limit(model, build_byte_tokenizer(model_max_length=100)) == 100
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 3)
    assert evaluate_file(model, tmp_path / "t.txt", block_size=48)["windows"] == 3  # 3 x 16 positions
