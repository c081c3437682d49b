"""`hatchlings probe bdh …`: the scoring, the state read-out and the sparsity cross-check against independent
computations, then the command end to end on a tiny random BDH (and a tiny GPT-2 baseline) saved to disk."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hatchlings import BdhConfig, BdhForCausalLM
from hatchlings.reference.bdh import model_weights, reference_bdh, reference_rope
from hatchlings.cli import main
from hatchlings.probes import common, neurons, sparsity, state
from hatchlings.tokenization import build_byte_tokenizer

TINY = dict(vocab_size=259, hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
            num_hidden_layers=2, dropout=0.0, attn_chunk_size=8)
FAST = ["--block_size", "64", "--max_tokens", "1024"]


def _play(speeches: int = 150, seed: int = 0) -> str:
    """A small play in tiny Shakespeare's layout: `NAME:` lines, proper names never written in lower case."""
    rng = random.Random(seed)
    speakers = ["ROMEO", "JULIET", "First Citizen", "MENENIUS"]
    names = ["Rome", "Marcius", "Verona", "Tybalt"]
    words = ["good", "lord", "that", "with", "love", "night", "sweet", "death", "the", "and", "of", "to", "is"]
    parts = []
    for _ in range(speeches):
        lines = []
        for _ in range(rng.randint(1, 3)):
            line = " ".join(rng.choice(words + names) for _ in range(rng.randint(4, 9)))
            lines.append(line[0].upper() + line[1:] + rng.choice(".,!?"))
        parts.append(f"{rng.choice(speakers)}:\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny random BDH, a tiny GPT-2 (both with the byte tokenizer) and a play, saved once per module."""
    root = tmp_path_factory.mktemp("probes")
    torch.manual_seed(0)
    bdh = BdhForCausalLM(BdhConfig(**TINY)).eval()
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=259, n_positions=512,
                                      bos_token_id=257, eos_token_id=258)).eval()
    for name, model in (("bdh", bdh), ("gpt2", gpt2)):
        model.save_pretrained(root / name)
        build_byte_tokenizer().save_pretrained(root / name)
    (root / "play.txt").write_text(_play())
    return {"bdh": root / "bdh", "gpt2": root / "gpt2", "text": root / "play.txt", "model": bdh, "gpt2_model": gpt2,
            "root": root}


# ------------------------------------------------------------------------------------------------ scoring

def test_selectivity_is_one_for_a_single_concept_and_zero_for_base_rates():
    """Synthetic activations over one 4-concept family: neuron 0 fires only on concept 2 (score 1), neuron 1
    fires at random regardless of concept (score ~0), neuron 2 fires on too few positions to be scored."""
    gen = torch.Generator().manual_seed(0)
    positions = 20_000
    labels = torch.multinomial(torch.tensor([0.1, 0.2, 0.3, 0.4]), positions, replacement=True, generator=gen)
    act = torch.zeros(positions, 3)
    act[labels == 2, 0] = 1 + torch.rand(int((labels == 2).sum()), generator=gen)
    act[:, 1] = torch.rand(positions, generator=gen) * (torch.rand(positions, generator=gen) < 0.5)
    act[:5, 2] = 1.0
    act[5:, 2] = -1.0  # negative values carry no mass (only the positive part counts)
    concepts = common.Concepts(names=["a", "b", "c", "d"], families=["toy"] * 4,
                               labels={"toy": labels.numpy()})
    acc = neurons.ConceptMass(n_concepts=4, n_neurons=3)
    for chunk in torch.arange(positions).split(7_000):  # accumulated over batches
        acc.update(act[chunk], labels[None, chunk], chunk)
    best, concept = neurons.family_scores(acc, concepts, min_support=20)["toy"]
    assert best[0].item() == pytest.approx(1.0) and concept[0].item() == 2
    assert abs(best[1].item()) < 0.03
    assert torch.isnan(best[2]) and acc.support[2].item() == 5
    torch.testing.assert_close(acc.base_rate(), torch.bincount(labels, minlength=4) / positions)
    assert acc.contexts(0)[0] == int(act[:, 0].argmax())  # strongest context first


def test_selectivity_formula():
    mass, total, base = torch.tensor([[3.0], [1.0]]), torch.tensor([4.0]), torch.tensor([0.5, 0.5])
    torch.testing.assert_close(neurons.selectivity(mass, total, base), torch.tensor([[0.5], [-0.5]]))
    assert neurons.selectivity(mass, total, torch.tensor([1.0, 0.0]))[0, 0] == 0  # concept everywhere


