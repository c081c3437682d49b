"""Runs that survive: Ctrl+C saves and stops, `--resume` reaches the same weights as an uninterrupted
run, a save killed half-way never replaces the previous checkpoint, `--init_from` continues a model."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer import Trainer

from checks_platform import SignalAtStep
from hatchlings.training import DataConfig, UsageError, run_training
from hatchlings.training.data import build_datasets
from hatchlings.training.export import load_model_folder
from test_training import TINY_PRESET, write_preset

PRESET = dict(TINY_PRESET, training=dict(TINY_PRESET["training"], max_steps=8, eval_steps=100, logging_steps=2,
                                         save_strategy="steps", save_steps=100, seed=3))


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    return write_preset(tmp_path_factory.mktemp("resume") / "p.yaml", PRESET)


@pytest.fixture(scope="module")
def uninterrupted(preset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    run_training(["--config", str(preset), "--output_dir", str(out)])
    return out


def test_interrupt_saves_and_resume_is_exact(preset, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_training(["--config", str(preset), "--output_dir", str(out)],
                        callbacks=[SignalAtStep(3, signal.SIGTERM)]) == {}
    printed = capsys.readouterr().out
    assert "stopped at step 3" in printed and "--resume" in printed
    assert (out / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (out / "model.safetensors").exists()  # no export from an unfinished run

    run_training(["--config", str(preset), "--output_dir", str(out), "--resume"])
    assert "resuming from" in capsys.readouterr().out
    resumed, straight = _weights(out), _weights(uninterrupted)
    assert resumed.keys() == straight.keys()
    for name in straight:  # same optimizer, scheduler, RNG and data position: bitwise the same on CPU
        assert (resumed[name] == straight[name]).all(), name


def test_killed_save_keeps_previous_checkpoint(preset, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = write_preset(tmp_path / "p.yaml", dict(PRESET, training=dict(PRESET["training"], save_steps=2)))
    original, calls = Trainer._save_optimizer_and_scheduler, []

    def dies_on_second_save(self, output_dir):
        calls.append(output_dir)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while writing")  # as if the process died mid-save
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", dies_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_training(["--config", str(config), "--output_dir", str(out)])
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    assert not (out / "checkpoint-4").exists()  # the torn save never appears under its real name
    monkeypatch.undo()
    run_training(["--config", str(config), "--output_dir", str(out), "--resume"])  # resumes from checkpoint-2
    assert (out / "model.safetensors").is_file()


def test_resume_without_checkpoint_is_a_clear_error(preset, tmp_path):
    with pytest.raises(UsageError, match="no checkpoint"):
        run_training(["--config", str(preset), "--output_dir", str(tmp_path / "empty"), "--resume"])


def test_init_from_continues_an_exported_model(uninterrupted, tmp_path):
    text = tmp_path / "new.txt"
    text.write_text("A new text the model has never seen, about dragons and their hatchlings.\n" * 60)
    preset = {k: v for k, v in PRESET.items() if k not in ("model", "architecture")}
    preset["training"] = dict(PRESET["training"], max_steps=3, save_strategy="no")
    out = tmp_path / "continued"
    metrics = run_training(["--config", str(write_preset(tmp_path / "c.yaml", preset)), "--init_from",
                            str(uninterrupted), "--train_file", str(text), "--output_dir", str(out)])
    assert metrics["eval_loss"] > 0
    before, after = json.loads((uninterrupted / "config.json").read_text()), json.loads((out / "config.json").read_text())
    assert after["model_type"] == before["model_type"] and after["hidden_size"] == before["hidden_size"]
    assert any((_weights(out)[k] != _weights(uninterrupted)[k]).any() for k in _weights(out))  # it trained
    with pytest.raises(UsageError, match="not an exported model folder"):
        run_training(["--config", str(write_preset(tmp_path / "d.yaml", preset)), "--init_from", str(tmp_path)])


def test_bf16_autocast_on_cpu(preset, tmp_path):
    metrics = run_training(["--config", str(preset), "--output_dir", str(tmp_path / "bf16"), "--max_steps", "2",
                            "--bf16", "true", "--save_strategy", "no"])
    assert 0 < metrics["eval_loss"] < 10


def test_optimization_section_end_to_end(preset, tmp_path, capsys):
    """Muon + Wiener-SNR + shifted label smoothing + z-loss + EMA export, set from the command line, train,
    checkpoint and export; the card says what was used; a bad value is one clear error."""
    out = tmp_path / "muon"
    metrics = run_training(["--config", str(preset), "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
                            "--optimizer", "muon", "--wiener_snr", "true", "--label_smoothing", "0.1",
                            "--z_loss", "1e-4", "--ema_decay", "0.5", "--export_ema", "true"])
    assert 0 < metrics["eval_loss"] < 10
    assert "muon" in capsys.readouterr().out.lower()  # the parameter split is printed at start
    ema = load_file(str(out / "checkpoint-4" / "ema.safetensors"))
    exported = _weights(out)
    for name, value in ema.items():  # the export holds the EMA weights, not the raw ones
        assert (exported[name].float() == value).all(), name
    model, tokenizer = load_model_folder(out)  # and the returned (card) numbers are theirs
    _, validation, _ = build_datasets(DataConfig(**PRESET["data"]), tokenizer)
    with torch.no_grad():
        losses = [model(**{k: torch.tensor([row[k]]) for k in ("input_ids", "labels")}).loss for row in validation]
    assert metrics["eval_loss"] == pytest.approx(torch.stack(losses).mean().item(), rel=1e-4)
    card = (out / "README.md").read_text()
    assert "muon + adamw, wiener_snr True, label_smoothing 0.1, z_loss 0.0001, ema_decay 0.5" in card
    with pytest.raises(UsageError, match="optim.name"):
        run_training(["--config", str(preset), "--output_dir", str(tmp_path / "x"), "--optimizer", "sgd"])


def test_hebbian_seed_initialises_a_new_models_embeddings_from_its_text(preset, tmp_path, capsys):
    """optimization.hebbian_seed (HRAN's Oja-rule seed, for any architecture): printed, named in the card, and
    refused with --init_from, whose embeddings are already trained."""
    out = tmp_path / "seeded"
    run_training(["--config", str(preset), "--output_dir", str(out), "--max_steps", "1", "--hebbian_seed", "true"])
    assert "hebbian seed: input embeddings (259 x 32)" in capsys.readouterr().out
    assert "hebbian_seed True" in (out / "README.md").read_text()
    continued = {k: v for k, v in PRESET.items() if k not in ("model", "architecture")}
    with pytest.raises(UsageError, match="hebbian_seed .*--init_from"):
        run_training(["--config", str(write_preset(tmp_path / "c.yaml", continued)), "--output_dir",
                      str(tmp_path / "x"), "--init_from", str(out), "--hebbian_seed", "true"])
