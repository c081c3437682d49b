"""The four tokenizer kinds (byte, char, word, bpe): building, chat, clean-room loading, bits per byte, and the
char vocabulary's growth under continual learning (old ids and rows kept, new rows at the mean)."""

from __future__ import annotations

import json

import pytest
import torch
from test_tokenizer import load_in_clean_room
from test_training import TINY_PRESET, write_preset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hatchlings.evaluation import _tokenize
from hatchlings.tokenization import (
    BYTE_SPECIAL_TOKENS,
    CHAT_TEMPLATE,
    ROLE_MARKERS,
    TOKENIZER_KINDS,
    UNK_TOKEN,
    build_tokenizer,
    expand_char_vocab,
    tokenizer_kind,
)
from hatchlings.tokenization.corpus import CorpusSample
from hatchlings.tokenization.resize import resize_for_new_tokens
from hatchlings.training import DataConfig, UsageError, parse_run_config, run_training
from hatchlings.training.data import build_datasets

VOCAB = {"word": 600, "bpe": 600}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "A sequence of values."}]
CHAT_TEXT = "\n".join(m["content"] for m in CHAT) + "\n"
NEW_SCRIPT = "Ψ Ω λ — ça été déjà 日本 🚀\n"  # characters pydoc's English text does not have


@pytest.fixture(scope="module")
def corpus(real_text) -> str:
    """pydoc's prose, plus the chat's words often enough to make every vocabulary (word: top 600)."""
    return real_text + CHAT_TEXT * 20


@pytest.fixture(scope="module")
def tokenizers(corpus) -> dict:
    return {kind: build_tokenizer(kind, [corpus], vocab_size=VOCAB.get(kind)) for kind in TOKENIZER_KINDS}


@pytest.fixture(params=TOKENIZER_KINDS)
def tok(request, tokenizers):
    return tokenizers[request.param]


def test_kind_specials_and_bos(tok):
    kind = tokenizer_kind(tok)
    assert kind in TOKENIZER_KINDS
    assert [tok.pad_token, tok.bos_token, tok.eos_token] == list(BYTE_SPECIAL_TOKENS)
    if kind != "byte":  # learned kinds put the specials first, so new entries can only ever be appended
        assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2]
    ids = tok(CHAT_TEXT)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    assert tok.chat_template == CHAT_TEMPLATE and tok.decode(ids, skip_special_tokens=True) == CHAT_TEXT


def test_round_trip_of_the_corpus(tok, corpus):
    """Every kind gives its training text back exactly (word: each word there is in the vocabulary)."""
    text = corpus[:3000]
    if tokenizer_kind(tok) == "word":
        tok = build_tokenizer("word", [text], vocab_size=100_000, min_frequency=1)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_unknown_text(tok):
    """byte/bpe encode anything exactly; char/word map what they never saw to <|unk|>."""
    ids = tok(NEW_SCRIPT, add_special_tokens=False)["input_ids"]
    if tokenizer_kind(tok) in ("byte", "bpe"):
        assert tok.unk_token is None and tok.decode(ids) == NEW_SCRIPT
    else:
        assert tok.convert_tokens_to_ids(UNK_TOKEN) == 3 and 3 in ids


def test_chat_template_round_trip(tok):
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert tok.decode(ids) == rendered
    assert ids[0] == tok.bos_token_id and ids.count(tok.eos_token_id) == len(CHAT)
    for marker in ROLE_MARKERS:
        marker_ids = tok(marker, add_special_tokens=False)["input_ids"]
        if tokenizer_kind(tok) in ("word", "bpe"):  # one added token per role
            assert len(marker_ids) == 1 and tok.decode(marker_ids) == marker
        else:  # characters (char: always in the vocabulary, whatever the corpus)
            assert tok.decode(marker_ids) == marker


def test_loads_without_hatchlings(tokenizers, tmp_path):
    """The saved files are a stock tokenizer.json: AutoTokenizer alone reproduces the ids of every kind."""
    samples = ["Hello, world!\n", "def f(x):\n    return x", NEW_SCRIPT, CHAT_TEXT]
    for kind, tok in tokenizers.items():
        tok.save_pretrained(tmp_path / kind)
        assert tokenizer_kind(AutoTokenizer.from_pretrained(tmp_path / kind)) == kind
    loaded = load_in_clean_room([tmp_path / kind for kind in tokenizers], samples, tmp_path)
    for tok, out in zip(tokenizers.values(), loaded):
        assert out["samples"] == [tok(s)["input_ids"] for s in samples]
        assert out["special"] == [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id]
        assert (out["len"], out["chat_template"]) == (len(tok), CHAT_TEMPLATE)


