"""HRM: the shared contract (tests/contract.py, tests/checks_*.py) plus checks of HRM's own mechanisms:
the per-call KV cache at every depth, depth modes at generate, the one-step gradient, ACT, stablemax and
the absence of any state carried between unrelated calls.

The reference (hatchlings/reference/hrm.py) is written from the equations: plain per-module, per-step loops
and explicit masked softmax per query, so the contract's reference check compares logits and gradients with it.
"""

from __future__ import annotations

import pytest
import torch

from checks_decoding import _step_through
from checks_reference import assert_matches_reference
from contract import ArchSpec, close, make_contract_tests, random_ids
from hatchlings.modeling.configuration_hrm import HrmConfig
from hatchlings.modeling.modeling_hrm import log_stablemax

# vocab 120 >= the contract's char tokenizer (104 ids); one block per module keeps the file fast
TINY = dict(vocab_size=120, hidden_size=32, num_attention_heads=2, L_layers=1, H_layers=1, H_cycles=2, L_cycles=2)
MODES = ({"hrm_mode": "fast"}, {"hrm_mode": "normal"}, {"hrm_mode": "deep"},
         {"hrm_mode": "extreme", "hidden_size": 16, "num_attention_heads": 2})

SPEC = ArchSpec(
    arch="hrm",
    tiny_config=lambda **overrides: HrmConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_hrm.py", "configuration_hrm.py", "layers.py", "cache.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"H_cycles": 0}, "H_cycles"),
        ({"expansion": -1.0}, "expansion"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"hrm_mode": "ludicrous"}, "hrm_mode"),
        ({"train_depths": [[2, 0]]}, "train_depths"),
        ({"depth_modes": {"fast": [1]}}, "depth_modes"),
        ({"halt_exploration_prob": 2.0}, "halt_exploration_prob"),
        ({"vocab_size": 1}, "bos_token_id"),
        ({"growth_chars": -1}, "growth_chars"),
    ),
    depth_modes=MODES,
    causal_length=13,
    has_recurrent_state=False,  # the key/value cache grows with the context
    repeats_layers=True,  # every block is applied N*T (L) or N (H) times: checkpointing pays off
    plain_path={"fused_attention": False},
    fast_path_ops=("ScaledDotProductFlashAttentionForCpuBackward0",),
)

globals().update(make_contract_tests(SPEC))


@pytest.mark.parametrize("mode", MODES, ids=[m["hrm_mode"] for m in MODES])
def test_cached_decoding_matches_full_forward_per_mode(mode):
    """Prefill + token-by-token with the cache equals one full forward at every depth (fp32, 1e-4)."""
    model = SPEC.build_model(**mode)
    ids = random_ids(model.config.vocab_size, 2, 7, seed=4)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        close(_step_through(model, ids, None, 3), full, 1e-4, f"cached decoding, {mode}")
        cache = model(ids, use_cache=True).past_key_values
    N, T = model.config.depth()
    slots = N * T * model.config.L_layers + N * model.config.H_layers
    assert len(cache) == slots, "one key/value slot per (module, block, call)"
    per_token = sum(t[0, :, :1].numel() for t in cache.states.values())  # batch row 0, one position
    assert per_token == 2 * slots * model.config.hidden_size  # the docstring's memory per token


def test_modes_differ_and_reference_matches_every_depth():
    """Each depth mode is a different computation, and the reference agrees with the model at each."""
    ids = random_ids(120, 1, 8, seed=3)
    outs = {}
    for mode in ("fast", "normal", "deep"):
        model = SPEC.build_model(hrm_mode=mode)
        with torch.no_grad():
            outs[mode] = model(ids, use_cache=False).logits
        assert_matches_reference(SPEC, {"hrm_mode": mode}, fast_ops=SPEC.fast_path_ops)
    assert not torch.allclose(outs["fast"], outs["normal"]) and not torch.allclose(outs["normal"], outs["deep"])


