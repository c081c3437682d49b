"""Model cards (README.md with Hub metadata) and loss-curve plots for trained models.

The card is built from what was actually measured -- the live model's parameter
count and config, the trainer's numbers, the evaluation results -- so a published
card cannot drift from the weights it ships with.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_PATH = Path(__file__).with_name("template.md")

DEFAULT_LIMITATIONS = (
    "This is a small research model trained on a limited corpus. It produces fluent-looking "
    "but often wrong, repetitive or nonsensical text, it has not been evaluated for bias, "
    "toxicity or factuality, and it must not be used for any decision-making or production "
    "purpose. Loading it needs `trust_remote_code=True`, which runs Python code from this "
    "repository on your machine: read that code before you load it."
)

# Metrics that go into the machine-readable `model-index`, keyed by the name the
# evaluation code reports them under; the value is the Hub metric type.
_INDEXED_METRICS = {"eval_loss": "loss", "perplexity": "perplexity", "bits_per_byte": "bits_per_byte"}

# Config keys that say nothing about the architecture (bookkeeping, label maps for
# classification heads, remote-code plumbing already present in config.json).
_NOISY_CONFIG_KEYS = {
    "transformers_version", "architectures", "_name_or_path", "auto_map",
    "id2label", "label2id", "dtype", "torch_dtype",
}


def _compact_count(n: int) -> str:
    """Human-scale count (``1.23M``): readers compare models by magnitude, not by digits."""
    for suffix, scale in (("", 1), ("K", 1e3), ("M", 1e6), ("B", 1e9)):
        text = f"{n / scale:.3g}"
        if "e" not in text and float(text) < 1000:
            return f"{text}{suffix}"
    return f"{n / 1e12:.3g}T"


def _to_plain(value: Any) -> Any:
    """Turn numpy/torch scalars into builtins.

    huggingface_hub dumps card metadata with ``yaml.dump`` (not ``safe_dump``), so a numpy
    float would be written as a ``!!python/object`` tag that the Hub's (and our own)
    ``safe_load`` then refuses.
    """
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return value


def _cell(value: Any) -> str:
    """Format one markdown table cell; pipes and newlines would break the table row."""
    value = _to_plain(value)
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(_to_plain(v)) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def _table(rows: dict[str, Any], headers: tuple[str, str]) -> str:
    """Render a flat mapping as a two-column markdown table (``_None recorded._`` if empty)."""
    if not rows:
        return "_None recorded._"
    lines = [f"| {headers[0]} | {headers[1]} |", "| --- | --- |"]
    lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _config_yaml(config) -> str:
    """The config as YAML, from its JSON form so every value is a plain, dumpable type."""
    values = json.loads(config.to_json_string(use_diff=True))
    values = {k: v for k, v in values.items() if k not in _NOISY_CONFIG_KEYS}
    return yaml.safe_dump(values, sort_keys=True, allow_unicode=True).strip()


def _eval_dataset(eval_results: dict) -> tuple[str, str]:
    """(name, type) of the evaluation data; a plain string serves as both."""
    dataset = eval_results.get("dataset") or "custom text"
    if isinstance(dataset, dict):
        name = str(dataset.get("name") or dataset.get("type") or "custom text")
        return name, str(dataset.get("type") or name)
    return str(dataset), str(dataset)


def _index_results(eval_results: dict) -> list[EvalResult] | None:
    """One EvalResult per known metric that was measured.

    Non-finite values are left out of the index (the Hub expects numbers there; an
    ``.inf`` perplexity would be rejected) but still appear in the card's table.
    """
    name, kind = _eval_dataset(eval_results)
    results = []
    for key, metric_type in _INDEXED_METRICS.items():
        value = _to_plain(eval_results.get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            results.append(EvalResult(
                task_type="text-generation", task_name="Text Generation",
                dataset_type=kind, dataset_name=name, dataset_split=eval_results.get("split"),
                metric_type=metric_type, metric_value=float(value),
            ))
    return results or None


def _usage_snippet(repo_name: str, prompt: str) -> str:
    """Copy-paste code; json.dumps yields a valid Python string literal for any prompt."""
    repo, text = json.dumps(repo_name), json.dumps(prompt, ensure_ascii=False)
    return "\n".join([
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({repo}, trust_remote_code=True)",
        f"tokenizer = AutoTokenizer.from_pretrained({repo}, trust_remote_code=True)",
        'generator = pipeline("text-generation", model=model, tokenizer=tokenizer)',
        f"print(generator({text}, max_new_tokens=64)[0][\"generated_text\"])",
    ])


def build_model_card(
    *, model, repo_name: str, architecture: str, summary: str, train_info: dict,
    eval_results: dict, widget_prompts: list[str], datasets: list[str] | None = None,
    license: str = "apache-2.0", loss_curve: str | None = None,
    limitations: str = DEFAULT_LIMITATIONS,
) -> ModelCard:
    """Build the Hub README for ``model`` from measured facts.

    ``architecture`` is the short id used as a Hub tag (e.g. ``"bdh"``); ``summary`` is the
    prose description under the title. ``train_info`` and ``eval_results`` are rendered as
    tables verbatim, and the eval metrics the Hub understands also go into ``model-index``
    so they show on the model page. ``loss_curve`` is a path relative to the README (the
    image is uploaded alongside it). The "Intended use" section is fixed text in the template:
    every hatchlings model is a small research model, and the Hub asks cards to say what a
    model is for and what it is not for, apart from its limitations. ``datasets=None`` (or
    empty) leaves the ``datasets`` key out of the metadata rather than writing an empty list.
    """
    n_params = model.num_parameters()
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        tags=["hatchlings", architecture, "custom_code", "text-generation"],
        datasets=list(datasets) if datasets else None,
        model_name=repo_name,
        eval_results=_index_results(eval_results),
        widget=[{"text": str(p)} for p in widget_prompts],
    )
    shown_eval = {k: v for k, v in eval_results.items() if k != "dataset"}
    shown_eval = {"dataset": _eval_dataset(eval_results)[0], **shown_eval}
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        title=repo_name.split("/")[-1],
        summary=summary.strip(),
        param_count=f"{n_params:,}",
        param_compact=_compact_count(n_params),
        architecture=architecture,
        model_type=model.config.model_type,
        model_class=type(model).__name__,
        config_yaml=_config_yaml(model.config),
        train_table=_table(train_info, ("Item", "Value")),
        eval_table=_table(shown_eval, ("Metric", "Value")),
        loss_curve=str(loss_curve) if loss_curve else None,
        usage_snippet=_usage_snippet(repo_name, widget_prompts[0] if widget_prompts else "Once upon a time"),
        limitations=limitations.strip(),
    )


def _loss_points(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) for every finite ``key`` entry that carries a step.

    Where several entries share a step (a periodic evaluation on a capped subset, then the final one on
    the whole split), the last one wins: it is the number the card reports.
    """
    points = {}
    for entry in log_history:
        value, step = _to_plain(entry.get(key)), entry.get("step")
        if step is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        points[float(step)] = float(value)
    return list(points), list(points.values())


def plot_loss_curve(log_history: list[dict], path: str | os.PathLike) -> bool:
    """Write a PNG of train (``loss``) and validation (``eval_loss``) loss against step.

    Takes ``Trainer.state.log_history`` as is. Returns False and writes nothing when
    there is no loss to plot, so callers can decide whether to link an image. Uses a
    bare ``Figure`` on the Agg canvas instead of pyplot, so it neither needs a display
    nor changes the matplotlib backend or global figure state of the calling process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = _loss_points(log_history, "loss")
    valid = _loss_points(log_history, "eval_loss")
    if not train[0] and not valid[0]:
        return False
    fig = Figure(figsize=(7, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train[0]:
        ax.plot(*train, label="train loss", linewidth=1.2)
    if valid[0]:
        ax.plot(*valid, label="validation loss", marker="o", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("Training and validation loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return True
