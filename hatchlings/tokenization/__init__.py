"""Tokenizers for hatchlings models: byte (token id == UTF-8 byte), char, word and byte-level BPE.

Every kind is a stock `PreTrainedTokenizerFast` with the same special-token names and chat template, so
exports load with plain `AutoTokenizer` and the platform treats them alike; `build_tokenizer` picks one.
"""

from __future__ import annotations

from typing import Iterable

from hatchlings.tokenization.byte_level import (
    BYTE_SPECIAL_TOKENS,
    CHAT_TEMPLATE,
    build_byte_tokenizer,
    is_byte_tokenizer,
)
from hatchlings.tokenization.learned import (
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB_SIZE,
    ROLE_MARKERS,
    UNK_TOKEN,
    build_bpe_tokenizer,
    build_char_tokenizer,
    build_word_tokenizer,
    expand_char_vocab,
    learned_kind,
)

TOKENIZER_KINDS = ("byte", "char", "word", "bpe")


def build_tokenizer(kind: str, texts: Iterable[str] | None = None, vocab_size: int | None = None,
                    min_frequency: int | None = None, model_max_length: int = 1_000_000):
    """A tokenizer of `kind`; char, word and bpe learn their vocabulary from `texts` (an iterable of strings).

    `vocab_size` caps word and bpe (default DEFAULT_VOCAB_SIZE); `min_frequency` drops rarer characters/words
    (default DEFAULT_MIN_FREQUENCY). A ValueError names what is wrong; the training CLI turns it into a UsageError.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZER_KINDS)}")
    if vocab_size is not None and kind not in DEFAULT_VOCAB_SIZE:
        raise ValueError(f"vocab_size applies to the word and bpe tokenizers, not {kind!r} "
                         "(its vocabulary is every byte or character)")
    if min_frequency is not None and (kind == "byte" or min_frequency < 1):
        raise ValueError(f"min_frequency must be >= 1 and applies to char, word and bpe, got {min_frequency} "
                         f"for {kind!r}")
    if kind == "byte":
        return build_byte_tokenizer(model_max_length)
    if texts is None:
        raise ValueError(f"the {kind} tokenizer learns its vocabulary: pass the training texts")
    min_frequency = DEFAULT_MIN_FREQUENCY[kind] if min_frequency is None else min_frequency
    if kind == "char":
        return build_char_tokenizer(texts, min_frequency, model_max_length)
    vocab_size = DEFAULT_VOCAB_SIZE[kind] if vocab_size is None else vocab_size
    if vocab_size < 8:
        raise ValueError(f"vocab_size must be at least 8, got {vocab_size}")
    build = build_word_tokenizer if kind == "word" else build_bpe_tokenizer
    return build(texts, vocab_size, min_frequency, model_max_length)


def tokenizer_kind(tokenizer) -> str | None:
    """Which of TOKENIZER_KINDS a tokenizer (built here, or loaded from an export) is; None for others."""
    return "byte" if is_byte_tokenizer(tokenizer) else learned_kind(tokenizer)


__all__ = ["BYTE_SPECIAL_TOKENS", "CHAT_TEMPLATE", "ROLE_MARKERS", "TOKENIZER_KINDS", "UNK_TOKEN",
           "build_byte_tokenizer", "build_tokenizer", "expand_char_vocab", "is_byte_tokenizer", "tokenizer_kind"]