def test_hrm_mode_at_generate():
    """generate(..., hrm_mode=X) runs depth X with and without the cache (so it reaches every forward),
    equals a model configured with that mode, and names the valid modes for an unknown one."""
    model, deep = SPEC.build_model(), SPEC.build_model(hrm_mode="deep")
    ids = random_ids(120, 2, 5, seed=6)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, hrm_mode="deep", **kw)
    assert torch.equal(cached, model.generate(ids, hrm_mode="deep", use_cache=False, **kw))
    assert torch.equal(cached, deep.generate(ids, **kw))
    assert not torch.equal(model.generate(ids, hrm_mode="fast", **kw), cached)
    with pytest.raises(ValueError, match="fast, normal, deep, extreme"):
        model.generate(ids, hrm_mode="ludicrous", **kw)


def test_hrm_mode_in_generation_config():
    """generation_config.hrm_mode chooses the depth too, and a generate keyword still overrides it (a
    GenerationConfig would otherwise swallow the same-named keyword before it reaches the forward)."""
    model = SPEC.build_model()
    ids = random_ids(120, 1, 5, seed=6)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    deep, fast = model.generate(ids, hrm_mode="deep", **kw), model.generate(ids, hrm_mode="fast", **kw)
    model.generation_config.hrm_mode = "deep"
    assert torch.equal(model.generate(ids, **kw), deep)
    assert torch.equal(model.generate(ids, hrm_mode="fast", **kw), fast)
    assert model.generation_config.hrm_mode == "deep", "generate must not change the model's generation config"


def test_cache_refuses_another_mode():
    """A cache holds the keys of one depth's calls: continuing it at another depth is an error, not garbage."""
    model = SPEC.build_model()
    ids = random_ids(120, 1, 6, seed=7)
    with torch.no_grad():
        cache = model(ids[:, :5], use_cache=True, hrm_mode="deep").past_key_values
        with pytest.raises(ValueError, match="depth"):
            model(ids[:, 5:], past_key_values=cache, hrm_mode="fast")
        model(ids[:, 5:], past_key_values=cache, hrm_mode="deep")  # the same mode continues


def test_no_state_carries_between_calls():
    """Two unrelated forward calls (no shared cache) do not influence each other: a batch's logits are the
    same after another batch ran, in eval and in training."""
    model = SPEC.build_model()
    a, b = random_ids(120, 2, 10, seed=8), random_ids(120, 2, 10, seed=9)
    for train in (False, True):
        model.train(train)
        first = model(a, use_cache=False).logits.detach()
        model(b, use_cache=False)
        model(b, use_cache=True)
        torch.testing.assert_close(model(a, use_cache=False).logits, first, rtol=0, atol=0)


def _grad_norms(model, ids) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    model(ids, labels=ids, use_cache=False).loss.backward()
    return {name: (0.0 if p.grad is None else p.grad.abs().sum().item()) for name, p in model.named_parameters()}


def test_one_step_gradient():
    """one_step_gradient: same forward, but gradients flow through the final L step and final H update only.
    With N = T = 2 the initial z_L/z_H only reach the loss through no_grad updates, so they get none; the
    blocks, embedding and head still learn; and the gradient differs from full backpropagation."""
    ids = random_ids(120, 2, 10, seed=10)
    full, one = SPEC.build_model().train(), SPEC.build_model(one_step_gradient=True).train()
    with torch.no_grad():
        close(one(ids, use_cache=False).logits, full(ids, use_cache=False).logits, 0, "forward unchanged")
    g_full, g_one = _grad_norms(full, ids), _grad_norms(one, ids)
    assert g_full["model.z_L_init"] > 0 and g_full["model.z_H_init"] > 0
    assert g_one["model.z_L_init"] == 0 and g_one["model.z_H_init"] == 0
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.L_module.layers.0.mlp.up_proj.weight",
                 "model.H_module.layers.0.self_attn.q_proj.weight"):
        assert g_one[name] > 0, name
    assert abs(g_one["model.embed_tokens.weight"] - g_full["model.embed_tokens.weight"]) > 1e-6
    # autograd saved fewer activations: the no_grad updates keep none
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        saved = []
        full(ids, labels=ids, use_cache=False).loss
        n_full, saved = sum(saved), []
        one(ids, labels=ids, use_cache=False).loss
        assert sum(saved) < n_full


