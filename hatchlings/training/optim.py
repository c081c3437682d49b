"""Optimizers for every architecture: AdamW, Muon (2-D hidden matrices) + AdamW, and a Wiener-SNR gradient filter.

Trainer accepts one `torch.optim.Optimizer` (`Trainer(optimizers=(opt, None))`) and builds its learning-rate
scheduler over `opt.param_groups`. Muon in torch 2.13 takes only 2-D tensors, so a model needs two optimizers;
`MuonAdamW` presents them as one real `Optimizer` whose `param_groups` *are* the inner optimizers' group dicts
(the same objects), so the scheduler's `lr = initial_lr * factor` moves both learning rates by the same factor and
`muon_lr` stays relative to `learning_rate`. `state_dict` nests the inner ones, so Trainer's checkpoint
(`optimizer.pt`, loaded with `weights_only=True`) and `resume_from_checkpoint` work unchanged.

Nothing here knows an architecture: parameters are sorted by shape and by what the model itself reports as its
embeddings (`get_input_embeddings`, `get_output_embeddings`, any `nn.Embedding`).
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, fields

import torch
from torch import nn

from ..errors import UsageError

OPTIMIZER_NAMES = ("adamw", "muon")


@dataclass
class OptimConfig:
    """The `optim` section of a preset: optimizer choice plus the loss and EMA switches trained with it."""

    name: str = "adamw"
    wiener_snr: bool = False
    snr_beta: float = 0.99
    snr_eps: float = 1e-8
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    ema_decay: float = 0.0  # 0 = no EMA
    export_ema: bool = False
    hebbian_seed: bool = False  # a new model's input embeddings from co-occurrences by Oja's rule (hebbian.py)

    def __post_init__(self):
        self._coerce_strings()
        if self.name not in OPTIMIZER_NAMES:
            raise UsageError(f"optim.name must be one of {', '.join(OPTIMIZER_NAMES)}, got {self.name!r}")
        for field in ("wiener_snr", "export_ema", "hebbian_seed"):
            if not isinstance(getattr(self, field), bool):
                raise UsageError(f"optim.{field} must be true or false, got {getattr(self, field)!r}")
        _check_range("snr_beta", self.snr_beta, 0.0, 1.0)
        _check_range("muon_momentum", self.muon_momentum, 0.0, 1.0)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        _check_range("ema_decay", self.ema_decay, 0.0, 1.0)
        for field in ("snr_eps", "muon_lr"):
            if not _is_number(getattr(self, field)) or getattr(self, field) <= 0:
                raise UsageError(f"optim.{field} must be a number > 0, got {getattr(self, field)!r}")
        if not _is_number(self.z_loss) or self.z_loss < 0:
            raise UsageError(f"optim.z_loss must be a number >= 0, got {self.z_loss!r}")
        if self.export_ema and self.ema_decay == 0:
            raise UsageError("optim.export_ema needs optim.ema_decay > 0 (no EMA weights are kept otherwise)")


    def _coerce_strings(self) -> None:
        """Accept "1e-8" and "true" as command-line flags give them (and as YAML 1.1 reads `1e-8`: a string)."""
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str) or field.name == "name":
                continue
            if field.type in ("bool", bool) and value.lower() in ("true", "false"):
                setattr(self, field.name, value.lower() == "true")
            elif field.type in ("float", float):
                try:
                    setattr(self, field.name, float(value))
                except ValueError:
                    pass  # left as is: the checks below name the field


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(field: str, value, low: float, high: float) -> None:
    """low <= value < high, else a UsageError naming the field."""
    if not _is_number(value) or not low <= value < high:
        raise UsageError(f"optim.{field} must be a number in [{low}, {high}), got {value!r}")


def _embedding_like(model: nn.Module) -> set[int]:
    """ids of the parameters that are lookup tables or the vocabulary head: never Muon, never weight decay.

    Muon orthogonalises the update of a matrix acting on hidden vectors; an embedding's rows are independent
    lookups (and the head's rows independent logits), for which Adam's per-element scaling is the right tool.
    """
    ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            module = None
        if module is not None:
            ids.update(id(p) for p in module.parameters())
    return ids


def split_muon_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], str]:
    """(muon_params, adamw_params, report): Muon gets the trainable 2-D hidden weight matrices, AdamW the rest.

    AdamW: embeddings and output head, norms, biases, every 1-D and every >2-D tensor (BDH's (H, D, N)
    encoders; Muon in torch accepts only 2-D). `named_parameters()` de-duplicates, so a weight tied between
    embedding and head is counted once. The report is one line per group, printed at training start.
    """
    embedding = _embedding_like(model)
    muon, adamw, kinds = [], [], {"embeddings/head": [], "1-D (norms, biases)": [], ">2-D": [], "2-D": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in embedding:
            kinds["embeddings/head"].append(p)
        elif p.ndim < 2:
            kinds["1-D (norms, biases)"].append(p)
        elif p.ndim > 2:
            kinds[">2-D"].append(p)
        else:
            muon.append(p)
            continue
        adamw.append(p)
    lines = [f"  muon : {len(muon)} tensors, {sum(p.numel() for p in muon):,} parameters (2-D hidden matrices)"]
    for kind, params in kinds.items():
        if params:
            lines.append(f"  adamw: {len(params)} tensors, {sum(p.numel() for p in params):,} parameters ({kind})")
    return muon, adamw, "optimizer parameter groups:\n" + "\n".join(lines)


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters weight decay applies to: >=2-D tensors that are not embedding-like.

    No decay on 1-D tensors (norm gains, biases: shrinking them has no regularising meaning), nor on
    embedding tables and the output head (rows of rarely-seen tokens would decay towards zero between
    their updates; tied or not, the head is treated like the embedding). The one rule for every optimizer
    and every model: `HatchlingsTrainer.get_decay_parameter_names` (Trainer's own AdamW, `--optim`, the arena)
    and `_adamw_groups` (Muon's AdamW half, the Wiener-SNR wrapper) both use it.
    """
    embedding = _embedding_like(model)
    return [name for name, p in model.named_parameters() if p.ndim >= 2 and id(p) not in embedding]


def _adamw_groups(model: nn.Module, params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """`params` in a decayed and an undecayed group, by `decay_parameter_names`; empty groups left out."""
    named = dict(model.named_parameters())
    ids = {id(named[name]) for name in decay_parameter_names(model)}
    decay = [p for p in params if id(p) in ids]
    no_decay = [p for p in params if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class ComposedOptimizer(torch.optim.Optimizer):
    """An `Optimizer` made of inner optimizers, so Trainer, accelerate and LR schedulers see one object.

    `param_groups` is the concatenation of the inner optimizers' group dicts (shared, not copied), so a
    scheduler writing `group["lr"]` drives the inner optimizers directly. `load_state_dict` of an inner
    optimizer replaces its group dicts, hence `_sync` after every load.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], defaults: dict | None = None):
        self.optimizers = list(optimizers)
        params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]
        super().__init__(params, defaults or {})  # torch's own bookkeeping (hooks, profiling names)
        self._sync()

    def _sync(self) -> None:
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]
        self.state = ChainMap(*(opt.state for opt in self.optimizers))  # read-only view for inspection

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def _inner_step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def _extra_state_dict(self) -> dict:
        return {}

    def _load_extra_state_dict(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers], "extra": self._extra_state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        inner = state_dict.get("optimizers")
        if not isinstance(inner, list) or len(inner) != len(self.optimizers):
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected {len(self.optimizers)} inner "
                             f"optimizer state(s), got {type(inner).__name__} (saved by a different optimizer?)")
        for opt, state in zip(self.optimizers, inner):
            opt.load_state_dict(state)
        self._sync()
        self._load_extra_state_dict(state_dict.get("extra") or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n" + "\n".join(f"  {opt!r}".replace("\n", "\n  ") for opt in self.optimizers) \
            + "\n)"


class MuonAdamW(ComposedOptimizer):
    """`torch.optim.Muon` on 2-D hidden matrices + `torch.optim.AdamW` on the rest, stepped together.

    The AdamW groups come first, so Trainer's logged `learning_rate` (group 0) is `args.learning_rate`'s schedule.
    """

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon):
        super().__init__([adamw, muon], {"muon_lr": muon.defaults["lr"]})

    @torch.no_grad()
    def step(self, closure=None):
        return self._inner_step(closure)


class WienerSNR(ComposedOptimizer):
    """Scale each gradient element by SNR / (1 + SNR) before the inner optimizer's step (a Wiener filter).

    Per element, EMAs (beta) of the gradient m and its square v estimate signal m² and noise v - m²
    (bias-corrected as in Adam, so the first steps are not damped by the zero initialisation);
    SNR = m² / (v - m² + eps) and the gain SNR/(1+SNR) = m² / (v + eps) passes consistent directions and
    mutes elements whose gradient keeps flipping sign. Gradients arrive already clipped by Trainer.
    """

    def __init__(self, inner: torch.optim.Optimizer, beta: float = 0.99, eps: float = 1e-8):
        super().__init__([inner], {"snr_beta": beta, "snr_eps": eps})
        self.beta, self.eps = beta, eps
        self.snr_state: dict[torch.Tensor, dict] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p in self._params():
            if p.grad is not None:
                p.grad.mul_(self._gain(p).to(p.grad.dtype))
        self.optimizers[0].step()
        return loss

    def _gain(self, p: torch.Tensor) -> torch.Tensor:
        """Update p's EMAs with its gradient and return the per-element gain m̂² / (v̂ + eps), p's shape, fp32."""
        g = p.grad.float()
        st = self.snr_state.get(p)
        if st is None:
            st = self.snr_state[p] = {"step": 0, "m": torch.zeros_like(g), "v": torch.zeros_like(g)}
        st["step"] += 1
        st["m"].lerp_(g, 1 - self.beta)
        st["v"].mul_(self.beta).addcmul_(g, g, value=1 - self.beta)
        correction = 1 - self.beta ** st["step"]
        m2 = (st["m"] / correction).square()
        v = torch.maximum(st["v"] / correction, m2)  # v >= m² in exact arithmetic; keep noise >= 0 in floats
        return m2 / (v + self.eps)

    def _extra_state_dict(self) -> dict:
        """EMAs keyed by the parameter's position in `param_groups` (tensors are not stable keys across runs)."""
        return {"snr": {i: dict(self.snr_state[p]) for i, p in enumerate(self._params()) if p in self.snr_state}}

    def _load_extra_state_dict(self, state: dict) -> None:
        params = self._params()
        self.snr_state = {}
        for i, st in (state.get("snr") or {}).items():
            p = params[int(i)]
            self.snr_state[p] = {"step": int(st["step"]), "m": st["m"].to(p.device, torch.float32).clone(),
                                 "v": st["v"].to(p.device, torch.float32).clone()}


def build_optimizer(model: nn.Module, args, cfg: OptimConfig, *, verbose: bool = False) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, for `Trainer(optimizers=(build_optimizer(...), None))`.

    `args` is a `TrainingArguments` (learning_rate, adam_beta1/2, adam_epsilon, weight_decay are read).
    adamw: torch AdamW over everything. muon: Muon (lr `cfg.muon_lr`, momentum `cfg.muon_momentum`,
    decoupled weight decay `args.weight_decay`) on 2-D hidden matrices + AdamW on the rest; a scheduler scales
    both by the same factor. `cfg.wiener_snr` wraps either in `WienerSNR`. `verbose` prints the group report.
    """
    adam_kwargs = {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    if cfg.name == "muon":
        muon_params, adamw_params, report = split_muon_params(model)
    else:
        muon_params, report = [], "optimizer: adamw over all trainable parameters"
        adamw_params = [p for p in model.parameters() if p.requires_grad]
    if verbose:
        print(f"[hatchlings] {report}", flush=True)
    groups = _adamw_groups(model, adamw_params, args.weight_decay)
    if not groups and not muon_params:
        raise UsageError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(groups, **adam_kwargs) if groups else None
    if muon_params:
        muon = torch.optim.Muon(muon_params, lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                                weight_decay=args.weight_decay)
        optimizer = muon if optimizer is None else MuonAdamW(optimizer, muon)
    if cfg.wiener_snr:
        optimizer = WienerSNR(optimizer, beta=cfg.snr_beta, eps=cfg.snr_eps)
    return optimizer
