"""Model cards (README.md with Hub metadata) and the loss / neuron-sparsity plots they embed.

The card is built from what was actually measured -- the live model's parameter
count and config, the trainer's numbers, the evaluation results -- so a published
card cannot drift from the weights it ships with.
"""

from __future__ import annotations

import json
import math
import os
import re
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

# Training validates twice over, on different data: periodically on a capped, fixed subset of the
# validation blocks (log keys `eval_*`), and once at the end on all of them (log keys `final_eval_*`, the
# figures the card reports). A distinct prefix keeps the two apart in the log history, so the curve never
# joins numbers measured on different data into one line. Defined here, not in the training package,
# because training already imports this module (the reverse would be a cycle).
FINAL_EVAL_PREFIX = "final_eval"
# `eval_results` keys that say what was measured on what, shown in the card's evaluation table:
EVALUATED_ON = "evaluated on"  # the data of the reported (final) figures; also names them in model-index
CURVE_EVALUATED_ON = "validation during training"  # the data of the curve's periodic validation points

# Config keys that say nothing about the architecture (bookkeeping, label maps for
# classification heads, remote-code plumbing already present in config.json).
_NOISY_CONFIG_KEYS = {
    "transformers_version", "architectures", "_name_or_path", "auto_map",
    "id2label", "label2id", "dtype", "torch_dtype",
}


# Log-history keys of per-layer activity tracking (hatchlings.training.sparsity writes them, the card reads
# them): `sparsity/<series>_layer0`, ..., `sparsity/<series>_mean` for each series a model reports (BDH:
# `x_active`, `y_active`). Defined here, not in the training package, because training already imports this
# module (the reverse would be a cycle).
_SERIES_NAME = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
_SPARSITY_KEY = re.compile(r"sparsity/(?P<name>[A-Za-z0-9_]+?)_(?:layer(?P<layer>\d+)|mean)")


def sparsity_log_key(name: str, layer: int | None = None) -> str:
    """The log key of activity series `name` (e.g. "x_active") in `layer`, or its mean over layers (None)."""
    if not isinstance(name, str) or not _SERIES_NAME.fullmatch(name) or not (layer is None or layer >= 0):
        raise ValueError(f"no sparsity log key for series {name!r}, layer {layer!r} (names: letters, digits, "
                         "single underscores)")
    return f"sparsity/{name}_" + ("mean" if layer is None else f"layer{layer}")


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


def _grid(headers: tuple[str, ...], rows: list[tuple]) -> str:
    """Render rows of cells under ``headers`` as a markdown table (``_None recorded._`` if there are none)."""
    if not rows:
        return "_None recorded._"
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _table(rows: dict[str, Any], headers: tuple[str, str]) -> str:
    """Render a flat mapping as a two-column markdown table."""
    return _grid(headers, list(rows.items()))


def _sparsity_table(sparsity: dict[str, float]) -> str | None:
    """Per-layer (then mean) values of each activity series (a column each) as percentages; None without any.

    Percentages, because readers compare how sparse layers are, and 4.7% reads faster than 0.0469.
    """
    cells: dict[int | str, dict[str, str]] = {}
    names: dict[str, None] = {}  # the series in the order the model reported them
    for key, value in sparsity.items():
        match = _SPARSITY_KEY.fullmatch(key)
        if match:
            where = "mean" if match["layer"] is None else int(match["layer"])
            cells.setdefault(where, {})[match["name"]] = f"{value:.1%}"
            names[match["name"]] = None
    if not cells:
        return None
    order = sorted(w for w in cells if w != "mean") + (["mean"] if "mean" in cells else [])
    rows = [(w if w != "mean" else "**mean**", *(cells[w].get(name, "–") for name in names)) for w in order]
    return _grid(("layer", *names), rows)


