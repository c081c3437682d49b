"""LoRA adapters through PEFT: `train.py --lora_r R` trains an adapter instead of the whole model.

Which weights an adapter reaches is an architecture fact, so the defaults come from the architecture's record
(`ArchitectureRecord.lora`, `peft.LoraConfig` keyword arguments). BDH keeps its neurons in raw `(H, D, N)`
parameters, which only PEFT's `target_parameters` reaches; a Llama-like model names `nn.Linear` modules in
`target_modules`. `--lora_targets` overrides the record with names of either kind: each name is looked up in
the model and lands in the list its kind needs, so users never have to know which one an architecture uses.

peft is an optional dependency (`pip install hatchlings[peft]`): it is imported only when an adapter is asked
for, so importing the training package never needs it.

The export is an adapter folder (adapter_config.json naming the base, adapter_model.safetensors, tokenizer, a
card with `library_name: peft` and `base_model:`). The base is the `--init_from` folder; a run from scratch
writes its freshly initialised base to `output_dir/base` before training, so the adapter always has the exact
weights it was trained against, and `--resume` reloads them from there instead of initialising again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..architectures import record_of_model
from ..model_cards import plot_loss_curve
from ..model_cards.card import CURVE_EVALUATED_ON, DEFAULT_LIMITATIONS, EVALUATED_ON, _index_results, _table
from ..errors import UsageError
from .export import _umask, load_model_folder

ADAPTER_TEMPLATE = Path(__file__).parents[1] / "model_cards" / "adapter_template.md"
BASE_FOLDER = "base"  # where a run from scratch keeps its base model, inside output_dir
INSTALL_HINT = "LoRA adapters need peft: pip install hatchlings[peft]"


@dataclasses.dataclass
class LoraSettings:
    """The preset's optional `lora` section (or `--lora_*` flags); r = 0 means no adapter: train the whole model.

    alpha: LoRA's scale numerator (the update is alpha/r * B A); None keeps PEFT's default.
    dropout: dropout on the adapter's input (PEFT refuses it for raw-parameter targets such as BDH's).
    targets: module or parameter names overriding the architecture record's defaults.
    """

    r: int = 0
    alpha: float | None = None
    dropout: float = 0.0
    targets: list[str] | None = None


FLAG_HELP = {
    "r": "train a LoRA adapter of this rank instead of the whole model (needs peft)",
    "alpha": "LoRA scale numerator (update = alpha/r * B A); default: PEFT's",
    "dropout": "dropout on the adapter's input (not for raw-parameter targets such as BDH's)",
    "targets": "comma list of module or parameter names to adapt (default: the architecture's)",
}


def add_lora_flags(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(LoraSettings):
        parser.add_argument(f"--lora_{field.name}", dest=f"lora_{field.name}", default=None,
                            help=FLAG_HELP[field.name])


def lora_settings(section: dict, args: argparse.Namespace, source: str) -> LoraSettings:
    """The `lora` section with the `--lora_*` flags applied over it, every value checked (UsageError)."""
    if not isinstance(section, dict):
        raise UsageError(f"{source}: 'lora' must be a mapping with keys r, alpha, dropout, targets")
    names = {f.name for f in dataclasses.fields(LoraSettings)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise UsageError(f"{source}: unknown key(s) in 'lora': {', '.join(unknown)}")
    values = dict(section)
    for name in names:
        flag = getattr(args, f"lora_{name}")
        if flag is not None:
            values[name] = [t.strip() for t in flag.split(",") if t.strip()] if name == "targets" else flag
    try:
        r = int(values.get("r", 0))
        alpha = None if values.get("alpha") is None else float(values["alpha"])
        dropout = float(values.get("dropout", 0.0))
    except (TypeError, ValueError) as err:
        raise UsageError(f"lora: r must be an integer, alpha and dropout numbers ({err})") from None
    targets = values.get("targets")
    if r < 0 or (alpha is not None and alpha <= 0) or not 0.0 <= dropout < 1.0:
        raise UsageError(f"lora: need r >= 0, alpha > 0 and 0 <= dropout < 1, got r={r}, alpha={alpha}, "
                         f"dropout={dropout}")
    if targets is not None and (not isinstance(targets, list) or not targets
                                or not all(isinstance(t, str) for t in targets)):
        raise UsageError(f"lora.targets must be a non-empty list of module or parameter names, got {targets!r}")
    if r == 0 and set(values) - {"r"}:
        raise UsageError(f"lora: {', '.join(sorted(set(values) - {'r'}))} given without a rank: add --lora_r")
    return LoraSettings(r=r, alpha=alpha, dropout=dropout, targets=targets)


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a target name: the full dotted name, or its tail after a dot."""
    return name == target or name.endswith("." + target)


