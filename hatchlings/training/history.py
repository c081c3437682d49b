"""An export's training history: one entry per training stage, carried from `--init_from` to the next export.

A model continued on new text (`train.py --init_from D --train_file new.txt`) is neither the model of D nor a
model of new.txt alone; its card must say what it learnt from, in which order, and what each stage measured.
So every export writes `training_history.json` beside the weights (it travels with the folder to the Hub),
and a run started from an export copies that list and adds its own stage. Each stage records its data files
(name, sha256, characters), the tokens the data made, the steps and tokens trained, the date, the vocabulary
size before and after (a `char` vocabulary grows on unseen characters), blocks the architecture added, and
the stage's validation numbers.

Training again on exactly the data of the last stage continues that stage (its steps and tokens add up)
instead of opening a new one: the model has not seen new text, so the history should not say it has.
"""

from __future__ import annotations

import codecs
import datetime
import hashlib
import json
import os
from pathlib import Path

HISTORY_FILE = "training_history.json"


def file_facts(path: str | os.PathLike) -> dict:
    """Name, sha256 and character count of one data file, read in 1 MiB pieces (files may be large)."""
    digest, characters = hashlib.sha256(), 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
            characters += len(decoder.decode(piece))
    characters += len(decoder.decode(b"", final=True))
    return {"file": Path(path).name, "sha256": digest.hexdigest(), "characters": characters}


def read_history(folder: str | os.PathLike) -> list[dict]:
    """The stages of an exported folder; [] for a folder exported before histories existed."""
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        stages = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to start a new history") from None
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError(f"{path} must hold a list of stages")
    return stages


def same_data(stage: dict | None, files: list[dict]) -> bool:
    """Whether `files` (file_facts) are exactly the data of `stage`, by content."""
    return stage is not None and [f["sha256"] for f in stage["data"]] == [f["sha256"] for f in files]


def add_stage(history: list[dict], *, files: list[dict], data_tokens: int, steps: int, tokens_seen: int,
              vocab_before: int | None, vocab_after: int, blocks_added: int, evaluation: dict,
              init_from: str | None, date: str | None = None) -> list[dict]:
    """A new list: `history` plus this run's stage, or with its last stage continued when the data is the same."""
    date = date or datetime.date.today().isoformat()
    stages = [dict(stage) for stage in history]
    if same_data(stages[-1] if stages else None, files):
        last = stages[-1]
        last.update(steps=last["steps"] + steps, tokens_seen=last["tokens_seen"] + tokens_seen, date=date,
                    sessions=last.get("sessions", 1) + 1, vocab_after=vocab_after, evaluation=evaluation,
                    blocks_added=last.get("blocks_added", 0) + blocks_added)
        return stages
    stages.append({"stage": len(stages) + 1, "data": files, "data_tokens": data_tokens, "steps": steps,
                   "tokens_seen": tokens_seen, "date": date, "vocab_before": vocab_before,
                   "vocab_after": vocab_after, "blocks_added": blocks_added, "evaluation": evaluation,
                   "init_from": init_from, "sessions": 1})
    return stages


def write_history(folder: str | os.PathLike, stages: list[dict]) -> None:
    (Path(folder) / HISTORY_FILE).write_text(json.dumps(stages, indent=2) + "\n")


def stage_data(stage: dict, detail) -> str:
    """The stage's files as "name (detail(file))", comma-separated; the built-in corpus when it read none."""
    return ", ".join(f"{f['file']} ({detail(f)})" for f in stage["data"]) or "built-in corpus"


def stage_vocabulary(stage: dict) -> str:
    """The vocabulary size after the stage, "before -> after" where the stage expanded it."""
    before, after = stage.get("vocab_before"), stage["vocab_after"]
    return str(after) if before in (None, after) else f"{before} -> {after}"


def describe_stage(stage: dict) -> str:
    """One line per stage for `hatchlings chat`'s /status."""
    files, vocab = stage_data(stage, lambda f: f"{f['characters']:,} characters"), stage_vocabulary(stage)
    bpb = stage.get("evaluation", {}).get("bits_per_byte")
    grown = f", {stage['blocks_added']} blocks added" if stage.get("blocks_added") else ""
    return (f"stage {stage['stage']} ({stage['date']}): {files}; {stage['steps']:,} steps, vocabulary {vocab}{grown}"
            + (f"; validation {bpb:.4f} bits/byte" if isinstance(bpb, float) else ""))
