"""The contract every hatchlings architecture passes (DESIGN.md §2), written once.

A test module `tests/test_<arch>.py` describes its architecture and pulls the whole contract in:

    SPEC = ArchSpec(arch="bdh", tiny_config=lambda **kw: BdhConfig(**{**TINY, **kw}), ...)
    globals().update(make_contract_tests(SPEC))

Each `check_<name>(spec, *fixtures)` asserts one part of the contract and becomes `test_<name>`. Nothing
here knows a particular architecture: its facts (recurrent state? repeated layers? a hard maximum
length? depth modes?) come from the spec's flags. The module must name its spec `SPEC` (the conftest
fixtures read it).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, Trainer, TrainingArguments, pipeline

import hatchlings
from hatchlings.tokenization import build_byte_tokenizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class ArchSpec:
    """What the shared contract needs to know about one architecture.

    tiny_config(**overrides) -> a small config (tests must stay fast on two CPU cores).
    modeling_files: the .py files `save_pretrained` must copy next to the weights.
    invalid_configs: (overrides, field name) pairs; each must raise a ValueError that names the field.
    depth_modes: config overrides under which causality must hold (e.g. HRM's fast/normal/deep).
    causal_overrides, causal_length: config overrides and sequence length for the causality, padding and
        cached-decoding checks, chosen so that the sequence really crosses the model's internal block
        boundaries (e.g. BDH's attention chunks) and the state carried across them is exercised.
    has_recurrent_state: the generation cache has a fixed size (checked: no growth with context).
    repeats_layers: layers share/repeat weights, so gradient checkpointing is expected and checked.
    max_length: a hard maximum sequence length, or None.
    """

    arch: str
    tiny_config: Callable[..., PreTrainedConfig]
    modeling_files: tuple[str, ...]
    invalid_configs: tuple[tuple[dict, str], ...] = ()
    depth_modes: tuple[dict, ...] = ({},)
    causal_overrides: dict = field(default_factory=dict)
    causal_length: int = 13
    has_recurrent_state: bool = False
    repeats_layers: bool = False
    max_length: int | None = None
    make_tokenizer: Callable = build_byte_tokenizer

    @property
    def model_type(self) -> str:
        return f"hatchlings_{self.arch}"

    def build_model(self, seed: int = 0, **overrides):
        """A seeded, freshly initialised tiny causal LM in eval mode, built through the Auto classes."""
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(self.tiny_config(**overrides)).eval()


def random_ids(vocab: int, *shape: int, seed: int = 0, high: int | None = None) -> torch.Tensor:
    """Reproducible token ids in [0, high or vocab)."""
    return torch.randint(0, high or vocab, shape, generator=torch.Generator().manual_seed(seed))


def _close(actual, expected, tol: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------- 1. config

def check_config_round_trip(spec: ArchSpec, tmp_path) -> None:
    """Every field survives save_pretrained/from_pretrained and to_dict/from_dict (5.x dataclass configs
    can silently drop fields that are not declared with annotations)."""
    cfg = spec.tiny_config()
    assert cfg.model_type == spec.model_type
    cfg.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is type(cfg)
    loaded._name_or_path = cfg._name_or_path  # where it was loaded from: the one field that must differ
    assert loaded.to_dict() == cfg.to_dict()
    assert type(cfg).from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    on_disk = json.loads((tmp_path / "config.json").read_text())
    for key, value in cfg.to_diff_dict().items():  # every non-default value is really written
        assert on_disk.get(key) == value, key


def check_invalid_config(spec: ArchSpec, overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        spec.tiny_config(**overrides)


def check_invalid_config_json(spec: ArchSpec, tmp_path) -> None:
    """A hand-edited config.json with a bad value fails at load time, not deep inside the forward."""
    overrides, name = spec.invalid_configs[0]
    spec.tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=name):
        AutoConfig.from_pretrained(tmp_path)


def check_registry(spec: ArchSpec) -> None:
    """`import hatchlings` registers the arch with the Auto classes; unknown ids list the known ones."""
    assert hatchlings.config_class_for(spec.arch) is type(spec.tiny_config())
    with pytest.raises(ValueError, match=spec.arch):
        hatchlings.config_class_for("nope")
    kwargs = {k: v for k, v in spec.tiny_config().to_diff_dict().items() if k != "model_type"}
    cfg = AutoConfig.for_model(spec.model_type, **kwargs)
    assert type(cfg) is type(spec.tiny_config()) and cfg.to_dict() == spec.tiny_config().to_dict()
    assert isinstance(AutoModelForCausalLM.from_config(cfg), hatchlings.ARCHITECTURES[spec.arch][2])


# ------------------------------------------------------------------------------------------- 2. causality

def check_causality(spec: ArchSpec, mode: dict) -> None:
    """Changing tokens t+1..T-1 never moves the logits at positions <= t, for every t (one batched forward:
    row r of the batch has everything after position r replaced)."""
    model = spec.build_model(**{**spec.causal_overrides, **mode})
    V, T = model.config.vocab_size, spec.causal_length
    ids = random_ids(V, 1, T, seed=1)  # (1, T)
    later = torch.arange(T)[None, :] > torch.arange(T - 1)[:, None]  # (T-1, T): row t changes positions > t
    shift = 1 + random_ids(V - 1, T - 1, T, seed=2)  # in [1, V): every changed token really differs
    changed = torch.where(later, (ids + shift) % V, ids)  # (T-1, T)
    with torch.no_grad():
        base = model(ids, use_cache=False).logits[0]  # (T, V)
        out = model(changed, use_cache=False).logits  # (T-1, T, V)
    for t in range(T - 1):
        _close(out[t, :t + 1], base[:t + 1], 1e-5, f"logits at <= {t} after changing tokens > {t} ({mode})")
        assert not torch.allclose(out[t, t + 1], base[t + 1]), f"changing token {t + 1} did not change its logits"


# ------------------------------------------------------------------------------------------------ 3. loss

def check_loss_matches_manual(spec: ArchSpec) -> None:
    """`labels` -> mean CE of logits[:, :-1] against labels[:, 1:], with -100 ignored."""
    model = spec.build_model()
    V = model.config.vocab_size
    ids = random_ids(V, 2, 10, seed=2)  # (B, T)
    labels = ids.clone()
    labels[0, 3:6], labels[1, -1] = -100, -100
    out = model(ids, labels=labels, use_cache=False)
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, V).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
    _close(out.loss, manual, 1e-6, "loss vs manual shifted cross-entropy")
    unmasked = F.cross_entropy(out.logits[:, :-1].reshape(-1, V).float(), ids[:, 1:].reshape(-1))
    assert not torch.allclose(out.loss, unmasked), "-100 labels were not ignored"


def check_padding_invariance(spec: ArchSpec, side: str, pads: int = 4) -> None:
    """A padded row (mask 0 and label -100 on the pads) has the loss and real-token logits of the bare row."""
    model = spec.build_model(**spec.causal_overrides)
    pad_id, T = model.config.pad_token_id, spec.causal_length
    ids = random_ids(model.config.vocab_size, 1, T, seed=3, high=pad_id)  # (1, T), no pad ids inside
    with torch.no_grad():
        bare = model(ids, labels=ids, use_cache=False)
        pad = torch.full((1, pads), pad_id)
        padded = torch.cat([pad, ids], 1) if side == "left" else torch.cat([ids, pad], 1)  # (1, T + pads)
        mask = (torch.arange(padded.shape[1]) >= pads) if side == "left" else (torch.arange(padded.shape[1]) < T)
        mask = mask[None].long()
        out = model(padded, attention_mask=mask, labels=padded.masked_fill(mask == 0, -100), use_cache=False)
    real = mask[0].bool()
    _close(out.logits[:, real], bare.logits, 1e-5, f"{side}-padded real-token logits")
    _close(out.loss, bare.loss, 1e-5, f"{side}-padded loss")


# ----------------------------------------------------------------------------------- 4. incremental decode

def _step_through(model, ids: torch.Tensor, mask: torch.Tensor | None, prefill: int) -> torch.Tensor:
    """Logits from a prefill of `prefill` tokens, then one token per call with the cache. -> (B, T, V)."""
    out = model(ids[:, :prefill], attention_mask=None if mask is None else mask[:, :prefill], use_cache=True)
    logits, cache = [out.logits], out.past_key_values
    assert cache is not None, "use_cache=True returned no cache"
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t:t + 1], attention_mask=None if mask is None else mask[:, :t + 1],
                    past_key_values=cache, use_cache=True)
        logits.append(out.logits)
        cache = out.past_key_values
    return torch.cat(logits, 1)


def check_incremental_decoding(spec: ArchSpec) -> None:
    """Prefill + token-by-token with the cache equals one full forward (fp32, 1e-4), with any prefill length."""
    model, T = spec.build_model(**spec.causal_overrides), spec.causal_length
    ids = random_ids(model.config.vocab_size, 2, T, seed=4)  # (B, T)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits  # (B, T, V)
        for prefill in (1, T // 2 + 1, T - 1):
            _close(_step_through(model, ids, None, prefill), full, 1e-4, f"cached decoding after {prefill} tokens")


def check_passed_cache_is_used(spec: ArchSpec) -> None:
    """A cache handed in is read (and advanced) even with use_cache=False, as in Transformers' own models:
    ignoring it would silently restart the sequence."""
    model = spec.build_model()
    ids = random_ids(model.config.vocab_size, 1, 6, seed=5)
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).past_key_values
        step = model(ids[:, 5:], past_key_values=cache, use_cache=False).logits[:, -1]
        _close(step, model(ids, use_cache=False).logits[:, -1], 1e-4, "step with a passed cache")


def check_incremental_left_padded(spec: ArchSpec) -> None:
    """The same for a left-padded batch of two prompts of different lengths."""
    model, tok = spec.build_model(**spec.causal_overrides), spec.make_tokenizer()
    tok.padding_side = "left"
    enc = tok(["Hello there, dragon", "Hi"], padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "prompts were not padded"
    cont = random_ids(model.config.vocab_size, 2, 6, seed=5, high=256)  # (B, 6) continuation
    ids = torch.cat([enc["input_ids"], cont], 1)  # (B, P + 6)
    mask = torch.cat([enc["attention_mask"], torch.ones_like(cont)], 1)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
        stepped = _step_through(model, ids, mask, enc["input_ids"].shape[1])
    real = mask.bool()
    _close(stepped[real], full[real], 1e-4, "left-padded cached decoding")


def check_generate_cache_equivalence(spec: ArchSpec) -> None:
    """Greedy generate with and without the cache yields the same tokens (single prompt and padded batch)."""
    model, tok = spec.build_model(), spec.make_tokenizer()
    tok.padding_side = "left"
    for prompts in (["The dragon"], ["Once upon a time there", "A"]):
        enc = tok(prompts, padding=True, return_tensors="pt")
        kw = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        cached = model.generate(**enc, use_cache=True, **kw)
        uncached = model.generate(**enc, use_cache=False, **kw)
        assert cached.shape == (len(prompts), enc["input_ids"].shape[1] + 12)
        assert torch.equal(cached, uncached), f"{cached.tolist()} != {uncached.tolist()}"


def check_beam_and_sampling(spec: ArchSpec) -> None:
    """Beam search (which reorders the cache) agrees with its uncached run; sampling and
    num_return_sequences give the right shapes."""
    model, tok = spec.build_model(), spec.make_tokenizer()
    tok.padding_side = "left"
    enc = tok(["The dragon", "Hi"], padding=True, return_tensors="pt")
    P, n = enc["input_ids"].shape[1], 6
    kw = dict(max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id)
    beams = model.generate(**enc, num_beams=3, do_sample=False, **kw)
    assert beams.shape == (2, P + n)
    assert torch.equal(beams, model.generate(**enc, num_beams=3, do_sample=False, use_cache=False, **kw))
    assert model.generate(**enc, num_beams=3, num_return_sequences=2, do_sample=False, **kw).shape == (4, P + n)
    torch.manual_seed(0)
    sampled = model.generate(**enc, do_sample=True, top_k=20, num_return_sequences=2, **kw)
    assert sampled.shape == (4, P + n)
    assert torch.equal(sampled[:, :P], enc["input_ids"].repeat_interleave(2, 0))


def _cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a generation cache holds (our RecurrentStateCache or a Transformers layered cache)."""
    if hasattr(cache, "states"):
        return list(cache.states.values())
    return [t for layer in cache.layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if isinstance(t, torch.Tensor)]


def check_state_is_constant_size(spec: ArchSpec) -> None:
    """Recurrent generation keeps a fixed-size state: the per-token work cannot grow with the context."""
    if not spec.has_recurrent_state:
        pytest.skip(f"{spec.arch} keeps a growing cache")
    model = spec.build_model()
    shapes = {}
    with torch.no_grad():
        for context in (10, 200):
            cache = model(random_ids(model.config.vocab_size, 1, context), use_cache=True).past_key_values
            before = [t.shape for t in _cache_tensors(cache)]
            cache = model(random_ids(model.config.vocab_size, 1, 1), past_key_values=cache, use_cache=True,
                          attention_mask=torch.ones(1, context + 1, dtype=torch.long)).past_key_values
            assert [t.shape for t in _cache_tensors(cache)] == before, "a decoding step grew the state"
            shapes[context] = before
    assert shapes[10] and shapes[10] == shapes[200], f"state shapes depend on context: {shapes}"


# ------------------------------------------------------------------------------------ 6/7. save and load

def save_export(spec: ArchSpec, path):
    """Save a tiny random model + tokenizer like `hatchlings export` would; return both."""
    model, tok = spec.build_model(), spec.make_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok


def check_save_load(spec: ArchSpec, export_dir) -> None:
    """Weights, config with auto_map, modeling code and tokenizer are written; reload is bit-identical."""
    model, _ = save_export(spec, export_dir)
    files = set(os.listdir(export_dir))
    assert {"model.safetensors", "config.json", "tokenizer.json", *spec.modeling_files} <= files, sorted(files)
    auto_map = json.loads((export_dir / "config.json").read_text()).get("auto_map", {})
    assert {"AutoConfig", "AutoModelForCausalLM"} <= set(auto_map), auto_map
    loaded = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    assert type(loaded) is type(model)
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), "weights changed on reload"
    ids = random_ids(model.config.vocab_size, 2, 9)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def check_bf16_load(spec: ArchSpec, export_dir) -> None:
    """`dtype=` (5.x's name for torch_dtype) loads bf16 weights that run a forward and a cached step."""
    save_export(spec, export_dir)
    model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(random_ids(model.config.vocab_size, 2, 9), use_cache=True)
        step = model(random_ids(model.config.vocab_size, 2, 1), past_key_values=out.past_key_values, use_cache=True)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
    assert torch.isfinite(step.logits).all()


def check_remote_code_clean_room(spec: ArchSpec, tmp_path) -> None:
    """What a Hub user without hatchlings gets (trust_remote_code, offline) matches the in-process output."""
    export = tmp_path / "export"
    model, tok = save_export(spec, export)
    prompt, n = "The dragon hatchling", 16
    ids = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    text = pipeline("text-generation", model=str(export))(prompt, max_new_tokens=n, min_new_tokens=n,
                                                           do_sample=False)[0]["generated_text"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "clean_room.py"), str(export), prompt, str(n)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)  # AutoTokenizer asks y/N about the config's remote code
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads(proc.stdout.split("\nRESULT ")[-1])
    print(f"in-process: {text!r}\nclean room: {child['text']!r}")
    assert child["module"].startswith("transformers_modules"), child["module"]
    assert child["pipe_module"].startswith("transformers_modules"), child["pipe_module"]
    assert child["leaked"] == []
    assert child["ids"] == ids[0].tolist()
    assert child["text"] == text


