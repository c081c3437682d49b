"""Publish an exported model folder to the Hugging Face Hub (`hatchlings push`).

A Hub repo is loaded with `trust_remote_code=True`, so a push is checked first: a folder that would
load only on this machine (modeling code missing, no `auto_map`), or that ships pickles (which run
code on load), is refused before anything leaves the disk. The check lists files with the same
matcher and ignore patterns `upload_folder` uses, so what was checked is exactly what is uploaded.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from .errors import UsageError

# Training leftovers that live beside the exported model in a run folder: Trainer checkpoints (with
# pickled optimizer state), the trainer's and the exporter's staging folders, TensorBoard logs and
# file locks. Each appears both at the top and below, since fnmatch's `*` also crosses `/`.
IGNORE_PATTERNS = [
    "checkpoint-*/", "*/checkpoint-*/",
    ".export-*/", "*/.export-*/",
    ".staging/", "*/.staging/",
    "runs/", "*/runs/",
    "*.lock",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"

NO_TOKEN = "no Hugging Face token: run `hf auth login` or set HF_TOKEN"


def _listed_files(folder: Path) -> list[str]:
    """Relative posix paths that `upload_folder(ignore_patterns=IGNORE_PATTERNS)` would send.

    Mirrors huggingface_hub's own listing (`glob("**/*")`, files only, then `filter_repo_objects` with
    its default `.git` / `.cache/huggingface` patterns added), so the check cannot drift from the upload.
    """
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    every = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
    return list(filter_repo_objects(every, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def _module_file(module: str) -> str:
    """`sub.modeling_x` -> `sub/modeling_x.py`: where transformers looks for remote code."""
    return module.replace(".", "/") + ".py"


def _auto_map_modules(auto_map: dict) -> list[str]:
    """Module files named by `auto_map` values ("modeling_bdh.BdhForCausalLM", or a [slow, fast] pair).

    A `repo--module.Class` reference loads its code from another repo, so it needs no local file.
    """
    refs = []
    for value in auto_map.values():
        refs += value if isinstance(value, (list, tuple)) else [value]
    modules = []
    for ref in refs:
        if not isinstance(ref, str) or "--" in ref or "." not in ref:
            continue
        module = ref.rsplit(".", 1)[0]
        if module not in modules:
            modules.append(module)
    return [_module_file(m) for m in modules]


def _relative_imports(folder: Path, rel: str) -> list[str]:
    """Files that `rel` pulls in with `from .x import ...` / `from . import x`, relative to `folder`.

    Parsed with `ast` rather than a regex, so imports in strings or comments do not count and
    multi-line imports do. Imports under `try:` count too: transformers copies every relative import
    of remote code, guarded or not, and fails to load the model when one is missing.
    """
    try:
        tree = ast.parse((folder / rel).read_text(encoding="utf-8"), filename=rel)
    except SyntaxError as err:
        raise UsageError(f"{rel} is not valid Python (line {err.lineno}): {err.msg}") from None
    here = Path(rel).parent.parts
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if node.level - 1 > len(here):
            raise UsageError(f"{rel} imports from outside the model folder (`from {'.' * node.level}...`)")
        base = list(here[:len(here) - (node.level - 1)])
        if node.module:
            found.append("/".join(base + node.module.split(".")) + ".py")
        else:  # `from . import layers`: each name is a sibling module
            found += ["/".join(base + [alias.name]) + ".py" for alias in node.names]
    return found


def _check_code(folder: Path, files: set[str], config: dict) -> None:
    """Every module `auto_map` names exists, and so does everything those modules import relatively."""
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        raise UsageError("config.json has no `auto_map`: the Hub could not load this model with "
                         "trust_remote_code (export it with hatchlings.training.export.export_hub_folder)")
    pending, seen = _auto_map_modules(auto_map), set()
    while pending:
        rel = pending.pop(0)
        if rel in seen:
            continue
        seen.add(rel)
        if rel not in files:
            package = rel[:-3] + "/__init__.py"
            if package in files:
                rel = package
            else:
                raise UsageError(f"modeling file {rel} is missing from {folder} (needed by config.json's "
                                 "auto_map or imported by another modeling file)")
        pending += _relative_imports(folder, rel)


def _check_weights(folder: Path, files: set[str]) -> None:
    """A model.safetensors, or a sharded index whose every shard is present."""
    if WEIGHTS in files:
        return
    if WEIGHTS_INDEX not in files:
        raise UsageError(f"no {WEIGHTS} (or {WEIGHTS_INDEX}) in {folder}: export the model with "
                         "safe_serialization")
    try:
        shards = set(json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"{WEIGHTS_INDEX} in {folder} is not a valid shard index ({err})") from None
    for shard in sorted(shards):
        if shard not in files:
            raise UsageError(f"weight shard {shard} listed in {WEIGHTS_INDEX} is missing from {folder}")


def check_hub_folder(folder: str | Path) -> list[str]:
    """Validate an exported model folder; return the files (relative posix paths) a push would upload.

    Raises UsageError naming the first problem: a pickle (any file ending in .bin/.pt/.pth/.pkl/.pickle
    /.ckpt outside the ignored training leftovers), no safetensors weights, a config.json without
    `auto_map`, a modeling file that `auto_map` names or that one of them imports (`from .x import`)
    missing, no tokenizer.json, or no README.md.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    listed = _listed_files(folder)
    files = set(listed)
    pickles = [f for f in listed if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        more = f" (and {len(pickles) - 1} more)" if len(pickles) > 1 else ""
        raise UsageError(f"refusing to upload pickle file {pickles[0]}{more} from {folder}: pickles run code "
                         "when loaded; ship weights as safetensors and delete or move the pickle")
    _check_weights(folder, files)
    if "config.json" not in files:
        raise UsageError(f"no config.json in {folder}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise UsageError(f"config.json in {folder} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise UsageError(f"config.json in {folder} is not a JSON object")
    _check_code(folder, files, config)
    for required, what in (("tokenizer.json", "tokenizer"), ("README.md", "model card")):
        if required not in files:
            raise UsageError(f"no {required} ({what}) in {folder}")
    return listed


def _allow_pattern(path: str) -> str:
    """An fnmatch pattern that matches exactly `path` (brackets, `*` and `?` escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in path)


def _resolve_token(token: str | None) -> str:
    """The explicit token, else the logged-in one (HF_TOKEN, then the token file)."""
    if token:
        return token
    import huggingface_hub  # looked up at call time, so tests can patch huggingface_hub.get_token
    from huggingface_hub.errors import OIDCError

    try:
        found = huggingface_hub.get_token()
    except OIDCError as err:  # HF_OIDC_RESOURCE set but the exchange failed
        raise UsageError(f"could not get a Hugging Face token via OIDC: {err}") from None
    if not found:
        raise UsageError(NO_TOKEN)
    return found


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Check `folder`, create `repo_id` (and branch `revision`) if needed, upload; return the commit URL.

    Without `private` the repo is created with the account's default visibility (public unless an
    organisation defaults to private): passing `private=False` to huggingface_hub would force it public.
    An existing repo keeps its visibility either way. The upload sends only the checked files (an
    allowlist on top of the ignore patterns), so a file that appears after the check is not sent.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UsageError(f"bad --repo-id: {err}") from None
    files = check_hub_folder(folder)
    api = huggingface_hub.HfApi(token=_resolve_token(token))
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            folder_path=str(Path(folder).resolve()), repo_id=repo_id, repo_type="model", revision=revision,
            # fresh lists: upload_folder appends its default patterns to ignore_patterns in place
            ignore_patterns=list(IGNORE_PATTERNS), allow_patterns=[_allow_pattern(f) for f in files],
            commit_message=commit_message or f"Upload {len(files)} files with hatchlings push",
        )
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            raise UsageError(f"the Hub refused the push to {repo_id} (HTTP {status}): check that the token is "
                             "valid and has write access to that namespace") from None
        raise
    return getattr(info, "commit_url", None) or str(info)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `hatchlings push`."""
    parser.add_argument("folder", help="exported model folder (the output_dir of `hatchlings train`)")
    parser.add_argument("--repo-id", required=True, help="Hub repo, e.g. your-name/bdh-tiny (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    parser.add_argument("--revision", help="branch to push to (created if missing); default main")
    parser.add_argument("--token", help="Hub token; default: HF_TOKEN or `hf auth login` (safer than a flag)")
    parser.add_argument("--message", help="commit message")


def run(args: argparse.Namespace) -> int:
    """Push as `add_arguments` parsed it; print where it went."""
    url = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                      token=args.token, commit_message=args.message)
    branch = f" (branch {args.revision})" if args.revision else ""
    print(f"pushed {args.folder} to {args.repo_id}{branch}: {url}")
    return 0