def test_bits_per_byte_counts_utf8_bytes_of_the_text(tok, corpus, tmp_path):
    """Whatever the tokens (byte pieces of a character, a BPE merge, a word, an <|unk|>), the bytes the scored
    tokens stand for add up to the UTF-8 bytes of the text: evaluation and instruction data alike."""
    text = corpus[:2000] + NEW_SCRIPT + " zyzzyvas qwxj\n"
    _, n_bytes = _tokenize(text, tok)
    assert int(n_bytes.sum()) == len(text.encode("utf-8"))

    answers = ["Ψ is psi; qwxj zyzzyvas.", "A list holds values — déjà vu 🚀"]
    records = [{"instruction": "Say something.", "output": a} for a in answers]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _, _, stats = build_datasets(DataConfig(train_file=[str(path)], validation_file=[str(path)], block_size=512),
                                 tok)
    assert stats.bytes == sum(len(a.encode("utf-8")) for a in answers)
    assert stats.tokens == sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers) \
        or tokenizer_kind(tok) == "bpe"  # bpe may merge the answer's first piece with the newline before it
    prose = tmp_path / "prose.txt"
    prose.write_text(text)
    both = [str(prose), str(path)]
    loaded, streamed = (build_datasets(DataConfig(train_file=both, validation_file=both, block_size=512,
                                                  streaming_threshold_mb=mb, max_eval_blocks=100), tok)[2]
                        for mb in (256, 0))  # the prose file read whole, then streamed: the same bytes
    assert streamed == loaded and loaded.bytes == len(text.encode("utf-8")) + stats.bytes


