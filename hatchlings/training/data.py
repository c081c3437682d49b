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
padding), so the model learns to answer rather than to write questions. Both kinds have the same columns
(input_ids, labels, attention_mask), so a run can mix them.

Validation is a separate file or the *last* fraction of the rows (deterministic: "first 90% train / last 10%
validation"). Text files larger than `streaming_threshold_mb` are never read into memory: they are streamed
(`load_dataset(..., streaming=True)`) and packed lazily into an `IterableDataset`, which needs a
`validation_file` because the "last 10%" of a stream is only known after reading all of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pyarrow.compute as pc
from datasets import (Dataset, DatasetDict, Features, IterableDataset, List, Value, concatenate_datasets,
                      load_dataset, load_from_disk)

from ..tokenization import is_byte_tokenizer
from .errors import UsageError

logger = logging.getLogger(__name__)

MAP_BATCH = 10_000  # rows per map batch; packing drops at most one partial block per batch
TEXT_SUFFIXES = (".txt", ".md")  # what a plain folder contributes
JSON_SUFFIXES = (".json", ".jsonl")
DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by save_to_disk
TOKEN_FEATURES = Features({"input_ids": List(Value("int32")), "n_bytes": Value("int64"), "n_tokens": Value("int64")})
ROW_FEATURES = Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                         "attention_mask": List(Value("int8"))})
EXAMPLE_FEATURES = Features({**ROW_FEATURES, "n_bytes": Value("int64"), "n_tokens": Value("int64"),
                             "truncated": Value("bool")})


@dataclasses.dataclass
class DataConfig:
    """Where the text comes from and how it is cut into training rows."""

    train_file: list[str] | None = None  # files/folders; None = Python's own documentation (pydoc_data)
    validation_file: list[str] | None = None  # None = hold out the last `validation_fraction` of rows
    block_size: int = 256
    validation_fraction: float = 0.1
    max_eval_blocks: int | None = 64  # cap on validation blocks scored during training (None = all)
    text_field: str = "text"  # the document field of JSON records and save_to_disk datasets
    num_proc: int = 0  # processes for tokenizing (0 = no multiprocessing); the result is the same
    streaming_threshold_mb: int = 256  # text files larger than this are streamed, not loaded (0 = stream all)

    def __post_init__(self):
        for name in ("train_file", "validation_file"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
        if self.block_size < 2:
            raise UsageError(f"data.block_size must be >= 2, got {self.block_size}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise UsageError(f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.num_proc < 0 or self.streaming_threshold_mb < 0:
            raise UsageError("data.num_proc and data.streaming_threshold_mb must be >= 0")
        if not self.text_field:
            raise UsageError("data.text_field must not be empty")
        for path in (self.train_file or []) + (self.validation_file or []):
            if not Path(path).exists():
                raise UsageError(f"data file not found: {path}")


@dataclasses.dataclass
class TextStats:
    """How many UTF-8 bytes the *scored* tokens stand for, to turn nats/token into bits/byte.

    Plain text: every token is scored; bytes are the text's, eos counts as a token of 0 bytes. Instruction
    data: only the answer tokens (and their closing eos) are scored, so only they count, with the bytes they
    decode to; the prompt is neither predicted nor counted. The eval loss is a mean over scored tokens, so
    this ratio is what makes bits/byte mean "bits per byte of text the model had to predict".
    """

    bytes: int
    tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)

    def __iadd__(self, other: TextStats) -> TextStats:
        """In place, so a generator can keep a count its caller reads afterwards."""
        self.bytes, self.tokens = self.bytes + other.bytes, self.tokens + other.tokens
        return self


@dataclasses.dataclass(frozen=True)
class Source:
    """One input: kind is "text" (a plain-text file), "json", "disk" (save_to_disk) or "embedded"."""

    kind: str
    path: str


def embedded_corpus() -> Dataset:
    """Python's own documentation text (ships with every CPython), so the quickstart needs no download."""
    from pydoc_data.topics import topics

    return Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


# ----------------------------------------------------------------------------------------------- inputs

def resolve_sources(paths: list[str]) -> list[Source]:
    """Each given path as sources in order: a plain folder expands to its sorted *.txt / *.md files."""
    sources = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            if any((path / marker).is_file() for marker in DISK_MARKERS):
                sources.append(Source("disk", given))
                continue
            files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES),
                           key=lambda p: p.relative_to(path).parts)
            if not files:
                raise UsageError(f"no *.txt or *.md files in folder {given}")
            sources += [Source("text", str(p)) for p in files]
        else:
            if path.stat().st_size == 0:
                raise UsageError(f"data file is empty: {given}")
            sources.append(Source("json" if path.suffix.lower() in JSON_SUFFIXES else "text", given))
    return sources


def _streams(source: Source, data: DataConfig) -> bool:
    return source.kind == "text" and Path(source.path).stat().st_size > data.streaming_threshold_mb * 2**20


def _bad_utf8_line(path: str) -> str | None:
    """`file:line` of the first line that is not UTF-8, scanning bytes line by line (only after a failure)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f"{path}:{lineno}: not valid UTF-8 (byte 0x{line[err.start]:02x} at column {err.start + 1}); "
                        "text files must be UTF-8, re-encode it (e.g. iconv -f latin1 -t utf-8)")
    return None


def _load_lines(path: str) -> Dataset:
    try:
        return load_dataset("text", data_files=[path], keep_linebreaks=True, split="train")
    except Exception as err:  # datasets wraps decode errors in several exception types
        raise UsageError(_bad_utf8_line(path) or f"cannot read {path} as UTF-8 text: {err}") from None


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

def _encode_text(batch, tokenizer, field: str, eos_per_row: bool):
    """Raw text is bytes, not markup: `split_special_tokens` keeps a literal "<|eos|>" in a file as text."""
    texts = batch[field]
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if eos_per_row:
        ids = [row + [tokenizer.eos_token_id] for row in ids]
    return {"input_ids": ids, "n_bytes": [len(t.encode("utf-8")) for t in texts], "n_tokens": [len(r) for r in ids]}


def _scored_stats(row: dict, tokenizer) -> TextStats:
    """Bytes and tokens of one row's scored (label != -100) tokens."""
    scored = [t for t in row["labels"] if t != -100]
    return TextStats(len(tokenizer.decode(scored, skip_special_tokens=True).encode("utf-8")), len(scored))


