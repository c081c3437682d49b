"""Hybrid Hopfield-SSM: the shared contract (tests/contract.py, tests/checks_*.py) plus checks of its own mechanisms.

The reference (hatchlings/reference/hybrid.py) is written from the equations: the SSM as a per-token loop with
explicit conv taps, attention one query at a time, the Hopfield retrieval per token, every segment in full.
"""

from __future__ import annotations

import pytest
import torch

from contract import ArchSpec, make_contract_tests, random_ids
from hatchlings.modeling.configuration_hybrid import HybridConfig, seed_hopfield_schedule
from hatchlings.modeling.modeling_hybrid import MoRHopfield, parallel_scan, sequential_scan
from hatchlings.reference.hybrid import reference_logits

TINY = dict(vocab_size=259, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=128, ssm_state_size=4, ssm_conv_kernel=3, ssm_dt_rank=4, num_memories=8,
            mixer_hidden_size=8, controller_hidden_size=8, n_segments=1)  # segments: causal_overrides, unit tests

SPEC = ArchSpec(
    arch="hybrid",
    tiny_config=lambda **overrides: HybridConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_hybrid.py", "configuration_hybrid.py", "layers.py", "cache.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"paths": []}, "paths"),
        ({"paths": ["ssm", "mlp"]}, "paths"),
        ({"hopfield_steps": [3, 2, 1]}, "hopfield_steps"),  # three entries for two layers
        ({"n_segments": 0}, "n_segments"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"scan_impl": "chunky"}, "scan_impl"),
        ({"scan_chunk_size": 0}, "scan_chunk_size"),
        ({"ssm_dt_min": 0.5, "ssm_dt_max": 0.1}, "ssm_dt_min"),
        ({"hopfield_beta": -1.0}, "hopfield_beta"),
        ({"vocab_size": 100}, "pad_token_id"),
    ),
    # paths subsets and segment counts: every one must stay causal (the controller reads each position only)
    depth_modes=({}, {"n_segments": 3}, {"paths": ["ssm"]}, {"paths": ["hopfield", "attention"]},
                 {"paths": ["ssm", "hopfield"], "n_segments": 1}),
    # T = 21 in scan chunks of 8: three chunks, the last one ragged, so the state carried across chunk
    # boundaries (and the identity padding after the end) is exercised; two segments exercise the controller.
    causal_overrides={"n_segments": 2, "scan_chunk_size": 8},
    causal_length=21,
    has_recurrent_state=False,  # the attention path's keys/values grow with the context
    repeats_layers=True,  # every segment runs the same block stack
    max_length=128,
    plain_path={"scan_impl": "sequential", "fused_attention": False},
    # F.pad shifts the parallel scan's partial results; SDPA is the fused attention
    fast_path_ops=("ConstantPadNdBackward0", "ScaledDotProductFlashAttentionForCpuBackward0"),
)

globals().update(make_contract_tests(SPEC))


