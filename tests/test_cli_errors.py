"""Every bad input to the `hatchlings` command ends as one line on stderr (exit status 2), never a traceback.

To add a case, add a row to ROWS: (command line, expected fragment, exit status). The command line is split
like a shell would; `{name}` placeholders are the paths in the `paths` fixture (a tiny saved BDH, damaged
copies of it, a binary file, a tiny training preset, ...), in the command and in the fragment alike. Status
2 rows must print exactly one line, `hatchlings: error: ...`, containing the fragment; status 0 rows
(--help) must print the fragment on stdout.
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from hatchlings import BdhConfig
from hatchlings.cli import main
from hatchlings.generation import Utf8Streamer, generate_text
from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import DataConfig, parse_run_config
from hatchlings.training.data import build_datasets

TINY_BDH = dict(vocab_size=259, hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
                num_hidden_layers=2, dropout=0.0, attn_chunk_size=8)
TRAIN = "train --config {preset} --output_dir {tmp}/out"  # a tiny run that would train if nothing were wrong

ROWS = [
    # generate: sampling arguments, checked before the model is loaded
    ("generate {model} --max_new_tokens 0", "--max_new_tokens must be at least 1, got 0", 2),
    ("generate {model} --max_new_tokens -3", "--max_new_tokens must be at least 1, got -3", 2),
    ("generate {model} --temperature -1", "--temperature must be >= 0 (0 = greedy), got -1.0", 2),
    ("generate {model} --top_k -1", "--top_k must be >= 0", 2),
    # model folders: missing, or weights missing / torn (generate, eval and --init_from share the loader)
    ("generate {tmp}/nowhere", "not a saved model folder (no config.json): {tmp}/nowhere", 2),
    ("generate {no_weights}", "the weights of model folder {no_weights} are missing: no file "
                              "{no_weights}/model.safetensors", 2),
    ("generate {truncated}", "the weights of model folder {truncated} are damaged: {truncated}/model.safetensors", 2),
    ("eval {truncated} --file {text}", "the weights of model folder {truncated} are damaged", 2),
    ("train --init_from {truncated} --output_dir {tmp}/out", "the weights of model folder {truncated} are damaged", 2),
    # train: steps, and binary files given as text (loaded, or streamed because above the threshold)
    (TRAIN + " --max_steps -5", "--max_steps must be a positive number of steps, or -1", 2),
    (TRAIN + " --max_steps 0", "--max_steps must be a positive number of steps, or -1", 2),
    (TRAIN + " --train_file {ls}", "{ls} looks like a binary file, not text (a NUL byte at offset 7)", 2),
    (TRAIN + " --train_file {ls_txt}", "{ls_txt} looks like a binary file", 2),
    (TRAIN + " --train_file {text} --validation_file {ls_txt}", "{ls_txt} looks like a binary file", 2),
    (TRAIN + " --train_file {ls_txt} --validation_file {text} --streaming_threshold_mb 0",
     "{ls_txt} looks like a binary file", 2),
    (TRAIN + " --train_file {undecodable}", "{undecodable} looks like a binary file, not text (100% of its first "
                                            "514 bytes are not UTF-8 text, the first at offset 2)", 2),
    # train: the preset and the architecture
    ("train --config {tmp}/no_such.yaml", "config file not found: {tmp}/no_such.yaml", 2),
    ("train --architecture dragon", "unknown architecture 'dragon'", 2),
    # other commands
    ("bench nope", "unknown benchmark 'nope'", 2),
    ("push {tmp}/nowhere --repo-id user/name", "not a folder", 2),
    # help names the command as typed and shows defaults
    ("train --help", "usage: hatchlings train", 0),
    ("generate --help", "--max_new_tokens MAX_NEW_TOKENS\n                        at least 1 (default: 200)", 0),
]


def save_tiny_bdh(folder: Path) -> Path:
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(BdhConfig(**TINY_BDH)).save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Everything the rows name, built once per module."""
    tmp = tmp_path_factory.mktemp("cli_errors")
    model = save_tiny_bdh(tmp / "model")
    truncated, no_weights = tmp / "truncated", tmp / "no_weights"
    shutil.copytree(model, truncated)
    weights = (model / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    shutil.copytree(model, no_weights)
    (no_weights / "model.safetensors").unlink()
    shutil.copy(Path(shutil.which("ls")), tmp / "ls.txt")
    (tmp / "undecodable.txt").write_bytes(b"ok" + bytes(range(0x80, 0x100)) * 4)  # continuation/lead bytes only
    (tmp / "text.txt").write_text("Plain text to train and validate on.\n" * 200)
    preset = {"architecture": "bdh", "model": {k: v for k, v in TINY_BDH.items() if k != "vocab_size"},
              "data": {"block_size": 16}, "training": {"max_steps": 1, "report_to": "none"}}
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(preset))
    return {"tmp": str(tmp), "model": str(model), "truncated": str(truncated), "no_weights": str(no_weights),
            "ls": shutil.which("ls"), "ls_txt": str(tmp / "ls.txt"), "undecodable": str(tmp / "undecodable.txt"),
            "text": str(tmp / "text.txt"), "preset": str(tmp / "tiny.yaml")}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`hatchlings argv` in this process: (exit status, stdout, stderr); argparse's --help exits."""
    try:
        status = main(argv)
    except SystemExit as done:
        status = done.code
    out, err = capsys.readouterr()
    return status, out, err