def test_act_aux_loss_and_halting():
    """ACT: in training the Q-learning loss comes out as a finite scalar `aux_loss` that trains the Q-head;
    at inference each token's cycle is chosen causally (cached decoding equals the full forward) and at most
    halt_max_steps."""
    model = SPEC.build_model(act=True, halt_max_steps=3, halt_exploration_prob=0.5).train()
    ids = random_ids(120, 2, 10, seed=11)
    out = model(ids, labels=ids, use_cache=False)
    assert out.aux_loss is not None and out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss)
    out.aux_loss.backward()
    assert model.q_head.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        q_bias = model.q_head.bias
        q_bias.copy_(torch.tensor([0.0, 0.0]))
        model.q_head.weight.normal_(0, 0.5)  # an opinionated Q-head: tokens halt at different cycles
        full = model(ids, use_cache=False)
        assert full.aux_loss is None and ((full.halt_cycles >= 1) & (full.halt_cycles <= 3)).all()
        assert full.halt_cycles.unique().numel() > 1, "every token halted at the same cycle: a vacuous check"
        close(_step_through(model, ids, None, 4), full.logits, 1e-4, "ACT cached decoding")


def test_stablemax_loss():
    """stablemax: finite loss equal to -log(s(x_label) / sum s(x)) computed by hand, logits (and so their
    argmax) unchanged; the log-probabilities normalise."""
    soft, stable = SPEC.build_model(), SPEC.build_model(stablemax=True)
    ids = random_ids(120, 2, 10, seed=12)
    labels = ids.clone()
    labels[0, :3] = -100
    out, ref = stable(ids, labels=labels, use_cache=False), soft(ids, labels=labels, use_cache=False)
    torch.testing.assert_close(out.logits, ref.logits)
    assert torch.isfinite(out.loss) and not torch.allclose(out.loss, ref.loss)
    x = out.logits[:, :-1].double()
    s = torch.where(x >= 0, x + 1, 1 / (1 - x))
    p = s / s.sum(-1, keepdim=True)
    target = labels[:, 1:]
    valid = target != -100
    manual = -p.gather(-1, target.clamp(min=0)[..., None])[..., 0].log()[valid].mean()
    close(out.loss.double(), manual, 1e-6, "stablemax cross-entropy")
    logp = log_stablemax(torch.randn(4, 7) * 5)
    close(logp.exp().sum(-1), torch.ones(4), 1e-5, "stablemax normalises")
    assert torch.equal(logp.argmax(-1), logp.argmax(-1))
    big = torch.tensor([[1e4, -1e4, 0.0]])
    assert torch.isfinite(log_stablemax(big)).all() and log_stablemax(big).argmax() == 0


def test_train_depths_sampled_per_step():
    """train_depths with several entries: training steps run different depths (eval keeps the default)."""
    model = SPEC.build_model(train_depths=[[1, 1], [3, 2]]).train()
    depths = {model.model.resolve_depth(None) for _ in range(40)}
    assert depths == {(1, 1), (3, 2)}
    model.eval()
    assert model.model.resolve_depth(None) == (2, 2)
    assert model.model.resolve_depth("extreme") == (6, 4)


def test_mode_chat_command_sets_the_depth_of_the_replies():
    """`/mode deep` in hatchlings chat: the next replies are generated at that depth (`hrm_mode` to generate),
    /status shows it, and an unknown mode is one clear error naming the valid ones."""
    from hatchlings.chat import ChatSession, Settings
    from hatchlings.errors import UsageError
    from hatchlings.generation import generate_text

    model, tokenizer = SPEC.build_model(), SPEC.make_tokenizer()
    session = ChatSession(model, tokenizer, chat_template=False, settings=Settings(temperature=0, max_new_tokens=6))
    assert "fast 1x1" in session.command("/mode")
    assert session.command("/mode deep") == "depth mode: deep (3 cycles x 2 steps)"
    assert "depth mode: deep" in session.command("/status")
    deep = generate_text(model, tokenizer, "The dragon", max_new_tokens=6, temperature=0, top_k=0, hrm_mode="deep")
    assert session.send("The dragon") == deep
    with pytest.raises(UsageError, match="valid modes"):
        session.command("/mode ludicrous")


