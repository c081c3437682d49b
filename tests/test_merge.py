"""Merging BDH models by concatenating neurons (`merge_bdh`) and the `probe bdh merge` command.

The merged model must equal an explicit construction written here from the parents' weights (each parent's
neurons computed with its own rotary frequencies, attention scores and decoder outputs summed), be a normal
model (save/load, cached generation), and the probe must report every model on both texts.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from contract import random_ids
from hatchlings import BdhConfig, average_bdh, merge_bdh
from hatchlings.reference.bdh import model_weights, reference_bdh, reference_rope
from hatchlings.cli import main
from hatchlings.tokenization import build_byte_tokenizer

TINY = dict(hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4, num_hidden_layers=2,
            dropout=0.0, attn_chunk_size=8)


def parent(seed: int, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(BdhConfig(**{**TINY, **overrides})).eval()


def explicit_merge_forward(a, b, ids: torch.Tensor) -> torch.Tensor:
    """The merged BDH written out from the parents: per layer each parent's neurons (own RoPE), summed scores,
    one shared readout a, each parent's y, summed decoder outputs; averaged embedding and head."""
    def ln(t):
        return F.layer_norm(t, (t.shape[-1],))

    wa, wb = model_weights(a), model_weights(b)
    H, D, N = wa["encoder"].shape
    x = ln((wa["embed"] + wb["embed"])[ids] / 2)  # (B, T, D)
    for _ in range(a.config.num_hidden_layers):
        xs = [torch.relu(torch.einsum("btd,hdn->bhtn", x, w["encoder"])) for w in (wa, wb)]  # (B, H, T, N) each
        qs = [reference_rope(v, a.config.rope_theta) for v in xs]
        scores = sum(q @ q.transpose(-1, -2) for q in qs).tril(-1)  # (B, H, T, T)
        read = ln(scores @ x[:, None])  # (B, H, T, D)
        z = sum((v * torch.relu(read @ w["encoder_v"])).transpose(1, 2).reshape(*x.shape[:2], H * N) @ w["decoder"]
                for v, w in zip(xs, (wa, wb)))  # (B, T, D)
        x = ln(x + ln(z))
    return x @ ((wa["lm_head"] + wb["lm_head"]) / 2).T


def test_merge_equals_explicit_construction():
    a, b = parent(1), parent(2)
    merged = merge_bdh(a, b)
    assert merged.config.neurons_per_head == 2 * a.config.neurons_per_head
    assert merged.config.rope_period == a.config.neurons_per_head
    ids = random_ids(259, 2, 40, seed=3)  # 40 tokens in chunks of 8: the chunked attention path
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, explicit_merge_forward(a, b, ids), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(merged(ids).logits, reference_bdh(ids, model_weights(merged), merged.config)[0],
                                   atol=1e-4, rtol=1e-4)


def test_merged_model_is_a_normal_model(tmp_path):
    """Saved and reloaded bit-identical; cached token-by-token decoding equals the full forward."""
    merged = merge_bdh(parent(1), parent(2))
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = random_ids(259, 1, 20, seed=4)
    with torch.no_grad():
        full = merged(ids).logits
        assert torch.equal(loaded(ids).logits, full)
        out = merged(ids[:, :12], use_cache=True)
        steps = [out.logits]
        for t in range(12, 20):
            out = merged(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_merge_and_average_refuse_different_shapes():
    with pytest.raises(ValueError, match="hidden_size"):
        merge_bdh(parent(1), parent(2, hidden_size=64))
    with pytest.raises(ValueError, match="rotary_period"):
        merge_bdh(parent(1), parent(2, mlp_internal_dim_multiplier=8))
    with pytest.raises(ValueError, match="same number of neurons"):
        average_bdh(merge_bdh(parent(1), parent(2)), parent(3))  # 128 vs 64 neurons, both period 64


def test_average_is_the_mean_of_every_weight():
    a, b = parent(1), parent(2)
    averaged = average_bdh(a, b)
    for name, p in averaged.named_parameters():
        torch.testing.assert_close(p, (a.get_parameter(name) + b.get_parameter(name)) / 2)


def test_rope_period_must_divide_the_neurons():
    with pytest.raises(ValueError, match="rope_period"):
        BdhConfig(**TINY, rope_period=6)  # 64 neurons per head
    assert BdhConfig(**TINY, rope_period=16).rotary_period == 16


def _save(model, folder):
    model.save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)
    return str(folder)


def test_probe_merge_reports_every_model_on_both_texts(tmp_path, capsys):
    texts = []
    for name, words in (("a.txt", "to be or not to be "), ("b.txt", "def main(): return 0\n")):
        texts.append(tmp_path / name)
        texts[-1].write_text(words * 300)
    base = _save(parent(1), tmp_path / "base")
    code = main(["probe", "bdh", "merge", base, "--file", str(texts[0]), "--other_file", str(texts[1]),
                 "--steps", "2", "--block_size", "32", "--batch_size", "2", "--output_dir", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "bdh-merge.json").read_text())
    rows = report["tables"][0]["rows"]
    assert [r["model"] for r in rows] == ["parent a", "parent b", "merged (neurons concatenated)", "averaged weights"]
    assert all(0 < r[f"bits/byte on {t}"] < 12 for r in rows for t in ("a.txt", "b.txt"))
    assert (tmp_path / "out" / "bdh-merge.png").stat().st_size > 0
    for tag in ("a", "b"):  # the fine-tuned parents are kept, and can be merged again with --other
        assert (tmp_path / "out" / f"parent-{tag}" / "model.safetensors").is_file()
    assert main(["probe", "bdh", "merge", base, "--file", str(texts[0])]) == 2
    assert "--other_file" in capsys.readouterr().err
