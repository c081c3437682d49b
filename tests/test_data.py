"""Data loading with real `datasets` calls on local files: every input format, loss masking for instruction
data, mixing, streaming, bad-data errors that name file and line, and num_proc determinism."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset, IterableDataset

from hatchlings.tokenization import build_byte_tokenizer
from hatchlings.training import DataConfig, UsageError
from hatchlings.training.data import build_datasets, collate, holds_instructions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
COLUMNS = ["input_ids", "labels", "attention_mask"]


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rows_of(dataset) -> list[dict]:
    return [{k: list(row[k]) for k in COLUMNS} for row in dataset]


def token_stream(train, validation) -> list[int]:
    return [t for row in list(train) + list(validation) for t in row["input_ids"]]


def test_folder_is_its_sorted_text_files_each_one_document(tmp_path, tok):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee line\n" * 30)
    (folder / "a.md").write_text("# heading a\n" * 30)
    (folder / "sub" / "c.txt").write_text("sea\n" * 30)
    (folder / "notes.json").write_text('{"text": "not a text file, ignored"}\n')
    train, val, stats = build_datasets(DataConfig(train_file=[str(folder)], block_size=16), tok)
    eos = [tok.eos_token_id]
    expected = list(("# heading a\n" * 30).encode()) + eos + list(("bee line\n" * 30).encode()) + eos \
        + list(("sea\n" * 30).encode()) + eos
    stream = token_stream(train, val)
    assert stream == expected[:len(stream)] and len(stream) == len(expected) // 16 * 16
    assert train.column_names == COLUMNS and all(mask == [1] * 16 for mask in train["attention_mask"])
    assert (stats.bytes, stats.tokens) == (360 + 270 + 120, 750 + 3)


def test_empty_folder_is_reported(tmp_path, tok):
    (tmp_path / "only.json").write_text("{}\n")
    with pytest.raises(UsageError, match="no \\*.txt or \\*.md files in folder"):
        build_datasets(DataConfig(train_file=[str(tmp_path)]), tok)


def test_jsonl_text_field_each_record_one_document(tmp_path, tok):
    docs = [f"document number {i} says hello.\n" * 3 for i in range(20)]
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": i, "body": d} for i, d in enumerate(docs)])
    train, val, stats = build_datasets(DataConfig(train_file=[str(path)], text_field="body", block_size=32), tok)
    expected = [t for d in docs for t in list(d.encode()) + [tok.eos_token_id]]
    stream = token_stream(train, val)
    assert stream == expected[:len(stream)] and len(stream) == len(expected) // 32 * 32
    assert stats.bytes == sum(len(d.encode()) for d in docs) and stats.tokens == len(expected)


def test_a_literal_special_token_in_text_stays_text(tmp_path, tok):
    path = tmp_path / "t.txt"
    path.write_text("before <|eos|> after\n" * 20)
    train, val, _ = build_datasets(DataConfig(train_file=[str(path)], block_size=16), tok)
    assert tok.eos_token_id not in token_stream(train, val)  # only the document end would be eos


def test_save_to_disk_folder(tmp_path, tok):
    texts = [f"row {i}: " + "saved text " * 5 for i in range(30)]
    Dataset.from_dict({"body": texts, "n": list(range(30))}).save_to_disk(tmp_path / "saved")
    train, val, _ = build_datasets(DataConfig(train_file=[str(tmp_path / "saved")], text_field="body",
                                              block_size=32), tok)
    expected = [t for text in texts for t in list(text.encode()) + [tok.eos_token_id]]
    stream = token_stream(train, val)
    assert stream == expected[:len(stream)] and len(stream) == len(expected) // 32 * 32
    with pytest.raises(UsageError, match=r"row 0: has no 'text' field"):
        build_datasets(DataConfig(train_file=[str(tmp_path / "saved")]), tok)


def check_example(row: dict, tok, instruction: str, extra: str, output: str, block_size: int) -> None:
    """Prompt (through `<|assistant|>\\n`) unscored, answer + eos scored, newline and padding unscored."""
    prompt = prompt_text(tok, instruction, extra)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    labels, ids = row["labels"], row["input_ids"]
    assert len(ids) == len(labels) == len(row["attention_mask"]) == block_size
    assert labels[:n_prompt] == [-100] * n_prompt
    assert tok.decode(ids[:n_prompt]) == prompt and prompt.endswith("<|assistant|>\n")
    scored = [t for t in labels if t != -100]
    assert tok.decode(scored) == output + tok.eos_token
    assert labels[n_prompt:n_prompt + len(scored)] == scored  # one contiguous span right after the prompt
    length = sum(row["attention_mask"])
    assert ids[length:] == [tok.pad_token_id] * (block_size - length)
    assert ids[n_prompt + len(scored)] == tok.encode("\n", add_special_tokens=False)[0]  # template's newline


def prompt_text(tok, instruction: str, extra: str) -> str:
    user = instruction + ("\n\n" + extra if extra else "")
    return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)


@pytest.mark.skipif(not (SHARED / "alpaca_seed_tasks.jsonl").is_file(), reason="../shared/data is not available")
def test_alpaca_seed_tasks_are_masked_examples(tok, caplog):
    seed, block = SHARED / "alpaca_seed_tasks.jsonl", 1024
    tasks = [json.loads(line) for line in seed.read_text().splitlines()]
    with caplog.at_level(logging.WARNING):
        train, val, stats = build_datasets(DataConfig(train_file=[str(seed)], block_size=block), tok)
    rows = rows_of(train) + rows_of(val)
    examples = [(t["instruction"], i["input"], i["output"]) for t in tasks for i in t["instances"]]
    kept = [ex for ex in examples if len(tok(prompt_text(tok, *ex[:2]), add_special_tokens=False)["input_ids"]) < block]
    assert len(examples) == 175 and len(rows) == len(kept) and len(val) == round(len(kept) * 0.1)
    assert f"{175 - len(kept)} dropped (their prompt alone fills the block)" in caplog.text
    fitting = [(row, ex) for row, ex in zip(rows, kept) if sum(row["attention_mask"]) < block]
    assert len(fitting) > 150
    for row, (instruction, extra, output) in fitting:
        check_example(row, tok, instruction, extra, output, block)
    assert 0.9 < stats.bytes_per_token < 1.0  # bytes per scored token: every byte one token, eos 0 bytes


def test_flat_instruction_records_and_truncation(tmp_path, tok, caplog):
    records = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else "show work", "output": str(2 * i)}
               for i in range(12)] + [{"instruction": "Long one.", "output": "x" * 200}]
    path = write_jsonl(tmp_path / "inst.jsonl", records)
    with caplog.at_level(logging.WARNING):
        train, val, _ = build_datasets(DataConfig(train_file=[str(path)], block_size=64,
                                                  validation_fraction=0.25), tok)
    rows = rows_of(train) + rows_of(val)
    assert len(rows) == 13 and len(val) == 3
    for row, record in zip(rows[:12], records):
        check_example(row, tok, record["instruction"], record["input"], record["output"], 64)
    assert sum(rows[-1]["attention_mask"]) == 64 and "1 truncated, 0 dropped" in caplog.text
    assert rows[-1]["labels"][-1] == ord("x")  # cut inside the answer, the rest still scored


def test_collate_cuts_the_padding_after_the_longest_example_and_changes_no_loss(tmp_path, tok):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, default_data_collator

    path = write_jsonl(tmp_path / "inst.jsonl", [{"instruction": "Add" + " one" * i, "output": str(i) * i}
                                                 for i in range(1, 9)])
    train, _, _ = build_datasets(DataConfig(train_file=[str(path)], block_size=128, validation_fraction=0.25), tok)
    rows = [train[i] for i in range(4)]
    full, cut = default_data_collator(rows), collate(rows)
    longest = max(sum(row["attention_mask"]) for row in rows)
    assert full["input_ids"].shape == (4, 128) and cut["input_ids"].shape == (4, longest) and longest < 128
    assert all(torch.equal(cut[k], full[k][:, :longest]) for k in COLUMNS)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=259, n_positions=128)).eval()
    with torch.no_grad():
        a, b = model(**full), model(**cut)
    assert torch.allclose(a.loss, b.loss, atol=1e-6) and torch.allclose(a.logits[:, :longest], b.logits, atol=1e-5)
    packed = [{k: [1] * 8 for k in COLUMNS} for _ in range(2)]  # full blocks: nothing to cut
    assert collate(packed)["input_ids"].shape == (2, 8)


def test_mixed_instruction_and_text_concatenate_in_file_order(tmp_path, tok):
    text = tmp_path / "a.txt"
    text.write_text("plain text line\n" * 20)
    inst = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}!"} for i in range(10)])
    more = tmp_path / "c.txt"
    more.write_text("more text\n" * 20)
    data = DataConfig(train_file=[str(text), str(inst), str(more)], validation_file=[str(inst)], block_size=48)
    train, val, stats = build_datasets(data, tok)
    rows = rows_of(train)
    assert train.column_names == COLUMNS and len(rows) == 320 // 48 + 10 + 200 // 48
    assert rows[0]["labels"] == rows[0]["input_ids"] and rows[6]["labels"][0] == -100
    check_example(rows[6], tok, "Say 0.", "", "0!", 48)
    assert rows[-1]["input_ids"] == list(("more text\n" * 20).encode())[144:192]
    assert len(val) == 10 and (stats.bytes, stats.tokens) == (2 * 10, 3 * 10)  # "i!" + eos per example


def test_holds_instructions_tells_instruction_rows_from_packed_text(tmp_path, tok):
    """What the export records as `instruction_tuned` (so `hatchlings chat` uses the chat template)."""
    text = tmp_path / "a.txt"
    text.write_text("plain text line\n" * 20)
    inst = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"Say {i}.", "output": f"{i}!"} for i in range(10)])
    plain, _, _ = build_datasets(DataConfig(train_file=[str(text)], block_size=48), tok)
    mixed, _, _ = build_datasets(DataConfig(train_file=[str(text), str(inst)], block_size=48), tok)
    assert not holds_instructions(plain) and holds_instructions(mixed)
    assert holds_instructions(mixed.to_iterable_dataset()) and not holds_instructions(plain.to_iterable_dataset())


def test_streaming_yields_packed_blocks_lazily(tmp_path, tok):
    text = "streamed line of text\n" * 50
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "val.txt").write_text("held out text\n" * 30)
    data = DataConfig(train_file=[str(tmp_path / "train.txt")], validation_file=[str(tmp_path / "val.txt")],
                      block_size=32, streaming_threshold_mb=0, max_eval_blocks=5)
    train, val, stats = build_datasets(data, tok)
    assert isinstance(train, IterableDataset) and isinstance(val, Dataset) and len(val) == 5
    rows = rows_of(train)
    assert all(len(row[k]) == 32 for row in rows for k in COLUMNS)
    stream = [t for row in rows for t in row["input_ids"]]
    assert stream == (list(text.encode()) + [tok.eos_token_id])[:len(rows) * 32] and len(rows) == 1101 // 32
    assert rows_of(train) == rows  # a fresh pass each epoch gives the same blocks
    assert val[0]["input_ids"] == list(b"held out text\n" * 3)[:32]
    assert (stats.bytes, stats.tokens) == (420, 420)  # the text read for 5 blocks: one batch, all 30 lines
    with pytest.raises(UsageError, match="give a validation_file"):
        build_datasets(DataConfig(train_file=[str(tmp_path / "train.txt")], streaming_threshold_mb=0), tok)


def test_trainer_runs_on_a_streamed_dataset_with_max_steps(tmp_path, tok):
    from transformers import AutoModelForCausalLM, TrainingArguments, default_data_collator

    from hatchlings.architectures import config_class_for
    from hatchlings.training.trainer import HatchlingsTrainer

    (tmp_path / "train.txt").write_text("tiny streamed corpus\n" * 40)
    data = DataConfig(train_file=[str(tmp_path / "train.txt")], validation_file=[str(tmp_path / "train.txt")],
                      block_size=32, streaming_threshold_mb=0)
    train, val, stats = build_datasets(data, tok)
    config = config_class_for("bdh")(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, mlp_internal_dim_multiplier=4, attn_chunk_size=16)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                             report_to="none", save_strategy="no", use_cpu=True)
    trainer = HatchlingsTrainer(model=AutoModelForCausalLM.from_config(config), args=args, train_dataset=train,
                                eval_dataset=val, data_collator=default_data_collator,
                                bytes_per_token=stats.bytes_per_token)
    assert trainer.train().global_step == 3  # 25 blocks = 7 batches a pass, so no epoch boundary is needed
    assert trainer.evaluate()["eval_loss"] > 0


def bad_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine line\nstill fine\ncaf\xe9 au lait\n" + b"more\n" * 10)
    return path


@pytest.mark.parametrize("make, where", [
    (lambda p: (p / "e.txt").write_text("") and None or p / "e.txt", "data file is empty: {path}"),
    (lambda p: (p / "e.jsonl").write_text("") and None or p / "e.jsonl", "data file is empty: {path}"),
    (lambda p: (p / "j.jsonl").write_text('{"text": "ok"}\n{"text": oops}\n') and None or p / "j.jsonl",
     "{path}:2: not valid JSON"),
    (lambda p: write_jsonl(p / "f.jsonl", [{"text": "a"}, {"text": "b"}, {"body": "c"}]),
     "{path}:3: record has no 'text' field (keys: body)"),
    (lambda p: write_jsonl(p / "n.jsonl", [{"text": "a"}, {"text": 5}]),
     "{path}:2: record has a 'text' that is not a string"),
    (lambda p: write_jsonl(p / "g.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}]),
     "{path}:2: record has an instruction without a string 'output'"),
    (lambda p: write_jsonl(p / "h.jsonl", [{"instruction": "a", "instances": [{"input": "", "output": "b"}]},
                                          {"instruction": "c", "instances": [{"input": "d"}]}]),
     "{path}:2: record has an instruction without a string 'output'"),
])
def test_bad_data_names_file_and_line(tmp_path, tok, make, where):
    path = make(tmp_path)
    with pytest.raises(UsageError) as err:
        build_datasets(DataConfig(train_file=[str(path)], block_size=4), tok)
    assert where.format(path=path) in str(err.value)


def word_tokenizer():
    """A tokenizer that is not byte-level (words + an unknown token), for the 'others report the line' rule."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<eos>": 1, "fine": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