def test_padding_with_stablemax_masks_like_causal_lm_loss():
    """Left padding changes neither the stablemax loss nor the real logits (the causal_lm_loss mask)."""
    model = SPEC.build_model(stablemax=True)
    ids = random_ids(120, 1, 9, seed=13).clamp(min=3)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = (torch.arange(12) >= 3).long()[None]
    with torch.no_grad():
        bare = model(ids, labels=ids, use_cache=False)
        out = model(padded, attention_mask=mask, labels=padded.masked_fill(mask == 0, -100), use_cache=False)
    close(out.loss, bare.loss, 1e-5, "stablemax loss under left padding")


def test_output_states_norms_and_changes():
    """`output_states=True`: one (module, cycle, step, norm, change) per call in execution order; the H entries
    match z_H after each cycle (output_hidden_states), norms are sqrt(D) (post-norm), logits are unchanged."""
    model = SPEC.build_model(hrm_mode="deep")
    ids = random_ids(120, 2, 6, seed=21)
    with torch.no_grad():
        plain = model(ids, use_cache=False)
        out = model(ids, use_cache=False, output_states=True, output_hidden_states=True)
    assert plain.state_norms is None
    close(out.logits, plain.logits, 0.0, "logits with output_states")
    N, T = model.config.depth()
    expected = [(m, n, t) for n in range(N) for m, t in [("L", t) for t in range(T)] + [("H", 0)]]
    assert [entry[:3] for entry in out.state_norms] == expected
    cycles = out.hidden_states[1:]  # z_H after each cycle
    H = [entry for entry in out.state_norms if entry[0] == "H"]
    for n, (_, _, _, norm, change) in enumerate(H):
        assert norm.shape == change.shape == (2, 6)
        close(norm, cycles[n].norm(dim=-1), 1e-5, f"||z_H|| of cycle {n}")
        if n:
            close(change, (cycles[n] - cycles[n - 1]).norm(dim=-1), 1e-5, f"z_H change of cycle {n}")
    norms = torch.stack([entry[3] for entry in out.state_norms])
    close(norms, torch.full_like(norms, model.config.hidden_size ** 0.5), 1e-3, "post-norm states")


def test_grown_blocks_start_as_the_identity_and_then_learn():
    """HrmModel.grow appends blocks to L and H alternately; the grown model computes what it did (logits within
    rms_norm's eps), its cache still matches the full forward, and the new blocks get gradients."""
    model = SPEC.build_model().eval()
    ids = random_ids(120, 2, 10, seed=5)
    with torch.no_grad():
        before = model(ids, use_cache=False).logits
    assert [model.model.grow() for _ in range(3)] == ["L", "H", "L"]
    assert (model.config.L_layers, model.config.H_layers) == (3, 2)
    assert len(model.model.L_module.layers) == 3 and len(model.model.H_module.layers) == 2
    with torch.no_grad():
        after = model(ids, use_cache=False).logits
    close(after, before, 1e-4, "logits after growth")
    close(_step_through(model, ids, None, 3), after, 1e-4, "cached decoding of the grown model")
    model.train()
    model(ids, labels=ids).loss.backward()
    new = model.model.L_module.layers[-1]
    assert new.self_attn.o_proj.weight.grad.abs().sum() > 0 and new.mlp.down_proj.weight.grad.abs().sum() > 0


