"""Write a self-contained Hub folder: weights, config with auto_map, modeling files, tokenizer, card.

Every file is first written to a temporary folder beside the target and then moved into place with
`os.replace`, so an interrupted export never leaves a half-written model.safetensors behind a valid
config (a reader sees the old file or the new one, never a torn one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import GenerationConfig

from ..model_cards import build_model_card, last_sparsity, plot_loss_curve, plot_sparsity_curve
from .errors import UsageError

ARCHITECTURE_SUMMARIES = {
    "bdh": ("BDH (Baby Dragon Hatchling; Kosowski et al., 2025): one block of weights shared by every layer, "
            "sparse positive ReLU neurons, and a linear attention whose running sum is a Hebbian synaptic "
            "state, so generation costs the same per token at any context length."),
}


def default_generation_config(model) -> GenerationConfig:
    """Sampling defaults for the Hub widget and `pipeline`; callers can still pass do_sample=False."""
    cfg = model.config
    return GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                            pad_token_id=cfg.pad_token_id, do_sample=True, temperature=0.8, top_k=50,
                            max_new_tokens=200)


def export_hub_folder(model, tokenizer, output_dir: str | os.PathLike, *, architecture: str,
                      train_info: dict, eval_results: dict, log_history: list[dict],
                      widget_prompts: list[str], datasets: list[str] | None = None,
                      license: str = "apache-2.0") -> Path:
    """Save `model` + `tokenizer` + generation config + loss curve + model card into `output_dir`.

    When `log_history` holds neuron-sparsity entries (training.sparsity), `sparsity_curve.png` is written
    too and the card gets a sparsity section; otherwise neither exists.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        model.generation_config = default_generation_config(model)
        model.config.use_cache = True  # Trainer switches it off while training; inference wants the cache
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        curve = "loss_curve.png" if plot_loss_curve(log_history, staging / "loss_curve.png") else None
        sparsity_curve = ("sparsity_curve.png" if plot_sparsity_curve(log_history, staging / "sparsity_curve.png")
                          else None)
        card = build_model_card(model=model, repo_name=out.resolve().name, architecture=architecture,
                                summary=ARCHITECTURE_SUMMARIES.get(architecture, architecture),
                                train_info=train_info, eval_results=eval_results,
                                widget_prompts=widget_prompts, datasets=datasets, license=license,
                                loss_curve=curve, sparsity_curve=sparsity_curve,
                                sparsity=last_sparsity(log_history))
        card.save(staging / "README.md")
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
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
