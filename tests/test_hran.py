"""HRAN: the shared contract (tests/contract.py, tests/checks_*.py) plus checks of each HRAN mechanism.

The reference (hatchlings/reference/hran.py) is written from the equations: RBF attention query by query over
explicit squared distances, the infomax activation and the inhibition gate by their formulas. Only the weights
come from the model.
"""

from __future__ import annotations

import math

import pytest
import torch

from checks_reference import assert_matches_reference
from contract import ArchSpec, make_contract_tests, random_ids
from hatchlings.modeling.configuration_hran import HranConfig
from hatchlings.modeling.modeling_hran import (augment_key, infomax, lateral_inhibition, rbf_attention,
                                               rbf_augment)
from hatchlings.modeling.layers import attention_layout
from hatchlings.training.hebbian import hebbian_seed_embeddings, oja_principal_components

# The record's tokenizer is `bpe`: the contract's BPE vocabulary (learned from Python's docs) has 4,099 tokens
# with pad 0, bos 1, eos 2, so the tiny model's vocabulary covers it.
VOCAB = 4160
TINY = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64)

SPEC = ArchSpec(
    arch="hran",
    tiny_config=lambda **overrides: HranConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_hran.py", "configuration_hran.py", "layers.py", "cache.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"attention": "cosine"}, "attention"),
        ({"activation": "relu"}, "activation"),
        ({"infomax_alpha": -0.1}, "infomax_alpha"),
        ({"inhibition_init": 1.0}, "inhibition_init"),
        ({"rbf_gamma_init": 0.0}, "rbf_gamma_init"),
        ({"lateral_inhibition": "yes"}, "lateral_inhibition"),
        ({"dropout": 1.0}, "dropout"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"vocab_size": 2, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}, "eos_token_id"),
    ),
    causal_length=16,
    repeats_layers=True,  # a stack of identical decoder layers: checkpointing is checked to keep the gradients
    plain_path={"fused_attention": False},
    fast_path_ops=("ScaledDotProductFlashAttentionForCpuBackward0",),
)

globals().update(make_contract_tests(SPEC))


# ------------------------------------------------------------------------------------------ RBF attention

