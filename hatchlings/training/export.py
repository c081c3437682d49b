"""Write a self-contained Hub folder: weights, config with auto_map, modeling files, tokenizer, card.

Every file is first written to a temporary folder beside the target and then moved into place with
`os.replace`, so an interrupted export never leaves a half-written model.safetensors behind a valid
config (a reader sees the old file or the new one, never a torn one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from transformers import GenerationConfig

from ..architectures import record_for
from ..model_cards import build_model_card, last_sparsity, plot_loss_curve, plot_sparsity_curve
from ..model_cards.card import CURVE_EVALUATED_ON, EVALUATED_ON
from ..errors import UsageError
from ..serve import space_metadata, write_space_files
from .history import write_history

def default_generation_config(model) -> GenerationConfig:
    """Sampling defaults for the Hub widget and `pipeline`; callers can still pass do_sample=False."""
    cfg = model.config
    return GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                            pad_token_id=cfg.pad_token_id, do_sample=True, temperature=0.8, top_k=50,
                            max_new_tokens=200)


def export_hub_folder(model, tokenizer, output_dir: str | os.PathLike, *, architecture: str,
                      train_info: dict, eval_results: dict, log_history: list[dict],
                      widget_prompts: list[str], datasets: list[str] | None = None,
                      license: str = "apache-2.0", instruction_tuned: bool = False,
                      history: list[dict] | None = None) -> Path:
    """Save `model` + `tokenizer` + generation config + loss curve + model card into `output_dir`.

    `eval_results` may say what its figures and the curve's periodic validation points were measured on
    (model_cards.card.EVALUATED_ON / CURVE_EVALUATED_ON): the card's table and the curve's legend repeat it.
    When `log_history` holds neuron-sparsity entries (training.sparsity), `sparsity_curve.png` is written
    too and the card gets a sparsity section; otherwise neither exists.
    `instruction_tuned` (the training data held instruction examples) is written into config.json, so
    `hatchlings chat` knows to talk through the tokenizer's chat template rather than continue plain text.
    `history` (hatchlings.training.history) is written to training_history.json and shown in the card.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        model.generation_config = default_generation_config(model)
        model.config.use_cache = True  # Trainer switches it off while training; inference wants the cache
        model.config.instruction_tuned = bool(instruction_tuned)  # overwrites what an --init_from export said
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if history:
            write_history(staging, history)
        curve = "loss_curve.png" if plot_loss_curve(
            log_history, staging / "loss_curve.png", validation_data=eval_results.get(CURVE_EVALUATED_ON),
            final_data=eval_results.get(EVALUATED_ON)) else None
        sparsity_curve = ("sparsity_curve.png" if plot_sparsity_curve(log_history, staging / "sparsity_curve.png")
                          else None)
        card = build_model_card(model=model, repo_name=out.resolve().name, architecture=architecture,
                                summary=record_for(architecture).summary,
                                train_info=train_info, eval_results=eval_results,
                                widget_prompts=widget_prompts, datasets=datasets, license=license,
                                loss_curve=curve, sparsity_curve=sparsity_curve,
                                sparsity=last_sparsity(log_history), space=space_metadata(out.resolve().name),
                                history=history)
        card.save(staging / "README.md")
        write_space_files(staging, record_for(architecture), model.config)  # the playground, as a Space
        mode = 0o666 & ~_umask()  # tempfile and safetensors write 0600; exports are ordinary files
        for item in staging.iterdir():
            if item.is_file():
                item.chmod(mode)
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def load_model_folder(folder: str | os.PathLike):
    """Model and tokenizer of a saved folder, through hatchlings' registered classes (no remote code runs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hatchlings  # noqa: F401  (registers the architectures)

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UsageError(f"not a saved model folder (no config.json): {folder}")
    _check_weights(folder)
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _check_weights(folder: Path) -> None:
    """Refuse a folder whose weights are missing or torn (an interrupted copy or download) before
    Transformers does so with a long traceback. Opening a safetensors file reads only its header, which
    also checks that the file is exactly as long as the header says."""
    from safetensors import SafetensorError, safe_open

    index = folder / "model.safetensors.index.json"  # a sharded save lists its files here
    names = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    for name in names:
        path = folder / name
        if not path.is_file():
            raise UsageError(f"the weights of model folder {folder} are missing: no file {path}")
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as err:
            raise UsageError(f"the weights of model folder {folder} are damaged: {path} ({err})") from None
