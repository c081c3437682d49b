"""`hatchlings data get|list`: pinned-URL downloads against a real local HTTP server (good, corrupted and dropped
transfers), the Hub path's conversion on the shared copies with `datasets.load_dataset` patched, the offline
message, and the arena/probe defaults. Nothing here touches the internet."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from hatchlings import data_sources
from hatchlings.cli import main
from hatchlings.training import UsageError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (SHARED / "tinyshakespeare.txt").is_file(), reason="../shared/data is missing")


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<good|corrupt|drop>/<shared file>: the shared copy, one byte flipped, or cut off after half of the
    body with the full Content-Length announced."""

    def do_GET(self):
        self.server.requests.append(self.path)
        kind, _, name = self.path.strip("/").partition("/")
        data = (SHARED / name).read_bytes()
        if kind == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2] if kind == "drop" else data)  # HTTP/1.0: the connection then closes

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve_from(monkeypatch, url: str) -> None:
    """Point the tiny Shakespeare source at `url` (same pinned sha256)."""
    source = dataclasses.replace(data_sources.SOURCES["tinyshakespeare"], url=url)
    monkeypatch.setitem(data_sources.SOURCES, "tinyshakespeare", source)


def url(server, kind: str) -> str:
    return f"http://127.0.0.1:{server.server_port}/{kind}/tinyshakespeare.txt"


def error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""  # `T=$(hatchlings data get …)` must not capture anything on failure
    last = captured.err.splitlines()[-1]
    assert last.startswith("hatchlings: error: ")
    return last


def test_download_is_the_shared_copy_printed_alone_and_not_repeated(server, monkeypatch, tmp_path, capsys):
    serve_from(monkeypatch, url(server, "good"))
    target = tmp_path / "data"
    for _ in range(2):
        assert main(["data", "get", "tinyshakespeare", "--dir", str(target)]) == 0
        assert capsys.readouterr().out == f"{target / 'tinyshakespeare.txt'}\n"
    assert (target / "tinyshakespeare.txt").read_bytes() == (SHARED / "tinyshakespeare.txt").read_bytes()
    assert server.requests == ["/good/tinyshakespeare.txt"]  # present and verified: no second download
    assert os.listdir(target) == ["tinyshakespeare.txt"]  # no temporary file left beside it
    (target / "tinyshakespeare.txt").write_text("edited by hand")  # fails verification: fetched again
    assert main(["data", "get", "tinyshakespeare", "--dir", str(target)]) == 0
    assert len(server.requests) == 2
    assert (target / "tinyshakespeare.txt").read_bytes() == (SHARED / "tinyshakespeare.txt").read_bytes()


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "has sha256 "),
    ("drop", "broke off after 557,697 of 1,115,394 bytes (nothing was kept)")])
