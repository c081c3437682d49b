"""A byte-level tokenizer with no learned merges: token id == UTF-8 byte value.

Why bytes and no merges?
    The hatchlings models are small research architectures; a byte vocabulary
    keeps the embedding/readout tiny (259 rows), needs no training corpus to
    build, and can never produce an unknown token -- every UTF-8 string
    (emoji, CJK, control characters, ``\\x00``) is representable, so
    ``decode(encode(text)) == text`` holds for all of them.  With zero BPE
    merges the BPE model degenerates into a fixed byte -> id lookup, and by
    building the vocab so that byte ``b`` gets id ``b`` the ids are simply
    ``list(text.encode("utf-8"))``, which makes debugging and tests trivial.

Why a ``tokenizers`` BPE model rather than a hand-written Python class?
    Wrapping a ``tokenizers.Tokenizer`` in ``PreTrainedTokenizerFast`` means
    ``save_pretrained`` writes a plain ``tokenizer.json`` +
    ``tokenizer_config.json`` + ``chat_template.jinja``, which
    ``PreTrainedTokenizerFast.from_pretrained`` loads with stock Transformers --
    no ``trust_remote_code`` and no need for ``hatchlings`` to be importable.
    ``AutoTokenizer.from_pretrained`` does too on a folder of these files alone;
    on a model folder it first reads config.json through ``AutoConfig`` (Transformers
    5.23), whose ``auto_map`` names remote code, so it needs ``trust_remote_code=True``
    there (without it: a 15 s y/N prompt, then a config warning) although the
    tokenizer it builds is this same stock class.

Special tokens (appended after the 256 bytes):
    ``<|pad|>`` = 256, ``<|bos|>`` = 257, ``<|eos|>`` = 258 (vocab size 259).

Caveat: like every Hugging Face tokenizer, the literal strings ``<|pad|>``,
``<|bos|>`` and ``<|eos|>`` appearing in input text are matched as the special
tokens (that is exactly how ``{{ eos_token }}`` in the chat template turns into
id 258).  Pass ``split_special_tokens=True`` when encoding untrusted text to
keep such strings as plain bytes.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"

#: Special tokens in id order; their ids are 256, 257, 258.
BYTE_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)

#: Chat format: ``<bos>`` then, per message, ``<|role|>\n{content}<eos>\n``.
#: Role markers are ordinary text (encoded as bytes), so adding roles never
#: changes the vocabulary; only bos/eos are real special tokens.  The eos after
#: each turn is what generation stops on.  ``add_generation_prompt`` appends
#: ``<|assistant|>\n`` so the model continues as the assistant.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unsupported chat role: ' ~ message['role']"
    " ~ ' (expected system, user or assistant)') }}"
    "{% endif %}"
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ eos_token ~ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode-character mapping.

    Byte-level BPE works on strings, so every byte is represented by one
    visible character: printable Latin-1 bytes map to themselves, the other
    68 bytes (controls, space, ...) are shifted to code points 256 + n.  This
    is the same table ``tokenizers.pre_tokenizers.ByteLevel`` uses internally;
    we recompute it (rather than using ``ByteLevel.alphabet()``, which is an
    unordered list) because we need to know which symbol belongs to which
    byte in order to give byte ``b`` the id ``b``.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _build_backend() -> Tokenizer:
    """The raw ``tokenizers.Tokenizer`` (bytes + 3 specials + bos post-processor)."""
    byte_to_symbol = _bytes_to_unicode()
    if set(byte_to_symbol.values()) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise RuntimeError("byte mapping disagrees with tokenizers' ByteLevel alphabet")
    vocab = {byte_to_symbol[b]: b for b in range(256)}

    # No merges: each byte symbol is its own final token.  No unk_token is
    # needed because the pre-tokenizer only ever emits alphabet symbols.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # use_regex=False: no GPT-2 word splitting -- with no merges it would only
    # cost time.  add_prefix_space=False keeps ids == the exact input bytes.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()

    # normalized=False: match the literal strings; special=True: dropped by
    # decode(skip_special_tokens=True).
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in BYTE_SPECIAL_TOKENS]
    )
    ids = [backend.token_to_id(t) for t in BYTE_SPECIAL_TOKENS]
    if ids != [256, 257, 258]:
        raise RuntimeError(f"unexpected special token ids {ids}")

    # bos is added by the post-processor (not by callers) so that *every* path
    # -- tok(text), tok.encode, batch calls, pipelines, and a reload via
    # AutoTokenizer without hatchlings -- agrees, and it is serialised inside
    # tokenizer.json.  Causal LMs need a bos to have a first position to
    # predict the first real byte from.  eos is deliberately NOT appended:
    # a prompt being encoded for generation must not end in eos; training
    # code appends eos to documents explicitly.  Pairs get one bos per
    # segment ("<|bos|> A <|bos|> B", token types 0/1), i.e. two concatenated
    # documents.  apply_chat_template encodes with add_special_tokens=False,
    # so the bos there comes only from the template's ``{{ bos_token }}``.
    backend.post_processor = bos_post_processor(257)
    return backend


def bos_post_processor(bos_id: int) -> processors.TemplateProcessing:
    """Prepend bos to every encoded text (one per segment of a pair); see `_build_backend` for why."""
    return processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A:0",
        pair=f"{BOS_TOKEN} $A:0 {BOS_TOKEN}:1 $B:1",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )


def build_byte_tokenizer(model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """Build the hatchlings byte tokenizer (vocab 259; pad 256, bos 257, eos 258).

    ``model_max_length`` defaults to a large value because byte sequences are
    long and each model enforces its own context length; set it to the model's
    context size to get truncation warnings from Transformers.

    The result is a plain ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in
    Transformers 5): after ``save_pretrained(d)``, ``AutoTokenizer
    .from_pretrained(d)`` reproduces it exactly without importing hatchlings.
    Padding defaults to the right (training); generation code may set
    ``tok.padding_side = "left"``.
    """
    return wrap_backend(_build_backend(), model_max_length)


def wrap_backend(backend: Tokenizer, model_max_length: int = 1_000_000) -> PreTrainedTokenizerFast:
    """A hatchlings backend (pad/bos/eos named as here) as the stock class every kind saves and loads as."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
        # Byte decoding is exact; never "clean up" spaces before punctuation.
        clean_up_tokenization_spaces=False,
    )


def is_byte_tokenizer(tokenizer) -> bool:
    """True when ids 0..255 are exactly the 256 bytes (ours, or any tokenizer built the same way).

    Such a tokenizer can take any byte sequence, valid UTF-8 or not, by mapping each byte to its id:
    the data pipeline uses this to keep non-UTF-8 text instead of refusing it.
    """
    if len(tokenizer) < 256:
        return False
    symbols = _bytes_to_unicode()
    return tokenizer.convert_ids_to_tokens(list(range(256))) == [symbols[b] for b in range(256)]
