"""`hatchlings.evaluation` (strided sliding-window scoring of a text file), the `lm_perplexity` evaluate
metric it reports through, and (when lm-evaluation-harness is installed) an offline lm-eval run on a tiny
local task against the same saved model."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hatchlings
from hatchlings.evaluation import add_arguments, evaluate_file, run, sliding_windows, token_bytes
from hatchlings.metrics import METRICS_DIR
from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.errors import UsageError
from hatchlings.metrics.lm_perplexity.lm_perplexity import lm_metrics

METRIC = METRICS_DIR / "lm_perplexity"
TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
TEXT = "Hatchlings read bytes: héllo wörld, 🐉 dragons! " * 6 + "The end.\n"  # 1-4 byte characters


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny untrained BDH + byte tokenizer saved as a folder, as train.py would leave it."""
    torch.manual_seed(0)
    config = hatchlings.BdhConfig(hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
                                  num_hidden_layers=2, dropout=0.0)
    folder = tmp_path_factory.mktemp("tiny_bdh")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def _ids() -> list[int]:
    return list(TEXT.encode("utf-8"))  # the byte tokenizer: id == byte, no bos


def test_metric_loads_offline_by_path_and_aggregates_by_token_count():
    """In a fresh process with the Hub switched off: `evaluate.load(<folder>)` needs nothing online."""
    code = ("import evaluate, json, sys; m = evaluate.load(sys.argv[1], keep_in_memory=True); "
            "print(json.dumps(m.compute(nll_sum=[6.0, 1.0], n_tokens=[3, 4], n_bytes=[3, 11])))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code, str(METRIC)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["loss"] == pytest.approx(1.0)  # 7 nats over 7 tokens: windows weighted, not averaged
    assert scores["tokens"] == 7 and scores["bytes"] == 14
    assert scores["bits_per_token"] == pytest.approx(1 / math.log(2))
    expected = lm_metrics(1.0, 2.0)
    assert scores["perplexity"] == pytest.approx(expected["perplexity"])
    assert scores["bits_per_byte"] == pytest.approx(expected["bits_per_byte"])


@pytest.mark.parametrize("loss, bytes_per_token, perplexity, bits_per_byte", [
    (0.0, 1.0, 1.0, 0.0),
    (math.log(2), 1.0, 2.0, 1.0),  # one bit per byte-token
    (2 * math.log(2), 2.0, 4.0, 1.0),  # two bits per token, two bytes per token
    (900.0, 0.5, math.exp(700.0), 900.0 / math.log(2) / 0.5),  # perplexity capped below float overflow
])
def test_metric_formula(loss, bytes_per_token, perplexity, bits_per_byte):
    """The formula the metric script owns, which the Trainer's evaluation imports too."""
    result = lm_metrics(loss, bytes_per_token)
    assert result["perplexity"] == pytest.approx(perplexity)
    assert result["bits_per_byte"] == pytest.approx(bits_per_byte)


def test_token_bytes_charges_each_byte_once():
    tok = build_byte_tokenizer()
    enc = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    counts = token_bytes(TEXT, enc["offset_mapping"])
    assert counts.tolist() == [1] * len(enc["input_ids"])  # byte tokens: one byte each, multi-byte chars too
    # a sub-word tokenizer: "é" split over two tokens, "🐉" in one token, a gap (dropped space) before "a"
    text = "é🐉 a"
    assert token_bytes(text, [(0, 1), (0, 1), (1, 2), (3, 4)]).tolist() == [1, 1, 4, 2]
    assert token_bytes(text, [(0, len(text))] * 4).tolist() == [2, 2, 2, 2]  # no offsets: spread evenly


@pytest.mark.parametrize("n, block, stride", [
    (10, 4, 3), (10, 8, 4), (10, 4, 1), (3, 8, 7), (100, 16, 5), (100, 16, 15), (17, 4, 3), (16, 4, 3),
    (257, 64, 63), (2, 2, 1), (1000, 7, 2), (5, 256, 255)])
def test_windows_score_every_token_but_the_first_once(n, block, stride):
    """Divisible or not, short last window or not: targets 1..n-1, each once, within block-sized windows."""
    windows = sliding_windows(n, block, stride)
    scored = [t for _, end, first in windows for t in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - begin <= block and begin < first for begin, end, first in windows)
    assert [begin for begin, _, _ in windows] == list(range(0, stride * len(windows), stride))


@pytest.mark.parametrize("stride", [0, 4, 5])
def test_windows_must_overlap(stride):
    """stride == block_size would leave each block's first token without context, so unscored."""
    with pytest.raises(ValueError, match="stride must be in"):
        sliding_windows(10, 4, stride)


def test_default_stride_scores_every_token_and_matches_a_manual_computation(model_dir, text_file, model):
    """The default windows (block_size tokens, sharing one) against plain chunks through the HF loss."""
    ids = _ids()
    result = evaluate_file(model_dir, text_file, block_size=64, batch_size=2)
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, 63):  # chunks of 64 that re-read the previous chunk's last token
            block = torch.tensor([ids[start:start + 64]])
            out = model(input_ids=block, labels=block)  # HF shifts: block.shape[1] - 1 predictions
            nll += out.loss.item() * (block.shape[1] - 1)
            count += block.shape[1] - 1
    assert (len(ids) - 1) % 63 != 0  # the windows do not divide the file: the last one is short
    assert result["tokens"] == count == len(ids) - 1  # every token but the first
    assert result["bytes"] == count  # one byte per byte token
    assert result["loss"] == pytest.approx(nll / count, rel=1e-5)
    expected = lm_metrics(nll / count, 1.0)
    assert result["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-5)
    assert result["bits_per_token"] == pytest.approx(result["loss"] / math.log(2))
    assert (result["block_size"], result["stride"], result["file_tokens"]) == (64, 63, len(ids))
    assert result["model"] == str(model_dir) and result["file"] == str(text_file)


def test_strided_windows_match_token_by_token_scoring(model_dir, text_file, model):
    """Each token scored once, with exactly the context its window gives it (checked one token at a time)."""
    full = evaluate_file(model_dir, text_file, block_size=48, stride=20)
    assert full["tokens"] == len(_ids()) - 1 and full["bytes"] == len(TEXT.encode()) - 1
    ids = _ids()[:90]  # 8 windows, the last one short; token by token is slow, so only the start
    block, stride = 24, 10
    result = evaluate_file(model_dir, text_file, block_size=block, stride=stride, batch_size=3, max_tokens=90)
    assert result["tokens"] == len(ids) - 1 and result["windows"] == 8
    nll = 0.0
    with torch.no_grad():
        for begin, end, first in sliding_windows(len(ids), block, stride):
            for t in range(first, end):  # causal: logits at t-1 only see ids[begin:t]
                logits = model(input_ids=torch.tensor([ids[begin:t]]), use_cache=False).logits[0, -1]
                nll -= torch.log_softmax(logits.float(), -1)[ids[t]].item()
    assert result["loss"] == pytest.approx(nll / (len(ids) - 1), rel=1e-5)
    same_object = evaluate_file(model, text_file, block_size=block, stride=stride, max_tokens=90)  # an object too
    assert same_object["loss"] == pytest.approx(result["loss"], rel=1e-6)


def test_file_shorter_than_a_window_and_max_tokens(model_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("hi 🐉")  # 7 bytes
    result = evaluate_file(model_dir, short)
    assert result["block_size"] == 256 and result["stride"] == 255  # BDH declares no context limit
    assert (result["tokens"], result["bytes"], result["windows"]) == (6, 6, 1)
    capped = evaluate_file(model_dir, short, max_tokens=3, block_size=2, stride=1)
    assert (capped["tokens"], capped["windows"], capped["file_tokens"]) == (2, 2, 3)


@pytest.mark.parametrize("setup, kwargs, message", [
    (None, {}, "data file not found"),
    ("", {}, "data file is empty"),
    (b"fine\nalso fine\nbad \xff here\n", {}, r"f\.txt:3: not valid UTF-8 \(byte 0xff at column 5\)"),
    ("x", {}, "at least 2 are needed"),
    ("hello", {"stride": 9, "block_size": 8}, r"--stride must be between 1 and --block_size - 1 \(7\), got 9"),
    ("hello", {"stride": 8, "block_size": 8}, r"--stride must be between 1 and --block_size - 1 \(7\), got 8"),
    ("hello", {"block_size": 1}, "--block_size must be >= 2"),
    ("hello", {"batch_size": 0}, "--batch_size must be >= 1"),
])
def test_user_mistakes_are_usage_errors(model_dir, tmp_path, setup, kwargs, message):
    path = tmp_path / "f.txt"
    if isinstance(setup, bytes):
        path.write_bytes(setup)
    elif setup is not None:
        path.write_text(setup)
    with pytest.raises(UsageError, match=message):
        evaluate_file(model_dir, path, **kwargs)


def test_non_utf8_file_is_one_line_naming_file_and_line(model_dir, tmp_path, capsys):
    """Through the CLI, as a user sees it: exit status 2 and one line, like training's message."""
    from hatchlings.cli import main

    path = tmp_path / "latin1.txt"
    path.write_bytes("plain ascii\ncaf\u00e9 au lait\n".encode("latin-1"))
    assert main(["eval", str(model_dir), "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2: not valid UTF-8 (byte 0xe9 at column 4)" in err


def test_not_a_model_folder(tmp_path, text_file):
    with pytest.raises(UsageError, match="not a saved model folder"):
        evaluate_file(tmp_path, text_file)


def test_run_prints_summary_and_writes_json(model_dir, text_file, capsys):
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(model_dir), "--file", str(text_file), "--block_size", "32", "--stride", "16"])
    assert run(args) == 0
    out = capsys.readouterr().out
    first, rest = out.split("\n", 1)
    assert first.startswith(f"[hatchlings] eval sample.txt: {len(_ids()) - 1} of {len(_ids())} tokens scored")
    assert "bits/byte" in first
    written = json.loads((model_dir / "eval_sample.json").read_text())
    assert json.loads(rest) == written
    assert written["tokens"] == len(_ids()) - 1 and written["stride"] == 16


def test_lm_eval_harness_on_a_local_task_agrees_with_evaluate_file(model_dir, tmp_path):
    """The documented `lm_eval` command, offline, on the 4-document task in tests/lm_eval_tasks.

    lm-eval scores each document after a prefix token (here eos, as in training); with max_length above the
    document length that is one window, exactly `evaluate_file` on a file "<|eos|>" + document (the literal is
    the eos token, and a file's first token is never scored), so both must report the same bits per byte.
    (With several windows they differ slightly by design: lm-eval right-aligns its last window to give it
    full context; `evaluate_file` follows the standard strided method.) Skipped where lm-eval is not installed.
    """
    pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'hatchlings[lmeval]')")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    model_args = (f"pretrained={model_dir},trust_remote_code=True,max_length=256,add_bos_token=False,"
                  "prefix_token_id=258")
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", model_args, "--include_path",
           str(TASKS), "--tasks", "hatchlings_tiny", "--device", "cpu", "--batch_size", "1",
           "--output_path", str(tmp_path)]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (results_file,) = tmp_path.rglob("results_*.json")
    scores = json.loads(results_file.read_text())["results"]["hatchlings_tiny"]

    nll, n_bytes = 0.0, 0
    for i, line in enumerate((TASKS / "hatchlings_tiny.jsonl").read_text(encoding="utf-8").splitlines()):
        doc = tmp_path / f"doc{i}.txt"
        doc.write_text("<|eos|>" + json.loads(line)["text"], encoding="utf-8")
        ours = evaluate_file(model_dir, doc, block_size=256)
        assert ours["windows"] == 1 and ours["tokens"] == ours["bytes"] == len(json.loads(line)["text"].encode())
        nll, n_bytes = nll + ours["loss"] * ours["tokens"], n_bytes + ours["bytes"]
    assert scores["bits_per_byte,none"] == pytest.approx(nll / n_bytes / math.log(2), rel=1e-5)