def _pairwise_rbf(q, k, v, gamma, allowed):
    """softmax(-gamma ||q_i - k_j||^2) v from explicit differences. q: (B, H, T, d); k, v: (B, H, S, d)."""
    diff = q[..., :, None, :] - k[..., None, :, :]  # (B, H, T, S, d)
    scores = -gamma.view(1, -1, 1, 1) * (diff * diff).sum(-1)
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("fused", [True, False], ids=["augmented-sdpa", "plain"])
@pytest.mark.parametrize("padded", [False, True], ids=["causal", "left-padded"])
def test_rbf_attention_equals_pairwise_distances_float64(fused, padded):
    """The augmented form q' = [2 gamma q, -gamma], k' = [k, ||k||^2] on SDPA (and the plain path) equals the
    pairwise-distance softmax in float64, in outputs and in the gradients of q, k, v and gamma."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    gamma = (torch.rand(3, generator=g, dtype=torch.float64) + 0.2).requires_grad_()
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9]) if padded else None
    allowed = attention_layout(mask, 2, 9, 0, torch.device("cpu"))[1]
    out = rbf_attention(q, augment_key(k), v, gamma, allowed, fused=fused)
    want = _pairwise_rbf(q, k, v, gamma, torch.ones(9, 9, dtype=torch.bool).tril() if allowed is None else allowed)
    real = torch.ones(2, 1, 9, 1, dtype=torch.bool) if mask is None else mask.bool()[:, None, :, None]
    out, want = out * real, want * real  # a padding query's output is never used
    torch.testing.assert_close(out, want, rtol=0, atol=1e-13)
    weight = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((out * weight).sum(), (q, k, v, gamma))
    ref = torch.autograd.grad((want * weight).sum(), (q, k, v, gamma))
    for name, a, b in zip("qkvg", got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=lambda m, n=name: f"grad {n}: {m}")


def test_augmented_logits_differ_from_distances_by_a_row_constant():
    """q'.k' = -gamma ||q - k||^2 + gamma ||q||^2: the dropped term is the same for every key of a query."""
    q, k = torch.randn(1, 2, 5, 4, dtype=torch.float64), torch.randn(1, 2, 7, 4, dtype=torch.float64)
    gamma = torch.tensor([0.3, 1.7], dtype=torch.float64)
    qa, ka = rbf_augment(q, k, gamma)
    assert qa.shape == (1, 2, 5, 5) and ka.shape == (1, 2, 7, 5)
    dist = -gamma.view(1, 2, 1, 1) * torch.cdist(q, k).pow(2)  # (1, 2, 5, 7)
    torch.testing.assert_close(qa @ ka.transpose(-1, -2) - dist,
                               (gamma.view(1, 2, 1, 1) * q.pow(2).sum(-1, keepdim=True)).expand(1, 2, 5, 7))


def test_gamma_is_positive_and_initialised():
    """gamma = softplus(raw) stays positive whatever the raw parameter, and starts at 1 / (2 sqrt(d))."""
    model = SPEC.build_model()
    attn = model.model.layers[0].attn
    torch.testing.assert_close(attn.gamma, torch.full((2,), 0.5 / math.sqrt(16)))
    with torch.no_grad():
        attn.gamma_raw.fill_(-50.0)
    assert (attn.gamma > 0).all()
    assert SPEC.build_model(rbf_gamma_init=0.7).model.layers[1].attn.gamma.allclose(torch.tensor(0.7))


def test_rbf_float64_model_matches_reference():
    """The whole model in float64, fused vs the reference: equal to float32-RoPE precision."""
    model = SPEC.build_model().double()
    ids = random_ids(model.config.vocab_size, 2, 12, seed=3)
    from hatchlings.reference.hran import reference_logits
    with torch.no_grad():
        torch.testing.assert_close(model(ids, use_cache=False).logits, reference_logits(model, ids),
                                   rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ FFN mechanisms

def test_infomax_formula_and_slope():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
    y = infomax(x, 0.25)
    torch.testing.assert_close(y, torch.tanh(x) + 0.25 * x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert (slope >= 0.25).all()  # the linear leak keeps gradients alive where tanh saturates


def test_lateral_inhibition_formula_sparsity_and_gradients():
    """Units below lambda * mean|h| are exactly zero, winners shrink by the threshold; gradients reach h and
    lambda; a stronger lambda silences more units."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 6, 64, generator=g, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    out = lateral_inhibition(h, lam)
    threshold = lam * h.abs().mean(-1, keepdim=True)
    torch.testing.assert_close(out, torch.sign(h) * torch.relu(h.abs() - threshold))
    assert ((out == 0) == (h.abs() <= threshold)).all()
    active = (out != 0).double().mean()
    assert 0.3 < active < 0.8, active
    gh, glam = torch.autograd.grad((out * torch.randn_like(out)).sum(), (h, lam))
    assert torch.isfinite(gh).all() and glam.abs() > 0  # silenced units still learn, through the mean
    assert torch.autograd.gradcheck(lambda a, b: lateral_inhibition(a, b), (h[:1, :2, :8].detach().requires_grad_(),
                                                                             lam.detach().requires_grad_()))
    stronger = (lateral_inhibition(h.detach(), torch.tensor(0.9, dtype=torch.float64)) != 0).double().mean()
    assert stronger < active


def test_activity_series_reports_inhibition_sparsity():
    """With the gate, a share of units is silenced (< 1); without it, GELU/infomax leave nearly all active."""
    ids = random_ids(VOCAB, 2, 12, seed=5)
    with torch.no_grad():
        gated = SPEC.build_model().activity_series(ids)["inhibition_active"]
        open_ = SPEC.build_model(lateral_inhibition=False).activity_series(ids)["inhibition_active"]
    assert gated.shape == (2,) and (gated < 0.9).all() and (gated > 0.05).all(), gated
    assert (open_ > 0.99).all(), open_


