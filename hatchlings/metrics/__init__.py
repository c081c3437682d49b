"""`evaluate` metric modules that ship inside the package.

Each sub-folder is loadable by path, `evaluate.load(str(METRICS_DIR / "lm_perplexity"))`, so scoring needs no
Hub download. The `__init__.py` files only make setuptools ship the scripts as package modules.
"""

from pathlib import Path

#: Folder holding one sub-folder per metric (each with a script of the same name, as `evaluate` expects).
METRICS_DIR = Path(__file__).resolve().parent

__all__ = ["METRICS_DIR"]
