"""`hatchlings bench arena`: matched sizes, shared data/batches, honest metrics, and the files it writes.

Timings are never asserted (benchmarks, not timed tests); what is asserted is what makes the comparison fair
and the numbers meaningful: parameter counts within 10%, the same batches for every model, validation loss
equal to a direct computation, and a report with every promised column, plot and saved model.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, default_data_collator

from hatchlings.bench.arena import (ARCHS, SIZES, BatchSequence, Settings, build_model, load_split, mean_loss,
                                   random_blocks, training_arguments)
from hatchlings.cli import main
from hatchlings.training.trainer import HatchlingsTrainer



@pytest.fixture
def text_file(tmp_path, real_text):
    """20 kB of real prose: enough for the arena's split, small enough that evaluation is instant."""
    path = tmp_path / "text.txt"
    path.write_text(real_text)
    return str(path)


@pytest.mark.parametrize("size", list(SIZES))
def test_models_are_matched_within_ten_percent(size):
    counts = {arch: build_model(arch, size, positions=256).num_parameters() for arch in ARCHS}
    for arch, count in counts.items():
        assert abs(count / counts["gpt2"] - 1) <= 0.10, (size, counts)


def test_unknown_model_or_size_is_named():
    with pytest.raises(ValueError, match="unknown arena model 'mamba'"):
        build_model("mamba", "tiny", 256)
    with pytest.raises(ValueError, match="unknown arena size 'huge'"):
        build_model("gpt2", "huge", 256)


def test_split_is_first_90_percent_train_last_10_validation(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "t.txt"
    path.write_text(text)
    train, val, bytes_per_token = load_split(str(path))
    assert bytes_per_token == 1.0 and len(train) == 900 and len(val) == 100
    assert bytes(train.tolist() + val.tolist()).decode() == text


def test_batches_are_the_same_sequence_for_every_model():
    ids = torch.arange(10_000)
    first = [random_blocks(ids, 4, 16, g) for g in [torch.Generator().manual_seed(1)] * 3]
    second = [random_blocks(ids, 4, 16, g) for g in [torch.Generator().manual_seed(1)] * 3]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])  # the generator advances: successive batches differ
    assert all(torch.equal(b[:, 1:] - b[:, :-1], torch.ones(4, 15, dtype=torch.long)) for b in first)  # windows


def test_the_trainer_reads_the_arenas_batch_sequence_in_order(tmp_path):
    """Training goes through HatchlingsTrainer; its data loader must yield exactly `random_blocks`' batches."""
    ids = torch.arange(10_000)
    settings = Settings(budget_tokens=3 * 4 * 16, batch_size=4, block_size=16, seed=5)
    trainer = HatchlingsTrainer(model=build_model("gpt2", "micro", positions=16),
                                args=training_arguments(settings, str(tmp_path), compiled=False),
                                train_dataset=BatchSequence(ids, settings), data_collator=default_data_collator)
    loaded = [batch["input_ids"] for batch in trainer.get_train_dataloader()]
    generator = torch.Generator().manual_seed(5)
    expected = [random_blocks(ids, 4, 16, generator) for _ in range(settings.steps)]
    assert len(loaded) == settings.steps == 3 and all(torch.equal(a, b) for a, b in zip(loaded, expected))

@pytest.mark.parametrize("arch", ARCHS)
def test_mean_loss_is_next_token_cross_entropy(arch):
    torch.manual_seed(0)
    model = build_model(arch, "micro", positions=32)
    blocks = torch.randint(0, 256, (5, 32))
    with torch.no_grad():
        logits = model(blocks).logits
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), blocks[:, 1:].flatten()).item()
    assert math.isclose(mean_loss(model, blocks, 2, torch.no_grad), expected, rel_tol=1e-5)


