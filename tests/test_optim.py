"""Optimizers (AdamW, Muon + AdamW, Wiener-SNR), causal-LM losses and the EMA callback, on any model.

Everything is run on a tiny BDH (a custom architecture with 3-D weights) and on a tiny GPT-2 (a stock
Transformers model with tied embeddings and Conv1D layers) to show none of it depends on the architecture.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback,
                          TrainingArguments, get_scheduler)

import hatchlings
from hatchlings.training.ema import EMA_FILE, EmaCallback
from hatchlings.errors import UsageError
from hatchlings.training.losses import causal_lm_loss, declare_causal_lm_loss, make_compute_loss
from hatchlings.training.optim import (ComposedOptimizer, MuonAdamW, OptimConfig, WienerSNR, build_optimizer,
                                       split_muon_params)
from hatchlings.training.trainer import HatchlingsTrainer

VOCAB = 64


def tiny_bdh():
    torch.manual_seed(0)
    config = hatchlings.BdhConfig(hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
                                  num_hidden_layers=2, dropout=0.0)
    return AutoModelForCausalLM.from_config(config)


def tiny_registered(arch: str):
    """A builder of a tiny model of a registered architecture: its record's arena shape at width 32."""
    def build():
        torch.manual_seed(0)
        record = hatchlings.record_for(arch)
        return AutoModelForCausalLM.from_config(record.config_class(**record.arena_shape(32)))
    build.__name__ = f"tiny_{arch}"
    return build


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32, bos_token_id=0,
                        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def dataset(n: int = 16, length: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (n, length), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def training_args(out, **overrides) -> TrainingArguments:
    values = dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                  lr_scheduler_type="cosine", warmup_steps=2, logging_steps=1, save_strategy="steps", save_steps=2,
                  report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, weight_decay=0.01)
    values.update(overrides)
    return TrainingArguments(**values)


# --- OptimConfig ---------------------------------------------------------------------------------------------
def test_optim_config_validates_and_names_the_field():
    assert OptimConfig().name == "adamw"
    with pytest.raises(UsageError, match=r"optim.name must be one of adamw, muon, got 'x'"):
        OptimConfig(name="x")
    for field, value in [("snr_beta", 1.0), ("muon_momentum", -0.1), ("label_smoothing", 1.5), ("z_loss", -1),
                         ("ema_decay", 1.0), ("muon_lr", 0), ("snr_eps", "small"), ("wiener_snr", "yes")]:
        with pytest.raises(UsageError, match=rf"optim\.{field}"):
            OptimConfig(**{field: value})
    flags = OptimConfig(snr_eps="1e-8", wiener_snr="True", ema_decay="0.9", export_ema="false")
    assert (flags.snr_eps, flags.wiener_snr, flags.ema_decay, flags.export_ema) == (1e-8, True, 0.9, False)
    with pytest.raises(UsageError, match="export_ema"):
        OptimConfig(export_ema=True)


# --- parameter split -----------------------------------------------------------------------------------------
def test_split_bdh_muon_gets_only_the_2d_decoder():
    model = tiny_bdh()
    muon, adamw, report = split_muon_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in muon] == ["model.block.decoder"]
    assert {names[id(p)] for p in adamw} == {"model.embed_tokens.weight", "model.block.encoder",
                                             "model.block.encoder_v", "lm_head.weight"}
    assert "muon : 1 tensors" in report and "(>2-D)" in report and "(embeddings/head)" in report


def test_split_gpt2_tied_weights_counted_once():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    muon, adamw, report = split_muon_params(model)
    assert len(muon) + len(adamw) == len(list(model.parameters())) == 28  # tied weight once
    assert all(p.ndim == 2 for p in muon) and len(muon) == 8  # c_attn, c_proj (x2), c_fc, mlp c_proj per layer
    ids = {id(p) for p in adamw}
    assert id(model.transformer.wte.weight) in ids and id(model.transformer.wpe.weight) in ids
    assert "adamw: 18 tensors" in report


