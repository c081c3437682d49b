"""Local files -> tokenized training rows for causal-LM training, with `datasets` (never a download).

Inputs, chosen per path by what it is:
  * a plain-text file (.txt, .md, anything not JSON): one document; lines are tokenized with `Dataset.map`;
  * a folder: every *.txt / *.md file inside (recursively, sorted), each one document;
  * a `save_to_disk` folder (has dataset_info.json / state.json): its rows, read with `load_from_disk`;
  * .json / .jsonl: one record per row; a record with an `instruction` field is an instruction example
    (`instruction`, optional `input`, `output`, or the Alpaca seed-task layout `instances: [{input, output}]`,
    one example per instance), otherwise its `text_field` is one document.

Plain text is packed: documents end in eos and the token stream is cut into `block_size` blocks (labels =
input_ids). Instruction examples are rendered with the tokenizer's chat template and are never packed: one
example per row, padded to `block_size`, the loss masked to the answer (labels -100 on the prompt and the
padding), so the model learns to answer rather than to write questions. `collate` cuts each batch after its
longest example, so short examples do not pay for the block's padding. Both kinds have the same columns
(input_ids, labels, attention_mask), so a run can mix them.

Validation is a separate file or the *last* fraction of the rows (deterministic: "first 90% train / last 10%
validation"). Text files larger than `streaming_threshold_mb` are never read into memory: they are streamed
(`load_dataset(..., streaming=True)`) and packed lazily into an `IterableDataset`, which needs a
`validation_file` because the "last 10%" of a stream is only known after reading all of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.compute as pc
from datasets import (Dataset, DatasetDict, Features, IterableDataset, Value, concatenate_datasets, load_dataset,
                      load_from_disk)

from ..tokenization import is_byte_tokenizer
from ..errors import UsageError
from .streaming import streamed_train, streamed_validation
from .text import (MAP_BATCH, ROW_FEATURES, TOKEN_FEATURES, DataConfig, Source, TextStats, bad_utf8_line,
                   check_not_binary, encode_text, is_streamed, raw_byte_batches, resolve_sources)

logger = logging.getLogger(__name__)

EXAMPLE_FEATURES = Features({**ROW_FEATURES, "n_bytes": Value("int64"), "n_tokens": Value("int64"),
                             "truncated": Value("bool")})


def embedded_corpus() -> Dataset:
    """Python's own documentation text (ships with every CPython), so the quickstart needs no download."""
    from pydoc_data.topics import topics

    return Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


# ----------------------------------------------------------------------------------------------- inputs

def _load_lines(path: str) -> Dataset:
    try:
        return load_dataset("text", data_files=[path], keep_linebreaks=True, split="train")
    except Exception as err:  # datasets wraps decode errors in several exception types
        raise UsageError(bad_utf8_line(path) or f"cannot read {path} as UTF-8 text: {err}") from None