@pytest.mark.slow
def test_arena_cli_writes_report_plot_and_models(tmp_path, text_file, capsys):
    models = tmp_path / "models"
    code = main(["bench", "arena", "--size", "micro", "--budget-tokens", "512", "--batch-size", "4",
                 "--block-size", "64", "--contexts", "8,16", "--ttft-prompt", "16", "--gen-steps", "2",
                 "--repeats", "1", "--eval-points", "2", "--file", text_file, "--output_dir", str(tmp_path),
                 "--models-dir", str(models)])
    assert code == 0
    report = json.loads((tmp_path / "arena-cpu.json").read_text())
    assert (tmp_path / "arena-cpu.png").stat().st_size > 0
    summary, curve = report["tables"]
    assert [row["model"] for row in summary["rows"]] == list(ARCHS)
    for column in ("params / GPT-2", "val bits/byte", "train tokens/s", "tokens/s / GPT-2", "peak train MiB",
                   "ms/token @8", "ms/token @16", "ms/token @16 / GPT-2", "@16 / @8", "TTFT ms @16"):
        assert column in summary["columns"]
    for row in summary["rows"]:
        assert 0.9 <= row["params / GPT-2"] <= 1.1
        assert 4.0 < row["val bits/byte"] < 9.0  # 2 steps from random init: about log2(259) bits
        assert row["train tokens/s"] > 0 and row["peak train MiB"] > 0
    assert summary["rows"][0]["tokens/s / GPT-2"] == 1.0
    # an architecture whose record asks for another optimizer gets it, and the report says so
    assert [note for note in summary["notes"] if "arena_optimization" in note] == [
        "holospectral trains with train.py's muon optimizer (muon_lr 0.03; its record's arena_optimization) on the "
        "same schedule"]
    assert [row["training tokens"] for row in curve["rows"]] == ["256", "512"]
    assert [p["title"].split()[0] for p in report["plots"]] == ["Validation", "Generation"]
    for arch in ARCHS:  # the trained models are saved for the probes, and load back
        assert AutoModelForCausalLM.from_pretrained(models / arch).num_parameters() > 0
    markdown = (tmp_path / "arena-cpu.md").read_text()
    assert "| model | params |" in markdown
    assert ("glibc malloc reusing freed memory" in markdown) == sys.platform.startswith("linux")
    assert "wrote" in capsys.readouterr().out


def test_arena_with_a_learned_tokenizer_and_a_validation_file(tmp_path, real_text, capsys):
    """--tokenizer word --val_file: every model gets the tokenizer learned from the training text alone, the
    report adds perplexity per token, and bits/byte stays the loss over the validation file's bytes."""
    from transformers import AutoTokenizer

    from hatchlings.bench.arena import load_data

    half = len(real_text) // 2
    (tmp_path / "train.txt").write_text(real_text[:half])
    (tmp_path / "val.txt").write_text(real_text[half:] + " zyzzyva")  # a word the training text lacks
    files = ["--file", str(tmp_path / "train.txt"), "--val_file", str(tmp_path / "val.txt")]
    assert main(["bench", "arena", "--archs", "llama,hybrid", "--size", "micro", "--budget-tokens", "256",
                 "--batch-size", "4", "--block-size", "32", "--eval-points", "1", "--tokenizer", "word",
                 "--timing", "off", "--output_dir", str(tmp_path), "--models-dir", str(tmp_path / "models"),
                 *files]) == 0
    summary = json.loads((tmp_path / "arena-cpu.json").read_text())["tables"][0]
    assert not any(column.startswith(("ms/token", "TTFT")) for column in summary["columns"])
    assert any("a word tokenizer learned from the training text; validation: val.txt" in n for n in summary["notes"])
    settings = Settings(file=str(tmp_path / "train.txt"), val_file=str(tmp_path / "val.txt"), tokenizer="word")
    train, val, bytes_per_token, tokenizer = load_data(settings)
    assert " zyzzyva" not in tokenizer.get_vocab() and val[-1] == tokenizer.unk_token_id  # learned on train only
    assert bytes_per_token == len((real_text[half:] + " zyzzyva").encode()) / len(val)
    for row in summary["rows"]:
        saved = tmp_path / "models" / row["model"]
        assert AutoTokenizer.from_pretrained(saved).get_vocab() == tokenizer.get_vocab()
        assert AutoModelForCausalLM.from_pretrained(saved).config.vocab_size == len(tokenizer)
        nats_per_token = math.log(row["val perplexity"])
        assert row["val bits/byte"] == pytest.approx(nats_per_token / bytes_per_token / math.log(2), rel=1e-3)