# --- optimizers ----------------------------------------------------------------------------------------------
def test_adamw_groups_and_hyperparameters(tmp_path):
    model = tiny_bdh()
    opt = build_optimizer(model, training_args(tmp_path, adam_beta2=0.95), OptimConfig())
    assert type(opt) is torch.optim.AdamW
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.model.block.encoder), id(model.model.block.encoder_v),
                                                id(model.model.block.decoder)}
    assert {id(p) for p in no_decay["params"]} == {id(model.model.embed_tokens.weight), id(model.lm_head.weight)}
    assert decay["betas"] == (0.9, 0.95) and decay["lr"] == 1e-2



def test_trainers_own_adamw_decays_what_build_optimizer_decays(tmp_path):
    """One decay rule: `HatchlingsTrainer`'s plain AdamW (train.py's default, the arena) groups as `build_optimizer`
    does, where Trainer's name-based rule would decay GPT-2's token and position tables."""
    def groups(optimizer) -> list[set[int]]:
        return [{id(p) for p in group["params"]} for group in optimizer.param_groups]

    model = tiny_gpt2()
    ours = HatchlingsTrainer(model=model, args=training_args(tmp_path)).create_optimizer()
    assert groups(ours) == groups(build_optimizer(model, training_args(tmp_path), OptimConfig()))
    tables = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    assert tables <= groups(ours)[1] and tables <= groups(Trainer(model=model, args=training_args(tmp_path))
                                                           .create_optimizer())[0]

def test_muon_scheduler_scales_both_lrs_and_state_round_trips(tmp_path):
    model = tiny_bdh()
    cfg = OptimConfig(name="muon", muon_lr=0.05)
    opt = build_optimizer(model, training_args(tmp_path), cfg)
    assert isinstance(opt, MuonAdamW) and isinstance(opt, torch.optim.Optimizer)
    sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=2, num_training_steps=6)
    ids = torch.randint(0, VOCAB, (2, 8))
    for _ in range(4):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        adam_lr, muon_lr = opt.optimizers[0].param_groups[0]["lr"], opt.optimizers[1].param_groups[0]["lr"]
        assert 0 < adam_lr <= 1e-2 and muon_lr == pytest.approx(adam_lr * 0.05 / 1e-2)
    fresh = build_optimizer(tiny_bdh(), training_args(tmp_path), cfg)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[-1]["lr"] == pytest.approx(opt.param_groups[-1]["lr"])
    assert fresh.param_groups[0] is fresh.optimizers[0].param_groups[0]  # still the live inner groups
    buf = next(iter(fresh.optimizers[1].state.values()))["momentum_buffer"]
    assert torch.equal(buf, next(iter(opt.optimizers[1].state.values()))["momentum_buffer"])


def test_wiener_snr_gain():
    """Step 1: bias-corrected m̂² = v̂ = g², gain ≈ 1. A gradient flipping sign every step is muted."""
    w = torch.nn.Parameter(torch.zeros(3))
    opt = WienerSNR(torch.optim.SGD([w], lr=1.0), beta=0.9, eps=1e-12)
    grads = [torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])]
    w.grad = grads[0].clone()
    opt.step()
    assert torch.allclose(w.detach(), -grads[0], atol=1e-6)  # gain 1 on the first step
    w.grad = grads[1].clone()
    opt.step()
    # by hand: m̂ = (0.09 g1 + 0.1 g2) / 0.19, v̂ = (0.09 g1² + 0.1 g2²) / 0.19
    m = (0.09 * grads[0] + 0.1 * grads[1]) / 0.19
    v = (0.09 * grads[0] ** 2 + 0.1 * grads[1] ** 2) / 0.19
    expected = -grads[0] - grads[1] * m ** 2 / v
    assert torch.allclose(w.detach(), expected, atol=1e-5)
    gain = m ** 2 / v
    assert gain[1] < 0.01 and torch.allclose(gain[[0, 2]], torch.ones(2))  # the sign flip is muted
    state = opt.state_dict()
    other = torch.nn.Parameter(torch.zeros(3))
    again = WienerSNR(torch.optim.SGD([other], lr=1.0), beta=0.9, eps=1e-12)
    again.load_state_dict(state)
    assert again.snr_state[other]["step"] == 2 and torch.equal(again.snr_state[other]["m"], opt.snr_state[w]["m"])


