"""Contract checks on one forward pass (DESIGN.md §2.2, 2.3, 2.10): causality, the loss, padding, the
embedding accessors and the errors malformed input must raise."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from contract import ArchSpec, close, random_ids


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
        close(out[t, :t + 1], base[:t + 1], 1e-5, f"logits at <= {t} after changing tokens > {t} ({mode})")
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
    close(out.loss, manual, 1e-6, "loss vs manual shifted cross-entropy")
    unmasked = F.cross_entropy(out.logits[:, :-1].reshape(-1, V).float(), ids[:, 1:].reshape(-1))
    assert not torch.allclose(out.loss, unmasked), "-100 labels were not ignored"


def check_padding_invariance(spec: ArchSpec, side: str, pads: int = 4) -> None:
    """A padded row (mask 0 and label -100 on the pads) has the loss and real-token logits of the bare row."""
    model = spec.build_model(**spec.causal_overrides)
    pad_id, T = model.config.pad_token_id, spec.causal_length
    ids = random_ids(model.config.vocab_size, 1, T, seed=3)  # (1, T)
    ids[ids == pad_id] = (pad_id + 1) % model.config.vocab_size  # no pad ids inside, wherever the pad id sits
    with torch.no_grad():
        bare = model(ids, labels=ids, use_cache=False)
        pad = torch.full((1, pads), pad_id)
        padded = torch.cat([pad, ids], 1) if side == "left" else torch.cat([ids, pad], 1)  # (1, T + pads)
        mask = (torch.arange(padded.shape[1]) >= pads) if side == "left" else (torch.arange(padded.shape[1]) < T)
        mask = mask[None].long()
        out = model(padded, attention_mask=mask, labels=padded.masked_fill(mask == 0, -100), use_cache=False)
    real = mask[0].bool()
    close(out.logits[:, real], bare.logits, 1e-5, f"{side}-padded real-token logits")
    close(out.loss, bare.loss, 1e-5, f"{side}-padded loss")


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


def parametrizations(spec: ArchSpec) -> dict[str, pytest.MarkDecorator]:
    """check name -> the pytest parameters make_contract_tests gives it."""
    p = pytest.mark.parametrize
    return {
        "causality": p("mode", spec.depth_modes, ids=[json.dumps(m) for m in spec.depth_modes]),
        "padding_invariance": p("side", ["left", "right"]),
        "bad_input": p("case", list(BAD_INPUTS)),
        "bad_attention_mask": p("case", list(BAD_MASKS)),
    }
