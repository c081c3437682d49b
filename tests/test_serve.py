"""The playground (`hatchlings serve`, an export's app.py): what exports carry, the errors a user can make,
the page in a real browser, and the copied app.py where hatchlings cannot be imported.

The browser is Debian's `chromium` (.ci/run installs it) driven by Playwright, whose own browser download
cannot run on these machines; without either, the browser test skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from contract import REPO_ROOT
from hatchlings import serve
from hatchlings.architectures import RECORDS, ArchitectureRecord, record_for
from hatchlings.cli import main
from hatchlings.training.export import export_hub_folder
from test_bdh import SPEC as BDH
from test_hrm import SPEC as HRM

CONTEXT = 256  # tokens the tiny exports take: room to stream, and a too-long prompt is still cheap
STARTUP_S = 180  # importing gradio + transformers on a busy 2-core machine
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT_PATH = Path(REPO_ROOT)


@pytest.fixture
def gradio():
    """Tests that build or run the page need Gradio (the [serve] extra, also in [test]); export tests do not."""
    return pytest.importorskip("gradio", reason="the playground needs Gradio: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A plain-completion BDH export with a loss curve and an instruction-tuned HRM export (depth modes)."""
    root = tmp_path_factory.mktemp("serve")
    folders = []
    for spec, tuned in ((BDH, False), (HRM, True)):
        model, tokenizer = spec.build_model(), spec.make_tokenizer()
        tokenizer.model_max_length = CONTEXT
        log = [{"loss": 5.6 - 0.2 * step, "step": step} for step in range(1, 4)]
        folders.append(export_hub_folder(model, tokenizer, root / f"tiny-{spec.arch}", architecture=spec.arch,
                                         train_info={"data": "tiny.txt", "steps": 3},
                                         eval_results={"eval_loss": 5.0}, log_history=log,
                                         widget_prompts=["Hello"], instruction_tuned=tuned))
        readable_only(folders[-1], tokenizer)
    return folders