def check_result(status: int, out: str, err: str, fragment: str, expected: int) -> None:
    assert status == expected, err
    assert "Traceback" not in err
    if expected == 0:
        assert fragment in out
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hatchlings: error: ") and fragment in lines[0], err


@pytest.mark.parametrize("command, fragment, expected", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_gives_one_line(paths, capsys, command, fragment, expected):
    status, out, err = run_cli(shlex.split(command.format(**paths)), capsys)
    check_result(status, out, err, fragment.format(**paths), expected)


def test_no_traceback_in_a_real_process(paths):
    """The console entry point as a user runs it: stderr is the one line, nothing else."""
    command, fragment, expected = next(row for row in ROWS if row[0] == "generate {truncated}")
    done = subprocess.run([sys.executable, "-m", "hatchlings.cli", *shlex.split(command.format(**paths))],
                          capture_output=True, text=True, timeout=300)
    check_result(done.returncode, done.stdout, done.stderr, fragment.format(**paths), expected)


def test_train_py_help_names_train_py(capsys, monkeypatch):
    """train.py hands its flags to main(["train", ...]); its help names train.py (also under accelerate)."""
    monkeypatch.setattr(sys, "argv", ["/somewhere/train.py", "--help"])
    status, out, _ = run_cli(["train", "--help"], capsys)
    assert status == 0 and out.startswith("usage: train.py ")


@pytest.mark.parametrize("threshold", [256, 0], ids=["loaded", "streamed"])
def test_allow_binary_opts_in(paths, threshold):
    """The refused file loads, byte for byte, with allow_binary, so the refusal is the check and not a crash."""
    data = DataConfig(train_file=[paths["ls_txt"]], validation_file=[paths["text"]], allow_binary=True,
                      streaming_threshold_mb=threshold, block_size=16)
    train, _, _ = build_datasets(data, build_byte_tokenizer())
    assert next(iter(train))["input_ids"] == list(Path(paths["ls_txt"]).read_bytes()[:16])


def test_allow_binary_is_a_switch(paths):
    argv = ["--config", paths["preset"], "--output_dir", f"{paths['tmp']}/out"]
    assert not parse_run_config(argv).data.allow_binary
    assert parse_run_config(argv + ["--allow_binary"]).data.allow_binary


def test_text_with_some_invalid_bytes_is_not_binary(tmp_path):
    """Latin-1 French: a fifth of the bytes are not UTF-8, and it is still text (the byte tokenizer keeps them)."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Le café était très élevé.\n".encode("latin-1") * 100)
    train, _, _ = build_datasets(DataConfig(train_file=[str(latin1)], block_size=16), build_byte_tokenizer())
    assert next(iter(train))["input_ids"] == list(latin1.read_bytes()[:16])


class Pieces(Utf8Streamer):
    """Records each emitted piece instead of printing it."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, out=None, **kwargs)
        self.pieces = []

    def on_finalized_text(self, text, stream_end=False):
        self.pieces.append((text, stream_end))


def feed(streamer: Utf8Streamer, data: bytes) -> None:
    """Stream `data` as a byte tokenizer's generation: the prompt (bos) first, then one byte per step."""
    streamer.put(torch.tensor([[257]]))  # (1, T) prompt
    for byte in data:
        streamer.put(torch.tensor([byte]))  # (1,) one new token
    streamer.end()


@pytest.mark.parametrize("data, expected", [
    ("a€😀é\n".encode(), ["a", "€", "😀", "é", "\n"]),  # 1-, 3-, 4-, 2- and 1-byte characters
    ("ok €".encode()[:-1], ["o", "k", " "]),  # cut off inside the last character: it is dropped
    (b"x\xffy", ["x", "\ufffdy"]),  # a byte that is never valid is shown once the next character is whole
    (b"\xe2\xe2\xe2\xe2\xe2z", ["\ufffd" * 4, "\ufffdz"]),  # a stuck "character" is not held forever
])
def test_utf8_streamer_emits_whole_characters_only(data, expected):
    streamer = Pieces(build_byte_tokenizer())
    feed(streamer, data)
    assert streamer.pieces == [(p, False) for p in expected] + [("", True)]
    assert streamer.text == "".join(expected)


def test_utf8_streamer_writes_text_and_a_final_newline():
    out = io.StringIO()
    feed(Utf8Streamer(build_byte_tokenizer(), out=out), "naïve".encode())
    assert out.getvalue() == "naïve\n"


def test_empty_prompt_generates_from_bos(paths):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(paths["model"]), build_byte_tokenizer()
    seen = Pieces(tokenizer, skip_prompt=False, skip_special_tokens=False)
    text = generate_text(model, tokenizer, "", max_new_tokens=8, temperature=0, top_k=0, streamer=seen)
    assert text.startswith("<|bos|>") and text == "".join(p for p, _ in seen.pieces)


def test_streamed_and_printed_output_agree(paths, capsys):
    """--stream and the final print go through the same streamer: the same text, sampled with the same seed."""
    argv = ["generate", paths["model"], "--prompt", "", "--max_new_tokens", "40", "--seed", "3"]
    printed, streamed = run_cli(argv, capsys), run_cli(argv + ["--stream"], capsys)
    assert printed[0] == streamed[0] == 0 and printed[1] == streamed[1] and printed[1].endswith("\n")
