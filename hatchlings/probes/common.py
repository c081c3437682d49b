"""Plumbing every probe shares: the model, the text, its blocks, the concept labels and the output files.

Why byte-level: every concept the probes test (character class, word, speaker) is a property of a byte
position in the text. With the byte tokenizer token i is byte i, so labels computed once on the text's
bytes index the activations directly, with no alignment step that could silently mislabel. All hatchlings
models use that tokenizer; a model with another one is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Iterator

import numpy as np
import torch

from ..errors import UsageError

DEFAULT_BLOCK_SIZE = 256
DEFAULT_MAX_TOKENS = 32_768  # 128 blocks of 256: about a minute of reference forward passes on 2 CPU cores

BYTE_CLASSES = ("lowercase", "uppercase", "digit", "space", "newline", "punctuation", "other")
WORD = re.compile(rb"[A-Za-z]+(?:'[A-Za-z]+)*")
# a line holding only `NAME:` (tiny Shakespeare's "First Citizen:", "KING RICHARD III:")
SPEAKER_LINE = re.compile(rb"^([A-Z][A-Za-z' ]{0,40}):[ \t]*\r?$", re.MULTILINE)
MIN_SPEAKER_SHARE = 0.05  # speaker lines as a share of non-empty lines for text to count as a play


@dataclasses.dataclass
class Corpus:
    """The probed text: `data` its bytes, `ids` its token ids (== bytes), `name` where it came from."""

    name: str
    data: bytes
    ids: np.ndarray  # (n,) int64


@dataclasses.dataclass
class Concepts:
    """Concept labels per byte position. `names[c]`/`families[c]` describe global concept index c;
    `labels[family]` is (n,) int64 holding, per position, its concept of that family or -1 for none."""

    names: list[str]
    families: list[str]
    labels: dict[str, np.ndarray]


def load_model(folder, model_type: str | None, role: str = "model"):
    """Model (eval mode) and tokenizer of a saved folder, refused unless it is `model_type` (None: any causal LM,
    for probes that only read logits) with a byte tokenizer."""
    from ..tokenization import is_byte_tokenizer
    from ..training.export import load_model_folder

    model, tokenizer = load_model_folder(folder)
    if model_type is not None and model.config.model_type != model_type:
        raise UsageError(f"{role} {folder} is a {model.config.model_type!r} model; this probe needs {model_type!r}")
    if not is_byte_tokenizer(tokenizer):
        raise UsageError(f"{role} {folder} does not use the byte tokenizer; probes label byte positions")
    return model.eval(), tokenizer


def load_corpus(file: str | None) -> Corpus:
    """The text of `file` (UTF-8), or tiny Shakespeare from the data folder when no file is given (the play
    the speaker concepts are made for, and the text the published probe results use)."""
    from ..data_sources import default_file
    from ..evaluation import read_text

    file = default_file("tinyshakespeare") if file is None else file
    return _corpus(str(file), read_text(file).encode("utf-8"))


def _corpus(name: str, data: bytes) -> Corpus:
    return Corpus(name, data, byte_ids(data))


def byte_ids(data: bytes) -> np.ndarray:
    """Byte-tokenizer ids of `data`: its bytes, (n,) int64."""
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def block_starts(n_tokens: int, block_size: int, max_tokens: int) -> np.ndarray:
    """Offsets of up to max_tokens // block_size disjoint blocks spread evenly over the text.

    Evenly spaced rather than the first blocks, so a long file is sampled throughout (a play's first scene
    is not the play); no randomness, so runs repeat exactly. Unique offsets: the spacing is >= 1 block.
    """
    if block_size < 2:
        raise UsageError(f"--block_size must be >= 2, got {block_size}")
    total = n_tokens // block_size
    if total == 0:
        raise UsageError(f"the text has {n_tokens} tokens, fewer than one block of --block_size {block_size}")
    count = max(1, min(total, max_tokens // block_size))
    return np.linspace(0, total - 1, count).round().astype(np.int64) * block_size


def batches(ids: np.ndarray, starts: np.ndarray, block_size: int,
            batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Blocks of `ids` as (B, T) id tensors with their (B*T,) positions in the text (for the labels)."""
    if batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
    offsets = np.arange(block_size)
    for first in range(0, len(starts), batch_size):
        positions = starts[first:first + batch_size, None] + offsets  # (B, T)
        yield torch.from_numpy(ids[positions]), torch.from_numpy(positions.reshape(-1))