# ------------------------------------------------------------------------------------------- 8. training

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
    model = spec.build_model(dropout=0.0).train()
    ids = random_ids(model.config.vocab_size, 2, 16, seed=6)
    plain, plain_saved = _grads(model, ids)
    model.activation_checkpointing_enable()  # 5.x name of gradient_checkpointing_enable; what Trainer calls
    assert model.is_activation_checkpointing
    checkpointed, checkpointed_saved = _grads(model, ids)
    assert checkpointed_saved < plain_saved, "checkpointing saved no activations: it is not active"
    assert plain.keys() == checkpointed.keys() and plain
    _close(checkpointed, plain, 1e-6, "gradients with checkpointing")


def check_compile(spec: ArchSpec) -> None:
    """torch.compile (default inductor backend) of the forward matches eager to 1e-4."""
    from torch._dynamo.utils import counters

    model = spec.build_model(**spec.causal_overrides)
    ids = random_ids(model.config.vocab_size, 2, spec.causal_length, seed=7)
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        eager = model(ids, use_cache=False).logits
        start = time.perf_counter()
        try:
            compiled = torch.compile(model)(ids, use_cache=False).logits
        except Exception as err:  # the reason is the point: keep it in the report
            pytest.xfail(f"torch.compile failed for {spec.arch}: {type(err).__name__}: {str(err)[:500]}")
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    print(f"torch.compile (inductor): {graphs} graphs, {breaks} graph breaks, {time.perf_counter() - start:.1f}s")
    assert graphs >= 1, "dynamo compiled nothing: the forward ran eagerly"
    _close(compiled, eager, 1e-4, "compiled vs eager logits")


