"""The training platform end to end: presets and overrides, data packing, a real Trainer run that leaves
a Hub folder, the `hatchlings` CLI on it, and the same command under `accelerate launch` with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import DataConfig, UsageError, parse_run_config, run_training
from hatchlings.training.data import build_datasets

REPO = Path(__file__).resolve().parents[1]
TINY_PRESET = {
    "architecture": "bdh",
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "mlp_internal_dim_multiplier": 8, "dropout": 0.0, "attn_chunk_size": 16},
    "data": {"block_size": 64, "validation_fraction": 0.1, "max_eval_blocks": 8},
    "training": {"max_steps": 30, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
                 "learning_rate": 3e-3, "logging_steps": 5, "eval_strategy": "steps", "eval_steps": 15,
                 "save_strategy": "no", "report_to": "none", "seed": 0},
    "generation": {"prompt": "The ", "max_new_tokens": 20},
    "card": {"license": "mit", "datasets": ["local/pydoc-topics"]},
}


def write_preset(path: Path, preset: dict) -> Path:
    path.write_text(yaml.safe_dump(preset))
    return path


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hatchlings.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny BDH trained for 30 steps on Python's documentation text, exported to a folder."""
    tmp = tmp_path_factory.mktemp("run")
    preset = write_preset(tmp / "tiny.yaml", TINY_PRESET)
    out = tmp / "export"
    metrics = run_training(["--config", str(preset), "--output_dir", str(out)])
    return out, metrics


def test_cli_overrides_win_over_preset(tmp_path):
    preset = write_preset(tmp_path / "p.yaml", TINY_PRESET)
    run = parse_run_config(["--config", str(preset), "--max_steps", "3", "--block_size", "32",
                            "--learning_rate", "1e-4", "--output_dir", str(tmp_path / "o")])
    assert run.training.max_steps == 3 and run.training.learning_rate == 1e-4
    assert run.data.block_size == 32 and run.model["hidden_size"] == 32
    assert run.training.per_device_train_batch_size == 8  # untouched preset value


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update(optimiser="adamw"), "unknown key(s) in 'top level': optimiser"),
    (lambda p: p["model"].update(hidden_sise=3), "unknown key(s) in 'model': hidden_sise"),
    (lambda p: p["training"].update(max_stepz=3), "unknown key(s) in 'training': max_stepz"),
    (lambda p: p["data"].update(blocksize=3), "unknown key(s) in 'data': blocksize"),
    (lambda p: p.update(architecture="dragon"), "unknown architecture 'dragon'"),
    (lambda p: p["data"].update(train_file="/nonexistent.txt"), "data file not found: /nonexistent.txt"),
    (lambda p: p["data"].update(block_size=1), "data.block_size must be >= 2"),
    (lambda p: p["card"].update(licence="mit"), "unknown key(s) in 'card': licence"),
])
def test_bad_presets_give_clear_errors(tmp_path, mutate, message):
    preset = yaml.safe_load(yaml.safe_dump(TINY_PRESET))
    mutate(preset)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_run_config(["--config", str(write_preset(tmp_path / "p.yaml", preset))])


