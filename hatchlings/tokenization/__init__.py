"""Tokenizers for hatchlings models (byte-level: token id == UTF-8 byte)."""

from hatchlings.tokenization.byte_level import (
    BYTE_SPECIAL_TOKENS,
    CHAT_TEMPLATE,
    build_byte_tokenizer,
    is_byte_tokenizer,
)

__all__ = ["BYTE_SPECIAL_TOKENS", "CHAT_TEMPLATE", "build_byte_tokenizer", "is_byte_tokenizer"]