@pytest.mark.parametrize("overrides", [{"attention": "dot"}, {"activation": "gelu"}, {"lateral_inhibition": False},
                                       {"attention": "dot", "activation": "gelu", "lateral_inhibition": False},
                                       {"attention": "dot", "fused_attention": False}],
                         ids=["dot", "gelu", "no-inhibition", "all-off", "dot-plain"])
def test_toggles_match_reference(overrides):
    """Every mechanism toggle of the collapse study runs and equals the reference (logits and gradients)."""
    fast = ("ScaledDotProductFlashAttentionForCpuBackward0",) if overrides.get("fused_attention", True) else ()
    assert_matches_reference(SPEC, overrides, fast_ops=fast)
    model = SPEC.build_model(**overrides)
    names = {n for n, _ in model.named_parameters()}
    assert any("gamma_raw" in n for n in names) == (overrides.get("attention", "rbf") == "rbf")
    assert any("inhibition_logit" in n for n in names) == overrides.get("lateral_inhibition", True)


def test_cached_keys_are_augmented():
    """Generation caches k' = [k, ||k||^2] for RBF heads (d + 1 channels) and plain k for dot heads."""
    ids = random_ids(VOCAB, 1, 5)
    with torch.no_grad():
        rbf = SPEC.build_model()(ids, use_cache=True).past_key_values
        dot = SPEC.build_model(attention="dot")(ids, use_cache=True).past_key_values
    key = rbf.get(0, "key")
    assert key.shape == (1, 2, 5, 17) and dot.get(0, "key").shape == (1, 2, 5, 16)
    torch.testing.assert_close(key[..., -1], key[..., :-1].pow(2).sum(-1))


# ------------------------------------------------------------------------------------------ Hebbian seed

def test_oja_finds_the_top_principal_component():
    """Oja's rule on anisotropic synthetic data converges to the top eigenvector (|cosine| > 0.99), and with
    k > 1 (Sanger's generalisation) to the top k, in order."""
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    scales = torch.tensor([5.0, 3.0, 2.0] + [0.5] * 7)
    X = (torch.randn(4000, 10, generator=g) * scales) @ basis.T  # covariance basis diag(scales^2) basis^T
    W = oja_principal_components(X, k=3, steps=400, lr=0.25, batch_size=256, seed=0)  # (10, 3)
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(X.T))
    top = eigvecs[:, eigvals.argsort(descending=True)[:3]]
    cosines = torch.nn.functional.cosine_similarity(W, top, dim=0).abs()
    assert cosines[0] > 0.99, cosines
    assert (cosines > 0.95).all(), cosines
    torch.testing.assert_close(W.norm(dim=0), torch.ones(3), atol=0.05, rtol=0)


def test_hebbian_seed_embeddings_reflect_co_occurrence():
    """Words that share contexts get nearby seed embeddings; the result has the embedding's shape and scale."""
    # two "topics": tokens 3-6 co-occur with each other, tokens 7-10 with each other
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(3, 7, (2000,), generator=g), torch.randint(7, 11, (2000,), generator=g)
    ids = torch.stack([a.view(-1, 20), b.view(-1, 20)], 1).flatten()  # alternating runs of 20 tokens
    E = hebbian_seed_embeddings(ids, vocab_size=12, dim=4, std=0.02, steps=400, lr=0.25, seed=0)
    assert E.shape == (12, 4) and torch.isfinite(E).all()
    cos = torch.nn.functional.cosine_similarity(E[:, None], E[None], dim=-1)
    assert cos[3:7, 3:7].mean() > cos[3:7, 7:11].mean() + 0.5
    assert abs(E[3:11].std().item() - 0.02) < 0.01