@pytest.mark.parametrize("kind, kwargs, message", [
    ("chars", {}, "unknown tokenizer kind"),
    ("char", {"vocab_size": 100}, "vocab_size applies to the word and bpe"),
    ("byte", {"min_frequency": 2}, "min_frequency"),
    ("bpe", {"vocab_size": 100}, "at least 260"),
    ("word", {"texts": None}, "pass the training texts"),
])
def test_build_tokenizer_refuses(kind, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_tokenizer(kind, **{"texts": ["some text"], **kwargs})


def test_preset_section_and_flags(tmp_path):
    preset = {**TINY_PRESET, "tokenizer": {"kind": "word", "vocab_size": 300}}
    run = parse_run_config(["--config", str(write_preset(tmp_path / "p.yaml", preset)), "--tokenizer", "bpe",
                            "--min_frequency", "3"])
    assert (run.tokenizer.kind, run.tokenizer.vocab_size, run.tokenizer.min_frequency) == ("bpe", 300, 3)
    with pytest.raises(UsageError, match="unknown key.*'tokenizer': vocab"):
        parse_run_config(["--config", str(write_preset(tmp_path / "q.yaml", {**TINY_PRESET,
                                                                            "tokenizer": {"vocab": 3}}))])
    with pytest.raises(UsageError, match="tokenizer.kind must be one of"):
        parse_run_config(["--config", str(tmp_path / "p.yaml"), "--tokenizer", "sentencepiece"])


# ---------------------------------------------------------------------------------------- char expansion

def test_expand_char_vocab_appends_and_keeps_ids(corpus):
    tok = build_tokenizer("char", [corpus])
    grown, added = expand_char_vocab(tok, [corpus + NEW_SCRIPT])
    new_chars = sorted(set(NEW_SCRIPT) - set(tok.get_vocab()))
    assert added == len(new_chars) > 0 and len(grown) == len(tok) + added
    assert {t: i for t, i in grown.get_vocab().items() if t in tok.get_vocab()} == tok.get_vocab()
    assert sorted(grown.convert_ids_to_tokens(list(range(len(tok), len(grown))))) == new_chars
    assert grown.decode(grown(NEW_SCRIPT, add_special_tokens=False)["input_ids"]) == NEW_SCRIPT
    assert expand_char_vocab(grown, [NEW_SCRIPT]) == (grown, 0)
    assert tokenizer_kind(grown) == "char" and grown.chat_template == CHAT_TEMPLATE


def _llama_tied():
    """A tiny stock Llama with a tied head (BDH's head is its own matrix)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))


def _bdh_untied():
    from test_bdh import SPEC

    return SPEC.build_model(vocab_size=50, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.mark.parametrize("build, tied", [(_bdh_untied, False), (_llama_tied, True)])
def test_resize_new_input_rows_are_the_mean_and_untied_head_rows_unks(build, tied):
    model, unk = build(), 3
    emb, head = (m.weight.detach().clone() for m in (model.get_input_embeddings(), model.get_output_embeddings()))
    assert resize_for_new_tokens(model, 57, unk) == 50
    new_emb, new_head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert new_emb.shape[0] == new_head.shape[0] == model.config.vocab_size == 57
    assert torch.equal(new_emb[:50], emb) and torch.equal(new_head[:50], head)
    assert torch.allclose(new_emb[50:], emb.mean(0).expand(7, -1)) and torch.equal(new_emb[50], new_emb[56])
    head_source = head.mean(0) if tied else head[unk]
    assert torch.allclose(new_head[50:], head_source.expand(7, -1))
    assert (new_emb.data_ptr() == new_head.data_ptr()) == tied


def test_init_from_grows_a_char_model_and_keeps_training(tmp_path, corpus):
    """Train on English, continue on text with new characters: the export's vocabulary and matrices grow,
    old ids keep their ids, and the continued run trains the resized matrices: the new rows start equal (the
    mean) and end different, so the optimizer was built on the resized tensors, not the old ones."""
    (tmp_path / "a.txt").write_text(corpus)
    (tmp_path / "b.txt").write_text((NEW_SCRIPT + corpus[:400]) * 8)
    tiny = {**TINY_PRESET, "data": {"block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 2},
            "training": {**TINY_PRESET["training"], "max_steps": 4, "eval_strategy": "no", "logging_steps": 1},
            "generation": {"prompt": "Ψ", "max_new_tokens": 3}}
    first = run_training(["--config", str(write_preset(tmp_path / "p.yaml", tiny)), "--tokenizer", "char",
                          "--train_file", str(tmp_path / "a.txt"), "--output_dir", str(tmp_path / "a")])
    old_tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    old_emb = AutoModelForCausalLM.from_pretrained(tmp_path / "a").get_input_embeddings().weight.detach()
    tiny.pop("model")
    second = run_training(["--config", str(write_preset(tmp_path / "q.yaml", tiny)), "--init_from",
                           str(tmp_path / "a"), "--train_file", str(tmp_path / "b.txt"),
                           "--output_dir", str(tmp_path / "b")])
    new_tok = AutoTokenizer.from_pretrained(tmp_path / "b")
    new_model = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    assert tokenizer_kind(new_tok) == "char" and len(new_tok) > len(old_tok)
    assert new_model.config.vocab_size == len(new_tok)
    assert {t: new_tok.get_vocab()[t] for t in old_tok.get_vocab()} == old_tok.get_vocab()
    assert new_model.get_input_embeddings().weight.shape[0] == len(new_tok)
    emb = new_model.get_input_embeddings().weight
    assert not torch.equal(emb[:len(old_tok)], old_emb) and not torch.equal(emb[len(old_tok)], emb[-1])
    assert all(map(torch.isfinite, map(torch.tensor, (first["eval_loss"], second["eval_loss"]))))
    with pytest.raises(UsageError, match="the exported tokenizer is char, not bpe"):
        run_training(["--config", str(tmp_path / "q.yaml"), "--init_from", str(tmp_path / "a"),
                      "--tokenizer", "bpe", "--output_dir", str(tmp_path / "c")])


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_run_builds_its_tokenizer_from_the_training_text(kind, tmp_path, corpus):
    (tmp_path / "a.txt").write_text(corpus)
    tiny = {**TINY_PRESET, "data": {"block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 2},
            "tokenizer": {"kind": kind, "vocab_size": 400},
            "training": {**TINY_PRESET["training"], "max_steps": 2, "eval_strategy": "no"},
            "generation": {"prompt": "The ", "max_new_tokens": 3}}
    metrics = run_training(["--config", str(write_preset(tmp_path / "p.yaml", tiny)),
                            "--train_file", str(tmp_path / "a.txt"), "--output_dir", str(tmp_path / "out")])
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    config = AutoModelForCausalLM.from_pretrained(tmp_path / "out").config
    assert tokenizer_kind(tok) == kind and len(tok) == config.vocab_size == 400 + len(ROLE_MARKERS)
    assert [config.pad_token_id, config.bos_token_id, config.eos_token_id] == [0, 1, 2]
    assert 0 < metrics["eval_bits_per_byte"] < 20


def test_the_vocabulary_leaves_out_the_held_out_rows(tmp_path):
    """Without a validation_file the last validation_fraction of the text is held out, so a learned vocabulary
    must not know its words (they are <|unk|> as on new text); with one, every training byte counts."""
    train, val = "apple pear plum ée\n" * 30, "zebra okapi ñandú\n" * 10  # 25% of the bytes at the end
    (tmp_path / "t.txt").write_text(train + val)
    (tmp_path / "v.txt").write_text(val)
    text = "".join(CorpusSample(DataConfig(train_file=[str(tmp_path / "t.txt")], validation_fraction=0.25)))
    assert text == train  # 600 of the 800 bytes
    assert "zebra" not in text and "plum" in text
    word = build_tokenizer("word", CorpusSample(DataConfig(train_file=[str(tmp_path / "t.txt")],
                                                           validation_fraction=0.25)), vocab_size=50)
    assert " okapi" not in word.get_vocab() and " plum" in word.get_vocab()
    separate = DataConfig(train_file=[str(tmp_path / "t.txt")], validation_file=[str(tmp_path / "v.txt")])
    assert "".join(CorpusSample(separate)) == train + val
    small = CorpusSample(separate, limit_bytes=100)
    assert "".join(small).encode() == (train + val).encode()[:100] and "first 0 MB" in small.sample_note()