# ------------------------------------------------------------------------------------ 9/10. card, input

def check_no_split_modules(spec: ArchSpec) -> None:
    """FSDP's auto-wrap (configs/accelerate/fsdp.yaml) wraps the classes `_no_split_modules` names: each must
    be a module class the model really contains, or sharding silently falls back to one flat unit."""
    model = spec.build_model()
    present = {type(m).__name__ for m in model.modules()}
    assert model._no_split_modules and set(model._no_split_modules) <= present, model._no_split_modules


def check_embedding_accessors(spec: ArchSpec) -> None:
    """`get/set_input_embeddings` and `get_output_embeddings` (used by resize_token_embeddings, PEFT, generate)
    reach the real modules, on the base model and the causal LM alike."""
    model = spec.build_model()
    embed = model.get_input_embeddings()
    assert isinstance(embed, torch.nn.Embedding) and embed.num_embeddings == model.config.vocab_size
    assert model.base_model.get_input_embeddings() is embed
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    vocab = model.config.vocab_size
    model.resize_token_embeddings(vocab + 3)
    assert model.config.vocab_size == vocab + 3
    assert model.get_input_embeddings().num_embeddings == vocab + 3
    assert model.get_output_embeddings().out_features == vocab + 3


def check_card_parameter_count(spec: ArchSpec, tiny_model) -> None:
    """The card renders the true parameter count (parsed back from the text)."""
    from hatchlings.model_cards import build_model_card

    model = tiny_model
    card = build_model_card(model=model, repo_name=f"test/{spec.arch}-tiny", architecture=spec.arch,
                            summary="A tiny test model.", train_info={}, eval_results={}, widget_prompts=["Hi"])
    found = re.findall(r"([\d,]+) parameters", card.text)
    assert found, "the card states no parameter count"
    counts = {int(s.replace(",", "")) for s in found}
    unique = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied weights
    assert counts == {model.num_parameters()} == {unique}, (counts, model.num_parameters(), unique)