def test_bad_transfer_is_named_and_leaves_nothing(server, monkeypatch, tmp_path, capsys, kind, message):
    serve_from(monkeypatch, url(server, kind))
    assert main(["data", "get", "tinyshakespeare", "--dir", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert message in line and f"at {tmp_path / 'tinyshakespeare.txt'} (sha256 86c4e6aa" in line
    assert os.listdir(tmp_path) == []


def test_unreachable_url_says_which_file_to_place_where(monkeypatch, tmp_path, capsys):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/input.txt"
    serve_from(monkeypatch, dead)
    assert main(["data", "get", "tinyshakespeare", "--dir", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert f"cannot download {dead} (" in line
    assert line.endswith(f"place {dead} at {tmp_path / 'tinyshakespeare.txt'} "
                         f"(sha256 {data_sources.SOURCES['tinyshakespeare'].sha256})")
    assert os.listdir(tmp_path) == []


def hub_rows(path: Path) -> Dataset:
    """A file as the Hub stores WikiText: one row per line, newline kept, blank lines (" \\n") as ""."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return Dataset.from_dict({"text": [line + "\n" if line.strip() else "" for line in lines]})


@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` answering from `fake_hub.answer`, recording what it was asked."""
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return load_dataset.answer

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    load_dataset.calls = calls
    return load_dataset


def test_wikitext_splits_are_written_as_the_original_files(fake_hub, tmp_path):
    valid, test = hub_rows(SHARED / "wikitext2-valid.txt"), hub_rows(SHARED / "wikitext2-test.txt")
    fake_hub.answer = DatasetDict({"train": test, "validation": valid, "test": test})
    assert data_sources.get("wikitext2-valid", tmp_path) == [tmp_path / "wikitext2-valid.txt"]
    assert fake_hub.calls == [("Salesforce/wikitext", "wikitext-2-v1")]
    for name in ("wikitext2-valid.txt", "wikitext2-test.txt"):
        assert (tmp_path / name).read_bytes() == (SHARED / name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["wikitext2-test.txt", "wikitext2-train.txt", "wikitext2-valid.txt"]
    assert data_sources.get("wikitext2", tmp_path) == [tmp_path / f"wikitext2-{s}.txt" for s in ("train", "valid",
                                                                                                   "test")]
    assert len(fake_hub.calls) == 1  # all three present: not loaded again


def test_a_failing_split_leaves_none_of_the_files(fake_hub, tmp_path):
    valid = hub_rows(SHARED / "wikitext2-valid.txt")
    fake_hub.answer = DatasetDict({"train": valid, "validation": valid, "test": Dataset.from_dict({"body": ["x"]})})
    with pytest.raises(ValueError, match="Column 'text' doesn't exist"):  # in the last split written
        data_sources.get("wikitext2-raw", tmp_path)
    assert fake_hub.calls == [("Salesforce/wikitext", "wikitext-2-raw-v1")]
    assert os.listdir(tmp_path) == []


def test_alpaca_cleaned_becomes_jsonl_our_training_loader_takes(fake_hub, tmp_path):
    from hatchlings.tokenization import build_byte_tokenizer
    from hatchlings.training import DataConfig
    from hatchlings.training.data import build_datasets

    tasks = [json.loads(line) for line in (SHARED / "alpaca_seed_tasks.jsonl").read_text().splitlines()]
    records = [{"instruction": t["instruction"], "input": i["input"], "output": i["output"]}
               for t in tasks for i in t["instances"]]
    extra = {"text": ["a column the file does not need"] * len(records)}
    fake_hub.answer = DatasetDict({"train": Dataset.from_list(records).add_column("text", extra["text"])})
    (path,) = data_sources.get("alpaca-cleaned", tmp_path)
    assert fake_hub.calls == [("yahma/alpaca-cleaned", None)]
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == records
    train, val, _ = build_datasets(DataConfig(train_file=[str(path)], block_size=1024), build_byte_tokenizer())
    assert len(train) + len(val) > 150 and -100 in train[0]["labels"]  # instruction examples, prompt unscored


@pytest.mark.slow  # a fresh process (HF_HUB_OFFLINE is read at import): ~10-30 s of imports on 2 cores
def test_hub_offline_says_which_files_to_place_where(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HATCHLINGS_DATA"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))  # an empty `datasets` cache: nothing to load
    target = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "hatchlings.cli", "data", "get", "wikitext2", "--dir", str(target)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.splitlines()[-1]
    assert line.startswith("hatchlings: error: cannot load Hub dataset Salesforce/wikitext (wikitext-2-v1) (")
    assert line.endswith("place wikitext2-train.txt (split train), wikitext2-valid.txt (split validation), "
                         f"wikitext2-test.txt (split test) in {target}")
    assert os.listdir(target) == []


def test_list_and_get_find_verified_files_in_hatchlings_data(monkeypatch, capsys):
    monkeypatch.setenv("HATCHLINGS_DATA", str(SHARED))  # read-only: a download attempt would fail
    assert main(["data", "list"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    present = {row[0].lstrip("| "): row[-1].rstrip(" |") for row in rows}
    assert present.pop("tinyshakespeare") == present.pop("alpaca-seed") == "yes"  # the pinned sha256s match
    assert present.pop("wikitext2-valid") == present.pop("wikitext2-test") == "yes"
    assert set(present.values()) == {"no"} and "alpaca-cleaned" in present
    assert data_sources.get("alpaca-seed") == [SHARED / "alpaca_seed_tasks.jsonl"]


def test_defaults_point_at_the_fetched_file_or_say_how_to_fetch_it(monkeypatch, tmp_path, capsys):
    from hatchlings.bench.arena import check_file
    from hatchlings.probes import common

    monkeypatch.setenv("HATCHLINGS_DATA", str(tmp_path))
    fetch = "run `hatchlings data get tinyshakespeare` (or pass --file)"
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'tinyshakespeare.txt'} not found: {fetch}")):
        common.load_corpus(None)
    with pytest.raises(UsageError, match=re.escape("or fetch tiny Shakespeare: `hatchlings data get tinyshakespeare`")):
        check_file(str(tmp_path / "tinyshakespeare.txt"))
    monkeypatch.setenv("HATCHLINGS_DATA", str(SHARED))
    corpus = common.load_corpus(None)
    assert corpus.name == str(SHARED / "tinyshakespeare.txt") and len(corpus.data) == 1_115_394
    assert main(["data", "get", "wikitext"]) == 2
    assert "unknown data 'wikitext'; known: tinyshakespeare, wikitext2, wikitext2-train" in capsys.readouterr().err
