"""`hatchlings probe hrm depth|quality`: the text scores on hand-made strings, then both commands end to end on
a tiny untrained HRM export (char tokenizer, one with ACT) and a tiny GPT-2 export to compare with."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hatchlings.cli import main
from hatchlings.modeling.configuration_hrm import HrmConfig
from hatchlings.modeling.modeling_hrm import HrmForCausalLM
from hatchlings.probes import text_quality as tq
from hatchlings.tokenization import build_byte_tokenizer, build_tokenizer

WORDS = "the king lord good night sweet love death and of to is".split()
MODES = ["--modes", "fast,normal"]


# ------------------------------------------------------------------------------------------ text scores

def test_words_fold_case_keep_apostrophes_and_drop_a_cut_word():
    assert tq.words("The King's 2 men, know't!") == ["the", "king's", "men", "know't"]
    assert tq.words("good nig") == ["good"]  # the budget cut "nig..." mid-word
    assert tq.words("good nig", drop_partial=False) == ["good", "nig"]
    assert tq.words("good night.") == ["good", "night"] and tq.words("") == []
    assert tq.vocabulary("Good night, good LORD") == {"good", "night", "lord"}


def test_distinct_n_pools_samples_without_crossing_them():
    samples = [["a", "b", "a", "b"], ["a", "c"]]
    assert tq.distinct_n(samples, 1) == pytest.approx(3 / 6)  # a, b, c of 6 words
    # bigrams ab ba ab | ac: 3 distinct of 4; "b a" across the samples' boundary is never formed
    assert tq.distinct_n(samples, 2) == pytest.approx(3 / 4)
    assert tq.distinct_n([["a"]], 2) is None


def test_repetition_rate_counts_repeats_within_each_sample():
    loop = "the king the king the king".split()  # 3-grams: tkt ktk tkt ktk -> 2 repeats of 4
    assert tq.repetition_rate([loop]) == pytest.approx(2 / 4)
    fresh = "a b c d e".split()  # 3 distinct 3-grams
    assert tq.repetition_rate([loop, fresh]) == pytest.approx(2 / 7)
    assert tq.repetition_rate([fresh, fresh]) == 0  # the same 3-gram in two samples is no repetition
    assert tq.repetition_rate([["a", "b"]]) is None


def test_word_formation_and_score():
    known = tq.vocabulary("the king is good")
    assert tq.word_formation([["the", "kng", "is"], ["good"]], known) == pytest.approx(3 / 4)
    scores = tq.score(["The kng is good. ", "qqq zz the"], known)  # "the" at the end is cut: not counted
    assert scores == {"samples": 2, "words": 6, "word_formation": pytest.approx(3 / 6),
                      "distinct_1": pytest.approx(6 / 6), "distinct_2": pytest.approx(4 / 4), "repetition": 0.0}
    assert tq.score([""], known)["word_formation"] is None


# ------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Tiny random HRMs (plain and ACT) with a char tokenizer learnt from a word-salad text, and a GPT-2."""
    root = tmp_path_factory.mktemp("hrm_probes")
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)).capitalize() + "." for _ in range(60)) + "\n"
    (root / "train.txt").write_text(text)
    (root / "prompts.txt").write_text("The king\\nis \nGood \n")
    tokenizer = build_tokenizer("char", [text])
    for name, act in (("hrm", False), ("hrm_act", True)):
        torch.manual_seed(0)
        config = HrmConfig(vocab_size=len(tokenizer), hidden_size=16, num_attention_heads=2, L_layers=1,
                           H_layers=1, act=act, halt_max_steps=2, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        HrmForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=259, n_positions=256,
                               bos_token_id=257, eos_token_id=258)).save_pretrained(root / "gpt2")
    build_byte_tokenizer().save_pretrained(root / "gpt2")
    return root


def _report(out, what):
    assert (out / f"hrm-{what}.md").read_text().startswith(f"# Probe: hrm-{what}")
    assert (out / f"hrm-{what}.png").read_bytes()[:4] == b"\x89PNG"
    return json.loads((out / f"hrm-{what}.json").read_text())["tables"]