@pytest.mark.parametrize("threshold", [256, 0], ids=["loaded", "streamed"])
def test_non_utf8_text_is_kept_by_the_byte_tokenizer(tmp_path, tok, threshold):
    path = bad_utf8(tmp_path)
    data = DataConfig(train_file=[str(path)], validation_file=[str(path)], streaming_threshold_mb=threshold,
                      block_size=4)
    train, _, stats = build_datasets(data, tok)
    stream = [t for row in (list(train) if threshold == 0 else rows_of(train)) for t in row["input_ids"]]
    raw = list(path.read_bytes()) + [tok.eos_token_id]
    assert stream == raw[:len(stream)] and 0xE9 in stream  # every byte kept, the Latin-1 e-acute included


@pytest.mark.parametrize("threshold", [256, 0], ids=["loaded", "streamed"])
def test_non_utf8_text_names_the_line_for_other_tokenizers(tmp_path, threshold):
    path = bad_utf8(tmp_path)
    data = DataConfig(train_file=[str(path)], validation_file=[str(path)], streaming_threshold_mb=threshold,
                      block_size=4)
    with pytest.raises(UsageError, match=f"{path}:3: not valid UTF-8 \\(byte 0xe9 at column 4\\)"):
        train, _, _ = build_datasets(data, word_tokenizer())
        list(train)  # a streamed file is only read while training


