"""The package as a wheel user gets it: built with `python -m build`, installed into a fresh virtualenv, run
from a folder that is not the checkout.

Everything else in the suite runs against the editable checkout, where a file the wheel forgot (a preset, the
model-card template, the `evaluate` metric script) is still found on disk. Here the wheel is the only source:

* the wheel's file list is checked against what the code opens at run time (every path built from
  `__file__`, every file under hatchlings/, every preset under configs/), and against the wheel that the
  sdist builds, so what an index would serve is the same either way;
* the installed wheel trains `--config bdh-tiny` by name, generates, evaluates, runs under
  `accelerate launch -m hatchlings.train`, and lists the presets for a name that does not exist.

The quick tests at the end check the same entry points in this process: a preset by name, `--version`, and
`python -m hatchlings.train` / train.py as one code path.

Builds use `--no-isolation`: an isolated build makes a fresh environment and downloads setuptools into it for each
of the three builds, which needs a package index and costs more than the builds themselves; the test extra
installs `build` and `setuptools` instead. The virtualenv reuses the installed dependencies
(`--system-site-packages`) and gets only the wheel (`--no-deps --no-index`), so nothing is downloaded either.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hatchlings"
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # 3.10: no tomllib
#: functions that build a path from `__file__` at call time (module constants are found on their own), and why
#: what they open is covered
PATH_FUNCTIONS = {
    ("hatchlings/training/config.py", "presets_dir"): "the presets: every configs/**/*.yaml is checked below",
    ("hatchlings/serve/app_template.py", "main"): "runs as an export's app.py: the export's folder, not the package",
}
#: what a build must not see: other builds' leftovers (setuptools reuses a stale build/lib) and local runs
NOT_SOURCE_AT_TOP = {".git", "build", "dist", "runs", "out", ".venv", ".pytest_cache", ".benchmarks"}
#: the overrides that keep bdh-tiny (a ~10 minute preset) to seconds: tiny blocks and batches, the final evaluation
#: in one batch (its 200-token sample has no flag and is most of what is left: ~5-10 s on 2 quiet cores)
FAST = ["--max_steps", "3", "--block_size", "32", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "32", "--max_eval_blocks", "2", "--warmup_steps", "0", "--logging_steps", "1"]


def _ignore_non_source(folder: str, names: list[str]) -> set[str]:
    top_level = NOT_SOURCE_AT_TOP if Path(folder) == REPO else set()
    return {n for n in names if n in top_level or n == "__pycache__" or n.endswith((".pyc", ".egg-info"))}


def _run(cmd: list, cwd: Path, env: dict | None = None, expect: int = 0, timeout: int = 600):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == expect, f"{cmd} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def _build(source: Path, out: Path, *what: str) -> list[Path]:
    _run([sys.executable, "-m", "build", "--no-isolation", *what, "--outdir", out, source], cwd=out.parent)
    return sorted(out.iterdir())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and wheel built from a copy of the source tree, and a second wheel built from that sdist.

    A copy, because setuptools writes build/ and *.egg-info into the folder it builds and ships whatever a
    stale build/lib still holds: the checkout stays clean and the build starts fresh."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=_ignore_non_source)
    (tmp / "dist").mkdir()
    wheel, sdist = _build(source, tmp / "dist", "--sdist", "--wheel")  # sorted: -py3-none-any.whl before .tar.gz
    (tmp / "from_sdist").mkdir()
    (wheel_from_sdist,) = _build(sdist, tmp / "from_sdist", "--wheel")
    assert sdist.name == f"hatchlings-{VERSION}.tar.gz" and wheel.name == f"hatchlings-{VERSION}-py3-none-any.whl"
    return {"sdist": sdist, "wheel": wheel, "wheel_from_sdist": wheel_from_sdist}


def _files_from_file_constants() -> set[Path]:
    """Every file behind a module-level path built from `__file__` (templates, metric scripts, ...), found by
    reading the package's source, so a new one is checked without editing this test.

    A `__file__` inside a function must be listed in PATH_FUNCTIONS (and its files added to the expectation
    below), or the test fails: that is a file the code opens which nothing here would otherwise look for."""
    files = set()
    for source in sorted(PACKAGE.rglob("*.py")):
        rel = source.relative_to(REPO).as_posix()
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=rel)
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__file__" in ast.unparse(node):
                assert (rel, node.name) in PATH_FUNCTIONS, f"{rel}: {node.name}() builds a path from __file__; " \
                                                           f"add it to PATH_FUNCTIONS and check its files here"
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and "__file__" in ast.unparse(node.value):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    path = Path(getattr(importlib.import_module(module), target.id))
                    found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                    assert found, f"{rel}: {target.id} = {path} names nothing on disk"
                    files.update(p for p in found if "__pycache__" not in p.parts)
    return files


def _wheel_path(path: Path) -> str:
    """Where a source file lands in the wheel: hatchlings/... as is, configs/... as hatchlings/presets/..."""
    from hatchlings.training.config import presets_dir

    path = path.resolve()
    if path.is_relative_to(presets_dir().resolve()):
        return "hatchlings/presets/" + path.relative_to(presets_dir().resolve()).as_posix()
    assert path.is_relative_to(PACKAGE), f"the code opens {path}, outside the package: no wheel carries it"
    return path.relative_to(REPO).as_posix()


@pytest.mark.slow  # the builds: ~10-20 s on 2 cores
def test_wheel_holds_what_the_code_opens_and_nothing_else(built):
    """The wheel's package files are exactly the package folder's files plus every preset, and every file the
    code opens by a path (found by reading the source) is among them."""
    names = zipfile.ZipFile(built["wheel"]).namelist()
    shipped = {n for n in names if not n.startswith(f"hatchlings-{VERSION}.dist-info/")}
    opened = {_wheel_path(p) for p in _files_from_file_constants()}
    from hatchlings.training.config import presets_dir, preset_names

    presets = {_wheel_path(p) for p in presets_dir().rglob("*.yaml")}
    in_package = {_wheel_path(p) for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix != ".pyc"}
    assert {"hatchlings/presets/bdh-tiny.yaml", "hatchlings/presets/accelerate/fsdp.yaml"} <= presets
    assert {"hatchlings/model_cards/template.md", "hatchlings/metrics/lm_perplexity/lm_perplexity.py"} <= opened
    assert len(presets) > len(preset_names()) >= 2
    assert sorted(opened - shipped) == [], "opened at run time but not in the wheel (add to package-data)"
    assert sorted((in_package | presets) - shipped) == [], "in the package folder but not in the wheel"
    assert sorted(shipped - in_package - presets) == [], "in the wheel but not in the source (a stale build?)"


@pytest.mark.slow
def test_sdist_builds_the_same_wheel(built):
    """Building the wheel from the sdist (as pip does from an index that has only the sdist) gives the same files;
    the sdist holds configs/ once, as the presets' one source."""
    assert sorted(zipfile.ZipFile(built["wheel_from_sdist"]).namelist()) == \
        sorted(zipfile.ZipFile(built["wheel"]).namelist())
    with tarfile.open(built["sdist"]) as sdist:
        listing = sdist.getnames()
    assert f"hatchlings-{VERSION}/configs/bdh-tiny.yaml" in listing
    assert not [m for m in listing if "/hatchlings/presets/" in m]  # no second copy of the presets


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> tuple[Path, dict]:
    """A fresh virtualenv holding only the wheel (its dependencies come from this environment), and the
    environment for its commands: its bin/ first, an empty Hugging Face home, offline."""
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "env"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", env_dir], cwd=root)
    python = env_dir / "bin" / "python"
    # the venv has no pip of its own: this environment's pip, run by the venv's python, installs into the venv
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", built["wheel"]], cwd=root)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(env_dir),
               HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    return env_dir, env