def test_concept_labels_of_a_play():
    data = b"ROMEO:\nGood night, sweet 42!\n\nJULIET:\nGood night.\n" * 10
    concepts = common.concept_labels(data, top_words=2)
    assert list(concepts.labels) == ["byte class", "word", "speaker"]
    classes = [common.BYTE_CLASSES[c] for c in common.byte_classes(b"aZ9 \n,\xc3")]
    assert classes == ["lowercase", "uppercase", "digit", "space", "newline", "punctuation", "other"]
    speaker = concepts.labels["speaker"]
    assert speaker[data.index(b"Good")] == concepts.names.index("ROMEO")
    assert speaker[data.index(b"ROMEO")] == -1  # the name line itself belongs to no speech
    word = concepts.labels["word"]
    assert concepts.names[word[data.index(b"night")]] == "night" and word[data.index(b"42")] == -1
    assert "speaker" not in common.concept_labels(b"Note:\nsome prose here.\n" + b"more prose.\n" * 100).labels


# ------------------------------------------------------------------------------------- model read-outs

def test_sparsity_mean_equals_output_sparsity(folders):
    corpus = common.load_corpus(folders["text"])
    stats = sparsity.measure(folders["model"], corpus, block_size=64, max_tokens=512, batch_size=3)
    assert stats["active"].shape == (TINY["num_hidden_layers"], 2, 512)
    np.testing.assert_allclose(stats["active"].mean(axis=2), stats["model_active"], atol=1e-6)
    assert (stats["active"][:, 1].reshape(2, 8, 64)[:, :, 0] == 0).all()  # y reads an empty state at t=0


def test_state_is_the_sum_of_q_outer_x(folders):
    """The cache's state equals sum_s RoPE(x_sparse_s) (x) x_s from the reference equations and the layer
    inputs; 64 tokens with chunks of 8 take the chunked path that carries the state across chunks."""
    model = folders["model"]
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    states = state.hebbian_states(model, ids)  # (L, B, H, N, D)
    with torch.no_grad():
        _, layers = reference_bdh(ids, model_weights(model), model.config)
        inputs = model(ids, use_cache=False, output_hidden_states=True).hidden_states
    for layer, (x_sparse, _) in enumerate(layers):
        q = reference_rope(x_sparse, model.config.rope_theta)  # (B, H, T, N)
        manual = torch.einsum("bhtn,btd->bhnd", q, inputs[layer])
        torch.testing.assert_close(states[layer], manual, rtol=1e-4, atol=1e-4)
    w = state.synapses(states, model.model.block.encoder_v)
    torch.testing.assert_close(w[1, 0, 1], states[1, 0, 1] @ model.model.block.encoder_v[1].detach())


def test_paired_stats():
    diffs = np.array([1.0, 2.0, 3.0, -1.0])
    stats = state.paired_stats(diffs, seed=0)
    assert stats["mean"] == pytest.approx(1.25) and stats["helped"] == 0.75
    assert stats["d_z"] == pytest.approx(1.25 / diffs.std(ddof=1))
    assert stats["ci_low"] < 1.25 < stats["ci_high"] and stats["ci_low"] >= -1 and stats["ci_high"] <= 3


def test_target_logprob_is_the_teacher_forced_loss(folders):
    model, context, target = folders["model"], b"Rome is good. And so\nRome is", b" good"
    ids = torch.tensor([list(context + target)])
    labels = ids.masked_fill(torch.arange(ids.shape[1]) < len(context), -100)  # score the target bytes only
    with torch.no_grad():
        loss = model(ids, labels=labels, use_cache=False).loss
    assert state.target_logprob(model, context, target) == pytest.approx(-loss.item() * len(target), rel=1e-5)


def test_baseline_scores_are_teacher_forced_log_probs(folders):
    """The working-memory scores of a GPT-2 baseline, per condition, equal -loss * target length of that
    condition's context (GPT-2 shifts the labels itself: an independent path to the same number)."""
    gpt2 = folders["gpt2_model"]
    trial = state.make_trials(common.load_corpus(folders["text"]), 2, filler_tokens=40, seed=1)[0]
    scores = state.score_trials(gpt2, [trial])
    target = f" {trial.b}".encode()
    for condition, context in trial.contexts().items():
        ids = torch.tensor([list(context + target)])
        labels = ids.masked_fill(torch.arange(ids.shape[1]) < len(context), -100)
        with torch.no_grad():
            loss = gpt2(ids, labels=labels).loss
        assert scores[condition][0] == pytest.approx(-loss.item() * len(target), rel=1e-5)
    assert scores["fact"][0] != scores["none"][0]  # the conditions are different contexts


