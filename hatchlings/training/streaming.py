"""Streaming for text files too big to load: tokenized and packed lazily into an `IterableDataset`.

A streamed file is never read into memory or converted to Arrow as a whole; lines are read a batch at a
time (raw bytes for a byte tokenizer, decoded UTF-8 otherwise), tokenized and cut into blocks on the fly.
"""

from __future__ import annotations

from datasets import Dataset, IterableDataset, load_dataset

from ..tokenization import is_byte_tokenizer
from ..errors import UsageError
from .text import (MAP_BATCH, ROW_FEATURES, DataConfig, Source, TextStats, bad_utf8_line, check_not_binary,
                   encode_text, is_streamed, raw_byte_batches)


def _stream_rows(items: tuple, tokenizer, block_size: int, stats: TextStats | None = None):
    """Yield packed blocks (and finished examples) lazily; text files are read a batch of lines at a time.

    `items` are ("stream", path) or (kind, Dataset) from `_piece`. A decode error in a streamed file is only
    seen here, mid-run, so it is turned into the same `file:line` UsageError as for a loaded file."""
    carry: list[int] = []
    ones = [1] * block_size
    for kind, item in items:
        if kind == "examples":
            for row in item:
                if stats is not None:
                    stats += TextStats(row["n_bytes"], row["n_tokens"])  # measured on the text (data.py)
                yield {key: row[key] for key in ROW_FEATURES}
            continue
        batches = item.iter(batch_size=MAP_BATCH) if kind == "tokens" else _stream_batches(item, tokenizer)
        try:
            for batch in batches:
                if stats is not None:
                    stats += TextStats(sum(batch["n_bytes"]), sum(batch["n_tokens"]))
                carry += [t for ids in batch["input_ids"] for t in ids]
                n = len(carry) // block_size * block_size
                for i in range(0, n, block_size):
                    yield {"input_ids": carry[i:i + block_size], "labels": carry[i:i + block_size],
                           "attention_mask": ones}
                carry = carry[n:]
        except Exception as err:
            if kind != "stream":
                raise
            raise UsageError(bad_utf8_line(item) or f"cannot read {item} as UTF-8 text: {err}") from None
        if kind == "stream":
            carry.append(tokenizer.eos_token_id)
            if stats is not None:
                stats += TextStats(0, 1)


def _stream_batches(path: str, tokenizer):
    """Encoded batches of a streamed text file: raw bytes for a byte tokenizer, else decoded UTF-8 lines."""
    if is_byte_tokenizer(tokenizer):
        yield from raw_byte_batches(path)
        return
    lines = load_dataset("text", data_files=[path], streaming=True, split="train", keep_linebreaks=True)
    for batch in lines.iter(batch_size=MAP_BATCH):
        yield encode_text(batch, tokenizer, "text", eos_per_row=False)


def _stream_items(sources: list[Source], tokenizer, data: DataConfig, piece) -> tuple:
    """Big text files as ("stream", path), checked now rather than mid-run; everything else prepared in
    memory by `piece(source, tokenizer, data) -> (kind, Dataset, stats)`, the in-memory loader's own."""
    return tuple(_stream_item(s, data) if is_streamed(s, data) else piece(s, tokenizer, data)[:2] for s in sources)


def _stream_item(source: Source, data: DataConfig) -> tuple[str, str]:
    check_not_binary(source.path, data)
    return "stream", source.path


def streamed_train(sources: list[Source], tokenizer, data: DataConfig, piece) -> IterableDataset:
    """The training rows as an IterableDataset, read lazily each epoch (Trainer then needs `max_steps`).
    `piece` prepares the sources that are not streamed (see `_stream_items`)."""
    items = _stream_items(sources, tokenizer, data, piece)
    train = IterableDataset.from_generator(_stream_rows, features=ROW_FEATURES,
                                           gen_kwargs={"items": items, "tokenizer": tokenizer,
                                                       "block_size": data.block_size})
    if next(iter(train), None) is None:  # reads only the first batch of lines; also checks its UTF-8
        raise UsageError(f"not enough text for one block of block_size={data.block_size}")
    return train


def streamed_validation(sources: list[Source], tokenizer, data: DataConfig, piece) -> tuple[Dataset, TextStats]:
    """The first `max_eval_blocks` rows of a validation set too big to load, kept in memory.

    The stats count the text consumed to make them (whole batches of lines): the same text, so the
    same bytes per token."""
    if data.max_eval_blocks is None:
        raise UsageError("a validation file larger than streaming_threshold_mb is streamed: set "
                         "data.max_eval_blocks to how many of its first blocks to validate on")
    stats, rows = TextStats(0, 0), []
    for row in _stream_rows(_stream_items(sources, tokenizer, data, piece), tokenizer, data.block_size, stats):
        rows.append(row)
        if len(rows) == data.max_eval_blocks:
            break
    return Dataset.from_list(rows, features=ROW_FEATURES), stats


# ---------------------------------------------------------------------------------------------- public