def _scan_inputs(seed: int, B=2, T=37, D=3, N=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    decay = torch.rand(B, T, D, N, generator=g, dtype=dtype).clamp(min=0.05).requires_grad_()  # in (0, 1)
    drive = torch.randn(B, T, D, N, generator=g, dtype=dtype).requires_grad_()
    state = torch.randn(B, D, N, generator=g, dtype=dtype).requires_grad_()
    return decay, drive, state


@pytest.mark.parametrize("T,chunk", [(1, 16), (2, 1), (7, 4), (16, 16), (16, 4), (37, 4), (37, 8), (37, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_parallel_scan_equals_sequential(T, chunk, with_state):
    """The chunked parallel scan equals the per-token loop in every h_t, the final state and the gradients
    w.r.t. decay, drive and the carried-in state (float64): one chunk, many, a ragged last one, chunk 1."""
    decay, drive, state = _scan_inputs(T)
    decay_t, drive_t = decay[:, :T], drive[:, :T]
    init = state if with_state else None
    seq_h, seq_last = sequential_scan(decay_t, drive_t, init)
    par_h, par_last = parallel_scan(decay_t, drive_t, init, chunk)
    torch.testing.assert_close(par_h, seq_h)
    torch.testing.assert_close(par_last, seq_last)
    probe = torch.randn_like(seq_h)
    inputs = [decay, drive] + ([state] if with_state else [])
    want = torch.autograd.grad((seq_h * probe).sum() + seq_last.sum(), inputs, allow_unused=True)
    got = torch.autograd.grad((par_h * probe).sum() + par_last.sum(), inputs, allow_unused=True)
    for name, g, w, x in zip(["decay", "drive", "state"], got, want, inputs):
        # one token from a zero state never reads its decay: both forms then leave it without a gradient
        g, w = (torch.zeros_like(x) if t is None else t for t in (g, w))
        torch.testing.assert_close(g, w, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_parallel_scan_is_stable_under_strong_forgetting():
    """Decays near zero (log decay -40 per step) over 200 steps: no overflow, state equals the last drive
    plus a negligible tail, as the recurrence says."""
    decay = torch.full((1, 200, 2, 2), 1e-18)
    drive = torch.randn(1, 200, 2, 2)
    h, _ = parallel_scan(decay, drive, None, 16)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, drive)


def _float64_model(**overrides):
    return SPEC.build_model(**{"n_segments": 2, "scan_chunk_size": 4, **overrides}).double().train()


def test_model_paths_agree_in_float64():
    """Parallel scan + SDPA, the sequential loop + plain attention, and the reference: logits and every
    parameter's gradient agree to float64 precision (a left-padded row included for the two model paths)."""
    ids = random_ids(259, 2, 19, seed=30)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    fast = _float64_model()
    plain = _float64_model(scan_impl="sequential", fused_attention=False)
    plain.load_state_dict(fast.state_dict())
    grads = []
    for model in (fast, plain):
        out = model(ids, attention_mask=mask, labels=ids, use_cache=False)
        out.loss.backward()
        grads.append((out.logits, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-10, atol=1e-10)
    for name, g in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], g, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")
    with torch.no_grad():
        ref = reference_logits(fast, ids[:1])
        torch.testing.assert_close(fast(ids[:1], use_cache=False).logits, ref, rtol=1e-10, atol=1e-10)


def test_one_step_recurrence_equals_parallel_form():
    """Token-by-token decoding (conv window + SSM state + keys/values per (segment, layer) in the cache) equals
    the parallel full forward, for an SSM-only model too (float64), and the state it keeps is the SSM's own."""
    for paths in (["ssm"], ["ssm", "hopfield", "attention"]):
        model = SPEC.build_model(paths=paths, n_segments=2).double()
        ids = random_ids(259, 2, 12, seed=31)
        with torch.no_grad():
            full = model(ids, use_cache=False).logits
            out = model(ids[:, :1], use_cache=True)
            steps = [out.logits]
            for t in range(1, 12):
                out = model(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
                steps.append(out.logits)
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
        layers = {layer for layer, _ in out.past_key_values.states}
        assert layers == set(range(2 * 2)), "one cache entry per (segment, layer)"


def test_padding_leaves_the_ssm_state_untouched():
    """A left-padded prompt leaves exactly the conv window and SSM state of the bare prompt."""
    model = SPEC.build_model(paths=["ssm"], n_segments=1)
    ids = random_ids(259, 1, 9, seed=32)
    padded = torch.cat([torch.full((1, 5), 256), ids], 1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones_like(ids)], 1)
    with torch.no_grad():
        bare = model(ids, use_cache=True).past_key_values
        pad = model(padded, attention_mask=mask, use_cache=True).past_key_values
    for key, value in bare.states.items():
        torch.testing.assert_close(pad.states[key], value, rtol=1e-6, atol=1e-7, msg=lambda m, k=key: f"{k}: {m}")


def test_a_path_can_be_switched_off():
    """`paths` builds only the enabled paths, the mixer weighs only those, and activity names follow them."""
    model = SPEC.build_model(paths=["hopfield", "attention"])
    block = model.model.layers[0]
    assert block.ssm is None and block.hopfield is not None and block.attention is not None
    assert not any("ssm" in name for name, _ in model.named_parameters())
    series = model.activity_series(random_ids(259, 2, 8))
    assert set(series) == {"gate_hopfield", "gate_attention"}
    torch.testing.assert_close(series["gate_hopfield"] + series["gate_attention"], torch.ones(2))
    single = SPEC.build_model(paths=["attention"])
    assert single.model.layers[0].mixer is None and single.model.controller is None


@pytest.mark.parametrize("segments", [2, 3])
def test_controller_is_causal_and_matters(segments):
    """With 2 or 3 segments, changing a late token leaves every earlier logit unchanged, and the controller
    really changes the outputs (zeroing its last layer moves the logits)."""
    model = SPEC.build_model(n_segments=segments)
    ids = random_ids(259, 1, 16, seed=33)
    late = ids.clone()
    late[0, 12:] = (late[0, 12:] + 7) % 256
    with torch.no_grad():
        base, changed = model(ids).logits, model(late).logits
        torch.testing.assert_close(changed[:, :12], base[:, :12], rtol=0, atol=1e-6)
        model.model.controller.fc_out.weight.mul_(100)  # a strong bias on the later segments' mixers
        assert not torch.allclose(model(ids).logits, base, atol=1e-4)


def test_controller_reads_a_detached_state():
    """The stop-gradient: the controller's input carries no graph, yet the controller itself is trained."""
    model = SPEC.build_model(n_segments=2).train()
    seen = []
    model.model.controller.register_forward_pre_hook(lambda module, args: seen.append(args[0].requires_grad))
    ids = random_ids(259, 2, 10, seed=34)
    model(ids, labels=ids, use_cache=False).loss.backward()
    assert seen == [False]
    assert model.model.controller.fc_in.weight.grad.abs().sum() > 0


def test_hopfield_converges_to_a_stored_pattern():
    """With a large beta, one refinement from a noisy query returns the stored pattern it is nearest to."""
    config = HybridConfig(**{**TINY, "hidden_size": 32, "num_memories": 6, "hopfield_beta": 50.0})
    hop = MoRHopfield(config, steps=1)
    g = torch.Generator().manual_seed(35)
    patterns = torch.nn.functional.normalize(torch.randn(6, 32, generator=g), dim=-1)
    with torch.no_grad():
        hop.memory.copy_(patterns)
        hop.log_beta.fill_(torch.log(torch.tensor(50.0)))
        hop.query.weight.copy_(torch.eye(32))
        noisy = patterns[2] + 0.2 * torch.randn(32, generator=g) / 32 ** 0.5
        out = hop(noisy[None, None])[0, 0]
    torch.testing.assert_close(out, patterns[2], rtol=0, atol=1e-3)


def test_seed_schedule_and_defaults():
    """hopfield_steps defaults to the seed's [3, 2, ..., 1]; paths to all three."""
    assert seed_hopfield_schedule(8) == [3, 2, 2, 2, 2, 2, 2, 1]
    config = HybridConfig(num_hidden_layers=8)
    assert config.hopfield_steps == [3, 2, 2, 2, 2, 2, 2, 1] and config.paths == ["ssm", "hopfield", "attention"]


def test_tied_embeddings():
    """tie_word_embeddings shares the token embedding with the head."""
    model = SPEC.build_model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = SPEC.build_model()
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


def test_rectified_flow_aux_loss():
    """config.rectified_flow: training mode returns an unweighted scalar aux_loss (not part of `loss`) whose
    gradient reaches the velocity network and the trunk; eval mode and the default config return none."""
    model = SPEC.build_model(rectified_flow=True).train()
    ids = random_ids(259, 2, 10, seed=36)
    out = model(ids, labels=ids, use_cache=False)
    assert out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
    out.aux_loss.backward()
    assert model.model.flow.fc_in.weight.grad.abs().sum() > 0
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    assert model.eval()(ids).aux_loss is None and SPEC.build_model().train()(ids).aux_loss is None