def readable_only(folder: Path, tokenizer) -> None:
    """Let the untrained model sample printable ASCII only (never eos), through its generation_config.json:
    every reply then runs to max new tokens, and its text visibly grows and reads well in a screenshot."""
    path = folder / "generation_config.json"
    config = json.loads(path.read_text())
    config["suppress_tokens"] = [i for i in range(len(tokenizer))
                                 if not ((text := tokenizer.decode([i])).isascii() and len(text) == 1
                                         and text.isprintable())]
    path.write_text(json.dumps(config, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll the page until it answers; fail with the server's output if it exits or never answers."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no answer from {url} within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def start(command: list[str], log: Path, port: int, *, cwd, env) -> subprocess.Popen:
    env = {**env, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_server(proc, f"http://127.0.0.1:{port}/", log)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------ export and errors

def test_every_export_is_also_a_gradio_space(exports):
    """app.py is the template itself, the controls come from the record, and the README's one YAML header
    holds the Space keys next to the model-card metadata the Hub reads."""
    from huggingface_hub import ModelCard

    bdh, hrm = exports
    assert (bdh / "app.py").read_bytes() == serve.APP_TEMPLATE.read_bytes()
    assert json.loads((bdh / "playground.json").read_text()) == {"architecture": "bdh", "generation_controls": {}}
    (label, spec), = json.loads((hrm / "playground.json").read_text())["generation_controls"].items()
    assert spec == {"kind": "choice", "choices": ["fast", "normal", "deep", "extreme"], "default": None,
                    "kwarg": "hrm_mode"}, (label, spec)
    data = ModelCard.load(bdh / "README.md").data.to_dict()
    assert {"sdk": "gradio", "app_file": "app.py", "sdk_version": serve.GRADIO_VERSION}.items() <= data.items()
    assert data["library_name"] == "transformers" and data["model-index"][0]["name"] == "tiny-bdh"
    assert "## Playground" in (bdh / "README.md").read_text()
    assert "torch" in (bdh / "requirements.txt").read_text()
    pins = dict(line.split("==") for line in (REPO_ROOT_PATH / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["gradio"] == serve.GRADIO_VERSION



def test_generation_controls_resolve_every_kind():
    """Record controls become JSON specs: plain kinds, fixed choices, choices from the config; bad kinds fail."""
    base = record_for("bdh")

    def record(controls):
        return ArchitectureRecord(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                                     "generation_controls": controls})

    config = type("Config", (), {"modes": {"a": 1, "b": 2}})()
    got = serve.generation_controls(record({"steps": ("int", 3, "num_steps"), "style": (("x", "y"), "x", "style"),
                                            "mode": ("config:modes", None, "mode")}), config)
    assert got == {"steps": {"kind": "int", "choices": None, "default": 3, "kwarg": "num_steps"},
                   "style": {"kind": "choice", "choices": ["x", "y"], "default": "x", "kwarg": "style"},
                   "mode": {"kind": "choice", "choices": ["a", "b"], "default": None, "kwarg": "mode"}}
    with pytest.raises(ValueError, match="unknown kind 'slider'"):
        serve.generation_controls(record({"s": ("slider", 1, "s")}), config)


@pytest.mark.parametrize("arch", sorted(RECORDS))
def test_every_records_controls_resolve(arch):
    """What each architecture declares becomes valid JSON for its app (tests/test_architectures.py lets the
    field be empty)."""
    record = RECORDS[arch]
    controls = serve.generation_controls(record, record.config_class(**record.arena_shape(32)))
    json.dumps(controls)
    assert all(spec["kind"] in ("int", "float", "bool", "choice") for spec in controls.values())


def test_serve_refuses_a_folder_that_is_not_an_export(gradio, tmp_path, capsys):
    """One line naming what is missing, exit status 2, before any server starts; the app says the same."""
    from hatchlings.serve import app_template

    (tmp_path / "notes.txt").write_text("not a model")
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hatchlings: error: ")
    assert f"{tmp_path} is not an exported model folder (missing config.json, tokenizer.json" in err
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="playground: error: .* is not an exported model folder"):
        app_template.main([str(tmp_path)])


def test_bad_prompts_get_messages_not_exceptions(gradio, exports):
    """Empty and over-long prompts are PlaygroundErrors (shown on the page); an extra control reaches generate."""
    from hatchlings.serve import app_template as app

    bdh, hrm = serve.load_entries([str(f) for f in exports])
    with pytest.raises(app.PlaygroundError, match="Empty prompt"):
        app.prompt_ids(bdh, "   ")
    with pytest.raises(app.PlaygroundError, match=f"Prompt too long: .* at most {CONTEXT}"):
        app.prompt_ids(bdh, "x" * (CONTEXT + 10))
    assert hrm.chat_template and not bdh.chat_template
    kwargs = app.generate_kwargs(hrm, CONTEXT - 5, 0.0, 0.9, 64, {"depth mode": "deep"})
    assert kwargs == {"max_new_tokens": 5, "do_sample": False, "hrm_mode": "deep"}
    ids = app.prompt_ids(hrm, "Hi")
    *_, (text, tokens, _) = app.stream(hrm, ids, kwargs)
    assert tokens == 5 and isinstance(text, str)
    demo = app.build_app([bdh, hrm])  # one bounded queue: a burst of requests is refused, not piled up
    assert demo._queue.max_size == app.QUEUE_SIZE and demo._queue.default_concurrency_limit == app.CONCURRENCY


# --------------------------------------------------------------------------------------------- clean room

def test_exported_app_runs_without_hatchlings(gradio, exports, tmp_path):
    """`python app.py` in the export, as a Space runs it, with hatchlings blocked from import, answers the
    page and a generation through Gradio's Python client."""
    from gradio_client import Client

    port, log = free_port(), tmp_path / "app.log"
    launcher = ("import sys; sys.path.insert(0, sys.argv[1]); from clean_room import _Block; sys.path.pop(0); "
                "sys.meta_path.insert(0, _Block()); import runpy; sys.argv = ['app.py']; "
                "runpy.run_path('app.py', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = start([sys.executable, "-c", launcher, str(TESTS_DIR)], log, port, cwd=exports[0], env=env)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        text, stats, status = client.predict("Hello", 0.0, 0.9, 6, api_name="/compare")
        assert "6 tokens" in stats and "tokens/s" in stats and status == "", (text, stats, status)
        *_, status = client.predict("", 0.0, 0.9, 6, api_name="/compare")
        assert "Empty prompt" in status
    finally:
        stop(proc)
    assert "blocked by the clean-room test" not in log.read_text(), log.read_text()[-2000:]


# ------------------------------------------------------------------------------------------------ browser

def browser_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no browser: Debian's chromium is not installed (`apt-get install -y chromium`, as .ci/run "
                    "does as root; `playwright install` cannot download one here)")
    return found


def test_playground_in_a_real_browser(gradio, exports, tmp_path):
    """A new user's session: chat streams a reply, side by side shows both models (from two tabs at once),
    bad input gets a message, the heat map draws; a screenshot is written."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install -e '.[test]'")
    chromium = browser_path()
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = start([sys.executable, "-m", "hatchlings.cli", "serve", *map(str, exports), "--port", str(port)], log,
                 port, cwd=REPO_ROOT, env=env)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            check_chat_streams(page)
            check_bad_input(page)
            check_side_by_side(browser, page, port)
            check_heat_map(page)
            page.get_by_role("tab", name="Chat").click()
            page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
            browser.close()
    finally:
        stop(proc)
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def check_chat_streams(page) -> None:
    """The reply's text is seen at five or more lengths before the final speed line appears."""
    page.locator("#chat-prompt textarea").fill("Once upon a time")
    page.locator("#chat-send").click()
    lengths, deadline = set(), time.monotonic() + 120
    while time.monotonic() < deadline:
        lengths.add(len(page.locator("#chatbot").inner_text()))
        if "tokens/s" in page.locator("#chat-status").inner_text():
            break
        time.sleep(0.02)
    assert "tokens/s" in page.locator("#chat-status").inner_text(), "the reply never finished"
    assert len(lengths) >= 5, f"the reply did not stream (lengths seen: {sorted(lengths)})"


def check_bad_input(page) -> None:
    """An empty and an over-long prompt each get a message; the page keeps working."""
    page.locator("#chat-prompt textarea").fill("")
    page.locator("#chat-send").click()
    sync_expect(page)("#chat-status", "Empty prompt")
    page.locator("#chat-prompt textarea").fill("x" * (CONTEXT + 10))
    page.locator("#chat-send").click()
    sync_expect(page)("#chat-status", "Prompt too long")


def check_side_by_side(browser, page, port: int) -> None:
    """Two tabs compare at the same time; both finish with tokens/s and length for both models."""
    other = browser.new_page()
    other.goto(f"http://127.0.0.1:{port}/")
    for tab in (page, other):
        tab.get_by_role("tab", name="Side by side").click()
        tab.locator("#sbs-prompt textarea").fill("The dragon")
    page.locator("#sbs-run").click()
    other.locator("#sbs-run").click()
    for tab in (page, other):
        for i in range(2):
            sync_expect(tab)(f"#sbs-stats-{i}", "tokens/s", timeout=120_000)
            assert "characters" in tab.locator(f"#sbs-stats-{i}").inner_text()
        assert tab.locator("#sbs-out-0").is_visible() and tab.locator("#sbs-out-1").is_visible()
        assert "tiny-bdh" in tab.locator("#sbs-stats-0").inner_text()
        assert "tiny-hrm" in tab.locator("#sbs-stats-1").inner_text()
    other.close()


def check_heat_map(page) -> None:
    page.get_by_role("tab", name="Neuron activity").click()
    page.locator("#act-prompt textarea").fill("Hello")
    page.locator("#act-run").click()
    sync_expect(page)("#heatmap", "x_active", timeout=60_000)
    assert page.locator("#heatmap table").count() == 2  # x_active and y_active
    page.get_by_role("tab", name="Models").click()
    sync_expect(page)("body", "counted on the loaded weights")


def sync_expect(page):
    """`check(selector, text)`: wait until the element's text contains `text`."""
    from playwright.sync_api import expect

    def check(selector: str, text: str, timeout: int = 30_000) -> None:
        expect(page.locator(selector).first).to_contain_text(text, timeout=timeout)

    return check