def _record_problem(record, text_field: str, instruction: bool) -> str | None:
    """Why one JSON record / dataset row cannot be used, or None."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    if not instruction:
        if text_field not in record or record[text_field] is None:
            return f"has no '{text_field}' field (keys: {', '.join(record) or 'none'})"
        return None if isinstance(record[text_field], str) else f"has a '{text_field}' that is not a string"
    if not isinstance(record.get("instruction"), str):
        return "has no string 'instruction' field"
    pairs = record.get("instances")
    if pairs is None:
        pairs = [record]
    elif not isinstance(pairs, list) or not pairs:
        return "has an 'instances' field that is not a non-empty list"
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("output"), str):
            return "has an instruction without a string 'output'"
        if pair.get("input") is not None and not isinstance(pair["input"], str):
            return "has an 'input' that is not a string"
    return None


def _json_problem(path: str, text_field: str, instruction: bool | None) -> str | None:
    """`file:line: why` for the first unusable line of a JSON/JSONL file (only run after a failure).

    `instruction=None` decides the mode from the first record, as the loader would have."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"["):  # one JSON array: no record-per-line, so name the item
        try:
            records = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"{path}:{getattr(err, 'lineno', 1)}: not valid JSON ({err})"
        lines = [(f"item {i}", record) for i, record in enumerate(records)]
    else:
        lines = []
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if raw.strip():
                    try:
                        lines.append((str(lineno), json.loads(raw)))
                    except (UnicodeDecodeError, json.JSONDecodeError) as err:
                        return f"{path}:{lineno}: not valid JSON ({err})"
    if instruction is None and lines:
        instruction = isinstance(lines[0][1], dict) and "instruction" in lines[0][1]
    for where, record in lines:
        problem = _record_problem(record, text_field, bool(instruction))
        if problem:
            return f"{path}:{where}: record {problem}"
    return None if lines else f"{path}: no JSON records"


def _load_records(source: Source, text_field: str) -> Dataset:
    """A JSON file's or save_to_disk folder's rows; for JSON, errors name the first bad line."""
    if source.kind == "embedded":
        return embedded_corpus()
    if source.kind == "disk":
        try:
            loaded = load_from_disk(source.path)
        except Exception as err:
            raise UsageError(f"cannot load the saved dataset {source.path}: {err}") from None
        if isinstance(loaded, DatasetDict):
            if "train" not in loaded:
                raise UsageError(f"{source.path}: a DatasetDict without a 'train' split ({', '.join(loaded)})")
            loaded = loaded["train"]
        return loaded
    try:
        records = load_dataset("json", data_files=[source.path], split="train")
    except Exception as err:
        raise UsageError(_json_problem(source.path, text_field, None)
                         or f"cannot read {source.path} as JSON: {err}") from None
    if len(records) == 0:
        raise UsageError(f"{source.path}: no JSON records")
    return records


def _record_error(source: Source, records: Dataset, text_field: str, instruction: bool) -> UsageError:
    """The first unusable row, by line for JSON files and by row number for saved datasets."""
    if source.kind == "json":
        problem = _json_problem(source.path, text_field, instruction)
    else:
        problem = next((f"{source.path}: row {i}: {why}" for i, row in enumerate(records)
                        if (why := _record_problem(row, text_field, instruction))), None)
    return UsageError(problem or f"{source.path}: unusable records (columns: {', '.join(records.column_names)})")


# ---------------------------------------------------------------------------------------------- tokens

def _answer_stats(text: str, offsets, labels: list[int], tokenizer) -> TextStats:
    """Bytes and tokens of the scored tokens, the bytes measured on the text through the token offsets.

    Decoding the tokens instead would count the five bytes of "<unk>" for a word-level unknown word, whose
    own bytes are the text the model had to predict. bos, eos and pad stand for no text: their markup counts 0 bytes."""
    from ..evaluation import token_bytes  # evaluation imports this package: not at the top

    control = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    n_bytes = token_bytes(text, offsets[:len(labels)])  # (len(labels),)
    scored = [i for i, label in enumerate(labels) if label != -100]
    return TextStats(int(sum(n_bytes[i] for i in scored if labels[i] not in control)), len(scored))


def _stats(dataset: Dataset) -> TextStats:
    return TextStats(bytes=int(pc.sum(dataset.data.column("n_bytes")).as_py() or 0),
                     tokens=int(pc.sum(dataset.data.column("n_tokens")).as_py() or 0))


def _tokenize(dataset: Dataset, tokenizer, data: DataConfig, field: str, eos_per_row: bool) -> Dataset:
    return dataset.map(encode_text, batched=True, batch_size=MAP_BATCH, remove_columns=dataset.column_names,
                       num_proc=data.num_proc or None, features=TOKEN_FEATURES, desc="tokenizing",
                       fn_kwargs={"tokenizer": tokenizer, "field": field, "eos_per_row": eos_per_row})


def _raw_byte_lines(path: str) -> Dataset:
    def rows():
        for batch in raw_byte_batches(path):
            yield from ({"input_ids": ids, "n_bytes": n, "n_tokens": n}
                        for ids, n in zip(batch["input_ids"], batch["n_bytes"]))

    return Dataset.from_generator(rows, features=TOKEN_FEATURES)


def _text_file_tokens(path: str, tokenizer, data: DataConfig) -> Dataset:
    """A plain-text file as one document: its lines' tokens, then one eos row.

    Text must be UTF-8, except for a byte tokenizer, which keeps any bytes (read in binary)."""
    try:
        tokens = _tokenize(_load_lines(path), tokenizer, data, "text", eos_per_row=False)
    except UsageError:
        if not (is_byte_tokenizer(tokenizer) and bad_utf8_line(path)):
            raise
        tokens = _raw_byte_lines(path)
    eos = Dataset.from_dict({"input_ids": [[tokenizer.eos_token_id]], "n_bytes": [0], "n_tokens": [1]},
                            features=TOKEN_FEATURES)
    return concatenate_datasets([tokens, eos])


def flatten_instructions(batch):
    """Flat `instruction/input/output` rows and Alpaca seed tasks (`instances`) as one row per example."""
    n = len(batch["instruction"])
    instances, inputs, outputs = (batch.get(k) or [None] * n for k in ("instances", "input", "output"))
    out = {"instruction": [], "input": [], "output": []}
    for i in range(n):
        pairs = instances[i] if instances[i] is not None else [{"input": inputs[i], "output": outputs[i]}]
        if not isinstance(batch["instruction"][i], str) or not pairs:
            raise ValueError(f"row {i}")
        for pair in pairs:
            if not isinstance(pair.get("output"), str) or not isinstance(pair.get("input") or "", str):
                raise ValueError(f"row {i}")
            out["instruction"].append(batch["instruction"][i])
            out["input"].append(pair.get("input") or "")
            out["output"].append(pair["output"])
    return out


def _encode_instructions(batch, tokenizer, block_size: int):
    """Chat-template each example; labels only on the answer and its closing eos; pad to `block_size`.

    The prompt's length is measured in characters of the rendered text and mapped to tokens through the
    offsets, so this does not assume the prompt tokenizes the same alone as inside the full example."""
    prompts, texts = [], []
    for instruction, extra, answer in zip(batch["instruction"], batch["input"], batch["output"]):
        messages = [{"role": "user", "content": instruction + ("\n\n" + extra if extra else "")}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        if not full.startswith(prompt):
            raise UsageError("the tokenizer's chat template does not render the generation prompt as a prefix "
                             "of the conversation, so the prompt cannot be masked")
        prompts.append(prompt)
        texts.append(full)
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    eos = tokenizer.eos_token_id
    pad = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    out = {k: [] for k in EXAMPLE_FEATURES}
    for prompt, text, ids, offsets in zip(prompts, texts, encoded["input_ids"], encoded["offset_mapping"]):
        start = sum(1 for _, end in offsets if end <= len(prompt))  # tokens wholly inside the prompt
        after = [i for i in range(start, len(ids)) if ids[i] == eos]
        stop = after[-1] + 1 if after else len(ids)  # the closing eos is scored; the newline after is not
        labels = [-100] * start + ids[start:stop] + [-100] * (len(ids) - stop)
        ids, labels = ids[:block_size], labels[:block_size]
        stats = _answer_stats(text, offsets, labels, tokenizer)
        if not stats.tokens:  # the prompt alone fills the block: nothing to learn from this example
            continue
        padding = block_size - len(ids)
        out["input_ids"].append(ids + [pad] * padding)
        out["labels"].append(labels + [-100] * padding)
        out["attention_mask"].append([1] * len(ids) + [0] * padding)
        out["n_bytes"].append(stats.bytes)
        out["n_tokens"].append(stats.tokens)
        out["truncated"].append(stop > block_size)  # some of the answer was cut off
    return out


def _instruction_rows(records: Dataset, source: Source, tokenizer, data: DataConfig) -> tuple[Dataset, TextStats]:
    try:
        flat = records.map(flatten_instructions, batched=True, batch_size=MAP_BATCH,
                           remove_columns=records.column_names, desc="reading instructions")
    except Exception:
        raise _record_error(source, records, data.text_field, instruction=True) from None
    rows = flat.map(_encode_instructions, batched=True, batch_size=MAP_BATCH, remove_columns=flat.column_names,
                    features=EXAMPLE_FEATURES, num_proc=data.num_proc or None, desc="templating",
                    fn_kwargs={"tokenizer": tokenizer, "block_size": data.block_size})
    truncated, dropped = int(pc.sum(rows.data.column("truncated")).as_py() or 0), len(flat) - len(rows)
    if truncated or dropped:
        logger.warning("%s: %d of %d instruction examples are longer than block_size=%d: %d truncated, %d dropped "
                       "(their prompt alone fills the block)", source.path, truncated + dropped, len(flat),
                       data.block_size, truncated, dropped)
    return rows.remove_columns("truncated"), _stats(rows)  # per-row n_bytes/n_tokens: a stream counts by row


def _piece(source: Source, tokenizer, data: DataConfig) -> tuple[str, Dataset, TextStats]:
    """One in-memory source as ("tokens", token rows to pack) or ("examples", finished padded rows, each with
    the bytes and tokens its scored labels stand for in `n_bytes`/`n_tokens`)."""
    if source.kind == "text":
        check_not_binary(source.path, data)
        tokens = _text_file_tokens(source.path, tokenizer, data)
        return "tokens", tokens, _stats(tokens)
    records = _load_records(source, data.text_field)
    if "instruction" in records.column_names:  # wins over a `text` column: masking needs the parts
        rows, stats = _instruction_rows(records, source, tokenizer, data)
        return "examples", rows, stats
    column = records.features.get(data.text_field)
    if column not in (Value("string"), Value("large_string")) or records.data.column(data.text_field).null_count:
        raise _record_error(source, records, data.text_field, instruction=False)
    tokens = _tokenize(records, tokenizer, data, data.text_field, eos_per_row=True)
    return "tokens", tokens, _stats(tokens)


def pack_blocks(tokens: Dataset, block_size: int) -> Dataset:
    """Concatenate token rows and cut them into `block_size` blocks with `labels` = `input_ids`.

    Always one process: with `num_proc` the shard boundaries would drop different partial blocks."""

    def pack(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        n = len(stream) // block_size * block_size
        blocks = [stream[i:i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": blocks, "attention_mask": [[1] * block_size] * len(blocks)}

    return tokens.map(pack, batched=True, batch_size=MAP_BATCH, remove_columns=tokens.column_names,
                      features=ROW_FEATURES, desc="packing")


def prepare_rows(sources: list[Source], tokenizer, data: DataConfig) -> tuple[Dataset, TextStats]:
    """All sources as training rows in order: runs of text packed together, instruction examples as-is."""
    parts, run, stats = [], [], TextStats(0, 0)
    for kind, dataset, piece_stats in (_piece(s, tokenizer, data) for s in sources):
        stats += piece_stats
        if kind == "tokens":
            run.append(dataset)
            continue
        if run:
            parts, run = parts + [pack_blocks(concatenate_datasets(run), data.block_size)], []
        parts.append(dataset.remove_columns(["n_bytes", "n_tokens"]))
    if run:
        parts.append(pack_blocks(concatenate_datasets(run), data.block_size))
    if stats.tokens == 0:
        raise UsageError("nothing to train on: the text is empty or every instruction example was dropped")
    return concatenate_datasets(parts), stats


# ---------------------------------------------------------------------------------------------- public

def holds_instructions(rows: Dataset | IterableDataset) -> bool:
    """Whether training rows include instruction examples: only they mask labels (-100 on the prompt and the
    padding); packed plain text never does. A stream is judged by its first 1,000 rows."""
    if isinstance(rows, IterableDataset):
        return any(-100 in row["labels"] for row in rows.take(1000))
    return len(rows) > 0 and pc.min(pc.list_flatten(rows.data.column("labels"))).as_py() == -100


def collate(features: list[dict]) -> dict:
    """Stack rows into a batch (`default_data_collator`), then drop the padding columns after the batch's longest
    example. The padding sits on the right of every row and causal models never read to the right, so every
    real token's logits and the loss are those of the full-length batch; packed blocks lose nothing."""
    from transformers import default_data_collator

    batch = default_data_collator(features)
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 2 or bool(mask[:, -1].any()):
        return batch
    length = int(mask.any(0).nonzero().max()) + 1
    return {key: value[:, :length] if key in ("input_ids", "labels", "attention_mask") else value
            for key, value in batch.items()}


def build_datasets(data: DataConfig, tokenizer) -> tuple[Dataset | IterableDataset, Dataset, TextStats]:
    """Train and validation rows plus the bytes-per-token of the scored validation text.

    The training set is an `IterableDataset` (no length) when a training text file is larger than
    `streaming_threshold_mb`; the validation set is always a `Dataset`."""
    train_sources = [Source("embedded", "pydoc_data.topics")] if data.train_file is None \
        else resolve_sources(data.train_file)
    val_sources = resolve_sources(data.validation_file) if data.validation_file else []
    if val_sources:
        if any(is_streamed(s, data) for s in val_sources):
            validation, val_stats = streamed_validation(val_sources, tokenizer, data, _piece)
        else:
            validation, val_stats = prepare_rows(val_sources, tokenizer, data)
    big = [s.path for s in train_sources if is_streamed(s, data)]
    if big and not val_sources:
        raise UsageError(f"{big[0]} is larger than streaming_threshold_mb={data.streaming_threshold_mb}, so it is "
                         "streamed rather than loaded, and a stream's last fraction is only known after reading "
                         "all of it: give a validation_file (or raise streaming_threshold_mb)")
    if big:
        train, n_train = streamed_train(train_sources, tokenizer, data, _piece), "a stream of"
    else:
        train, train_stats = prepare_rows(train_sources, tokenizer, data)
        if not val_sources:  # the last fraction of the rows, so the split never depends on a seed
            n_val = max(1, round(len(train) * data.validation_fraction))
            train, validation, val_stats = train.select(range(len(train) - n_val)), \
                train.select(range(len(train) - n_val, len(train))), train_stats
        n_train = len(train)
    if n_train == 0 or len(validation) == 0:
        raise UsageError(f"not enough text for block_size={data.block_size}: {n_train} training and "
                         f"{len(validation)} validation blocks (use more text or a smaller block_size)")
    return train, validation, val_stats
