"""The contract every hatchlings architecture passes (DESIGN.md §2), written once.

A test module `tests/test_<arch>.py` describes its architecture and pulls the whole contract in:

    SPEC = ArchSpec(arch="bdh", tiny_config=lambda **kw: BdhConfig(**{**TINY, **kw}), ...)
    globals().update(make_contract_tests(SPEC))

The checks live in `tests/checks_<topic>.py` modules; each `check_<name>(spec, *fixtures)` asserts one part
of the contract and becomes `test_<name>`. A module may define `parametrizations(spec) -> {name: mark}` for
its parametrized checks. Modules are found by listing this folder, so adding a topic edits nothing here.
Nothing in the contract knows a particular architecture: its facts (recurrent state? repeated layers? a hard
maximum length? depth modes?) come from the spec's fields. The module must name its spec `SPEC` (the
conftest fixtures read it).
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, PreTrainedConfig

from hatchlings.architectures import record_for
from hatchlings.tokenization import build_tokenizer

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)


@dataclass(frozen=True)
class ArchSpec:
    """What the shared contract needs to know about one architecture.

    tiny_config(**overrides) -> a small config (tests must stay fast on two CPU cores), deterministic in
        train mode (no dropout) so that train-mode gradients can be compared.
    modeling_files: the .py files `save_pretrained` must copy next to the weights.
    invalid_configs: (overrides, field name) pairs; each must raise a ValueError that names the field.
    depth_modes: config overrides under which causality must hold (e.g. HRM's fast/normal/deep).
    causal_overrides, causal_length: config overrides and sequence length for the causality, padding and
        cached-decoding checks, chosen so that the sequence really crosses the model's internal block
        boundaries (e.g. BDH's attention chunks) and the state carried across them is exercised.
    has_recurrent_state: the generation cache has a fixed size (checked: no growth with context).
    repeats_layers: layers share/repeat weights, so gradient checkpointing is expected and checked.
    max_length: a hard maximum sequence length, or None.
    plain_path: config overrides that switch the model to its plain-autograd path (the same math in plain torch
        ops, no fused kernels or hand-written backward), e.g. {"handwritten_backward": False}.
    fast_path_ops: names of autograd nodes (`type(grad_fn).__name__`) that only the fast path puts into the
        backward graph, with causal_overrides: the reference check asserts they appear on the fast path and
        not on the plain one, so it cannot pass by comparing the plain path twice.
    compile_unsupported: why torch.compile cannot work for this architecture, or None (then it must work).
    """

    arch: str
    tiny_config: Callable[..., PreTrainedConfig]
    modeling_files: tuple[str, ...]
    invalid_configs: tuple[tuple[dict, str], ...] = ()
    depth_modes: tuple[dict, ...] = ({},)
    causal_overrides: dict = field(default_factory=dict)
    causal_length: int = 13
    has_recurrent_state: bool = False
    repeats_layers: bool = False
    max_length: int | None = None
    plain_path: dict = field(default_factory=dict)
    fast_path_ops: tuple[str, ...] = ()
    compile_unsupported: str | None = None

    @property
    def model_type(self) -> str:
        return f"hatchlings_{self.arch}"

    def make_tokenizer(self):
        """The architecture's own tokenizer kind (its record's), so no check assumes byte ids."""
        return _tokenizer_of_kind(record_for(self.arch).tokenizer)

    def build_model(self, seed: int = 0, **overrides):
        """A seeded, freshly initialised tiny causal LM in eval mode, built through the Auto classes."""
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(self.tiny_config(**overrides)).eval()


def _tokenizer_of_kind(kind: str):
    """A fresh tokenizer of `kind`; learned kinds learn from a fixed slice of Python's documentation (ships
    with CPython), so every check sees the same vocabulary."""
    from pydoc_data.topics import topics

    texts = None if kind == "byte" else [topics[name] for name in sorted(topics)[:40]]
    return build_tokenizer(kind, texts=texts)


def random_ids(vocab: int, *shape: int, seed: int = 0, high: int | None = None) -> torch.Tensor:
    """Reproducible token ids in [0, high or vocab)."""
    return torch.randint(0, high or vocab, shape, generator=torch.Generator().manual_seed(seed))


def close(actual, expected, tol: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


# ------------------------------------------------------------------------------------------ collection

def contract_checks() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """Every `check_*` function defined in a `tests/checks_*.py` module, and each module's optional
    `parametrizations(spec)`.

    The modules are found by listing this folder, so a helper adding checks writes its own module and edits
    nothing here. A check name defined twice is an error: one would silently shadow the other.
    """
    checks, parametrizers = {}, {}
    for filename in sorted(os.listdir(TESTS_DIR)):
        if not (filename.startswith("checks_") and filename.endswith(".py")):
            continue
        module = importlib.import_module(filename.removesuffix(".py"))
        for name, fn in vars(module).items():
            if name.startswith("check_") and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                if name in checks:
                    raise RuntimeError(f"{name} is defined in {checks[name].__module__} and {module.__name__}")
                checks[name] = fn
        if hasattr(module, "parametrizations"):
            parametrizers[module.__name__] = module.parametrizations
    return checks, parametrizers


def make_contract_tests(spec: ArchSpec) -> dict[str, Callable]:
    """Every contract check as a pytest function `test_<name>(*fixtures)` bound to spec.

    The test's signature is the check's minus `spec`, so pytest injects the same fixtures (tmp_path,
    real_text, tiny_model, export_dir) and parameters. Put the result into a test module's globals().
    """
    checks, parametrizers = contract_checks()
    marks = {}
    for parametrize in parametrizers.values():
        marks.update(parametrize(spec))
    unknown = set(marks) - {name.removeprefix("check_") for name in checks}
    assert not unknown, f"parametrizations for checks that do not exist: {sorted(unknown)}"
    tests = {}
    for check_name, check in checks.items():
        name = check_name.removeprefix("check_")

        def test(*args, _check=check, **kwargs):
            return _check(spec, *args, **kwargs)

        test.__name__ = test.__qualname__ = f"test_{name}"
        test.__doc__ = check.__doc__
        test.__signature__ = inspect.Signature(list(inspect.signature(check).parameters.values())[1:])
        tests[test.__name__] = marks[name](test) if name in marks else test
    return tests


__all__ = ["ArchSpec", "close", "contract_checks", "make_contract_tests", "random_ids"]
