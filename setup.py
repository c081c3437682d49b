"""The one thing pyproject.toml cannot say: the package list is found *and* extended.

`hatchlings.presets` has no folder under hatchlings/: pyproject.toml's package-dir maps it onto the root
configs/ folder at build time, so the presets have a single source and still ship in the wheel. A
`[tool.setuptools.packages]` table is either a fixed list or `find`, never both, hence this file.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["hatchlings*"]), "hatchlings.presets", "hatchlings.presets.accelerate"])
