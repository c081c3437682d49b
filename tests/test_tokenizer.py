"""Tests for the byte-level tokenizer (hatchlings.tokenization)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from pydoc_data.topics import topics
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hatchlings.tokenization import BYTE_SPECIAL_TOKENS, CHAT_TEMPLATE, build_byte_tokenizer

PAD, BOS, EOS = 256, 257, 258

SAMPLES = [
    "",
    " ",
    "hello world",
    "  leading and trailing  ",
    "a . b , c ' d n't",  # would be mangled by clean_up_tokenization_spaces
    "héllo wörld ñ",
    "日本語のテキスト 中文 한국어",
    "emoji 🤗🚀 👩‍👩‍👧 🇫🇷 ❤️",
    "\x00\x01\x02\x07\x1b[31mred\x1b[0m\x7f",
    "tabs\tand\r\nnewlines\n\n",
    "Ġ Ċ ĉ Ā",  # the byte-level alphabet's own symbols, as real text
    "\ufeffBOM \u200b zero width \u00a0 nbsp \u202e rtl",
    "\ufffd\uffff\U0010ffff\U0001f600 combining e\u0301",
    "<|user|> role markers are plain text <|assistant|>",
    "x" * 10_000,
]


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_byte_tokenizer()


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_and_ids_are_bytes(tok, text):
    ids = tok(text)["input_ids"]
    assert ids[0] == BOS
    assert ids[1:] == list(text.encode("utf-8"))
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.encode(text, add_special_tokens=False) == list(text.encode("utf-8"))


def test_round_trip_pydoc_topics(tok):
    texts = list(topics.values())
    batch = tok(texts)["input_ids"]
    for text, ids in zip(texts, batch):
        assert ids == [BOS, *text.encode("utf-8")]
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_and_sizes(tok):
    assert BYTE_SPECIAL_TOKENS == ("<|pad|>", "<|bos|>", "<|eos|>")
    assert tok.convert_tokens_to_ids(list(BYTE_SPECIAL_TOKENS)) == [PAD, BOS, EOS]
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == BYTE_SPECIAL_TOKENS
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD, BOS, EOS)
    assert len(tok) == 259
    assert sorted(tok.get_vocab().values()) == list(range(259))
    assert tok.unk_token is None
    assert tok.model_max_length == 1_000_000
    assert build_byte_tokenizer(model_max_length=512).model_max_length == 512
    assert tok.padding_side == "right"
    assert tok.decode([BOS, 104, 105, EOS, PAD]) == "<|bos|>hi<|eos|><|pad|>"
    assert tok.decode([BOS, 104, 105, EOS, PAD], skip_special_tokens=True) == "hi"
    # Generated ids need not form valid UTF-8; decode replaces, never crashes.
    assert tok.decode([0xFF, ord("A")]) == "\ufffdA"


def test_special_token_strings_in_text(tok):
    # Standard HF behaviour: literal special-token strings become specials...
    assert tok("a<|eos|>b")["input_ids"] == [BOS, 97, EOS, 98]
    # ...unless split_special_tokens=True, which keeps them as bytes.
    assert tok("a<|eos|>b", split_special_tokens=True)["input_ids"] == [BOS, *b"a<|eos|>b"]


def test_pair_gets_bos_per_segment(tok):
    enc = tok("ab", "cd", return_token_type_ids=True)
    assert (enc["input_ids"], enc["token_type_ids"]) == ([BOS, 97, 98, BOS, 99, 100], [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding(side):
    tok = build_byte_tokenizer()
    tok.padding_side = side
    enc = tok(["ab", "abcd"], padding=True, return_tensors="pt")
    short, pad = [BOS, 97, 98], [PAD, PAD]
    expected0 = short + pad if side == "right" else pad + short
    mask0 = [1, 1, 1, 0, 0] if side == "right" else [0, 0, 1, 1, 1]
    assert enc["input_ids"].tolist() == [expected0, [BOS, 97, 98, 99, 100]]
    assert enc["attention_mask"].tolist() == [mask0, [1] * 5]


CONVERSATION = [
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello 👋"},
]
EXPECTED_CHAT = "<|bos|><|user|>\nHi there!<|eos|>\n<|assistant|>\nHello 👋<|eos|>\n"


def test_chat_template_text(tok):
    assert CHAT_TEMPLATE.startswith("{{ bos_token }}")
    assert tok.chat_template == CHAT_TEMPLATE
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == EXPECTED_CHAT
    assert text.startswith(tok.bos_token)
    prompt = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert prompt == EXPECTED_CHAT + "<|assistant|>\n"
    system = [{"role": "system", "content": "Be terse."}]
    assert tok.apply_chat_template(system, tokenize=False) == "<|bos|><|system|>\nBe terse.<|eos|>\n"


def test_chat_template_ids(tok):
    # Transformers 5 returns a BatchEncoding by default; return_dict=False gives ids.
    ids = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=False)
    expected = (
        [BOS, *b"<|user|>\nHi there!", EOS, 10]
        + [*b"<|assistant|>\n", *"Hello 👋".encode(), EOS, 10]
        + [*b"<|assistant|>\n"]
    )
    assert list(ids) == expected  # exactly one bos: template, not post-processor


def test_chat_template_unknown_role_raises(tok):
    with pytest.raises(Exception, match="tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def _summary(t) -> dict:
    return {
        "ids": [t(s)["input_ids"] for s in SAMPLES],
        "special": [t.pad_token_id, t.bos_token_id, t.eos_token_id],
        "special_map": dict(t.special_tokens_map),
        "len": len(t),
        "max_len": t.model_max_length,
        "chat_template": t.chat_template,
        "chat": t.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True),
    }


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert _summary(loaded) == _summary(tok)
    assert loaded.padding_side == "right"


CLEAN_ROOM_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class _Block(importlib.abc.MetaPathFinder):
        # Also defeats editable installs, whose finders live on sys.meta_path.
        def find_spec(self, name, path=None, target=None):
            if name == "hatchlings" or name.startswith("hatchlings."):
                raise ModuleNotFoundError(name)

    sys.path = [p for p in sys.path if p not in ("", ".", REPO)]
    sys.meta_path.insert(0, _Block())
    try:
        import hatchlings
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("hatchlings importable in child")

    from transformers import AutoTokenizer
    results = []
    for folder in sys.argv[2:]:
        tok = AutoTokenizer.from_pretrained(folder)
        results.append({"samples": [tok(s)["input_ids"] for s in json.loads(sys.argv[1])],
                        "special": [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id],
                        "len": len(tok), "chat_template": tok.chat_template})
    assert not any(m.split(".")[0] == "hatchlings" for m in sys.modules)
    print(json.dumps(results))
    """
)


def load_in_clean_room(folders: list, samples: list[str], cwd) -> list[dict]:
    """Load each saved tokenizer folder with plain AutoTokenizer in a process that cannot import hatchlings
    (one process for all: starting Transformers is the slow part); per folder, what it encoded and holds."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = f"REPO = {repo!r}\n" + CLEAN_ROOM_CHILD
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(samples), *map(str, folders)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_load_without_hatchlings(tok, tmp_path):
    save_dir = tmp_path / "tok"
    tok.save_pretrained(save_dir)
    [out] = load_in_clean_room([save_dir], SAMPLES, tmp_path)
    assert out["samples"] == [tok(s)["input_ids"] for s in SAMPLES]
    assert (out["special"], out["len"]) == ([PAD, BOS, EOS], 259)
    assert out["chat_template"] == CHAT_TEMPLATE