class LrRecorder(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def _train(model, args, cfg, resume=None, callbacks=()):
    trainer = Trainer(model=model, args=args, train_dataset=dataset(), optimizers=(build_optimizer(model, args, cfg),
                      None), callbacks=list(callbacks), compute_loss_func=make_compute_loss(0.1, 1e-4))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_trainer_muon_snr_ema_checkpoint_and_exact_resume(tmp_path):
    """Warmup + cosine drive both groups; resuming from checkpoint-2 ends exactly where the straight run does,
    which needs the Muon momentum, AdamW moments, SNR EMAs and weight EMA all restored."""
    cfg = OptimConfig(name="muon", wiener_snr=True, muon_lr=0.02, ema_decay=0.5)
    recorder, ema = LrRecorder(), EmaCallback(cfg.ema_decay)
    straight = _train(tiny_bdh(), training_args(tmp_path / "a"), cfg, callbacks=[recorder, ema])
    lrs = torch.tensor(recorder.lrs)  # (steps, groups): adamw decay, adamw no-decay, muon
    assert lrs.shape == (4, 3)
    assert torch.allclose(lrs[:, 2], lrs[:, 0] * 0.02 / 1e-2) and torch.equal(lrs[:, 0], lrs[:, 1])
    assert lrs[0, 0] == pytest.approx(0.5e-2) and lrs[1, 0] == pytest.approx(1e-2) and lrs[3, 0] < lrs[2, 0]
    for step in (2, 4):
        assert os.path.isfile(tmp_path / "a" / f"checkpoint-{step}" / EMA_FILE)

    resumed_ema = EmaCallback(cfg.ema_decay)
    resumed = _train(tiny_bdh(), training_args(tmp_path / "a"), cfg, callbacks=[resumed_ema],
                     resume=str(tmp_path / "a" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    for name, t in ema.ema_state_dict().items():
        assert torch.allclose(t, resumed_ema.shadow[name], atol=1e-6), f"ema {name}"


def test_trainer_muon_on_gpt2(tmp_path):
    model = tiny_gpt2()
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    trainer = _train(model, training_args(tmp_path, max_steps=2, save_strategy="no"), OptimConfig(name="muon"))
    assert isinstance(trainer.optimizer.optimizer, ComposedOptimizer)
    assert not torch.equal(before, model.transformer.h[0].attn.c_attn.weight)
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


# --- losses --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [*map(tiny_registered, sorted(hatchlings.RECORDS)), tiny_gpt2],
                         ids=lambda build: build.__name__)
def test_loss_matches_model_and_manual_shift(build):
    model = build().eval()
    ids = torch.randint(0, VOCAB, (3, 12))
    labels = ids.clone()
    labels[0, 5:] = -100
    out = model(input_ids=ids, labels=labels)
    assert torch.allclose(causal_lm_loss(out.logits, labels), out.loss, atol=1e-6)
    # smoothing by hand on the shifted targets: (1 - e) * nll + e * mean_v(-log p_v) over scored positions
    logp = out.logits[:, :-1].float().log_softmax(-1)  # (B, T-1, V)
    target, keep = labels[:, 1:], labels[:, 1:] != -100  # (B, T-1)
    nll = -logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]
    manual = ((0.9 * nll - 0.1 * logp.mean(-1))[keep]).mean()
    assert torch.allclose(causal_lm_loss(out.logits, labels, label_smoothing=0.1), manual, atol=1e-5)
    z = torch.logsumexp(out.logits[:, :-1].float(), -1)[keep]
    with_z = causal_lm_loss(out.logits, labels, z_loss=1e-2, num_items_in_batch=100)
    assert torch.allclose(with_z, (nll[keep].sum() + 1e-2 * z.square().sum()) / 100, atol=1e-5)


def test_compute_loss_func_is_correct_where_label_smoothing_factor_is_not(tmp_path):
    """Trainer shifts for its `label_smoothing_factor` only for models in Transformers' own causal-LM mapping:
    on BDH it scores logits[t] against labels[t] (the current token). `make_compute_loss` scores the next."""
    model = tiny_bdh().eval()
    ids = torch.randint(0, VOCAB, (2, 10))
    inputs = {"input_ids": ids, "labels": ids.clone()}
    logits = model(input_ids=ids).logits
    shifted = causal_lm_loss(logits, ids, label_smoothing=0.1)
    unshifted = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), label_smoothing=0.1)

    pitfall = Trainer(model=model, args=training_args(tmp_path, label_smoothing_factor=0.1))
    with torch.no_grad():
        theirs = pitfall.compute_loss(model, dict(inputs))
    assert torch.allclose(theirs, unshifted, atol=1e-5) and not torch.allclose(theirs, shifted, atol=1e-3)

    ours = Trainer(model=model, args=training_args(tmp_path), compute_loss_func=make_compute_loss(0.1))
    with torch.enable_grad():  # training-time call: regularised
        assert torch.allclose(ours.compute_loss(model, dict(inputs)), shifted, atol=1e-5)
    with torch.no_grad():  # evaluation: plain cross-entropy, comparable across runs
        assert torch.allclose(ours.compute_loss(model, dict(inputs)), causal_lm_loss(logits, ids), atol=1e-5)


