"""`hatchlings data get NAME` / `hatchlings data list`: the corpora the README and benchmarks use, fetched for you.

Why: the README's commands and the arena/probe defaults need tiny Shakespeare, WikiText-2 and Alpaca, and a
user's clone has none of them. A corpus that is a Hub dataset is loaded through `datasets` (the ecosystem's
way; `datasets` caches it) and written out as the plain text / JSONL files our commands take. A plain file
comes from a pinned URL and must match a pinned sha256, so everyone's numbers are computed on the same bytes.

Files go into one folder: `--dir`, else `$HATCHLINGS_DATA`, else `~/.cache/hatchlings/data`. Every file is
written to a temporary file beside its target and renamed into place only once complete (and verified), so
an interrupted or failed fetch never leaves a partial file that a later run would trust. Offline, the error
says in one line which file to place where. Nothing here downloads unless `get` is called.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, TextIO

from .errors import UsageError

CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60.0
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def data_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where data files live: `folder` (--dir), else $HATCHLINGS_DATA, else ~/.cache/hatchlings/data."""
    chosen = folder or os.environ.get("HATCHLINGS_DATA") or Path.home() / ".cache" / "hatchlings" / "data"
    return Path(chosen).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def staged(paths: list[Path]) -> Iterator[list[Path]]:
    """Names of temporary files beside `paths` (the block writes them), renamed onto `paths` only if the block
    succeeds, else deleted.

    Beside, because `os.replace` is atomic only within one filesystem: a reader sees the old file or the
    whole new one, never half. All files of a source are renamed together after all were written, so a
    failure in the last split does not leave the first ones behind either. Unique names (pid + random) let
    two fetches run at once; plain `open` (not mkstemp's owner-only mode) keeps the user's umask.
    """
    temps = [path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part") for path in paths]
    try:
        yield temps
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def download(url: str, sha256: str, path: Path, timeout: float = TIMEOUT_S) -> None:
    """Stream `url` into `path`, checking its length against Content-Length and its bytes against `sha256`.

    The length check is there because `http.client` returns a short body without error when the server
    closes mid-transfer; the hash would catch that too, but "broke off after N bytes" is the message that helps.
    """
    manual = f"place {url} at {path} (sha256 {sha256})"
    with staged([path]) as (temp,):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(temp, "wb") as out:
                announced = response.headers.get("Content-Length")
                digest, size = hashlib.sha256(), 0
                while chunk := response.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except NETWORK_ERRORS as err:
            raise UsageError(f"cannot download {url} ({getattr(err, 'reason', err)}); {manual}") from None
        if announced is not None and size != int(announced):
            raise UsageError(f"download of {url} broke off after {size:,} of {int(announced):,} bytes "
                             f"(nothing was kept); run again, or {manual}")
        if digest.hexdigest() != sha256:
            raise UsageError(f"{url} has sha256 {digest.hexdigest()}, expected {sha256} (changed upstream or "
                             f"corrupted in transit; nothing was kept); {manual}")


# ------------------------------------------------------------------------------------------------ sources

@dataclasses.dataclass(frozen=True)
class UrlSource:
    """One file from a pinned URL, trusted only with the pinned sha256."""

    name: str
    what: str
    license: str
    filename: str
    url: str
    sha256: str

    def files(self) -> dict[str, tuple[str, str]]:
        """File key (what `get` takes) -> (file name, where it comes from)."""
        return {self.name: (self.filename, self.url)}

    def has(self, folder: Path, filename: str) -> bool:
        path = folder / filename
        return path.is_file() and sha256_of(path) == self.sha256

    def fetch(self, folder: Path) -> None:
        download(self.url, self.sha256, folder / self.filename)


def write_wikitext(rows, out: TextIO) -> None:
    """WikiText lines as in the original files: the Hub keeps each line with its newline (one row per line)
    but stores the blank lines, " \\n" in the files, as ""."""
    for text in rows["text"]:
        out.write(text or " \n")


def write_instructions(rows, out: TextIO) -> None:
    """One {"instruction", "input", "output"} record per line: the flat form our training data loader takes."""
    for row in rows:
        out.write(json.dumps({key: row[key] for key in ("instruction", "input", "output")}, ensure_ascii=False)
                  + "\n")


@dataclasses.dataclass(frozen=True)
class HubSource:
    """Splits of a Hub dataset, loaded with `datasets.load_dataset` and each written as one file."""

    name: str
    what: str
    license: str
    dataset: str
    config: str | None
    splits: tuple[tuple[str, str, str], ...]  # (file key, split, file name)
    write: Callable[[object, TextIO], None]

    @property
    def origin(self) -> str:
        return f"{self.dataset} ({self.config})" if self.config else self.dataset

    def files(self) -> dict[str, tuple[str, str]]:
        return {key: (filename, f"{self.origin} {split}") for key, split, filename in self.splits}

    def has(self, folder: Path, filename: str) -> bool:
        return (folder / filename).is_file()

    def fetch(self, folder: Path) -> None:
        import datasets

        paths = [folder / filename for _, _, filename in self.splits]
        try:
            loaded = datasets.load_dataset(self.dataset, self.config)
        except OSError as err:  # offline (HF_HUB_OFFLINE=1 and not cached), unreachable, or not found
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            places = ", ".join(f"{filename} (split {split})" for _, split, filename in self.splits)
            raise UsageError(f"cannot load Hub dataset {self.origin} ({reason}); place {places} in {folder}") from None
        with staged(paths) as temps:
            for (_, split, _), temp in zip(self.splits, temps):
                with open(temp, "w", encoding="utf-8", newline="") as out:
                    self.write(loaded[split], out)


def _wikitext(name: str, config: str, what: str) -> HubSource:
    splits = tuple((f"{name}-{short}", split, f"{name}-{short}.txt")
                   for short, split in (("train", "train"), ("valid", "validation"), ("test", "test")))
    return HubSource(name, what, "CC BY-SA 3.0", "Salesforce/wikitext", config, splits, write_wikitext)


SOURCES = {source.name: source for source in (
    UrlSource("tinyshakespeare", "tiny Shakespeare, 1,115,394 bytes of plays (the arena's and probes' text)",
              "public domain text", "tinyshakespeare.txt",
              "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
              "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    _wikitext("wikitext2", "wikitext-2-v1", "WikiText-2 tokenized, with `<unk>` (the README's eval numbers)"),
    _wikitext("wikitext2-raw", "wikitext-2-raw-v1", "WikiText-2 raw text (no `<unk>`)"),
    UrlSource("alpaca-seed", "Alpaca's 175 human-written seed tasks (instruction + instances)",
              "CC BY-NC 4.0 (data)", "alpaca_seed_tasks.jsonl",
              "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/seed_tasks.jsonl",
              "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48"),
    HubSource("alpaca-cleaned", "Alpaca cleaned, 51,760 instruction/input/output records",
              "CC BY 4.0 (card; Alpaca's data: CC BY-NC 4.0)", "yahma/alpaca-cleaned", None,
              (("alpaca-cleaned", "train", "alpaca_cleaned.jsonl"),), write_instructions),
)}


def lookup(name: str) -> tuple[UrlSource | HubSource, list[str]]:
    """(source, file keys) for `name`: a source name means all its files, a file key (wikitext2-valid) one."""
    if name in SOURCES:
        return SOURCES[name], list(SOURCES[name].files())
    for source in SOURCES.values():
        if name in source.files():
            return source, [name]
    known = [key for source in SOURCES.values() for key in dict.fromkeys([source.name, *source.files()])]
    raise UsageError(f"unknown data {name!r}; known: {', '.join(known)}")


def get(name: str, folder: str | os.PathLike | None = None) -> list[Path]:
    """The paths of `name`'s files in the data folder, fetched first unless all are there and verified."""
    source, keys = lookup(name)
    target = data_dir(folder)
    files = source.files()
    if not all(source.has(target, filename) for filename, _ in files.values()):
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot create data folder {target}: {err.strerror}") from None
        print(f"fetching {source.name} into {target}", file=sys.stderr)
        source.fetch(target)
    return [target / files[key][0] for key in keys]


def cached_path(name: str) -> Path:
    """Where the file `name` (a file key, e.g. wikitext2-valid) is or would be in the data folder."""
    source, keys = lookup(name)
    if keys != [name]:
        raise ValueError(f"{name!r} names several files ({', '.join(keys)}); give one")
    return data_dir() / source.files()[name][0]


def default_file(name: str) -> Path:
    """The cached file `name` for a command's default; missing: how to fetch it. Never downloads: a benchmark
    or probe should not reach the network behind the user's back."""
    path = cached_path(name)
    if not path.is_file():
        raise UsageError(f"{path} not found: run `hatchlings data get {name}` (or pass --file)")
    return path


# ---------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = parser.add_subparsers(dest="data_command", required=True)
    get_parser = sub.add_parser("get", help="fetch a corpus; prints only its file path(s) on stdout")
    get_parser.add_argument("name", help="a name from `hatchlings data list` (a source, or one of its files)")
    list_parser = sub.add_parser("list", help="what can be fetched, from where, under which license, and whether "
                                              "it is already here")
    for each in (get_parser, list_parser):
        each.add_argument("--dir", default=None, help="data folder (default: $HATCHLINGS_DATA, else "
                                                      "~/.cache/hatchlings/data)")
    return parser


def _rows(folder: Path) -> list[dict]:
    return [{"name": key, "what": source.what, "source": origin, "license": source.license,
             "path": str(folder / filename), "present": "yes" if source.has(folder, filename) else "no"}
            for source in SOURCES.values() for key, (filename, origin) in source.files().items()]


def run(args: argparse.Namespace) -> int:
    if args.data_command == "get":
        for path in get(args.name, args.dir):
            print(path)
        return 0
    from .reports import Table

    rows = _rows(data_dir(args.dir))
    print(Table("Data (`hatchlings data get NAME`)", list(rows[0]), rows).markdown())
    return 0


__all__ = ["SOURCES", "cached_path", "data_dir", "default_file", "download", "get", "lookup"]
