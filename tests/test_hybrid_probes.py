"""`hatchlings probe hybrid ablate|shuffle|segments|controller|gates`: each intervention does what its table
says (checked on the mixer weights and the logits of a tiny random Hybrid), then every probe end to end."""

from __future__ import annotations

import json
import random

import pytest
import torch

from hatchlings.cli import main
from hatchlings.modeling.configuration_hybrid import HybridConfig
from hatchlings.modeling.modeling_hybrid import HybridForCausalLM
from hatchlings.probes import hybrid as probe
from hatchlings.tokenization import build_byte_tokenizer

TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=128, ssm_state_size=4, ssm_dt_rank=2, num_memories=8, mixer_hidden_size=8,
            controller_hidden_size=8, n_segments=2)


def _model(**overrides) -> HybridForCausalLM:
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**{**TINY, **overrides})).eval()
    if model.model.controller is not None:  # one with real influence: a bias of order 1, not init's 0.02 scale
        with torch.no_grad():
            model.model.controller.fc_out.weight.normal_(0.0, 1.0)
    return model


IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def _gates(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, output_gates=True).gates  # (L, B, T, P)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_keep_paths_zeroes_the_others_and_renormalizes():
    model = _model(n_segments=1)
    full = _gates(model)
    with probe.keep_paths(model, ("ssm", "attention")):
        kept = _gates(model)
    assert torch.all(kept[..., 1] == 0) and torch.allclose(kept.sum(-1), torch.ones(()))
    # layer 0 sees the same input either way: the kept paths keep their ratio there; later layers differ
    assert torch.allclose(kept[0, ..., 0] / kept[0, ..., 2], full[0, ..., 0] / full[0, ..., 2], rtol=1e-5)
    assert not torch.allclose(kept[1, ..., 0] / kept[1, ..., 2], full[1, ..., 0] / full[1, ..., 2], rtol=1e-5)
    assert torch.equal(_gates(model), full)  # the hooks are gone afterwards


def test_shuffle_permutes_one_path_across_positions():
    model = _model()
    seen = []
    capture = model.model.layers[0].hopfield.register_forward_hook(lambda m, i, out: seen.append(out))
    _logits(model)
    with probe.shuffle_path(model, "hopfield", seed=0):
        capture.remove()  # re-registered after the shuffle hook: it sees the shuffled output
        capture = model.model.layers[0].hopfield.register_forward_hook(lambda m, i, out: seen.append(out))
        shuffled_logits = _logits(model)
    capture.remove()
    plain, shuffled = seen[0], seen[2]  # segment 1, layer 0 (its input does not depend on the shuffle)
    assert not torch.equal(plain, shuffled)
    order = [int(torch.nonzero((plain[0] == row).all(-1))[0]) for row in shuffled[0]]
    assert sorted(order) == list(range(IDS.shape[1])) and order != list(range(IDS.shape[1]))
    assert torch.equal(shuffled[1], plain[1][order])  # one permutation for the whole batch
    assert not torch.allclose(shuffled_logits, _logits(model))


def test_one_segment_equals_two_without_the_controller():
    """Every segment starts from the embeddings; without the bias segment 2 repeats segment 1 exactly."""
    model = _model()
    with probe.set_segments(model, 1):
        one = _logits(model)
    assert model.config.n_segments == 2  # restored
    with probe.replace_bias(model, "none", seed=0):
        none = _logits(model)
    two = _logits(model)
    assert torch.allclose(one, none, atol=1e-6) and not torch.allclose(one, two, atol=1e-4)
    with probe.set_segments(model, 3):
        assert not torch.allclose(_logits(model), two, atol=1e-4)


