"""Text -> tokenized, packed blocks for causal-LM training, with `datasets` (local files only).

Each file (or each embedded document) is one document: its lines are tokenized with `Dataset.map`,
an eos token marks the document's end, and the token stream is cut into fixed `block_size` blocks.
Validation is either a separate file or the *last* fraction of the blocks, so the split is deterministic
and matches the usual "first 90% train / last 10% validation" convention for single-file corpora.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets import Dataset, concatenate_datasets, load_dataset

from .errors import UsageError

MAP_BATCH = 10_000  # lines per map batch; packing drops at most one partial block per batch


@dataclasses.dataclass
class DataConfig:
    """Where the text comes from and how it is cut into training blocks."""

    train_file: list[str] | None = None  # text files; None = Python's own documentation (pydoc_data)
    validation_file: list[str] | None = None  # None = hold out the last `validation_fraction` of blocks
    block_size: int = 256
    validation_fraction: float = 0.1
    max_eval_blocks: int | None = 64  # cap on validation blocks scored during training (None = all)

    def __post_init__(self):
        for name in ("train_file", "validation_file"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
        if self.block_size < 2:
            raise UsageError(f"data.block_size must be >= 2, got {self.block_size}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise UsageError(f"data.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for path in (self.train_file or []) + (self.validation_file or []):
            if not Path(path).is_file():
                raise UsageError(f"data file not found: {path}")


@dataclasses.dataclass
class TextStats:
    """How many UTF-8 bytes the tokens stand for, to turn nats/token into bits/byte."""

    bytes: int
    tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)


def embedded_corpus() -> Dataset:
    """Python's own documentation text (ships with every CPython), so the quickstart needs no download."""
    from pydoc_data.topics import topics

    return Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


def _load_lines(path: str) -> Dataset:
    if Path(path).stat().st_size == 0:
        raise UsageError(f"data file is empty: {path}")
    try:
        return load_dataset("text", data_files=[path], keep_linebreaks=True, split="train")
    except Exception as err:  # datasets wraps decode errors in several exception types
        raise UsageError(f"cannot read {path} as UTF-8 text: {err}") from None


def tokenize_documents(documents: list[Dataset], tokenizer, num_proc: int | None = None) -> tuple[Dataset, TextStats]:
    """Tokenize every row of every document (no bos per line), ending each document with eos."""

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": ids, "n_bytes": [len(t.encode("utf-8")) for t in batch["text"]]}

    parts = []
    for doc in documents:
        tokens = doc.map(encode, batched=True, batch_size=MAP_BATCH, remove_columns=doc.column_names,
                         num_proc=num_proc, desc="tokenizing")
        parts += [tokens, Dataset.from_dict({"input_ids": [[tokenizer.eos_token_id]], "n_bytes": [0]},
                                            features=tokens.features)]
    dataset = concatenate_datasets(parts)
    stats = TextStats(bytes=sum(dataset["n_bytes"]), tokens=sum(len(ids) for ids in dataset["input_ids"]))
    if stats.bytes == 0:
        raise UsageError("the training text is empty")
    return dataset.remove_columns("n_bytes"), stats


def pack_blocks(tokens: Dataset, block_size: int) -> Dataset:
    """Concatenate token rows and cut them into `block_size` blocks with `labels` = `input_ids`."""

    def pack(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        n = len(stream) // block_size * block_size
        blocks = [stream[i:i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    return tokens.map(pack, batched=True, batch_size=MAP_BATCH, remove_columns=tokens.column_names, desc="packing")


def build_datasets(data: DataConfig, tokenizer) -> tuple[Dataset, Dataset, TextStats]:
    """Train and validation block datasets plus the bytes-per-token of the validation text."""
    train_docs = [embedded_corpus()] if data.train_file is None else [_load_lines(f) for f in data.train_file]
    train_tokens, train_stats = tokenize_documents(train_docs, tokenizer)
    blocks = pack_blocks(train_tokens, data.block_size)
    if data.validation_file:
        val_tokens, val_stats = tokenize_documents([_load_lines(f) for f in data.validation_file], tokenizer)
        train, validation = blocks, pack_blocks(val_tokens, data.block_size)
    else:
        n_val = max(1, round(len(blocks) * data.validation_fraction))
        train, validation, val_stats = blocks.select(range(len(blocks) - n_val)), \
            blocks.select(range(len(blocks) - n_val, len(blocks))), train_stats
    if len(train) == 0 or len(validation) == 0:
        raise UsageError(f"not enough text for block_size={data.block_size}: {len(train)} training and "
                         f"{len(validation)} validation blocks (use more text or a smaller block_size)")
    return train, validation, val_stats
