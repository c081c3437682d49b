"""The training text a learned vocabulary (char, word, bpe) is built from: the run's training rows only.

The validation text is left out on purpose: its unseen characters/words must show up as `<|unk|>`, as they
would on new text. With a `validation_file` that is every byte of the training sources; without one, the run
holds out the last `validation_fraction` of its rows, so the vocabulary leaves out the last `validation_fraction`
of the training sources' bytes (rows are cut after tokenizing, so the two boundaries agree to within a row or
two). A corpus larger than `limit_bytes` (a streamed file) is sampled: the first `limit_bytes` of it in source
order, which `sample_note` reports so the run says so.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

VOCAB_SAMPLE_BYTES = 64 * 2**20  # enough text for any vocabulary these models use, and quick to count
READ_CHARS = 2**20  # texts are handed to the trainers in pieces of about this many characters


@dataclasses.dataclass
class CorpusSample:
    """Iterates the training text once per `iter()` (each builder may pass over it once)."""

    data: object  # training.data.DataConfig
    limit_bytes: int = VOCAB_SAMPLE_BYTES
    truncated: bool = False  # set by an iteration that hit `limit_bytes`

    def __iter__(self) -> Iterator[str]:
        kept = self._kept_bytes()
        budget = self.limit_bytes if kept is None else min(self.limit_bytes, kept)
        for text in self._texts():
            encoded = text.encode("utf-8", "surrogatepass")
            if len(encoded) > budget:  # cut at the byte, dropping a character the cut splits
                self.truncated = kept is None or kept > self.limit_bytes  # not when the held-out tail stopped it
                yield encoded[:budget].decode("utf-8", "ignore")
                return
            budget -= len(encoded)
            yield text

    def sample_note(self) -> str | None:
        """What the vocabulary was built from when it was not the whole training text, else None."""
        if not self.truncated:
            return None
        return f"the vocabulary was built from the first {self.limit_bytes / 2**20:.0f} MB of the training text"

    def _kept_bytes(self) -> int | None:
        """How many leading bytes of the training text are training rows: None when a validation_file holds the
        validation text (a streamed file needs one, which the run asks for), else all but the last
        `validation_fraction`, the held-out rows' text."""
        from ..training.text import is_streamed

        if self.data.validation_file or any(is_streamed(s, self.data) for s in self._sources()):
            return None
        total = sum(len(text.encode("utf-8", "surrogatepass")) for text in self._texts())
        return int(total * (1.0 - self.data.validation_fraction))

    def _sources(self) -> list:
        from ..training.text import Source, resolve_sources

        data = self.data
        return [Source("embedded", "pydoc_data.topics")] if data.train_file is None \
            else resolve_sources(data.train_file)

    def _texts(self) -> Iterator[str]:
        for source in self._sources():
            if source.kind == "text":
                yield from _file_pieces(source.path)
            else:
                yield from _record_texts(source, self.data.text_field)


def _file_pieces(path: str) -> Iterator[str]:
    """A text file in pieces; not UTF-8 is the same one-line error training gives."""
    from ..training.text import bad_utf8_line
    from ..errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            while piece := f.read(READ_CHARS):
                yield piece
    except UnicodeDecodeError as err:
        raise UsageError(bad_utf8_line(path) or f"cannot read {path} as UTF-8 text: {err}") from None


def _record_texts(source, text_field: str) -> Iterator[str]:
    """The strings a JSON file or saved dataset contributes: its text field, or instruction, input, output."""
    from ..training.data import flatten_instructions, _load_records

    records = _load_records(source, text_field)
    instruction = "instruction" in records.column_names
    for batch in records.iter(batch_size=1000):
        if instruction:
            try:
                flat = flatten_instructions(batch)
            except (ValueError, TypeError, AttributeError):
                continue  # a malformed record: building the datasets next reports it by line
            yield from (t for column in flat.values() for t in column if t)
        elif text_field in batch:
            yield from (t for t in batch[text_field] if isinstance(t, str))
