"""Contract check: a LoRA adapter (PEFT) trains, saves, reloads where hatchlings is absent, and merges.

The adapter's targets come from the architecture's record (`record.lora`), so this check knows no architecture:
whatever the record names must be reachable by PEFT, trainable on its own, and loadable by a Hub user.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import torch

from contract import REPO_ROOT, ArchSpec, random_ids
from hatchlings.architectures import record_for

# The clean-room child: hatchlings hidden (tests/clean_room.py's blocker), offline, the base loaded with
# trust_remote_code and the adapter put on it with PEFT; prints the logits of the ids it is given.
_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from clean_room import HERE, REPO, _Block
sys.path[:] = [p for p in sys.path if p not in ("", ".", REPO, HERE)]
sys.meta_path.insert(0, _Block())
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True)
model = PeftModel.from_pretrained(base, sys.argv[3]).eval()
with torch.no_grad():
    logits = model(torch.tensor(json.loads(sys.argv[4]))).logits
print("\\nRESULT " + json.dumps({"logits": logits.tolist(), "module": type(base).__module__,
                                "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "hatchlings")}))
"""


def _train_adapter(model, ids: torch.Tensor, steps: int = 3) -> None:
    """A few AdamW steps on the LM loss of `ids`; only parameters PEFT left trainable are given to it."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _clean_room_logits(tmp_path, base_dir, adapter_dir, ids: torch.Tensor) -> torch.Tensor:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.path.join(REPO_ROOT, "tests"), str(base_dir),
                           str(adapter_dir), json.dumps(ids.tolist())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    child = json.loads(proc.stdout.split("\nRESULT ")[-1])
    assert child["module"].startswith("transformers_modules"), child["module"]
    assert child["leaked"] == []
    return torch.tensor(child["logits"])


def check_peft_lora(spec: ArchSpec, tmp_path) -> None:
    """LoRA on the record's targets: training moves only the adapter; the saved adapter on a base loaded with
    trust_remote_code (no hatchlings, offline) gives the same logits; merge_and_unload gives them too."""
    from peft import LoraConfig, get_peft_model

    model, tok = spec.build_model(), spec.make_tokenizer()
    model_class = type(model)
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = random_ids(model.config.vocab_size, 2, 12)  # (2, 12)
    with torch.no_grad():
        base_logits = model(ids).logits

    adapted = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, **record_for(spec.arch).lora))
    trainable = {name: p.detach().clone() for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable), sorted(trainable)
    _train_adapter(adapted, torch.tensor(tok("The dragon hatchling learns to read. " * 3)["input_ids"])[None])
    now = dict(adapted.named_parameters())
    assert any(not torch.equal(now[name], value) for name, value in trainable.items()), "the adapter did not train"
    unloaded = copy.deepcopy(adapted).unload()  # the base model without the adapter layers, weights untouched
    after = dict(unloaded.named_parameters())
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], value) for name, value in before.items()), "a base weight changed"
    with torch.no_grad():
        adapted_logits = adapted(ids).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-4), "the adapter does not change the outputs"

    adapted.save_pretrained(adapter_dir)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(adapter_dir))
    torch.testing.assert_close(_clean_room_logits(tmp_path, base_dir, adapter_dir, ids), adapted_logits,
                               rtol=1e-5, atol=1e-5)
    merged = adapted.merge_and_unload()
    assert type(merged) is model_class
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted_logits, rtol=1e-5, atol=1e-5)