def test_trials_are_seeded_and_use_names_of_the_text(folders):
    corpus = common.load_corpus(folders["text"])
    trials = state.make_trials(corpus, 10, filler_tokens=40, seed=3)
    again = state.make_trials(corpus, 10, filler_tokens=40, seed=3)
    assert [(t.a, t.b, t.other) for t in trials] == [(t.a, t.b, t.other) for t in again]
    # capitalised words never written in lower case: the names, and "First" of the speaker "First Citizen"
    assert {t.a for t in trials} <= {"Rome", "Marcius", "Verona", "Tybalt", "First"}
    assert all(t.a != t.other for t in trials) and {t.b for t in trials} <= {"good", "lord", "that", "with", "love",
                                                                             "night", "sweet", "death"}
    contexts = trials[0].contexts()
    assert contexts["fact"] == f"{trials[0].a} is {trials[0].b}. ".encode() + contexts["none"]
    assert len(trials[0].filler) == 40 and contexts["none"].endswith(f"\n{trials[0].a} is".encode())


# ------------------------------------------------------------------------------------------ end to end

def _probe(folders, what, out, *extra):
    return main(["probe", "bdh", what, str(folders["bdh"]), "--file", str(folders["text"]),
                 "--output_dir", str(out), *FAST, *extra])


def _tables(out, what):
    report = json.loads((out / f"bdh-{what}.json").read_text())
    assert (out / f"bdh-{what}.md").read_text().startswith(f"# Probe: bdh-{what}")
    assert (out / f"bdh-{what}.png").read_bytes()[:4] == b"\x89PNG"
    return report["tables"]


def test_cli_sparsity(folders, tmp_path):
    assert _probe(folders, "sparsity", tmp_path) == 0
    layers, classes = _tables(tmp_path, "sparsity")
    assert [(r["layer"], r["neurons"]) for r in layers["rows"]] == [(0, "x_sparse"), (0, "y"),
                                                                    (1, "x_sparse"), (1, "y")]
    assert all(r["abs diff"] < 1e-6 and 0 < r["active %"] < 100 for r in layers["rows"])
    assert classes["columns"][0] == "layer" and len(classes["rows"]) == 5


def test_cli_neurons_with_and_without_baseline(folders, tmp_path):
    assert _probe(folders, "neurons", tmp_path / "gpt2", "--baseline", str(folders["gpt2"]), "--top_k", "2") == 0
    summary, top_x, top_y = _tables(tmp_path / "gpt2", "neurons")
    assert {(r["neurons"], r["family"]) for r in summary["rows"]} == {
        (kind, family) for kind in ("x_sparse", "y", "GPT-2 MLP") for family in ("byte class", "word", "speaker")}
    assert [r["count"] for r in summary["rows"] if r["family"] == "word"] == [2 * 2 * 64, 2 * 2 * 64, 2 * 4 * 32]
    for row in summary["rows"]:  # the concepts named are those of the selective neurons, as many as counted
        named = sum(int(part.rsplit(" ", 1)[1]) for part in row["selective for (neurons)"].split(", ") if part)
        assert named <= row["score > 0.5"] and (named > 0) == (row["score > 0.5"] > 0)
    assert len(top_x["rows"]) == len(top_y["rows"]) == 2 * 3 and "«" in top_x["rows"][0]["strongest contexts"]
    assert all(-1 <= r["score"] <= 1 for r in top_x["rows"])
    assert _probe(folders, "neurons", tmp_path / "none", "--top_k", "2") == 0
    summary = _tables(tmp_path / "none", "neurons")[0]
    assert {r["neurons"] for r in summary["rows"]} == {"x_sparse", "y"}
    assert any("No --baseline" in note for note in summary["notes"])