def test_declare_causal_lm_loss_fixes_gpt2_token_count(tmp_path):
    """GPT2LMHeadModel has no `loss_type`: Trainer then counts position 0 as a target and under-reports
    eval_loss by (T - 1) / T. Declaring the type makes eval_loss the model's own mean loss."""
    model = tiny_gpt2().eval()
    data = dataset(8, 8)
    ids = torch.stack([row["input_ids"] for row in data])
    with torch.no_grad():
        reference = model(input_ids=ids, labels=ids).loss.item()
    args = training_args(tmp_path, per_device_eval_batch_size=8)
    assert Trainer(model=model, args=args).evaluate(data)["eval_loss"] == pytest.approx(reference * 7 / 8, rel=1e-5)
    declare_causal_lm_loss(model)
    assert Trainer(model=model, args=args).evaluate(data)["eval_loss"] == pytest.approx(reference, rel=1e-5)



# --- auxiliary loss ------------------------------------------------------------------------------------------
class AuxGpt2(GPT2LMHeadModel):
    """GPT-2 that also returns an unweighted `aux_loss` = (w - 3)², w a parameter only that loss reaches
    (an ACT Q-loss or a flow-matching term in miniature)."""

    def __init__(self, config):
        super().__init__(config)
        self.aux_weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids=None, labels=None, **kwargs):
        out = super().forward(input_ids=input_ids, labels=labels, **kwargs)
        out["aux_loss"] = (self.aux_weight - 3).square()
        return out


def aux_gpt2(coef: float = 0.5) -> AuxGpt2:
    model = AuxGpt2(tiny_gpt2().config)
    model.config.aux_loss_coef = coef
    return model


@pytest.mark.parametrize("loss_func", [None, make_compute_loss(0.1), make_compute_loss(0.0, 1e-2),
                                       make_compute_loss(0.1, 1e-2)], ids=["plain", "smoothing", "z", "both"])
def test_aux_loss_survives_every_lm_loss_and_its_gradient_flows(tmp_path, loss_func):
    model = aux_gpt2(0.5)
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    trainer = HatchlingsTrainer(model=model, args=training_args(tmp_path), compute_loss_func=loss_func)
    logits = model(input_ids=ids).logits.detach()
    regularised = causal_lm_loss(logits, ids, label_smoothing=getattr(loss_func, "label_smoothing", 0.0),
                                 z_loss=getattr(loss_func, "z_loss", 0.0))
    loss = trainer.compute_loss(model, {"input_ids": ids, "labels": ids.clone()})
    assert torch.allclose(loss, regularised + 0.5 * 4.0, atol=1e-5)  # aux = (1 - 3)² = 4
    loss.backward()
    assert model.aux_weight.grad.item() == pytest.approx(0.5 * 2 * (1 - 3))
    with torch.no_grad():  # evaluation: the LM's cross-entropy alone, comparable across runs
        plain = trainer.compute_loss(model, {"input_ids": ids, "labels": ids.clone()})
    assert torch.allclose(plain, causal_lm_loss(logits, ids), atol=1e-5)


