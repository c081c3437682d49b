"""Contract checks on what leaves the process (DESIGN.md §2.6, 2.7, 2.9): save/load, bf16 loading, the
clean-room remote-code load a Hub user gets, and the model card."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, pipeline

from contract import REPO_ROOT, ArchSpec, random_ids


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
                          stdin=subprocess.DEVNULL)  # a y/N prompt would read EOF at once, never wait
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads(proc.stdout.split("\nRESULT ")[-1])
    print(f"in-process: {text!r}\nclean room: {child['text']!r}")
    assert child["module"].startswith("transformers_modules"), child["module"]
    assert child["pipe_module"].startswith("transformers_modules"), child["pipe_module"]
    assert child["leaked"] == []
    # The tokenizer loads as the README and card show it: no prompt, no warning, no remote code without the flag.
    assert child["tokenizer_output"] == {"PreTrainedTokenizerFast": "", "AutoTokenizer": ""}, child["tokenizer_output"]
    assert child["tokenizer_remote_modules"] == []
    assert child["tokenizer_ids"] == {"PreTrainedTokenizerFast": tok(prompt)["input_ids"],
                                      "AutoTokenizer": tok(prompt)["input_ids"]}
    assert child["ids"] == ids[0].tolist()
    assert child["text"] == text


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