def _history_table(stages: list[dict]) -> str | None:
    """The training history (hatchlings.training.history) as a table, a row per stage; None without one."""
    if not stages:
        return None
    headers = ("stage", "data (sha256)", "characters", "tokens in training blocks", "steps", "tokens trained", "date",
               "vocabulary", "blocks added", "validation bits/byte")
    from ..training.history import stage_data, stage_vocabulary  # here: training imports this module

    rows = []
    for s in stages:
        data, vocab = stage_data(s, lambda f: f["sha256"][:12]), stage_vocabulary(s)
        evaluation = s.get("evaluation", {})
        bpb = evaluation.get("bits_per_byte")
        rows.append((s["stage"] if s.get("sessions", 1) == 1 else f"{s['stage']} ({s['sessions']} runs)", data,
                     sum(f["characters"] for f in s["data"]), s["data_tokens"], s["steps"], s["tokens_seen"],
                     s["date"], vocab, s.get("blocks_added", 0),
                     f"{bpb:.4f} ({evaluation.get('dataset', '')})" if isinstance(bpb, float) else "n/a"))
    return _grid(headers, rows)


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
    ``.inf`` perplexity would be rejected) but still appear in the card's table. Each metric's
    display name carries ``eval_results[EVALUATED_ON]`` when given, so the model page says what the
    number was measured on.
    """
    name, kind = _eval_dataset(eval_results)
    measured_on = eval_results.get(EVALUATED_ON)
    results = []
    for key, metric_type in _INDEXED_METRICS.items():
        value = _to_plain(eval_results.get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            results.append(EvalResult(
                task_type="text-generation", task_name="Text Generation",
                dataset_type=kind, dataset_name=name, dataset_split=eval_results.get("split"),
                metric_type=metric_type, metric_value=float(value),
                metric_name=f"{metric_type} ({measured_on})" if measured_on else None,
            ))
    return results or None


def _usage_snippet(repo_name: str, prompt: str) -> str:
    """Copy-paste code; json.dumps yields a valid Python string literal for any prompt.

    AutoTokenizer gets `trust_remote_code=True` too: it reads config.json, whose `auto_map` names remote code,
    and without the flag it prompts y/N and warns (tests/clean_room.py checks both ways of loading it).
    """
    repo, text = json.dumps(repo_name), json.dumps(prompt, ensure_ascii=False)
    return "\n".join([
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({repo}, trust_remote_code=True)",
        f"tokenizer = AutoTokenizer.from_pretrained({repo}, trust_remote_code=True)",
        "# (the tokenizer alone, running no code from the repository: PreTrainedTokenizerFast.from_pretrained)",
        'generator = pipeline("text-generation", model=model, tokenizer=tokenizer)',
        f"print(generator({text}, max_new_tokens=64)[0][\"generated_text\"])",
    ])


def build_model_card(
    *, model, repo_name: str, architecture: str, summary: str, train_info: dict,
    eval_results: dict, widget_prompts: list[str], datasets: list[str] | None = None,
    license: str = "apache-2.0", loss_curve: str | None = None,
    sparsity_curve: str | None = None, sparsity: dict[str, float] | None = None,
    limitations: str = DEFAULT_LIMITATIONS, space: dict | None = None, history: list[dict] | None = None,
) -> ModelCard:
    """Build the Hub README for ``model`` from measured facts.

    ``architecture`` is the short id used as a Hub tag (e.g. ``"bdh"``); ``summary`` is the
    prose description under the title. ``train_info`` and ``eval_results`` are rendered as
    tables verbatim, and the eval metrics the Hub understands also go into ``model-index``
    so they show on the model page. ``loss_curve`` is a path relative to the README (the
    image is uploaded alongside it). ``sparsity`` (``last_sparsity(log_history)``) adds a "Neuron
    sparsity" section with the final active fractions, and ``sparsity_curve`` (a path like
    ``loss_curve``) their plot over training; without sparsity values there is no such section,
    since only some architectures report it. The "Intended use" section is fixed text in the template:
    every hatchlings model is a small research model, and the Hub asks cards to say what a
    model is for and what it is not for, apart from its limitations. ``datasets=None`` (or
    empty) leaves the ``datasets`` key out of the metadata rather than writing an empty list.
    ``space`` (``hatchlings.serve.space_metadata``) adds the Space keys (``sdk: gradio``, ``app_file``) to the
    YAML header and a "Playground" section, for a folder that also carries the playground's app.py.
    ``history`` (hatchlings.training.history: the stages of this model, oldest first) adds a
    "Training history" table, so a model continued from another export says what every stage learnt from.
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
        **(space or {}),
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
        history_table=_history_table(history or []),
        eval_table=_table(shown_eval, ("Metric", "Value")),
        loss_curve=str(loss_curve) if loss_curve else None,
        sparsity_table=_sparsity_table(sparsity or {}),
        sparsity_curve=str(sparsity_curve) if sparsity_curve else None,
        usage_snippet=_usage_snippet(repo_name, widget_prompts[0] if widget_prompts else "Once upon a time"),
        limitations=limitations.strip(),
        space=bool(space),
    )


