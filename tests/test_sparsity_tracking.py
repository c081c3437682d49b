"""Per-layer activity tracking: what the callback logs is what the model reports (BDH's neuron sparsity, or any
architecture's own named series), only models that report activity get it, and the exported card shows it
(plot + final table) only when it was logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from contract import random_ids
from test_bdh import SPEC
from test_model_card import PNG_MAGIC, make_card
from test_training import TINY_PRESET, write_preset
from hatchlings.model_cards import last_sparsity, plot_sparsity_curve, sparsity_log_key
from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import run_training
from hatchlings.training.export import export_hub_folder
from hatchlings.training.sparsity import SparsityCallback, reports_activity, track_sparsity

BLOCK = 32
LAYERS = SPEC.tiny_config().num_hidden_layers


def blocks(n: int, seed: int) -> Dataset:
    ids = random_ids(256, n, BLOCK, seed=seed).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def make_trainer(model, tmp_path, **overrides) -> Trainer:
    args = TrainingArguments(**{
        "output_dir": str(tmp_path), "max_steps": 4, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4, "learning_rate": 1e-2, "eval_strategy": "steps", "eval_steps": 2,
        "logging_steps": 2, "save_strategy": "no", "report_to": "none", "use_cpu": True, "seed": 0, **overrides})
    return Trainer(model=model, args=args, train_dataset=blocks(16, seed=1), eval_dataset=blocks(6, seed=2))


BDH_SERIES = ("x_active", "y_active")  # columns 0 and 1 of BDH's `output_sparsity`, as active shares


def sparsity_entries(log_history: list[dict]) -> list[dict]:
    return [entry for entry in log_history if sparsity_log_key("x_active") in entry]


def logged_active(entry: dict) -> torch.Tensor:
    """(layers, 2) active fractions of one log entry, in the layout of the model's `.sparsity`."""
    return torch.tensor([[entry[sparsity_log_key(name, layer)] for name in BDH_SERIES] for layer in range(LAYERS)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BDH trained 4 steps with an evaluation every 2 (and a checkpoint at step 4)."""
    trainer = make_trainer(SPEC.build_model(seed=0), tmp_path_factory.mktemp("sparsity"),
                           save_strategy="steps", save_steps=4)
    callback = track_sparsity(trainer)
    trainer.train()
    return trainer, callback


def test_logged_values_are_one_minus_the_models_sparsity(trained):
    trainer, callback = trained
    assert isinstance(callback, SparsityCallback) and callback in trainer.callback_handler.callbacks
    entries = sparsity_entries(trainer.state.log_history)
    assert [e["step"] for e in entries] == [2, 4]  # each evaluation; train end adds none for an evaluated step
    model = trainer.model.eval()
    first_blocks = torch.tensor(trainer.eval_dataset[:4]["input_ids"])
    with torch.no_grad():
        expected = 1 - model(input_ids=first_blocks, output_sparsity=True, use_cache=False).sparsity
    torch.testing.assert_close(logged_active(entries[-1]), expected, rtol=0, atol=1e-7)
    assert not torch.equal(logged_active(entries[0]), expected)  # step 2 was measured on the weights of step 2
    for column, name in enumerate(BDH_SERIES):
        assert entries[-1][sparsity_log_key(name)] == pytest.approx(expected[:, column].mean().item(), abs=1e-7)


def test_sparsity_reaches_trainer_state_json(trained):
    trainer, _ = trained
    state = json.loads((Path(trainer.args.output_dir) / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in sparsity_entries(state["log_history"])] == [2, 4]


def test_measuring_restores_the_mode_and_train_end_fills_the_last_step(tmp_path):
    model = SPEC.build_model(seed=3)
    trainer = make_trainer(model, tmp_path, eval_strategy="no", max_steps=3)
    callback = track_sparsity(trainer)
    trainer.train()
    assert [e["step"] for e in sparsity_entries(trainer.state.log_history)] == [3]  # no evaluation: end point only
    model.train()
    callback.measure(trainer.state, model)
    assert model.training  # put back in train mode after the eval-mode measurement
    model.eval()
    callback.measure(trainer.state, model)
    assert not model.training


def test_models_without_output_sparsity_are_left_alone(tmp_path):
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=259, n_positions=BLOCK)
    trainer = make_trainer(GPT2LMHeadModel(config), tmp_path)
    assert not reports_activity(trainer.model)
    assert track_sparsity(trainer) is None
    assert not any(isinstance(c, SparsityCallback) for c in trainer.callback_handler.callbacks)
    assert reports_activity(SPEC.build_model())


def test_export_plots_sparsity_and_the_card_tables_the_final_values(trained, tmp_path):
    trainer, _ = trained
    history = trainer.state.log_history
    out = export_hub_folder(trainer.model, build_byte_tokenizer(), tmp_path / "export", architecture="bdh",
                            train_info={"steps": 4}, eval_results={"eval_loss": 5.0}, log_history=history,
                            widget_prompts=["The "])
    assert (out / "sparsity_curve.png").read_bytes().startswith(PNG_MAGIC)
    text = ModelCard.load(out / "README.md").text
    section = text[text.index("### Activity per layer"):text.index("## How to use")]
    assert "![Activity per layer during training](sparsity_curve.png)" in section
    assert "| layer | x_active | y_active |" in section
    final = sparsity_entries(history)[-1]
    for layer in range(LAYERS):
        x, y = (final[sparsity_log_key(name, layer)] for name in BDH_SERIES)
        assert f"| {layer} | {x:.1%} | {y:.1%} |" in section
    x, y = (final[sparsity_log_key(name)] for name in BDH_SERIES)
    assert f"| **mean** | {x:.1%} | {y:.1%} |" in section


def test_no_sparsity_history_means_no_section_and_no_plot(tmp_path):
    history = [{"step": 2, "loss": 3.0}, {"step": 2, "eval_loss": 3.1}]
    assert last_sparsity(history) == {}
    assert plot_sparsity_curve(history, tmp_path / "sparsity_curve.png") is False
    assert not (tmp_path / "sparsity_curve.png").exists()
    text = make_card(SPEC.build_model(), sparsity=last_sparsity(history)).text
    assert "Activity per layer" not in text and "sparsity_curve" not in text


def test_last_sparsity_keeps_the_latest_value_of_each_key():
    x0, y0 = sparsity_log_key("x_active", 0), sparsity_log_key("y_active", 0)
    history = [{"step": 2, x0: 0.5, y0: 0.2}, {"step": 2, "eval_loss": 3.0}, {"step": 4, x0: 0.4},
               {"step": 4, "sparsity/other": 1.0}]
    assert last_sparsity(history) == {x0: 0.4, y0: 0.2}
    assert x0 == "sparsity/x_active_layer0" and sparsity_log_key("gate_open") == "sparsity/gate_open_mean"
    for name, layer in (("x/y", 0), ("x__y", 0), ("", None), ("x", -1)):
        with pytest.raises(ValueError):
            sparsity_log_key(name, layer)


class GatedGpt2(GPT2LMHeadModel):
    """Another architecture's activity in miniature: per-layer `gate_open` and `inhibited` series of its own."""

    def activity_series(self, input_ids, attention_mask=None) -> dict[str, torch.Tensor]:
        hidden = self(input_ids=input_ids, output_hidden_states=True).hidden_states[1:]  # L x (B, T, D)
        positive = torch.stack([(h > 0).float().mean() for h in hidden])  # (L,)
        return {"gate_open": positive, "inhibited": 1 - positive}


def test_any_architecture_logs_and_cards_its_own_named_series(tmp_path):
    config = GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=259, n_positions=BLOCK)
    trainer = make_trainer(GatedGpt2(config), tmp_path, max_steps=2, eval_steps=2)
    assert isinstance(track_sparsity(trainer), SparsityCallback)
    trainer.train()
    entry = [e for e in trainer.state.log_history if sparsity_log_key("gate_open") in e][-1]
    opened = [entry[sparsity_log_key("gate_open", layer)] for layer in range(3)]
    assert entry[sparsity_log_key("gate_open")] == pytest.approx(sum(opened) / 3)
    assert [entry[sparsity_log_key("inhibited", layer)] for layer in range(3)] == pytest.approx([1 - v for v in opened])
    assert plot_sparsity_curve(trainer.state.log_history, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG_MAGIC)
    text = make_card(SPEC.build_model(), sparsity=last_sparsity(trainer.state.log_history)).text
    assert "| layer | gate_open | inhibited |" in text and f"| 2 | {opened[2]:.1%} | {1 - opened[2]:.1%} |" in text


def test_run_training_tracks_sparsity_for_bdh(tmp_path):
    """The real command: run.py adds the callback for BDH, and the exported card carries the section."""
    from pydoc_data.topics import topics

    text = tmp_path / "train.txt"
    text.write_text("".join(topics[k] for k in sorted(topics)[:6]))
    preset = dict(TINY_PRESET, training=dict(TINY_PRESET["training"], max_steps=2, eval_steps=1, logging_steps=1),
                  generation={"prompt": "The ", "max_new_tokens": 4})
    out = tmp_path / "export"
    run_training(["--config", str(write_preset(tmp_path / "tiny.yaml", preset)), "--train_file", str(text),
                  "--output_dir", str(out)])
    assert (out / "sparsity_curve.png").read_bytes().startswith(PNG_MAGIC)
    card = (out / "README.md").read_text()
    section = card[card.index("### Activity per layer"):card.index("## How to use")]
    assert "| 1 | " in section and "| **mean** | " in section and "(sparsity_curve.png)" in section