def test_bias_modes():
    model = _model()
    biases = []
    seen = model.model.controller.register_forward_hook(lambda m, i, out: biases.append(out))
    two = _logits(model)
    seen.remove()
    with probe.replace_bias(model, "normal", seed=0):
        assert torch.equal(_logits(model), two)
    for mode in ("shuffled", "random"):
        with probe.replace_bias(model, mode, seed=0):
            seen = model.model.controller.register_forward_hook(lambda m, i, out: biases.append(out))
            assert not torch.allclose(_logits(model), two, atol=1e-4)
            seen.remove()
    real, shuffled, noise = biases
    assert torch.allclose(shuffled.sort(1).values, real.sort(1).values)  # the same values, other positions
    assert noise.mean().item() == pytest.approx(real.mean().item(), abs=0.1 * real.std().item())
    assert noise.std().item() == pytest.approx(real.std().item(), rel=0.2)
    with pytest.raises(ValueError, match="controller mode"):
        probe.replace_bias(model, "inverted", seed=0)


# ------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid_probes")
    rng = random.Random(0)
    words = "the king lord good night sweet love death and of to is".split()
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(9)) for _ in range(40)))
    for name, overrides in (("hybrid", {}), ("one_segment", {"n_segments": 1}), ("one_path", {"paths": ["ssm"]})):
        _model(**overrides).save_pretrained(root / name)
        build_byte_tokenizer().save_pretrained(root / name)
    return root


def _probe(exports, what, tmp_path, model="hybrid"):
    code = main(["probe", "hybrid", what, str(exports / model), "--file", str(exports / "text.txt"),
                 "--output_dir", str(tmp_path), "--max_tokens", "200", "--block_size", "64"])
    assert code == 0 and (tmp_path / f"hybrid-{what}.md").read_text().startswith(f"# Probe: hybrid-{what}")
    return json.loads((tmp_path / f"hybrid-{what}.json").read_text())["tables"][0]


@pytest.mark.parametrize("what, labels", [
    ("ablate", ["all (ssm + hopfield + attention)", "only ssm + hopfield", "only ssm + attention",
                "only hopfield + attention", "only ssm", "only hopfield", "only attention"]),
    ("shuffle", ["no shuffle", "shuffle ssm", "shuffle hopfield", "shuffle attention"]),
    ("segments", ["2 (trained)", "1", "3"]),
    ("controller", ["normal", "shuffled", "random", "none"]),
])
def test_cli_loss_tables(exports, tmp_path, what, labels):
    from hatchlings.evaluation import evaluate_file

    table = _probe(exports, what, tmp_path)
    assert [r["configuration"] for r in table["rows"]] == labels
    first = table["rows"][0]
    plain = evaluate_file(exports / "hybrid", exports / "text.txt", block_size=64, max_tokens=200)
    assert first["val CE"] == pytest.approx(plain["loss"], rel=1e-6) and first["CE - reference"] == 0
    assert all(r["seed CE"] > 3 for r in table["rows"]) and any("Order, worst first" in n for n in table["notes"])
    assert len({round(r["val CE"], 9) for r in table["rows"]}) == len(labels)  # every intervention changes it
    if what == "controller":  # no bias == one segment
        one = _probe(exports, "segments", tmp_path)["rows"][1]
        assert table["rows"][3]["val CE"] == pytest.approx(one["val CE"], rel=1e-6)


def test_cli_gates(exports, tmp_path):
    table = _probe(exports, "gates", tmp_path)
    assert [(r["segment"], r["layer"]) for r in table["rows"]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for row in table["rows"]:
        assert row["ssm"] + row["hopfield"] + row["attention"] == pytest.approx(1.0, abs=1e-5)
    assert (tmp_path / "hybrid-gates.png").read_bytes()[:4] == b"\x89PNG"
    command = json.loads((tmp_path / "hybrid-gates.json").read_text())["machine"]["command"]
    assert command == (f"hatchlings probe hybrid gates {exports / 'hybrid'} --file '{exports / 'text.txt'}' "
                       "--block_size 64 --max_tokens 200")  # what was given, not every probe's defaults


def test_probes_refuse_models_they_cannot_probe(exports, tmp_path, capsys):
    for what, model, message in (("controller", "one_segment", "has no controller (n_segments = 1)"),
                                 ("ablate", "one_path", "has one path (ssm): no mixer to probe")):
        assert main(["probe", "hybrid", what, str(exports / model), "--file", str(exports / "text.txt"),
                     "--output_dir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err and not list(tmp_path.iterdir())