def byte_classes(data: bytes) -> np.ndarray:
    """(n,) int64 index into BYTE_CLASSES for every byte of `data`."""
    table = np.full(256, BYTE_CLASSES.index("other"), dtype=np.int64)
    for cls, members in (("lowercase", b"abcdefghijklmnopqrstuvwxyz"), ("uppercase", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                         ("digit", b"0123456789"), ("space", b" \t"), ("newline", b"\n\r"),
                         ("punctuation", b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")):
        table[list(members)] = BYTE_CLASSES.index(cls)
    return table[np.frombuffer(data, dtype=np.uint8)]


def word_counts(data: bytes) -> Counter:
    """How often each word occurs, case folded (words: letters with inner apostrophes, e.g. "know't")."""
    return Counter(m.group().lower().decode() for m in WORD.finditer(data))


def _word_labels(data: bytes, top: int) -> tuple[list[str], np.ndarray]:
    """The `top` most frequent words and, per byte, which of them it belongs to (-1: none)."""
    names = [w for w, _ in word_counts(data).most_common(top)]
    index = {w.encode(): i for i, w in enumerate(names)}
    labels = np.full(len(data), -1, dtype=np.int64)
    for m in WORD.finditer(data):
        i = index.get(m.group().lower())
        if i is not None:
            labels[m.start():m.end()] = i
    return names, labels


def speaker_lines(data: bytes) -> list[re.Match]:
    """The `NAME:` lines of a play, or [] when the text is not one (too few such lines among its lines)."""
    found = list(SPEAKER_LINE.finditer(data))
    lines = sum(1 for line in data.splitlines() if line.strip())
    if len({m.group(1) for m in found}) < 2 or len(found) < MIN_SPEAKER_SHARE * lines:
        return []
    return found


def _speaker_labels(data: bytes, top: int) -> tuple[list[str], np.ndarray]:
    """The `top` speakers with most speeches and, per byte after a `NAME:` line until the next, its speaker.
    The name lines themselves are unlabelled, so the word family, not this one, covers the names' bytes."""
    found = speaker_lines(data)
    names = [s for s, _ in Counter(m.group(1).decode() for m in found).most_common(top)]
    index = {s.encode(): i for i, s in enumerate(names)}
    labels = np.full(len(data), -1, dtype=np.int64)
    for m, following in zip(found, found[1:] + [None]):
        i = index.get(m.group(1))
        if i is not None:
            labels[m.end() + 1:following.start() if following is not None else len(data)] = i
    return names, labels


def concept_labels(data: bytes, top_words: int = 200, top_speakers: int = 30) -> Concepts:
    """Byte class, word and (in a play) speaker of every byte, as one global concept index space."""
    names, families, labels = [], [], {}
    parts = [("byte class", (list(BYTE_CLASSES), byte_classes(data))),
             ("word", _word_labels(data, top_words)), ("speaker", _speaker_labels(data, top_speakers))]
    for family, (family_names, family_labels) in parts:
        if not family_names:
            continue  # e.g. no speakers outside a play
        labels[family] = np.where(family_labels >= 0, family_labels + len(names), -1)
        names += family_names
        families += [family] * len(family_names)
    return Concepts(names, families, labels)


def table_text(text: str, limit: int | None = None) -> str:
    """`text` (its first `limit` characters) as one markdown table cell: newlines as ⏎, pipes escaped."""
    return text[:limit].replace("\n", "⏎").replace("|", "\\|")


def snippet(data: bytes, pos: int, left: int = 30, right: int = 12) -> str:
    """The text around byte `pos`, that byte in «», newlines as ⏎, pipes escaped for a markdown table."""
    def show(raw: bytes) -> str:
        return table_text(raw.decode("utf-8", errors="replace"))

    before, byte, after = data[max(0, pos - left):pos], data[pos:pos + 1], data[pos + 1:pos + 1 + right]
    return f"{show(before)}«{show(byte)}»{show(after)}"


def percentiles(values: np.ndarray, qs=(1, 10, 50, 90, 99)) -> dict[str, float]:
    """{"p1": ..., "p10": ...} of `values` (linear interpolation)."""
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(values, qs))}