@pytest.mark.parametrize("loss_func", [None, make_compute_loss(0.1)], ids=["model's loss", "compute_loss_func"])
def test_aux_loss_gradient_is_a_mean_over_accumulated_micro_batches(tmp_path, loss_func):
    """Whether or not Trainer divides the loss by the accumulation steps afterwards, the aux term's gradient
    per micro-batch is coef x its gradient / steps, so a full step weighs it once."""
    model = aux_gpt2(0.5)
    trainer = HatchlingsTrainer(model=model, args=training_args(tmp_path, gradient_accumulation_steps=2),
                                compute_loss_func=loss_func)
    trainer.current_gradient_accumulation_steps = 2
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    trainer.training_step(model, {"input_ids": ids, "labels": ids.clone()}, num_items_in_batch=torch.tensor(36))
    assert model.aux_weight.grad.item() == pytest.approx(0.5 * 2 * (1 - 3) / 2)


def test_aux_loss_is_logged_apart_and_trained(tmp_path):
    model = aux_gpt2(1.0)
    trainer = HatchlingsTrainer(model=model, args=training_args(tmp_path, save_strategy="no", weight_decay=0.0,
                                                                learning_rate=0.1, warmup_steps=0),
                                train_dataset=dataset(), compute_loss_func=make_compute_loss(0.0, 1e-3))
    trainer.train()
    logged = [entry["aux_loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4 and logged[0] == pytest.approx(4.0)  # step 1: before any update, (1 - 3)²
    assert logged[-1] < logged[0] and model.aux_weight.item() > 1.0  # trained towards 3
    assert all(entry["loss"] > entry["aux_loss"] for entry in trainer.state.log_history if "loss" in entry)


def test_aux_loss_coef_is_validated(tmp_path):
    for bad in (-1.0, "0.5", True):
        with pytest.raises(UsageError, match="model.aux_loss_coef must be a number >= 0"):
            HatchlingsTrainer(model=aux_gpt2(bad), args=training_args(tmp_path))
    assert HatchlingsTrainer(model=tiny_gpt2(), args=training_args(tmp_path)).aux_loss_coef == 1.0

# --- EMA -----------------------------------------------------------------------------------------------------
def test_ema_average_swap_and_save(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EmaCallback(0.5)
    with torch.no_grad():
        model.weight.fill_(0.0)
        ema.reset(model)
        for value in (4.0, 8.0):  # two optimizer steps setting the weight to 4, then 8
            model.weight.fill_(value)
            ema.on_step_end(None, None, None, model=model)
    # 0.5 * (0.5 * 0 + 0.5 * 4) + 0.5 * 8 = 5
    assert torch.allclose(ema.ema_state_dict()["weight"], torch.full((1, 2), 5.0))
    raw = ema.swap_into(model)
    assert torch.allclose(model.weight, torch.full((1, 2), 5.0))
    ema.restore(model, raw)
    assert torch.allclose(model.weight, torch.full((1, 2), 8.0))
    with ema.applied(model):
        assert model.weight[0, 0].item() == 5.0
    assert model.weight[0, 0].item() == 8.0

    path = ema.save(str(tmp_path / "checkpoint-2"))
    assert load_file(path)["weight"].dtype == torch.float32
    assert not [f for f in os.listdir(tmp_path / "checkpoint-2") if ".tmp" in f]
    again = EmaCallback(0.5)
    again.load_from_checkpoint(str(tmp_path / "checkpoint-2"))
    again.on_train_begin(None, type("S", (), {"global_step": 2})(), None, model=model)
    assert torch.equal(again.ema_state_dict()["weight"], ema.ema_state_dict()["weight"])
