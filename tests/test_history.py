"""The training history an export carries (hatchlings.training.history) and its table in the model card.

The run path (an --init_from stage on new text, its card and chat /status) is tested with HRM, whose record
also grows blocks: tests/test_hrm.py::test_continual_learning_expands_grows_and_records_the_history.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hatchlings.model_cards import build_model_card
from hatchlings.training.history import add_stage, file_facts, read_history, write_history


def _stage(history, files, steps=10, **extra):
    return add_stage(history, files=files, data_tokens=640, steps=steps, tokens_seen=steps * 64, vocab_before=None,
                     vocab_after=100, blocks_added=0, evaluation={"dataset": "v", "bits_per_byte": 2.5},
                     init_from=None, date="2026-12-02", **extra)


def test_file_facts_hash_and_count_characters_not_bytes(tmp_path):
    text = "Ψ déjà vu\n" * 200_000  # > 1 MiB: read in pieces, with characters split across them
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    facts = file_facts(path)
    assert facts == {"file": "t.txt", "sha256": hashlib.sha256(text.encode()).hexdigest(), "characters": len(text)}


def test_new_data_opens_a_stage_and_the_same_data_continues_it(tmp_path):
    a, b = {"file": "a.txt", "sha256": "1" * 64, "characters": 5}, {"file": "b.txt", "sha256": "2" * 64,
                                                                    "characters": 7}
    one = _stage([], [a])
    two = _stage(one, [b], steps=5)
    assert [s["stage"] for s in two] == [1, 2] and one == two[:1]  # the earlier list is not changed
    three = _stage(two, [dict(b, file="renamed.txt")], steps=4)  # same content under another name
    assert len(three) == 2 and three[1]["steps"] == 9 and three[1]["sessions"] == 2 and two[1]["steps"] == 5
    write_history(tmp_path, three)
    assert read_history(tmp_path) == three


def test_a_folder_without_history_and_a_broken_one(tmp_path):
    assert read_history(tmp_path) == []
    (tmp_path / "training_history.json").write_text("{not json")
    with pytest.raises(ValueError, match="training_history.json is not valid JSON"):
        read_history(tmp_path)
    (tmp_path / "training_history.json").write_text('{"stage": 1}')
    with pytest.raises(ValueError, match="must hold a list of stages"):
        read_history(tmp_path)


def test_the_card_lists_every_stage():
    a, b = {"file": "shakespeare.txt", "sha256": "ab" * 32, "characters": 5}, {"file": "wiki.txt", "sha256": "cd" * 32,
                                                                               "characters": 7}
    history = _stage(_stage([], [a]), [b])
    history[1]["vocab_before"], history[1]["vocab_after"] = 100, 104
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=104, n_embd=8, n_layer=1, n_head=2))
    card = build_model_card(model=model, repo_name="m", architecture="gpt2", summary="s", train_info={},
                            eval_results={"dataset": "v"}, widget_prompts=["x"], history=history).content
    assert "### Training history" in card
    assert "| 1 | shakespeare.txt (abababababab) | 5 |" in card
    assert "| 2 | wiki.txt (cdcdcdcdcdcd) | 7 |" in card and "100 -> 104" in card
    plain = build_model_card(model=model, repo_name="m", architecture="gpt2", summary="s", train_info={},
                             eval_results={"dataset": "v"}, widget_prompts=["x"]).content
    assert "Training history" not in plain