def _loss_points(log_history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) for every finite ``key`` entry that carries a step (the last one, if a step repeats)."""
    points = {}
    for entry in log_history:
        value, step = _to_plain(entry.get(key)), entry.get("step")
        if step is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        points[float(step)] = float(value)
    return list(points), list(points.values())


def last_sparsity(log_history: list[dict]) -> dict[str, float]:
    """The last logged value of every neuron-sparsity key (empty when the run did not track sparsity)."""
    keys = dict.fromkeys(k for entry in log_history for k in entry if _SPARSITY_KEY.fullmatch(k))
    values = {key: _loss_points(log_history, key)[1] for key in keys}
    return {key: series[-1] for key, series in values.items() if series}


def _save_line_plot(lines: list[tuple[tuple[list[float], list[float]], dict]], path: str | os.PathLike, *,
                    ylabel: str, title: str) -> None:
    """Plot (steps, values) lines, each with its ``Axes.plot`` style, against step into a PNG at ``path``."""
    from ..plotting import new_figure

    fig, axes = new_figure(size=(7, 4), dpi=120)
    ax = axes[0, 0]
    for points, style in lines:
        ax.plot(*points, **style)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    # many lines (two per layer for sparsity): a smaller, wider legend, so it does not cover the curves
    ax.legend(ncol=1 + len(lines) // 9, fontsize="small" if len(lines) > 4 else None)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def loss_curve_lines(log_history: list[dict], *, validation_data: str | None = None,
                     final_data: str | None = None) -> list[tuple[tuple[list[float], list[float]], dict]]:
    """The loss plot's series as ((steps, values), ``Axes.plot`` style), leaving out empty ones.

    Train loss (``loss``), periodic validation (``eval_loss``) and final validation (``final_eval_loss``).
    The two validations are separate series because they are measured on different data (a capped subset
    during training, every block at the end): one line through both would show a drop that is only the
    change of data. ``validation_data`` and ``final_data`` say what each was measured on, in the legend.
    """
    def label(name: str, data: str | None) -> str:
        return f"{name} ({data})" if data else name

    return [(points, style) for points, style in (
        (_loss_points(log_history, "loss"), {"label": "train loss", "linewidth": 1.2}),
        (_loss_points(log_history, "eval_loss"),
         {"label": label("validation loss", validation_data), "marker": "o", "linewidth": 1.5}),
        (_loss_points(log_history, f"{FINAL_EVAL_PREFIX}_loss"),
         {"label": label("final validation loss", final_data), "marker": "*", "markersize": 12,
          "linestyle": "none"}),
    ) if points[0]]


def plot_loss_curve(log_history: list[dict], path: str | os.PathLike, *, validation_data: str | None = None,
                    final_data: str | None = None) -> bool:
    """Write a PNG of the ``loss_curve_lines`` against step.

    Takes ``Trainer.state.log_history`` as is. Returns False and writes nothing when
    there is no loss to plot, so callers can decide whether to link an image.
    """
    lines = loss_curve_lines(log_history, validation_data=validation_data, final_data=final_data)
    if not lines:
        return False
    _save_line_plot(lines, path, ylabel="cross-entropy loss", title="Training and validation loss")
    return True


def plot_sparsity_curve(log_history: list[dict], path: str | os.PathLike) -> bool:
    """Write a PNG of each activity series against step, per layer: a colour per layer, a line style per series.

    Per layer rather than the mean, because a mean hides a layer whose neurons die or all fire.
    Returns False and writes nothing when no activity was logged.
    """
    keys = [(m["name"], int(m["layer"]), key) for key in last_sparsity(log_history)
            if (m := _SPARSITY_KEY.fullmatch(key))["layer"] is not None]
    if not keys:
        return False
    styles = {name: ("-", "--", ":", "-.")[i % 4] for i, name in enumerate(dict.fromkeys(n for n, _, _ in keys))}
    lines = [(_loss_points(log_history, key), {
        "label": f"{name} layer {layer}", "color": f"C{layer % 10}", "linestyle": styles[name],
        "marker": "o", "markersize": 3, "linewidth": 1.2}) for name, layer, key in sorted(keys, key=lambda k: k[1])]
    _save_line_plot(lines, path, ylabel="fraction", title="Activity per layer (" + ", ".join(styles) + ")")
    return True