BAD_INPUTS = {  # name -> (ids builder given vocab size, words the error message must contain)
    "id_too_large": (lambda V: torch.tensor([[1, V, 2]]), r"vocab"),
    "negative_id": (lambda V: torch.tensor([[1, -1, 2]]), r"-1"),
    "empty": (lambda V: torch.zeros(1, 0, dtype=torch.long), r"empty"),
    "float_ids": (lambda V: torch.ones(1, 4), r"integer"),
    "one_dim": (lambda V: torch.tensor([1, 2, 3]), r"shape"),
}


def check_bad_input(spec: ArchSpec, tiny_model, case: str) -> None:
    """Malformed input_ids raise a ValueError that says what is wrong, never an IndexError from a kernel."""
    build, words = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=words):  # an IndexError/RuntimeError from a kernel fails this test
        tiny_model(build(tiny_model.config.vocab_size))


BAD_MASKS = {"too_short": (2, 4), "too_long": (2, 7), "wrong_batch": (3, 5), "three_dim": (2, 1, 5)}  # ids: (2, 5)


def check_bad_attention_mask(spec: ArchSpec, tiny_model, case: str) -> None:
    """A mask that does not match (batch, cached + new tokens) is refused, not silently sliced."""
    with pytest.raises(ValueError, match="attention_mask"):
        tiny_model(random_ids(tiny_model.config.vocab_size, 2, 5), use_cache=False,
                   attention_mask=torch.ones(BAD_MASKS[case], dtype=torch.long))