def test_num_proc_gives_the_same_rows(tmp_path, tok):
    results = []
    for num_proc in (0, 2):
        folder = tmp_path / f"run{num_proc}"  # fresh files, so the second run cannot reuse the first's cache
        (folder / "texts").mkdir(parents=True)
        for i in range(3):
            (folder / "texts" / f"{i}.txt").write_text("".join(f"file {i} line {j}\n" for j in range(300)))
        inst = write_jsonl(folder / "inst.jsonl", [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}."}
                                                   for i in range(50)])
        data = DataConfig(train_file=[str(folder / "texts"), str(inst)], block_size=64, num_proc=num_proc)
        train, val, stats = build_datasets(data, tok)
        results.append((rows_of(train), rows_of(val), stats))
    assert results[0] == results[1]


def test_train_py_on_streamed_text_and_on_instruction_data(tmp_path):
    """The whole run (train.py's code path) on a streamed text file, and on the alpaca instruction tasks."""
    import yaml

    from hatchlings.training import run_training
    from test_training import TINY_PRESET

    text = tmp_path / "big.txt"
    text.write_text("streamed text, read lazily and packed on the fly.\n" * 400)
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(dict(TINY_PRESET, training=dict(TINY_PRESET["training"], max_steps=3,
                                                                       eval_steps=100))))
    base = ["--config", str(preset), "--streaming_threshold_mb", "0"]
    with pytest.raises(UsageError, match="--max_steps"):
        run_training([*base, "--train_file", str(text), "--validation_file", str(text), "--max_steps", "-1",
                      "--num_train_epochs", "1", "--output_dir", str(tmp_path / "x")])
    streamed = run_training([*base, "--train_file", str(text), "--validation_file", str(text),
                             "--output_dir", str(tmp_path / "streamed")])
    assert 0 < streamed["eval_loss"] < 10
    assert "| training blocks | streamed x 64 tokens |" in (tmp_path / "streamed" / "README.md").read_text()

    seeds = SHARED / "alpaca_seed_tasks.jsonl"
    if not seeds.is_file():
        pytest.skip(f"shared data not found at {seeds}")
    chat = run_training(["--config", str(preset), "--train_file", str(seeds), "--block_size", "256",
                         "--output_dir", str(tmp_path / "chat")])
    assert 0 < chat["eval_loss"] < 10  # scored on answer tokens only
