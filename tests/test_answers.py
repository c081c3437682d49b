"""Held-out answers (hatchlings.training.answers): the scores on hand-made answers, the prompts are the
validation rows' chat-template prompts, and an instruction-tuned export's card carries the scores of its own
greedy answers (a plain-text run's card has none)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import DataConfig
from hatchlings.training.answers import (CARD_DECODINGS, CARD_SCORES, answer_scores, generate_answers,
                                         instruction_prompts, one_word_answer)
from hatchlings.training.data import build_datasets
from hatchlings.training.export import load_model_folder


def test_one_word_answers_are_the_seeds_failure():
    assert one_word_answer("is is define is is".split())  # the HRAN seed's answer: 4 of 5 words are "is"
    assert one_word_answer("the cat the dog".split())  # half is enough
    assert not one_word_answer("the cat sat on the mat".split())  # 2 of 6
    assert not one_word_answer("is is is".split())  # too short to judge
    scores = answer_scores(["is is is define is is is", "A cat sat on a mat."])
    assert scores["one-word answers"] == 0.5
    assert scores["distinct-1"] == pytest.approx(7 / 13)  # is define | a cat sat on mat
    assert scores["distinct-2"] == pytest.approx(8 / 11)  # is-is, is-define, define-is | five pairs, none across
    assert scores["repetition"] == pytest.approx(1 / 9)  # "is is is" comes back once; the cat's 3-grams are new
    assert scores["blank answers"] == 0
    assert answer_scores(["\n\n\n", "A cat.", " . ."])["blank answers"] == pytest.approx(2 / 3)


def _tasks(path, n: int):
    path.write_text("".join(json.dumps({"instruction": f"Name thing {i}.", "output": f"Thing {i} is a thing."}) + "\n"
                            for i in range(n)))
    return path


def test_prompts_are_the_instruction_rows_chat_prompts(tmp_path):
    tok = build_byte_tokenizer()
    text = tmp_path / "a.txt"
    text.write_text("plain text line\n" * 20)
    data = DataConfig(train_file=[str(text)], validation_file=[str(_tasks(tmp_path / "b.jsonl", 5))], block_size=64)
    text_rows, rows, _ = build_datasets(data, tok)
    assert instruction_prompts(text_rows) == []  # packed text has no prompt
    prompts = instruction_prompts(rows)
    rendered = [tok.apply_chat_template([{"role": "user", "content": f"Name thing {i}."}], tokenize=False,
                                        add_generation_prompt=True) for i in range(5)]
    assert prompts == [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]
    assert instruction_prompts(rows, limit=2) == prompts[:2]


def test_instruction_tuned_card_scores_its_own_answers(tmp_path):
    from hatchlings.training import run_training

    preset = {"architecture": "bdh", "model": {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                             "mlp_internal_dim_multiplier": 2},
              "data": {"train_file": str(_tasks(tmp_path / "tasks.jsonl", 20)), "block_size": 64,
                       "validation_fraction": 0.2},
              "training": {"max_steps": 2, "per_device_train_batch_size": 4, "save_strategy": "no",
                           "report_to": "none", "disable_tqdm": True},
              "generation": {"prompt": "Name thing 1.", "max_new_tokens": 4}}
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(preset))
    out = tmp_path / "chat"
    run_training(["--config", str(tmp_path / "chat.yaml"), "--output_dir", str(out)])
    card = (out / "README.md").read_text()
    assert "up to 60 tokens to each of the first 4 validation instructions" in card
    model, tokenizer = load_model_folder(out)
    rows = build_datasets(DataConfig(**preset["data"]), tokenizer)[1]
    for decoding, options in CARD_DECODINGS.items():  # greedy, and sampled as the export's generation config
        expected = answer_scores(generate_answers(model, tokenizer, instruction_prompts(rows), **options))
        for name, key in CARD_SCORES.items():
            shown = re.search(rf"\| {re.escape(name)} \({decoding}\) \| ([^|]+) \|", card)
            assert shown, f"{name} ({decoding}) missing from the card"
            assert shown.group(1).strip() == ("n/a" if expected[key] is None else f"{expected[key]:.6g}")
    assert CARD_DECODINGS["sampled"]["temperature"] == json.loads((out / "generation_config.json").read_text())[
        "temperature"]

    (tmp_path / "plain.txt").write_text("plain text line\n" * 200)
    run_training(["--config", str(tmp_path / "chat.yaml"), "--output_dir", str(tmp_path / "plain"),
                  "--train_file", str(tmp_path / "plain.txt")])
    assert "answers distinct-2" not in (tmp_path / "plain" / "README.md").read_text()