def check_max_length(spec: ArchSpec) -> None:
    """Beyond a hard maximum length the model says so instead of indexing past a position table."""
    if spec.max_length is None:
        pytest.skip(f"{spec.arch} has no hard maximum length")
    model = spec.build_model()
    with pytest.raises(ValueError, match=str(spec.max_length)):
        model(random_ids(model.config.vocab_size, 1, spec.max_length + 1))


# ------------------------------------------------------------------------------------------ generation

def _parametrizations(spec: ArchSpec) -> dict[str, pytest.MarkDecorator]:
    p = pytest.mark.parametrize
    return {
        "invalid_config": p("overrides,name", spec.invalid_configs, ids=[n for _, n in spec.invalid_configs]),
        "causality": p("mode", spec.depth_modes, ids=[json.dumps(m) for m in spec.depth_modes]),
        "padding_invariance": p("side", ["left", "right"]),
        "bad_input": p("case", list(BAD_INPUTS)),
        "bad_attention_mask": p("case", list(BAD_MASKS)),
    }


def make_contract_tests(spec: ArchSpec) -> dict[str, Callable]:
    """Every `check_<name>(spec, *fixtures)` above as a pytest function `test_<name>(*fixtures)` bound to spec.

    The test's signature is the check's minus `spec`, so pytest injects the same fixtures (tmp_path,
    real_text, tiny_model, export_dir) and parameters. Put the result into a test module's globals().
    """
    marks = _parametrizations(spec)
    tests = {}
    for check_name, check in CHECKS.items():
        name = check_name.removeprefix("check_")

        def test(*args, _check=check, **kwargs):
            return _check(spec, *args, **kwargs)

        test.__name__ = test.__qualname__ = f"test_{name}"
        test.__doc__ = check.__doc__
        test.__signature__ = inspect.Signature(list(inspect.signature(check).parameters.values())[1:])
        tests[test.__name__] = marks[name](test) if name in marks else test
    return tests


CHECKS = {name: fn for name, fn in globals().items() if name.startswith("check_") and callable(fn)}
__all__ = ["ArchSpec", "CHECKS", "make_contract_tests", "random_ids"]