def _depth(exports, model, out, *extra):
    return main(["probe", "hrm", "depth", str(exports / model), "--file", str(exports / "train.txt"),
                 "--output_dir", str(out), "--max_tokens", "96", "--block_size", "32", "--decode_tokens", "2",
                 "--repeats", "1", *MODES, *extra])


def test_cli_depth(exports, tmp_path):
    """Modes cheapest first, the states of every call in execution order, and each mode's bits/byte equal to
    evaluate_file with that mode passed to every forward (and different between modes: the mode arrives)."""
    from hatchlings.evaluation import evaluate_file

    assert _depth(exports, "hrm", tmp_path, "--prompt", "The king is") == 0
    modes, states = _report(tmp_path, "depth")
    assert [(r["mode"], r["N x T"], r["block calls/token"]) for r in modes["rows"]] == [("fast", "1x1", 2),
                                                                                         ("normal", "2x2", 6)]
    for row in modes["rows"]:
        expected = evaluate_file(exports / "hrm", exports / "train.txt", block_size=32, max_tokens=96,
                                 model_kwargs={"hrm_mode": row["mode"]})
        assert row["bits/byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-6) and row["ttft ms"] > 0
    assert modes["rows"][0]["bits/byte"] != modes["rows"][1]["bits/byte"]
    calls = [(r["mode"], r["module"], r["cycle"], r["step"]) for r in states["rows"]]
    assert calls == [("fast", "L", 1, 1), ("fast", "H", 1, 1), ("normal", "L", 1, 1), ("normal", "L", 1, 2),
                     ("normal", "H", 1, 1), ("normal", "L", 2, 1), ("normal", "L", 2, 2), ("normal", "H", 2, 1)]
    assert all(r["mean ‖z‖"] == pytest.approx(4.0, rel=1e-3) for r in states["rows"])  # sqrt(16), post-norm


def test_cli_depth_with_act_reports_halting(exports, tmp_path):
    assert _depth(exports, "hrm_act", tmp_path, "--prompt", "Good night") == 0
    modes, states, halts = _report(tmp_path, "depth")
    assert [r["N x T"] for r in modes["rows"]] == ["2x1", "2x2"]  # ACT runs halt_max_steps = 2 cycles
    assert any("ACT is on" in note for note in modes["notes"])
    for row in halts["rows"]:  # the untrained Q-head never halts early: every token runs both cycles
        assert row["per prompt token"] == " ".join(["2"] * len("Good night")) and row["mean halt cycle"] == 2


def test_cli_quality(exports, tmp_path):
    gpt2 = str(exports / "gpt2")
    args = ["probe", "hrm", "quality", str(exports / "hrm"), "--train_file", str(exports / "train.txt"),
            "--prompts-file", str(exports / "prompts.txt"), "--new_chars", "24", "--compare", gpt2,
            "--output_dir", str(tmp_path), *MODES]
    assert main(args) == 0
    scores, samples = _report(tmp_path, "quality")
    assert [r["model"] for r in scores["rows"]] == ["hrm fast", "hrm normal", f"gpt2 ({gpt2})"]
    for row in scores["rows"]:
        assert row["samples"] == 2
        for name in ("word_formation", "distinct_1", "distinct_2", "repetition"):
            assert row[name] == "n/a" or 0 <= row[name] <= 1
    assert [r["prompt"] for r in samples["rows"][:2]] == ["The king⏎is ", "Good "]
    assert all(len(r["continuation"].replace("\\|", "|")) <= 24 for r in samples["rows"])
    first = json.loads((tmp_path / "hrm-quality.json").read_text())
    assert main(args) == 0  # fixed seeds: the same texts and scores again
    assert json.loads((tmp_path / "hrm-quality.json").read_text())["tables"] == first["tables"]


@pytest.mark.parametrize("what, extra, message", [
    ("quality", [], "--train_file is required"), ("depth", ["--modes", "ludicrous"], "unknown depth mode"),
    ("depth", ["--model_is_gpt2"], "this probe needs 'hatchlings_hrm'")])
def test_cli_errors(exports, tmp_path, capsys, what, extra, message):
    model = exports / ("gpt2" if "--model_is_gpt2" in extra else "hrm")
    extra = [e for e in extra if e != "--model_is_gpt2"]
    assert main(["probe", "hrm", what, str(model), "--file", str(exports / "train.txt"),
                 "--output_dir", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