def test_continual_learning_expands_grows_and_records_the_history(tmp_path, real_text):
    """File A, then (--init_from) a file with new characters: the char vocabulary grows, one block is added per
    growth_chars characters, the loss on A does not jump at the start of the new stage, the optimizer holds
    the new block, and the export's history, card and chat /status list both stages. Training again on the
    same file continues that stage."""
    from test_tokenizer_kinds import NEW_SCRIPT
    from test_training import write_preset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from hatchlings.chat import ChatSession
    from hatchlings.training import run_training
    from hatchlings.training.history import read_history

    (tmp_path / "a.txt").write_text(real_text[:6000])
    (tmp_path / "b.txt").write_text((NEW_SCRIPT + real_text[6000:6400]) * 6)  # ~2.7K characters -> one block
    preset = {"architecture": "hrm", "model": {**{k: v for k, v in TINY.items() if k != "vocab_size"},
                                               "growth_chars": 2000},
              "data": {"block_size": 32, "validation_fraction": 0.1, "max_eval_blocks": 2},
              "training": {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-3,
                           "eval_strategy": "no", "save_strategy": "no", "report_to": "none", "seed": 0},
              "generation": {"prompt": "The ", "max_new_tokens": 3}}
    run_training(["--config", str(write_preset(tmp_path / "a.yaml", preset)), "--train_file",
                  str(tmp_path / "a.txt"), "--output_dir", str(tmp_path / "a")])
    old = AutoModelForCausalLM.from_pretrained(tmp_path / "a").eval()
    old_tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    ids = old_tok(real_text[:300], return_tensors="pt").input_ids
    with torch.no_grad():
        out = old(ids, labels=ids)
    # The k new characters' head rows copy unk's (resize_for_new_tokens), so each takes unk's probability: the
    # loss on A rises by exactly mean log(1 + k p_unk), ~0 once training has taught the model that unk never
    # comes (this 3-step model has not learnt that yet). Growth itself adds nothing.
    p_unk = out.logits[0, :-1].softmax(-1)[:, old_tok.unk_token_id]

    class AtStart(TrainerCallback):  # the model and optimizer the continued stage starts from
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            model.eval()
            with torch.no_grad():
                self.loss = model(ids, labels=ids).loss
            model.train()
            trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
            self.new_block_trained = all(id(p) in trained for p in model.model.L_module.layers[-1].parameters())

    start = AtStart()
    preset.pop("model")
    continued = ["--config", str(write_preset(tmp_path / "b.yaml", preset)), "--train_file", str(tmp_path / "b.txt")]
    run_training([*continued, "--init_from", str(tmp_path / "a"), "--output_dir", str(tmp_path / "b")],
                 callbacks=[start])
    k = len(AutoTokenizer.from_pretrained(tmp_path / "b")) - len(old_tok)
    close(start.loss, out.loss + torch.log1p(k * p_unk).mean(), 1e-4, "loss on A when the new stage starts (vocabulary expanded, block added)")
    assert start.new_block_trained
    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    assert (grown.config.L_layers, grown.config.H_layers) == (2, 1)
    first, second = read_history(tmp_path / "b")
    assert [f["file"] for f in first["data"]] == ["a.txt"] and [f["file"] for f in second["data"]] == ["b.txt"]
    assert second["vocab_before"] < second["vocab_after"] == grown.config.vocab_size
    assert second["blocks_added"] == 1 and second["steps"] == 3 and second["init_from"] == "a"
    assert len(second["data"][0]["sha256"]) == 64 and second["data"][0]["characters"] == len((tmp_path / "b.txt")
                                                                                             .read_text())
    card = (tmp_path / "b" / "README.md").read_text()
    assert "Training history" in card and "a.txt (" in card and "b.txt (" in card
    assert all(f"bits_per_byte (hrm_mode {mode})" in card for mode in ("fast", "normal", "deep", "extreme"))
    status = ChatSession.from_folder(tmp_path / "b").command("/status")
    assert "training history:" in status and "stage 2" in status and "depth mode" in status
    assert "  stage: data" not in status  # the history table is not read as a row of the training table

    run_training([*continued, "--init_from", str(tmp_path / "b"), "--output_dir", str(tmp_path / "c")])
    again = read_history(tmp_path / "c")
    assert len(again) == 2 and again[1]["steps"] == 6 and again[1]["sessions"] == 2
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "c").config.L_layers == 2  # same data: no growth
