"""`hatchlings serve D [D2 ...]`: the playground web app, and the Space files every export carries.

The page itself lives in `app_template.py`, the single source of both `hatchlings serve` and the `app.py`
copied into each export: the export's copy must run on a Space without hatchlings, so the template imports
nothing from this package, and what it needs to know about the architecture (its extra generation controls,
from `ArchitectureRecord.generation_controls`) is written next to it as `playground.json` at export time.

This module is imported by every export, so it must not import gradio: only `run` (the command) does.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..errors import UsageError

APP_TEMPLATE = Path(__file__).with_name("app_template.py")
#: the Gradio version the app is tested with (constraints.txt pins the same; a test checks they agree)
GRADIO_VERSION = "6.31.0"
#: what a Space built from an export installs besides Gradio (the Space image has neither)
SPACE_REQUIREMENTS = "torch>=2.4,<3\ntransformers>=5.0,<6\nsafetensors>=0.4\n"
_KINDS = ("int", "float", "bool")


def generation_controls(record, config) -> dict:
    """The record's `generation_controls` as JSON-ready specs for the app: {label: {kind, choices, default,
    kwarg}}. "config:<attribute>" choices are read from this model's config, since modes are per model."""
    controls = {}
    for label, (kind, default, kwarg) in record.generation_controls.items():
        choices = None
        if isinstance(kind, str) and kind.startswith("config:"):
            choices = list(getattr(config, kind.removeprefix("config:")))
        elif not isinstance(kind, str):
            choices = list(kind)
        elif kind not in _KINDS:
            raise ValueError(f"{record.arch}: generation control {label!r} has unknown kind {kind!r} "
                             f"(one of {_KINDS}, a tuple of choices or 'config:<attribute>')")
        controls[label] = {"kind": "choice" if choices is not None else kind, "choices": choices,
                           "default": default, "kwarg": kwarg}
    return controls


def space_metadata(title: str) -> dict:
    """The Space keys of the README's YAML header, so the export folder can be pushed as a Gradio Space
    as is (model repositories ignore them)."""
    return {"title": title[:30], "emoji": "🐣", "colorFrom": "yellow", "colorTo": "green", "sdk": "gradio",
            "sdk_version": GRADIO_VERSION, "app_file": "app.py", "pinned": False}


def write_space_files(folder: Path, record, config) -> list[str]:
    """Write app.py (a copy of the template), playground.json and requirements.txt into `folder`."""
    folder = Path(folder)
    shutil.copyfile(APP_TEMPLATE, folder / "app.py")
    (folder / "playground.json").write_text(json.dumps(
        {"architecture": record.arch, "generation_controls": generation_controls(record, config)}, indent=2)
        + "\n", encoding="utf-8")
    (folder / "requirements.txt").write_text(SPACE_REQUIREMENTS, encoding="utf-8")
    return ["app.py", "playground.json", "requirements.txt"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="D", help="exported model folders (two or more to compare)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")


def load_entries(folders: list[str]):
    """Load every folder through hatchlings' registered classes (no remote code runs), checking each first.
    Controls come from the export's playground.json, or from the record for an export made before it."""
    from ..architectures import record_of_model
    from ..training.export import load_model_folder
    from . import app_template as app

    entries, names = [], set()
    for folder in folders:
        try:
            app.check_export(folder)
        except app.PlaygroundError as err:
            raise UsageError(str(err)) from None
        model, tokenizer = load_model_folder(folder)
        controls = app.read_controls(Path(folder))
        if not (Path(folder) / app.CONTROLS_FILE).is_file():
            try:
                controls = generation_controls(record_of_model(model), model.config)
            except ValueError:  # not a hatchlings architecture: no extras
                controls = {}
        name = base = Path(folder).resolve().name
        while name in names:  # two folders with one name (runs/a/model, runs/b/model) stay apart
            name = f"{base}-{len(names)}"
        names.add(name)
        entries.append(app.make_entry(Path(folder), model, tokenizer, controls, name))
    return entries


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("hatchlings serve needs Gradio: pip install 'hatchlings[serve]'") from None
    from . import app_template as app

    entries = load_entries(args.models)
    print(f"hatchlings serve: {', '.join(e.name for e in entries)} on http://{args.host}:{args.port}", flush=True)
    app.launch(app.build_app(entries), entries, host=args.host, port=args.port)
    return 0