def test_seed_input_embeddings_writes_the_hebbian_seed_into_the_model():
    """train.py's hebbian_seed step: the model's input embedding becomes the Hebbian seed of its rows (real
    tokens only, at the embedding's own scale)."""
    from hatchlings.training.hebbian import seed_input_embeddings

    model = SPEC.build_model(hidden_size=16, num_attention_heads=2, intermediate_size=32)
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": torch.randint(3, 60, (24,), generator=g).tolist(), "attention_mask": [0] * 4 + [1] * 20}
            for _ in range(6)]
    std = float(model.get_input_embeddings().weight.std())
    assert "from the co-occurrences of 6 training rows" in seed_input_embeddings(model, rows, seed=3)
    real = [torch.tensor(r["input_ids"][4:]) for r in rows]
    torch.testing.assert_close(model.get_input_embeddings().weight.detach(),
                               hebbian_seed_embeddings(real, VOCAB, 16, std=std, seed=3))


def test_dropout_only_in_training():
    """Residual dropout changes train-mode outputs and leaves eval mode deterministic (= the dropout-free model)."""
    ids = random_ids(VOCAB, 2, 8, seed=6)
    model = SPEC.build_model(dropout=0.5)
    plain = SPEC.build_model()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits)
        model.train()
        assert not torch.allclose(model(ids).logits, plain(ids).logits)


# ------------------------------------------------------------------------------ encoder-decoder variant
# The contract (tests/checks_*.py) is written for causal LMs; these are its checks that apply to a seq2seq
# model, for HranForConditionalGeneration: config, save/load, clean-room load, cached decoding (with padding
# and the decoder's causality), loss and generate, bad input. The rest do not apply, because they test the
# decoder-only path that the platform serves and the encoder-decoder shares: the reference check (the same
# RbfAttention/feed-forward modules, checked through HranForCausalLM), training, resume, PEFT, chat, the card
# and `train.py`/`hatchlings chat`/the arena (they load AutoModelForCausalLM: a prompt is a prefix, not a
# separate source), constant-size state (HRAN keeps a growing KV cache like any transformer) and the
# `text-generation` pipeline (Transformers 5 has no text2text-generation pipeline; `generate` serves it).

def _seq2seq(seed=0, **overrides):
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(seed)
    return AutoModelForSeq2SeqLM.from_config(SPEC.tiny_config(**overrides)).eval()


def _source_and_target():
    src, tgt = random_ids(VOCAB, 2, 7, seed=20), random_ids(VOCAB, 2, 9, seed=21)
    mask = torch.ones_like(src)
    mask[1, :2] = 0  # the second source row is left-padded
    return src, mask, tgt


def test_seq2seq_registered_and_config_round_trip(tmp_path):
    from transformers import AutoConfig

    from hatchlings.modeling.modeling_hran import HranForConditionalGeneration
    model = _seq2seq()
    assert type(model) is HranForConditionalGeneration and model.config.is_encoder_decoder
    model.config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    loaded._name_or_path = model.config._name_or_path
    assert loaded.to_dict() == model.config.to_dict() and loaded.is_encoder_decoder
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        SPEC.tiny_config(decoder_start_token_id=99999)


@pytest.mark.parametrize("attention", ["rbf", "dot"])
def test_seq2seq_cached_decoding_padding_and_causality(attention):
    """Decoder step by step with the cache (encoder keys computed once) equals one full forward; a left-padded
    source gives the bare row's outputs; changing later target tokens leaves earlier logits unchanged."""
    model = _seq2seq(attention=attention)
    src, mask, tgt = _source_and_target()
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, use_cache=False).logits
        enc = model.get_encoder()(input_ids=src, attention_mask=mask)
        out = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=tgt[:, :3], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(3, 9):
            out = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=tgt[:, t:t + 1], past_key_values=cache)
            steps.append(out.logits)
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
        bare = model(input_ids=src[1:, 2:], decoder_input_ids=tgt[1:], use_cache=False).logits
        torch.testing.assert_close(bare, full[1:], rtol=1e-5, atol=1e-5)
        changed = tgt.clone()
        changed[:, 5:] = (changed[:, 5:] + 1) % VOCAB
        later = model(input_ids=src, attention_mask=mask, decoder_input_ids=changed, use_cache=False).logits
        torch.testing.assert_close(later[:, :5], full[:, :5], rtol=1e-5, atol=1e-5)