def test_invalid_model_value_and_flags(tmp_path):
    preset = yaml.safe_load(yaml.safe_dump(TINY_PRESET))
    preset["model"]["hidden_size"] = 0
    with pytest.raises(UsageError, match="BdhConfig.hidden_size"):
        run_training(["--config", str(write_preset(tmp_path / "p.yaml", preset))])
    with pytest.raises(UsageError, match="unknown argument"):
        parse_run_config(["--config", str(write_preset(tmp_path / "q.yaml", TINY_PRESET)), "--no_such_flag", "1"])
    with pytest.raises(UsageError, match="config file not found"):
        parse_run_config(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(UsageError, match="invalid YAML"):
        parse_run_config(["--config", str(tmp_path / "bad.yaml")])


def test_packing_adds_eos_between_documents_and_splits_deterministically(tmp_path):
    tok = build_byte_tokenizer()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first document\n" * 40)
    b.write_text("second one\n" * 40)
    data = DataConfig(train_file=[str(a), str(b)], block_size=16, validation_fraction=0.25)
    train, val, stats = build_datasets(data, tok)
    stream = [t for block in list(train["input_ids"]) + list(val["input_ids"]) for t in block]
    expected = list(("first document\n" * 40).encode()) + [tok.eos_token_id] + list(("second one\n" * 40).encode())
    assert stream == expected[:len(stream)]  # order kept, eos at the document boundary, no bos per line
    assert all(len(block) == 16 for block in train["input_ids"])
    assert list(train["labels"]) == list(train["input_ids"])
    assert len(val) == round((len(train) + len(val)) * 0.25)
    assert stats.bytes == 600 + 440 and stats.tokens == 1042  # every byte one token, plus 2 eos
    again = build_datasets(data, tok)
    assert list(again[0]["input_ids"]) == list(train["input_ids"])


def test_empty_file_is_reported(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UsageError, match="data file is empty"):
        build_datasets(DataConfig(train_file=[str(empty)]), build_byte_tokenizer())


def test_training_lowers_loss_and_exports_a_hub_folder(trained):
    out, metrics = trained
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "README.md", "loss_curve.png", "modeling_bdh.py", "configuration_bdh.py", "layers.py",
            "cache.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) or n.startswith(".export-") for n in names)
    assert all((out / n).stat().st_mode & 0o044 for n in names)  # readable by others, as any exported file
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_bdh.BdhForCausalLM"
    assert config["use_cache"] is True  # Trainer turns it off for training; the export must not keep that
    assert metrics["eval_bits_per_byte"] < 6.0  # untrained: log2(259) = 8.0 bits per byte
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    results = {r["type"]: r["value"] for r in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert results["loss"] == pytest.approx(metrics["eval_loss"])
    assert results["bits_per_byte"] == pytest.approx(metrics["eval_bits_per_byte"])
    dataset = card.data.to_dict()["model-index"][0]["results"][0]["dataset"]["name"]
    assert dataset == "last 10% of pydoc_data topics"
    assert "OptimizerNames" not in card.text
    assert card.data.license == "mit" and card.data.datasets == ["local/pydoc-topics"]  # the preset's card section


def test_cli_generate_and_stream(trained):
    out, _ = trained
    greedy = cli("generate", str(out), "--prompt", "The ", "--max_new_tokens", "12", "--temperature", "0")
    assert greedy.returncode == 0, greedy.stderr
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = model.generate(**tok("The ", return_tensors="pt"), max_new_tokens=12, do_sample=False)
    assert greedy.stdout.rstrip("\n") == tok.decode(ids[0], skip_special_tokens=True)
    streamed = cli("generate", str(out), "--prompt", "The ", "--max_new_tokens", "12", "--temperature", "0",
                   "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.rstrip("\n") == greedy.stdout.rstrip("\n")  # streaming prints the same text


def test_train_py_under_accelerate_with_two_processes(tmp_path):
    """`accelerate launch` with 2 gloo processes: same command, no code change, clean exit, one export."""
    preset = dict(TINY_PRESET, training=dict(TINY_PRESET["training"], max_steps=4, eval_steps=2, logging_steps=2))
    config = write_preset(tmp_path / "tiny.yaml", preset)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "train.py"), "--config", str(config), "--output_dir", str(out)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 x 1 x 2" in (out / "README.md").read_text()  # per-device batch x accumulation x 2 processes
    assert (out / "model.safetensors").is_file()
    assert result.stdout.count("[hatchlings] done:") == 1  # only rank 0 exports and reports


def test_cli_eval_writes_json(trained, tmp_path):
    out, _ = trained
    text = tmp_path / "held_out.txt"
    from pydoc_data.topics import topics

    text.write_text(topics[sorted(topics)[0]][:3000])
    result = cli("eval", str(out), "--file", str(text), "--block_size", "64", "--stride", "32")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "eval_held_out.json").read_text())
    assert report["tokens"] == len(text.read_bytes()) - 1  # every byte but the first is scored exactly once
    assert 0 < report["bits_per_byte"] < 8.1
