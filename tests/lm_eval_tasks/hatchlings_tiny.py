"""Dataset loader of the `hatchlings_tiny` lm-eval task: the jsonl next to this file, as a `test` split."""

from pathlib import Path

import datasets

DATA = Path(__file__).resolve().parent / "hatchlings_tiny.jsonl"


def load(**_metadata) -> datasets.DatasetDict:
    """lm-eval passes the task metadata (and model args) as keywords; the data does not depend on them."""
    return datasets.DatasetDict({"test": datasets.load_dataset("json", data_files=str(DATA), split="train")})