def target_kwargs(model, targets: list[str] | None) -> dict:
    """`LoraConfig` target arguments: the record's defaults, or `targets` sorted into modules and parameters.

    A name matching a parameter (`block.encoder`) goes to `target_parameters`, one matching a module
    (`q_proj`) to `target_modules`; `all-linear` is PEFT's own shorthand for every linear layer.
    """
    if targets is None:
        return dict(record_of_model(model).lora)
    parameters = [n for n, _ in model.named_parameters()]
    modules = [n for n, _ in model.named_modules() if n]
    kwargs: dict[str, list[str] | str] = {}
    for target in targets:
        if target == "all-linear" or any(_matches(n, target) for n in modules):
            kwargs.setdefault("target_modules", []).append(target)
        elif any(_matches(n, target) for n in parameters):
            kwargs.setdefault("target_parameters", []).append(target)
        else:
            known = sorted({re.sub(r"\.\d+\.", ".N.", n) for n in parameters})  # layers.0.x, layers.1.x -> layers.N.x
            raise UsageError(f"--lora_targets: {target!r} names no module or parameter of the "
                             f"{model.config.model_type} model; its parameters: {', '.join(known)}")
    if "all-linear" in kwargs.get("target_modules", []):  # PEFT takes it alone, as a string
        if len(kwargs["target_modules"]) > 1:
            raise UsageError("--lora_targets: all-linear already names every linear module; add only parameters")
        kwargs["target_modules"] = "all-linear"
    return kwargs


def lora_config(model, settings: LoraSettings):
    """The `peft.LoraConfig` of `settings` for `model` (targets looked up in it); needs peft installed."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    extra = {} if settings.alpha is None else {"lora_alpha": settings.alpha}
    try:
        return LoraConfig(task_type="CAUSAL_LM", r=settings.r, lora_dropout=settings.dropout, **extra,
                          **target_kwargs(model, settings.targets))
    except ValueError as err:
        raise UsageError(f"LoRA: {str(err).splitlines()[0]}") from None


def attach_lora(model, config):
    """`model` wrapped in a PeftModel whose only trainable weights are a fresh LoRA adapter."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. dropout on raw-parameter targets, or a target PEFT cannot adapt
        raise UsageError(f"LoRA: {str(err).splitlines()[0]}") from None


def base_reference(run) -> str:
    """Where the adapter's base model is: the `--init_from` folder, or `output_dir/base` for a run from scratch."""
    return str(Path(run.init_from if run.init_from else Path(run.training.output_dir) / BASE_FOLDER).resolve())


def prepare_adapter(run, model, tokenizer):
    """The model to train: `model` itself, or with `--lora_r` the adapted model.

    A run from scratch keeps its base in `output_dir/base`: written before training (by the process that
    saves), or, when resuming, loaded from there, since checkpoints hold only the adapter.
    """
    if not run.lora.r:
        return model
    base = Path(base_reference(run))
    from_scratch, resuming = not run.init_from, run.resume or bool(run.training.resume_from_checkpoint)
    if from_scratch and resuming:
        if not (base / "config.json").is_file():
            raise UsageError(f"--resume: the adapter's base model is missing ({base}); it is written when an "
                             "adapter run from scratch starts")
        model, _ = load_model_folder(base)
    config = lora_config(model, run.lora)  # a bad target fails here, before anything is written
    if from_scratch and not resuming and run.training.should_save:
        model.save_pretrained(base)
        tokenizer.save_pretrained(base)
        for item in base.iterdir():  # safetensors writes 0600; the base is an ordinary model folder
            item.chmod(0o666 & ~_umask())
    return attach_lora(model, config)