def test_cli_state_is_deterministic(folders, tmp_path):
    args = ("--pairs", "6", "--filler_tokens", "40", "--top_pairs", "2", "--seed", "5")
    assert _probe(folders, "state", tmp_path / "a", *args) == 0
    assert _probe(folders, "state", tmp_path / "b", *args) == 0
    norms, pairs, memory = _tables(tmp_path / "a", "state")
    assert len(norms["rows"]) == 2 and len(pairs["rows"]) == 2 * 2
    assert all(r["increase"] == pytest.approx(r["prompt"] - r["control"], abs=1e-5) for r in pairs["rows"])
    assert [r["pairs"] for r in memory["rows"]] == [6, 6]
    for suffix in ("md", "json", "png"):
        first, second = (tmp_path / run / f"bdh-state.{suffix}" for run in ("a", "b"))
        assert first.read_bytes() == second.read_bytes()


def test_cli_state_with_baselines(folders, tmp_path):
    """BDH then each baseline in the order given (the flag repeated), two contrasts each, all on the same
    trials: every model's rows are its scores of the trials the seed makes."""
    args = ("--pairs", "4", "--filler_tokens", "40", "--top_pairs", "1", "--seed", "2")
    bdh, gpt2 = str(folders["bdh"]), str(folders["gpt2"])
    assert _probe(folders, "state", tmp_path, *args, "--baseline", gpt2, "--baseline", bdh) == 0
    memory = _tables(tmp_path, "state")[2]
    labels = [f"hatchlings_bdh ({bdh})", f"gpt2 ({gpt2})", f"hatchlings_bdh ({bdh})"]
    assert [r["model"] for r in memory["rows"]] == [label for label in labels for _ in range(2)]
    trials = state.make_trials(common.load_corpus(folders["text"]), 4, filler_tokens=40, seed=2)
    for rows, model in zip((memory["rows"][:2], memory["rows"][2:4]), (folders["model"], folders["gpt2_model"])):
        scores = state.score_trials(model, trials)
        assert [r["pairs"] for r in rows] == [4, 4]
        assert [r["mean log P compared"] for r in rows] == pytest.approx([scores["none"].mean(),
                                                                          scores["other"].mean()], rel=1e-5)
        assert rows[0]["mean log P fact"] == pytest.approx(scores["fact"].mean(), rel=1e-5)
    assert memory["rows"][:2] == memory["rows"][4:]  # BDH as a baseline: the same trials, the same rows
    assert sum("attention over the exact past" in note for note in memory["notes"]) == 1


@pytest.mark.parametrize("case, message", [
    ("missing", "not a saved model folder"), ("other tokenizer", "does not use the byte tokenizer"),
    ("too short", "takes 32 positions")])
def test_cli_state_refuses_baselines(folders, tmp_path, capsys, case, message):
    """Refused before any work, with exit status 2 (UsageError) and a message naming the problem."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    baseline = tmp_path / "baseline"
    if case != "missing":
        GPT2LMHeadModel(GPT2Config(n_embd=8, n_layer=1, n_head=1, vocab_size=259,
                                   n_positions=32 if case == "too short" else 512)).save_pretrained(baseline)
        words = Tokenizer(models.WordLevel({"[UNK]": 0, "is": 1}, unk_token="[UNK]"))
        tokenizer = build_byte_tokenizer() if case == "too short" else PreTrainedTokenizerFast(tokenizer_object=words)
        tokenizer.save_pretrained(baseline)
    assert _probe(folders, "state", tmp_path / "out", "--pairs", "2", "--filler_tokens", "40",
                  "--baseline", str(baseline)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, message", [
    ("gpt2 folder", "is a 'gpt2' model"), ("missing file", "not found"), ("bdh as baseline", "needs 'gpt2'"),
    ("other arch", "no probes for architecture"), ("unknown probe", "unknown probe")])
def test_cli_errors(folders, tmp_path, capsys, case, message):
    model, what, arch, extra = str(folders["bdh"]), "neurons", "bdh", ["--file", str(folders["text"])]
    if case == "gpt2 folder":
        model = str(folders["gpt2"])
    elif case == "missing file":
        extra = ["--file", str(tmp_path / "nope.txt")]
    elif case == "bdh as baseline":
        extra += ["--baseline", str(folders["bdh"])]
    elif case == "other arch":
        arch = "no_such_arch"  # not registered (hrm has probes of its own: tests/test_hrm_probes.py)
    else:
        what = "magic"
    assert main(["probe", arch, what, model, "--output_dir", str(tmp_path), *FAST, *extra]) == 2
    assert message in capsys.readouterr().err