@pytest.mark.slow  # a virtualenv and six fresh processes, two of them training: ~1-2 min on 2 quiet cores
def test_installed_wheel_runs_by_preset_name(venv, tmp_path):
    """From a folder outside the checkout: train bdh-tiny by name, generate, evaluate, `accelerate launch -m`,
    and an unknown preset name, all with the wheel's own code and files."""
    env_dir, env = venv
    work = tmp_path / "elsewhere"
    work.mkdir()
    from pydoc_data.topics import topics

    (work / "corpus.txt").write_text("\n\n".join(topics[k] for k in sorted(topics)[:4])[:8000], encoding="utf-8")
    python, hatchlings = env_dir / "bin" / "python", env_dir / "bin" / "hatchlings"

    # one process for both (each start imports torch and Transformers): where the code and presets come from, and
    # `hatchlings --version` through the console script's own main()
    shown = _run([python, "-c", "import hatchlings; from hatchlings.training.config import presets_dir; "
                                "print(hatchlings.__file__); print(presets_dir()); "
                                "from hatchlings.cli import main; main(['--version'])"],
                 cwd=work, env=env).stdout.splitlines()
    assert all(Path(p).is_relative_to(env_dir) for p in shown[:2]), shown  # the wheel's copy, not the checkout
    assert shown[2] == f"hatchlings {VERSION}"  # from the wheel's metadata, which pyproject.toml wrote

    _run([hatchlings, "train", "--config", "bdh-tiny", "--train_file", "corpus.txt", "--output_dir", "run", *FAST],
         cwd=work, env=env)
    assert (work / "run" / "model.safetensors").is_file()
    assert "## Model details" in (work / "run" / "README.md").read_text(encoding="utf-8")  # the card template shipped
    generated = _run([hatchlings, "generate", "run", "--prompt", "The ", "--max_new_tokens", "8",
                      "--temperature", "0"], cwd=work, env=env).stdout
    assert generated.startswith("The ")
    _run([hatchlings, "eval", "run", "--file", "corpus.txt", "--block_size", "32", "--max_tokens", "256"],
         cwd=work, env=env)
    assert (work / "run" / "eval_corpus.json").is_file()  # scored by the shipped `evaluate` metric

    launched = _run([python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hatchlings.train",
                     "--config", "bdh-tiny", "--train_file", "corpus.txt", "--output_dir", "launched", *FAST],
                    cwd=work, env=env)
    assert (work / "launched" / "model.safetensors").is_file() and "[hatchlings] done:" in launched.stdout

    unknown = _run([hatchlings, "train", "--config", "bdh-enormous"], cwd=work, env=env, expect=2)
    assert unknown.stderr.count("\n") == 1 and unknown.stderr.startswith("hatchlings: error: config file not found")
    assert "shipped presets, usable by name: bdh-small, bdh-tiny" in unknown.stderr


