"""`hatchlings probe hran collapse`: each variant's change lands
in the run that owns it, and the study end to end on tiny presets (pretraining + instruction tuning, and without
pretraining), answering train.py's own validation rows. The answer scores are tested in test_answers.py."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from hatchlings.cli import main
from hatchlings.probes import hran_collapse as collapse


def _tasks(n: int) -> list[dict]:
    return [{"instruction": f"Name thing {i}.", "instances": [{"input": "" if i % 3 else "in a list",
                                                              "output": f"Thing {i} is a thing."}]} for i in range(n)]


MODEL = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
TRAINING = {"per_device_train_batch_size": 4, "learning_rate": 1e-2, "save_strategy": "no", "report_to": "none",
            "disable_tqdm": True}


def test_presets_put_each_change_in_the_run_that_owns_it():
    """The model, tokenizer and Hebbian seed go to the run that creates the model; Wiener-SNR to every run."""
    chat = {"architecture": "hran", "optimization": {"label_smoothing": 0.1}, "data": {"block_size": 64}}
    pretrain = {"architecture": "hran", "model": dict(MODEL, activation="gelu"), "tokenizer": {"kind": "bpe"},
                "optimization": {"wiener_snr": False}}
    first, second = collapse.presets("dot-product attention", chat, pretrain, pretraining=True)
    assert first["model"] == dict(MODEL, attention="dot", activation="infomax", lateral_inhibition=True)
    assert first["optimization"] == {"wiener_snr": True, "hebbian_seed": True} and first["tokenizer"] == {"kind": "bpe"}
    assert second == dict(chat, optimization={"label_smoothing": 0.1, "wiener_snr": True})  # no model section
    first, second = collapse.presets("word tokenizer", chat, pretrain, pretraining=True)
    assert first["tokenizer"] == {"kind": "word"} and "tokenizer" not in second
    assert collapse.presets("no Wiener-SNR", chat, pretrain, True)[1]["optimization"]["wiener_snr"] is False
    for first, second in (collapse.presets("no pretraining", chat, pretrain, True),
                          collapse.presets("no Hebbian seed", chat, pretrain, False)):
        assert first is None and second["model"]["attention"] == "rbf" and second["tokenizer"] == {"kind": "bpe"}
        assert second["data"] == chat["data"] and second["optimization"]["label_smoothing"] == 0.1
    assert collapse.presets("no Hebbian seed", chat, pretrain, False)[1]["optimization"]["hebbian_seed"] is False


def test_unigram_loss_scores_answers_by_training_answer_frequencies():
    train = [{"labels": [-100, -100, 5, 5]}, {"labels": [-100, 6, -100]}]  # prompts (-100) are not answers
    validation = [{"labels": [-100, 5, 7]}]
    expected = -(math.log(3 / 13) + math.log(1 / 13)) / 2  # (count + 1) / (3 answer tokens + vocabulary of 10)
    assert collapse.unigram_loss(train, validation, vocab_size=10) == pytest.approx(expected)


def test_collapse_study_end_to_end(tmp_path):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in _tasks(20)))
    (tmp_path / "text.txt").write_text("Thing one is a thing, and thing two is another thing.\n" * 40)
    pretrain = {"architecture": "hran", "model": MODEL, "tokenizer": {"kind": "bpe", "vocab_size": 300},
                "data": {"train_file": str(tmp_path / "text.txt"), "block_size": 32},
                "training": dict(TRAINING, max_steps=2), "generation": {"prompt": "Thing", "max_new_tokens": 4}}
    chat = {"architecture": "hran", "data": {"train_file": str(data), "block_size": 64, "validation_fraction": 0.1},
            "training": TRAINING, "generation": {"prompt": "Name thing 1.", "max_new_tokens": 4}}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(chat))
    runs, out = tmp_path / "runs", tmp_path / "out"
    flags = ["--config", str(tmp_path / "chat.yaml"), "--pretrain_config", str(tmp_path / "pretrain.yaml"),
             "--steps", "2", "--seeds", "3", "--new_tokens", "5", "--output_dir", str(out)]
    assert main(["probe", "hran", "collapse", str(runs), *flags,
                 "--variants", "all on,GELU activation,no pretraining,word tokenizer"]) == 0
    summary, samples = json.loads((out / "hran-collapse.json").read_text())["tables"]
    assert [r["variant"] for r in summary["rows"]] == ["all on", "GELU activation", "no pretraining", "word tokenizer"]
    for row in summary["rows"]:
        assert 0 < row["val loss"] < 20 and 0 < row["val bits/byte"] < 20 and 0 < row["unigram loss"] < 20
        assert 0 <= row["one-word answers"] <= 1 and 0 <= row["blank answers"] <= 1
    # BPE has no unknown token; words the pretraining text lacks ("Name", "list") are <|unk|> for the word one
    assert [r["unknown tokens"] == 0 for r in summary["rows"]] == [True, True, True, False]
    written = {v: yaml.safe_load((runs / v / "seed3" / "pretrain" / "preset.yaml").read_text()) for v in
               ("all-on", "GELU-activation")}
    activation = {v: preset["model"]["activation"] for v, preset in written.items()}
    assert activation == {"all-on": "infomax", "GELU-activation": "gelu"}
    assert json.loads((runs / "all-on" / "seed3" / "run.json").read_text())["run"]["argv"][-2:] == [
        "--init_from", str(runs / "all-on" / "seed3" / "pretrain")]
    assert not (runs / "no-pretraining" / "seed3" / "pretrain").exists()
    history = json.loads((runs / "all-on" / "seed3" / "training_history.json").read_text())
    assert len(history) == 2  # pretraining, then the instructions
    # tokens trained on: packed text fills every slot of 2 steps x 4 rows x 32; the answers' padding is not counted
    assert history[0]["tokens_seen"] == 2 * 4 * 32 and 0 < history[1]["tokens_seen"] < 2 * 4 * 64
    stamp = (runs / "all-on" / "seed3" / "model.safetensors").stat().st_mtime_ns
    assert main(["probe", "hran", "collapse", str(runs), *flags, "--variants", "all on"]) == 0
    assert (runs / "all-on" / "seed3" / "model.safetensors").stat().st_mtime_ns == stamp  # finished run reused
    again = json.loads((out / "hran-collapse.json").read_text())["tables"][0]["rows"][0]
    assert again == summary["rows"][0]
    assert [(r["variant"], r["prompt"]) for r in samples["rows"]][:2] == [
        ("all on", "Name thing 18.⏎⏎in a list"), ("all on", "Name thing 19.")]


def test_collapse_refuses_unknown_variants(tmp_path, capsys):
    assert main(["probe", "hran", "collapse", str(tmp_path), "--variants", "all on,no attention"]) == 2
    assert "unknown: no attention" in capsys.readouterr().err
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump({"architecture": "hran", "model": MODEL,
                                                       "data": {"train_file": "tasks.jsonl"}}))
    assert main(["probe", "hran", "collapse", str(tmp_path), "--config", str(tmp_path / "chat.yaml")]) == 2
    assert "has a model section" in capsys.readouterr().err
