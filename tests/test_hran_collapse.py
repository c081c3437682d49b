"""`hatchlings probe hran collapse`: the answer scores on hand-made answers, the held-out prompts are train.py's
validation rows, and the study end to end on a tiny preset (two variants, two train.py runs)."""

from __future__ import annotations

import json

import pytest
import yaml

from hatchlings.cli import main
from hatchlings.probes import hran_collapse as collapse
from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import DataConfig
from hatchlings.training.data import build_datasets


def test_one_word_answers_are_the_seeds_failure():
    assert collapse.one_word_answer("is is define is is".split())  # the seed's answer: 4 of 5 words are "is"
    assert collapse.one_word_answer("the cat the dog".split())  # half is enough
    assert not collapse.one_word_answer("the cat sat on the mat".split())  # 2 of 6
    assert not collapse.one_word_answer("is is is".split())  # too short to judge
    scores = collapse.answer_scores(["is is is define is is is", "A cat sat on a mat."])
    assert scores["one-word answers"] == 0.5
    assert scores["distinct-1"] == pytest.approx(7 / 13)  # is define | a cat sat on mat
    assert scores["distinct-2"] == pytest.approx(8 / 11)  # is-is, is-define, define-is | five pairs, none across
    assert scores["repetition"] == pytest.approx(1 / 9)  # "is is is" comes back once; the cat's 3-grams are new
    assert scores["blank answers"] == 0
    assert collapse.answer_scores(["\n\n\n", "A cat.", " . ."])["blank answers"] == pytest.approx(2 / 3)


def _tasks(n: int) -> list[dict]:
    return [{"instruction": f"Name thing {i}.", "instances": [{"input": "" if i % 3 else "in a list",
                                                              "output": f"Thing {i} is a thing."}]} for i in range(n)]


def test_held_out_prompts_are_the_runs_validation_rows(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in _tasks(23)))
    prompts = collapse.held_out_prompts(str(path), 0.1)
    _, validation, _ = build_datasets(DataConfig(train_file=[str(path)], block_size=128, validation_fraction=0.1),
                                      build_byte_tokenizer())
    assert len(prompts) == len(validation) == 2
    assert prompts == ["Name thing 21.\n\nin a list", "Name thing 22."]
    first = bytes(t for t in validation[0]["input_ids"] if t < 256).decode()
    assert prompts[0] in first


def test_collapse_study_end_to_end(tmp_path):
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in _tasks(20)))
    preset = {"architecture": "hran",
              "model": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
              "tokenizer": {"kind": "word", "min_frequency": 1},
              "data": {"train_file": str(data), "block_size": 64, "validation_fraction": 0.1},
              "training": {"per_device_train_batch_size": 4, "learning_rate": 1e-2, "save_strategy": "no",
                           "report_to": "none", "disable_tqdm": True},
              "generation": {"prompt": "Name thing 1.", "max_new_tokens": 4}}
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert main(["probe", "hran", "collapse", str(runs), "--config", str(tmp_path / "preset.yaml"), "--steps", "2",
                 "--seeds", "3", "--variants", "all on,GELU activation", "--new_tokens", "5",
                 "--output_dir", str(out)]) == 0
    summary, samples = json.loads((out / "hran-collapse.json").read_text())["tables"]
    assert [r["variant"] for r in summary["rows"]] == ["all on", "GELU activation"]
    for row in summary["rows"]:
        assert 0 < row["val loss"] < 20 and 0 <= row["one-word answers"] <= 1 and 0 <= row["blank answers"] <= 1
    written = [yaml.safe_load((runs / v / "seed3" / "preset.yaml").read_text()) for v in ("all-on", "GELU-activation")]
    assert [w["model"]["activation"] for w in written] == ["infomax", "gelu"]
    assert all(w["model"]["attention"] == "rbf" and w["optimization"] == {"wiener_snr": True, "hebbian_seed": True}
               for w in written)
    assert (runs / "all-on" / "seed3" / "model.safetensors").is_file()
    stamp = (runs / "all-on" / "seed3" / "model.safetensors").stat().st_mtime_ns
    assert main(["probe", "hran", "collapse", str(runs), "--config", str(tmp_path / "preset.yaml"), "--steps", "2",
                 "--seeds", "3", "--variants", "all on", "--new_tokens", "5", "--output_dir", str(out)]) == 0
    assert (runs / "all-on" / "seed3" / "model.safetensors").stat().st_mtime_ns == stamp  # finished run reused
    again = json.loads((out / "hran-collapse.json").read_text())["tables"][0]["rows"][0]
    assert again == summary["rows"][0]
    assert [(r["variant"], r["prompt"]) for r in samples["rows"]] == [
        ("all on", "Name thing 18.⏎⏎in a list"), ("all on", "Name thing 19."),
        ("GELU activation", "Name thing 18.⏎⏎in a list"), ("GELU activation", "Name thing 19.")]


def test_collapse_refuses_unknown_variants(tmp_path, capsys):
    assert main(["probe", "hran", "collapse", str(tmp_path), "--variants", "all on,no attention"]) == 2
    assert "unknown: no attention" in capsys.readouterr().err
