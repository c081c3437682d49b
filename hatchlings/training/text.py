"""What the in-memory loader (data.py) and the streaming one (streaming.py) share: the data section, the
sources, byte accounting, and the checks and encodings of plain-text files.

Kept apart so that neither loader imports the other: data.py hands streaming.py its in-memory preparation as
a function, and both build on this module.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from datasets import Features, List, Value

from ..errors import UsageError

MAP_BATCH = 10_000  # rows per map batch; packing drops at most one partial block per batch
TEXT_SUFFIXES = (".txt", ".md")  # what a plain folder contributes
JSON_SUFFIXES = (".json", ".jsonl")
DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by save_to_disk
TOKEN_FEATURES = Features({"input_ids": List(Value("int32")), "n_bytes": Value("int64"), "n_tokens": Value("int64")})
ROW_FEATURES = Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                         "attention_mask": List(Value("int8"))})


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
    allow_binary: bool = False  # train on text files that look binary (see check_not_binary)

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


BINARY_CHECK_BYTES = 64 * 1024  # only the start of each text file is inspected
BINARY_FRACTION = 0.3  # more non-text bytes than this in that start: not a text file
# control characters other than whitespace, backspace and ESC; U+DC80..U+DCFF are undecodable bytes
_NOT_TEXT = re.compile("[\x00-\x07\x0e-\x1a\x1c-\x1f\udc80-\udcff]")


def check_not_binary(path: str, data: DataConfig) -> None:
    """Refuse a "text" file that is not text (an executable, an archive) unless `data.allow_binary`.

    The byte tokenizer takes any bytes, so without this a wrong path trains silently and the model learns
    to write garbage. Text with a few bytes that are not UTF-8 (Latin-1 accents) still passes; a NUL byte,
    or more than BINARY_FRACTION of the first BINARY_CHECK_BYTES being control or undecodable bytes, fails.
    """
    if data.allow_binary:
        return
    with open(path, "rb") as f:
        head = f.read(BINARY_CHECK_BYTES)
    text = head.decode("utf-8", "surrogateescape")  # each undecodable byte -> one U+DC80..U+DCFF
    bad = _NOT_TEXT.findall(text)
    nul = head.find(b"\0")
    if nul < 0 and len(bad) <= BINARY_FRACTION * len(head):
        return
    if nul >= 0:
        why = f"a NUL byte at offset {nul}"
    else:
        first = len(text[:_NOT_TEXT.search(text).start()].encode("utf-8", "surrogateescape"))
        why = (f"{len(bad) / len(head):.0%} of its first {len(head)} bytes are not UTF-8 text, "
               f"the first at offset {first}")
    raise UsageError(f"{path} looks like a binary file, not text ({why}); pass --allow_binary "
                     "(data.allow_binary: true) to train on it anyway")


def is_streamed(source: Source, data: DataConfig) -> bool:
    return source.kind == "text" and Path(source.path).stat().st_size > data.streaming_threshold_mb * 2**20


def bad_utf8_line(path: str) -> str | None:
    """`file:line` of the first line that is not UTF-8, scanning bytes line by line (only after a failure)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f"{path}:{lineno}: not valid UTF-8 (byte 0x{line[err.start]:02x} at column {err.start + 1}); "
                        "text files must be UTF-8, re-encode it (e.g. iconv -f latin1 -t utf-8)")
    return None


def encode_text(batch, tokenizer, field: str, eos_per_row: bool):
    """Raw text is bytes, not markup: `split_special_tokens` keeps a literal "<|eos|>" in a file as text."""
    texts = batch[field]
    ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if eos_per_row:
        ids = [row + [tokenizer.eos_token_id] for row in ids]
    return {"input_ids": ids, "n_bytes": [len(t.encode("utf-8")) for t in texts], "n_tokens": [len(r) for r in ids]}


def raw_byte_batches(path: str):
    """Encoded batches of a file's lines for a byte tokenizer, read in binary: every byte is its token id,
    so text that is not UTF-8 is kept as it is (and nothing is decoded at all)."""
    with open(path, "rb") as f:
        while lines := f.readlines(1 << 20):  # about 1 MB of lines at a time
            sizes = [len(line) for line in lines]
            yield {"input_ids": [list(line) for line in lines], "n_bytes": sizes, "n_tokens": sizes}
