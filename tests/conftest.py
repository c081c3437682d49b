"""Shared pytest fixtures for the hatchlings test-suite.

Per-architecture test modules (`tests/test_<arch>.py`) define a module-level `SPEC` (a
`contract.ArchSpec`); the fixtures below read it through `request.module`, so the same fixture
builds the right tiny model for whichever architecture's module is running.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:  # `from contract import ...` works whatever pytest's import mode is
    sys.path.insert(0, TESTS_DIR)

# The CI box has two cores; more threads than cores only makes the tiny models slower.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def spec(request):
    """The ArchSpec of the test module that asked (its module-level `SPEC`)."""
    found = getattr(request.module, "SPEC", None)
    if found is None:
        pytest.skip(f"{request.module.__name__} defines no SPEC")
    return found


@pytest.fixture
def tiny_config(spec):
    return spec.tiny_config()


@pytest.fixture
def tiny_model(spec):
    """A freshly initialised tiny model in eval mode (fresh per test: training tests mutate weights)."""
    return spec.build_model()


@pytest.fixture
def byte_tokenizer():
    from hatchlings.tokenization import build_byte_tokenizer

    return build_byte_tokenizer()


@pytest.fixture
def export_dir(tmp_path):
    """An empty folder to save a model + tokenizer into."""
    path = tmp_path / "export"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def real_text() -> str:
    """About 20 kB of real English/Python prose that ships with CPython (no download needed)."""
    from pydoc_data.topics import topics

    keys = sorted(topics)[:12]
    return "\n\n".join(topics[k] for k in keys)[:20_000]
