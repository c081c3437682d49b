"""Contract checks on generation (DESIGN.md §2.4, 2.5): the cache equals the full forward, generate() with
and without it agrees, and a recurrent state keeps its size."""

from __future__ import annotations

import pytest
import torch

from contract import ArchSpec, close, random_ids


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
            close(_step_through(model, ids, None, prefill), full, 1e-4, f"cached decoding after {prefill} tokens")


def check_passed_cache_is_used(spec: ArchSpec) -> None:
    """A cache handed in is read (and advanced) even with use_cache=False, as in Transformers' own models:
    ignoring it would silently restart the sequence."""
    model = spec.build_model()
    ids = random_ids(model.config.vocab_size, 1, 6, seed=5)
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True).past_key_values
        step = model(ids[:, 5:], past_key_values=cache, use_cache=False).logits[:, -1]
        close(step, model(ids, use_cache=False).logits[:, -1], 1e-4, "step with a passed cache")


def check_incremental_left_padded(spec: ArchSpec) -> None:
    """The same for a left-padded batch of two prompts of different lengths."""
    model, tok = spec.build_model(**spec.causal_overrides), spec.make_tokenizer()
    tok.padding_side = "left"
    enc = tok(["Hello there, dragon", "Hi"], padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any(), "prompts were not padded"
    cont = random_ids(len(tok), 2, 6, seed=5)  # (B, 6) continuation, ids the tokenizer knows
    ids = torch.cat([enc["input_ids"], cont], 1)  # (B, P + 6)
    mask = torch.cat([enc["attention_mask"], torch.ones_like(cont)], 1)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, use_cache=False).logits
        stepped = _step_through(model, ids, mask, enc["input_ids"].shape[1])
    real = mask.bool()
    close(stepped[real], full[real], 1e-4, "left-padded cached decoding")


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