def adapter_exporter(run):
    """`export_adapter_folder` bound to the run's base when the run trains an adapter, else None."""
    return functools.partial(export_adapter_folder, base=base_reference(run)) if run.lora.r else None


def check_checkpoint_kind(checkpoint: str | None, adapter: bool) -> None:
    """Refuse to resume an adapter checkpoint as a full model, or the reverse: the flags must match the run."""
    if checkpoint is None:
        return
    holds_adapter = (Path(checkpoint) / "adapter_config.json").is_file()
    if holds_adapter and not adapter:
        raise UsageError(f"{checkpoint} holds a LoRA adapter: resume with the same --lora_* flags as the run")
    if adapter and not holds_adapter:
        raise UsageError(f"{checkpoint} holds a whole model, not a LoRA adapter: resume without --lora_r")


def export_adapter_folder(model, tokenizer, output_dir: str | os.PathLike, *, base: str, architecture: str,
                          train_info: dict, eval_results: dict, log_history: list[dict], widget_prompts: list[str],
                          datasets: list[str] | None = None, license: str = "apache-2.0") -> Path:
    """Save the adapter of PeftModel `model`, the tokenizer, the loss curve and an adapter card into `output_dir`.

    Staged in a temporary folder and moved into place file by file, as `export_hub_folder` does, so an
    interrupted export never leaves a torn adapter behind a valid config.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        model.peft_config["default"].base_model_name_or_path = base
        model.save_pretrained(staging)  # adapter_config.json, adapter_model.safetensors (and PEFT's README)
        tokenizer.save_pretrained(staging)
        curve = "loss_curve.png" if plot_loss_curve(
            log_history, staging / "loss_curve.png", validation_data=eval_results.get(CURVE_EVALUATED_ON),
            final_data=eval_results.get(EVALUATED_ON)) else None
        card = build_adapter_card(model, repo_name=out.resolve().name, base=base, architecture=architecture,
                                  train_info=train_info, eval_results=eval_results, loss_curve=curve,
                                  prompt=widget_prompts[0] if widget_prompts else "Once upon a time",
                                  datasets=datasets, license=license)
        card.save(staging / "README.md")
        mode = 0o666 & ~_umask()
        for item in staging.iterdir():
            item.chmod(mode)
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def build_adapter_card(model, *, repo_name: str, base: str, architecture: str, train_info: dict,
                       eval_results: dict, loss_curve: str | None, prompt: str, datasets: list[str] | None,
                       license: str) -> ModelCard:
    """The adapter's Hub README: which base it adapts, what was trained and measured, and how to load it."""
    config = model.peft_config["default"]
    trainable, total = model.get_nb_trainable_parameters()
    targets = {"modules": config.target_modules, "parameters": config.target_parameters}
    card_data = ModelCardData(
        base_model=base, library_name="peft", pipeline_tag="text-generation", license=license,
        tags=["hatchlings", architecture, "lora", "peft", "custom_code", "text-generation"],
        datasets=list(datasets) if datasets else None, model_name=repo_name,
        eval_results=_index_results(eval_results))
    lora = {"rank r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            **{f"target {kind}": ", ".join(sorted(names)) if isinstance(names, (set, list)) else names
               for kind, names in targets.items() if names}}
    shown_eval = {k: v for k, v in eval_results.items() if k != "dataset"}
    return ModelCard.from_template(
        card_data, template_path=str(ADAPTER_TEMPLATE), title=repo_name.split("/")[-1], base=base,
        architecture=architecture, trainable=f"{trainable:,}", total=f"{total:,}",
        share=f"{trainable / total:.2%}", lora_table=_table(lora, ("Setting", "Value")),
        train_table=_table(train_info, ("Item", "Value")),
        eval_table=_table({"dataset": eval_results.get("dataset", "custom text"), **shown_eval}, ("Metric", "Value")),
        loss_curve=loss_curve, base_json=json.dumps(base), adapter_json=json.dumps(repo_name),
        prompt_json=json.dumps(prompt, ensure_ascii=False), limitations=DEFAULT_LIMITATIONS)