def test_arena_rejects_bad_flags(capsys):
    assert main(["bench", "arena", "--archs", "gpt2,dragon"]) == 2
    assert "unknown dragon" in capsys.readouterr().err
    assert main(["bench", "arena", "--file", "/no/such.txt"]) == 2
    assert "arena data not found: /no/such.txt" in capsys.readouterr().err
    assert main(["bench", "arena", "--budget-tokens", "10"]) == 2
    assert "less than one step" in capsys.readouterr().err


_HEAP_USE = """
import ctypes, ctypes.util, sys, torch
from hatchlings.bench.memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = reuse_freed_memory() if sys.argv[1] == "tuned" else None
for _ in range(3):  # 32 MiB tensors (BDH-tiny's neuron tensors), each freed again; the heap settles
    torch.ones(2**23).sum()
settled = libc.mallinfo2()
mapped_while_held = []
for _ in range(10):  # the same size again: served by fresh mmaps, or by the heap memory freed before
    tensor = torch.ones(2**23)
    mapped_while_held.append(libc.mallinfo2().hblkhd - settled.hblkhd)
    del tensor
print(tuned, min(mapped_while_held), max(mapped_while_held), libc.mallinfo2().arena - settled.arena)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_reuse_freed_memory_serves_large_tensors_from_the_recycled_heap_instead_of_fresh_mmaps():
    """What the setting controls, read from glibc's own accounting (mallinfo2), so the machine's load cannot
    change the answer (page-fault counts could: the arena benchmark is where the speed effect is measured)."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", _HEAP_USE, mode], capture_output=True, text=True, check=True)
        tuned, least_mapped, most_mapped, heap_growth = out.stdout.split()
        return tuned, int(least_mapped), int(most_mapped), int(heap_growth)

    assert run("default")[1] >= 2**25  # glibc's default: every 32 MiB tensor gets an mmap of its own
    tuned, _, most_mapped, heap_growth = run("tuned")
    assert (tuned, most_mapped) == ("True", 0)  # tuned: no mmap for any of them
    # and the heap recycles what was freed: ten 32 MiB tensors add at most one more to it (the heap may settle
    # on two alternating slots), where fresh memory for each would be ten times that
    assert heap_growth < 2 * 2**25


@pytest.mark.slow
def test_scaling_probe_runs_through_the_arena(tmp_path, text_file):
    code = main(["probe", "bdh", "scaling", str(tmp_path), "--file", text_file, "--sizes", "micro,tiny", "--archs",
                 "gpt2,bdh", "--budget_tokens", "128", "--train_batch_size", "4", "--block_size", "32",
                 "--output_dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "bdh-scaling.json").read_text())
    rows = report["tables"][0]["rows"]
    assert [row["size"] for row in rows] == ["micro", "tiny"]
    params = [int(row["bdh params"].replace(",", "")) for row in rows]
    assert params[0] < params[1]  # the sizes really grow
    assert all(4.0 < row[f"{arch} bits/byte"] < 9.0 for row in rows for arch in ("gpt2", "bdh"))
    assert (tmp_path / "bdh-scaling.png").stat().st_size > 0


def test_llama_size_at_equal_quality_is_interpolated_in_log_parameters():
    from hatchlings.probes.scaling import llama_params_at

    llama = [(4000, 2.5), (1000, 3.0), (16000, 2.3)]
    assert abs(llama_params_at(2.75, llama) - 2000) < 1e-6  # halfway in bits/byte is the geometric mean
    assert abs(llama_params_at(2.5, llama) - 4000) < 1e-6
    assert llama_params_at(3.2, llama) is None and llama_params_at(2.2, llama) is None  # no extrapolation