def test_seq2seq_loss_and_generate():
    """labels give the unshifted target cross-entropy (decoder inputs = labels shifted right behind the start
    token); greedy and beam generate agree with and without the cache."""
    model = _seq2seq()
    src, mask, tgt = _source_and_target()
    labels = tgt.clone()
    labels[0, -2:] = -100
    out = model(input_ids=src, attention_mask=mask, labels=labels)
    shifted = torch.nn.functional.pad(tgt[:, :-1], (1, 0), value=model.config.bos_token_id)
    logits = model(input_ids=src, attention_mask=mask, decoder_input_ids=shifted).logits
    manual = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, manual)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    for beams in (1, 3):
        cached = model.generate(input_ids=src, attention_mask=mask, num_beams=beams, **kw)
        assert cached.shape == (2, 7) and (cached[:, 0] == model.config.bos_token_id).all()
        assert torch.equal(cached, model.generate(input_ids=src, attention_mask=mask, num_beams=beams,
                                                  use_cache=False, **kw))


@pytest.mark.parametrize("case", ["id_too_large", "empty", "float_ids"])
def test_seq2seq_bad_input(case):
    from checks_forward import BAD_INPUTS

    build, words = BAD_INPUTS[case]
    model = _seq2seq()
    with pytest.raises(ValueError, match=words):
        model(input_ids=build(VOCAB), decoder_input_ids=torch.tensor([[1]]))
    with pytest.raises(ValueError, match=words):
        model(input_ids=torch.tensor([[5, 6]]), decoder_input_ids=build(VOCAB))


_SEQ2SEQ_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from clean_room import HERE, REPO, _Block
sys.path[:] = [p for p in sys.path if p not in ("", ".", REPO, HERE)]
sys.meta_path.insert(0, _Block())
import torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[2], trust_remote_code=True).eval()
src = torch.tensor(json.loads(sys.argv[3]))
ids = model.generate(input_ids=src, max_new_tokens=6, min_new_tokens=6, do_sample=False)
print("\\nRESULT " + json.dumps({"ids": ids.tolist(), "module": type(model).__module__,
                                "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "hatchlings")}))
"""


def test_seq2seq_save_load_and_clean_room(tmp_path):
    """save_pretrained writes auto_map for AutoModelForSeq2SeqLM and the modeling files; reload is bit-identical;
    where hatchlings cannot be imported (offline, trust_remote_code) greedy generation gives the same ids."""
    import json
    import os
    import subprocess
    import sys

    from transformers import AutoModelForSeq2SeqLM

    from contract import REPO_ROOT
    model, export = _seq2seq(), tmp_path / "export"
    model.save_pretrained(export)
    assert {"model.safetensors", "config.json", *SPEC.modeling_files} <= set(os.listdir(export))
    auto_map = json.loads((export / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSeq2SeqLM"] == "modeling_hran.HranForConditionalGeneration", auto_map
    src, mask, tgt = _source_and_target()
    loaded = AutoModelForSeq2SeqLM.from_pretrained(export).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=src, decoder_input_ids=tgt).logits,
                           model(input_ids=src, decoder_input_ids=tgt).logits)
    ids = model.generate(input_ids=src, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, "-c", _SEQ2SEQ_CHILD, os.path.join(REPO_ROOT, "tests"), str(export),
                           json.dumps(src.tolist())], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads(proc.stdout.split("\nRESULT ")[-1])
    assert child["module"].startswith("transformers_modules") and child["leaked"] == []
    assert child["ids"] == ids.tolist()
