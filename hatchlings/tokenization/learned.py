"""Tokenizers whose vocabulary is learned from the training text: char, word and (byte-level) BPE.

All three are `tokenizers` backends wrapped in the same stock `PreTrainedTokenizerFast` as the byte tokenizer
(`byte_level.wrap_backend`), so an export's `tokenizer.json` loads with plain `AutoTokenizer` where hatchlings is
not installed, and they share its special-token names, its bos post-processor and its chat template.

Ids: pad 0, bos 1, eos 2, then (char, word) unk 3, then the learned vocabulary; the chat role markers come
last for word and BPE. Why each kind is built the way it is:

* char: one token per Unicode code point (a WordLevel model over a split into single characters). Characters
  of the chat markup (`<|user|>` ...) are always in the vocabulary, so chat works whatever the corpus. The
  vocabulary can grow (`expand_char_vocab`): new characters are appended, so old ids never move and a trained
  model keeps its rows.
* word: a word is a run of letters/digits, or of punctuation, with at most one leading space; every other
  whitespace character is its own token. Pieces tile the text with no gaps, so decoding (plain concatenation)
  gives the text back exactly for known words and every byte is covered by some token's offsets, `<|unk|>`
  included -- which is what keeps bits per byte exact. Role markers are added tokens (one id each).
* bpe: byte-level BPE trained by the `tokenizers` library (GPT-2's pre-tokenization), so like the byte
  tokenizer it can encode any text; it needs no unk. Role markers are added tokens.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .byte_level import BOS_TOKEN, BYTE_SPECIAL_TOKENS, bos_post_processor, wrap_backend

UNK_TOKEN = "<|unk|>"
#: The chat template writes roles as text: `<|system|>`, `<|user|>`, `<|assistant|>` (see CHAT_TEMPLATE).
ROLE_MARKERS = tuple(f"<|{role}|>" for role in ("system", "user", "assistant"))
CHAR_PATTERN = r"[\s\S]"  # every code point, newlines included
WORD_PATTERN = r" ?\w+| ?[^\w\s]+|\s"
DEFAULT_VOCAB_SIZE = {"word": 8192, "bpe": 4096}
DEFAULT_MIN_FREQUENCY = {"char": 1, "word": 2, "bpe": 2}


def _specials(with_unk: bool) -> list[str]:
    return [*BYTE_SPECIAL_TOKENS, *([UNK_TOKEN] if with_unk else [])]


def _finish(backend: Tokenizer, model_max_length: int, role_tokens: bool) -> PreTrainedTokenizerFast:
    """Register the special (and, for word/BPE, role) tokens, add the bos post-processor, wrap."""
    with_unk = backend.token_to_id(UNK_TOKEN) is not None
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _specials(with_unk)])
    if role_tokens:  # not special: decode(skip_special_tokens=True) keeps who said what
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in ROLE_MARKERS])
    backend.post_processor = bos_post_processor(backend.token_to_id(BOS_TOKEN))
    tokenizer = wrap_backend(backend, model_max_length)
    if with_unk:  # named, so unk_token_id works (resize_for_new_tokens gives new characters unk's head row)
        tokenizer.unk_token = UNK_TOKEN
    return tokenizer


# ------------------------------------------------------------------------------------------------ char

def _char_backend(vocab: dict[str, int]) -> Tokenizer:
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(CHAR_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()  # characters join with nothing between them
    return backend


def _ranked_chars(texts: Iterable[str], min_frequency: int, known: set[str]) -> list[str]:
    """Characters not in `known` seen at least `min_frequency` times, most frequent first (ties by code point)."""
    counts = Counter()
    for text in texts:
        counts.update(text)
    return sorted((c for c, n in counts.items() if n >= min_frequency and c not in known),
                  key=lambda c: (-counts[c], c))


def build_char_tokenizer(texts: Iterable[str], min_frequency: int = 1,
                         model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """Specials, the characters of the chat markup, then the corpus' characters by frequency."""
    vocab = {token: i for i, token in enumerate(_specials(True))}
    markup = "".join(ROLE_MARKERS) + "\n"
    for char in sorted(set(markup)) + _ranked_chars(texts, min_frequency, set(markup)):
        vocab.setdefault(char, len(vocab))
    return _finish(_char_backend(vocab), model_max_length, role_tokens=False)


def expand_char_vocab(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> tuple[PreTrainedTokenizerFast, int]:
    """The char tokenizer with every unseen character of `texts` appended (old ids unchanged), and how many.

    Continual learning on text in a new script would otherwise map all of it to `<|unk|>`."""
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    new = _ranked_chars(texts, 1, set(vocab))
    if not new:
        return tokenizer, 0
    vocab.update({char: len(vocab) + i for i, char in enumerate(new)})
    return _finish(_char_backend(vocab), tokenizer.model_max_length, role_tokens=False), len(new)


# ------------------------------------------------------------------------------------------ word, bpe

def build_word_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE["word"],
                         min_frequency: int = DEFAULT_MIN_FREQUENCY["word"],
                         model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """The `vocab_size` most frequent words (specials included; the role markers come on top)."""
    backend = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=_specials(True), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return _finish(backend, model_max_length, role_tokens=True)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE["bpe"],
                        min_frequency: int = DEFAULT_MIN_FREQUENCY["bpe"],
                        model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """Byte-level BPE of `vocab_size` tokens (specials + the 256 byte symbols + merges)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(_specials(False)) + len(alphabet) + 1:
        raise ValueError(f"bpe vocab_size must be at least {len(_specials(False)) + len(alphabet) + 1} "
                         f"(3 specials, 256 byte symbols and one merge), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=_specials(False), initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return _finish(backend, model_max_length, role_tokens=True)


def learned_kind(tokenizer) -> str | None:
    """"char", "word" or "bpe" for a tokenizer built here (also after a save/load round trip), else None.

    Read from the backend itself, so an export needs no extra marker file."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.token_to_id(BOS_TOKEN) != 1:
        return None
    if isinstance(backend.model, models.BPE):
        return "bpe"
    if not isinstance(backend.model, models.WordLevel):
        return None
    return "char" if backend.pre_tokenizer.pre_tokenize_str("ab") == [("a", (0, 1)), ("b", (1, 2))] else "word"