def test_presets_by_name_and_by_path(tmp_path):
    """`--config bdh-tiny` (or `bdh-tiny.yaml`) is configs/bdh-tiny.yaml; a path still works; an unknown name
    lists the presets, one line."""
    from hatchlings.training import UsageError, parse_run_config

    out = ["--output_dir", str(tmp_path / "out")]
    by_name = parse_run_config(["--config", "bdh-tiny", *out])
    assert by_name.architecture == "bdh" and by_name.training.max_steps == 300
    assert parse_run_config(["--config", "bdh-tiny.yaml", *out]).model == by_name.model
    assert parse_run_config(["--config", str(REPO / "configs" / "bdh-tiny.yaml"), *out]).model == by_name.model
    for missing in ("bdh-enormous", str(tmp_path / "bdh-tiny.yaml")):  # a path is never looked up by name
        with pytest.raises(UsageError, match=r"^config file not found: .*usable by name: bdh-small, bdh-tiny") as err:
            parse_run_config(["--config", missing, *out])
        assert "\n" not in str(err.value)


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    from hatchlings.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"hatchlings {version('hatchlings')}\n"
    assert version("hatchlings") == VERSION  # the editable install's metadata is pyproject.toml's


def test_module_and_train_py_are_one_entry_point(capsys, monkeypatch):
    """`python -m hatchlings.train` (what `accelerate launch -m` runs) and the checkout's train.py reach the same
    parser, each named as typed in --help."""
    import runpy

    from hatchlings.train import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m hatchlings.train ")
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: train.py ")