def _stats(dataset: Dataset) -> TextStats:
    return TextStats(bytes=int(pc.sum(dataset.data.column("n_bytes")).as_py() or 0),
                     tokens=int(pc.sum(dataset.data.column("n_tokens")).as_py() or 0))


def _tokenize(dataset: Dataset, tokenizer, data: DataConfig, field: str, eos_per_row: bool) -> Dataset:
    return dataset.map(_encode_text, batched=True, batch_size=MAP_BATCH, remove_columns=dataset.column_names,
                       num_proc=data.num_proc or None, features=TOKEN_FEATURES, desc="tokenizing",
                       fn_kwargs={"tokenizer": tokenizer, "field": field, "eos_per_row": eos_per_row})


def _raw_byte_batches(path: str):
    """Encoded batches of a file's lines for a byte tokenizer, read in binary: every byte is its token id,
    so text that is not UTF-8 is kept as it is (and nothing is decoded at all)."""
    with open(path, "rb") as f:
        while lines := f.readlines(1 << 20):  # about 1 MB of lines at a time
            sizes = [len(line) for line in lines]
            yield {"input_ids": [list(line) for line in lines], "n_bytes": sizes, "n_tokens": sizes}


def _raw_byte_lines(path: str) -> Dataset:
    def rows():
        for batch in _raw_byte_batches(path):
            yield from ({"input_ids": ids, "n_bytes": n, "n_tokens": n}
                        for ids, n in zip(batch["input_ids"], batch["n_bytes"]))

    return Dataset.from_generator(rows, features=TOKEN_FEATURES)


def _text_file_tokens(path: str, tokenizer, data: DataConfig) -> Dataset:
    """A plain-text file as one document: its lines' tokens, then one eos row.

    Text must be UTF-8, except for a byte tokenizer, which keeps any bytes (read in binary)."""
    try:
        tokens = _tokenize(_load_lines(path), tokenizer, data, "text", eos_per_row=False)
    except UsageError:
        if not (is_byte_tokenizer(tokenizer) and _bad_utf8_line(path)):
            raise
        tokens = _raw_byte_lines(path)
    eos = Dataset.from_dict({"input_ids": [[tokenizer.eos_token_id]], "n_bytes": [0], "n_tokens": [1]},
                            features=TOKEN_FEATURES)
    return concatenate_datasets([tokens, eos])


def _flatten_instructions(batch):
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
    for prompt, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"]):
        start = sum(1 for _, end in offsets if end <= len(prompt))  # tokens wholly inside the prompt
        after = [i for i in range(start, len(ids)) if ids[i] == eos]
        stop = after[-1] + 1 if after else len(ids)  # the closing eos is scored; the newline after is not
        labels = [-100] * start + ids[start:stop] + [-100] * (len(ids) - stop)
        ids, labels = ids[:block_size], labels[:block_size]
        stats = _scored_stats({"labels": labels}, tokenizer)
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
        flat = records.map(_flatten_instructions, batched=True, batch_size=MAP_BATCH,
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
    return rows.remove_columns(["n_bytes", "n_tokens", "truncated"]), _stats(rows)


def _piece(source: Source, tokenizer, data: DataConfig) -> tuple[str, Dataset, TextStats]:
    """One in-memory source as ("tokens", token rows to pack) or ("examples", finished padded rows)."""
    if source.kind == "text":
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
        parts.append(dataset)
    if run:
        parts.append(pack_blocks(concatenate_datasets(run), data.block_size))
    if stats.tokens == 0:
        raise UsageError("nothing to train on: the text is empty or every instruction example was dropped")
    return concatenate_datasets(parts), stats


# ------------------------------------------------------------------------------------------- streaming

def build_datasets(data: DataConfig, tokenizer) -> tuple[Dataset | IterableDataset, Dataset, TextStats]:
    """Train and validation rows plus the bytes-per-token of the scored validation text.

    The training set is an `IterableDataset` (no length) when a training text file is larger than
    `streaming_threshold_mb`; the validation set is always a `Dataset`."""
    from .streaming import streamed_train, streamed_validation  # it builds on this module

    train_sources = [Source("embedded", "pydoc_data.topics")] if data.train_file is None \
        else resolve_sources(data.train_file)
    val_sources = resolve_sources(data.validation_file) if data.validation_file else []
    if val_sources:
        make = streamed_validation if any(_streams(s, data) for s in val_sources) else prepare_rows
        validation, val_stats = make(val_sources, tokenizer, data)
    big = [s.path for s in train_sources if _streams(s, data)]
    if big and not val_sources:
        raise UsageError(f"{big[0]} is larger than streaming_threshold_mb={data.streaming_threshold_mb}, so it is "
                         "streamed rather than loaded, and a stream's last fraction is only known after reading "
                         "all of it: give a validation_file (or raise streaming_threshold_mb)")
    if big:
        train, n_train = streamed_train(train_sources, tokenizer, data), "a stream of"
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
