"""`hatchlings push`: a folder is checked before anything is uploaded, and the Hub API gets the right call.

Every Hub method is patched and socket connects raise, so nothing here can reach the network.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from types import SimpleNamespace
from unittest.mock import MagicMock, patch

import pytest
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from hatchlings import hub
from hatchlings.errors import UsageError

COMMIT_URL = "https://huggingface.co/me/bdh-tiny/commit/0123456789abcdef"
LEFTOVERS = ["checkpoint-2/optimizer.pt", "checkpoint-2/model.safetensors", "runs/events.out.tfevents.1",
             ".export-abc123/model.safetensors", ".staging/checkpoint-4/optimizer.pt", "upload.lock"]


@pytest.fixture(autouse=True, scope="module")
def no_network():
    """A guard: any test (or library) that tries to open a connection fails loudly instead."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    with patch.object(socket.socket, "connect", refuse), patch.object(socket.socket, "connect_ex", refuse):
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real folder from export_hub_folder, written once; tests work on copies."""
    from transformers import AutoModelForCausalLM

    import hatchlings
    from hatchlings.tokenization import build_byte_tokenizer
    from hatchlings.training.export import export_hub_folder

    config = hatchlings.BdhConfig(hidden_size=32, num_attention_heads=2, mlp_internal_dim_multiplier=4,
                                  num_hidden_layers=2, dropout=0.0)
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path_factory.mktemp("hub") / "bdh-tiny"
    export_hub_folder(model, build_byte_tokenizer(), out, architecture="bdh",
                      train_info={"steps": 1, "hardware": "CPU"}, eval_results={"eval_loss": 2.0, "dataset": "x"},
                      log_history=[], widget_prompts=["The "])
    return out


@pytest.fixture
def folder(exported, tmp_path):
    path = tmp_path / "bdh-tiny"
    shutil.copytree(exported, path)
    return path


@pytest.fixture
def hub_api():
    """HfApi's network methods, patched; autospec passes `self`, so the token the client holds is visible."""
    with patch.object(HfApi, "create_repo", autospec=True) as create_repo, \
            patch.object(HfApi, "create_branch", autospec=True) as create_branch, \
            patch.object(HfApi, "upload_folder", autospec=True,
                         return_value=CommitInfo(commit_url=COMMIT_URL, commit_message="m", commit_description="",
                                                 oid="0123456789abcdef")) as upload_folder, \
            patch("huggingface_hub.get_token", return_value="hf_logged_in") as get_token:
        yield SimpleNamespace(create_repo=create_repo, create_branch=create_branch, upload_folder=upload_folder,
                              get_token=get_token)


def test_network_guard_is_active():
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def _add(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_exported_folder_passes_and_leftovers_are_not_listed(folder):
    _add(folder, *LEFTOVERS)
    files = hub.check_hub_folder(folder)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "generation_config.json",
            "configuration_bdh.py", "modeling_bdh.py", "layers.py", "cache.py"} <= set(files)
    assert not set(files) & set(LEFTOVERS)


def test_push_sends_the_checked_folder(folder, hub_api):
    _add(folder, *LEFTOVERS)
    url = hub.push_folder(folder, "me/bdh-tiny", private=True, revision="dev", commit_message="first")
    assert url == COMMIT_URL
    api, repo_id = hub_api.create_repo.call_args.args
    assert repo_id == "me/bdh-tiny" and api.token == "hf_logged_in"
    assert hub_api.create_repo.call_args.kwargs == {"private": True, "exist_ok": True, "repo_type": "model"}
    hub_api.create_branch.assert_called_once_with(api, "me/bdh-tiny", branch="dev", repo_type="model",
                                                  exist_ok=True)
    kwargs = hub_api.upload_folder.call_args.kwargs
    assert kwargs["folder_path"] == str(folder.resolve())
    assert (kwargs["repo_id"], kwargs["revision"], kwargs["repo_type"]) == ("me/bdh-tiny", "dev", "model")
    assert kwargs["commit_message"] == "first"
    listed = hub.check_hub_folder(folder)
    # Applied the way huggingface_hub applies them, the patterns keep exactly the checked files.
    candidates = listed + LEFTOVERS + ["sub/checkpoint-9/x.safetensors"]
    assert list(filter_repo_objects(candidates, ignore_patterns=kwargs["ignore_patterns"])) == listed
    assert list(filter_repo_objects(candidates, allow_patterns=kwargs["allow_patterns"])) == listed


def test_default_visibility_main_branch_and_explicit_token(folder, hub_api):
    hub.push_folder(folder, "me/bdh-tiny", token="hf_explicit")
    api, _ = hub_api.create_repo.call_args.args
    assert api.token == "hf_explicit"
    hub_api.get_token.assert_not_called()
    # None, not False: False would force a public repo even where the organisation defaults to private.
    assert hub_api.create_repo.call_args.kwargs["private"] is None
    hub_api.create_branch.assert_not_called()
    assert hub_api.upload_folder.call_args.kwargs["revision"] is None
    assert "hatchlings push" in hub_api.upload_folder.call_args.kwargs["commit_message"]


def test_no_token_is_a_usage_error(folder, hub_api, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub_api.get_token.return_value = None
    with pytest.raises(UsageError, match=r"no Hugging Face token: run `hf auth login` or set HF_TOKEN"):
        hub.push_folder(folder, "me/bdh-tiny")
    hub_api.create_repo.assert_not_called()
    hub_api.upload_folder.assert_not_called()


@pytest.mark.parametrize("pickle", ["training_args.bin", "sub/weights.pt", "optimizer.PTH", "data.pkl",
                                    "x.pickle", "last.ckpt"])
def test_pickles_are_refused_by_name(folder, hub_api, pickle):
    _add(folder, pickle)
    with pytest.raises(UsageError, match=f"pickle file {pickle}"):
        hub.push_folder(folder, "me/bdh-tiny")
    hub_api.create_repo.assert_not_called()
    hub_api.upload_folder.assert_not_called()


def _edit_config(folder, **changes):
    import json

    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))


def test_config_without_auto_map_is_refused(folder):
    _edit_config(folder, auto_map=None)
    with pytest.raises(UsageError, match="auto_map"):
        hub.check_hub_folder(folder)


@pytest.mark.parametrize("missing", ["modeling_bdh.py", "configuration_bdh.py", "layers.py", "cache.py"])
def test_missing_modeling_files_are_refused_by_name(folder, missing):
    """modeling_bdh.py and configuration_bdh.py are named by auto_map; layers.py and cache.py only imported."""
    (folder / missing).unlink()
    with pytest.raises(UsageError, match=f"modeling file {missing} is missing"):
        hub.check_hub_folder(folder)


def test_imports_are_followed_transitively_and_in_every_form(folder):
    (folder / "layers.py").write_text("import torch\ntry:\n    from . import kernels\nexcept ImportError:\n"
                                      "    kernels = None\n# from .not_real import x\n")
    with pytest.raises(UsageError, match="modeling file kernels.py is missing"):
        hub.check_hub_folder(folder)
    (folder / "kernels").mkdir()
    (folder / "kernels" / "__init__.py").write_text("from .(\n")
    with pytest.raises(UsageError, match="kernels/__init__.py is not valid Python"):
        hub.check_hub_folder(folder)
    (folder / "kernels" / "__init__.py").write_text("from .ops import (\n    fused,\n)\n")
    with pytest.raises(UsageError, match="modeling file kernels/ops.py is missing"):
        hub.check_hub_folder(folder)
    (folder / "kernels" / "ops.py").write_text("fused = None\n")
    assert "kernels/ops.py" in hub.check_hub_folder(folder)


def test_auto_map_pairs_and_other_repo_references(folder):
    _edit_config(folder, auto_map={"AutoConfig": "configuration_bdh.BdhConfig",
                                   "AutoModelForCausalLM": "modeling_bdh.BdhForCausalLM",
                                   "AutoTokenizer": ["tokenization_bdh.BdhTokenizer", None],
                                   "AutoModel": "someone/other--modeling_other.Other"})
    with pytest.raises(UsageError, match="modeling file tokenization_bdh.py is missing"):
        hub.check_hub_folder(folder)
    (folder / "tokenization_bdh.py").write_text("class BdhTokenizer: pass\n")
    hub.check_hub_folder(folder)  # modeling_other.py lives in someone/other


@pytest.mark.parametrize("missing, message", [("tokenizer.json", "no tokenizer.json"),
                                              ("README.md", "no README.md"),
                                              ("model.safetensors", "no model.safetensors"),
                                              ("config.json", "no config.json")])
def test_missing_required_files_are_refused(folder, missing, message):
    (folder / missing).unlink()
    with pytest.raises(UsageError, match=message):
        hub.check_hub_folder(folder)


def test_sharded_weights_need_every_shard(folder):
    import json

    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match="shard model-00002-of-00002.safetensors"):
        hub.check_hub_folder(folder)
    _add(folder, "model-00002-of-00002.safetensors")
    hub.check_hub_folder(folder)


def test_not_a_folder_and_bad_repo_id(tmp_path, hub_api):
    with pytest.raises(UsageError, match="not a folder"):
        hub.check_hub_folder(tmp_path / "nope")
    with pytest.raises(UsageError, match="bad --repo-id"):
        hub.push_folder(tmp_path, "a/b/c")


def test_forbidden_push_is_a_usage_error(folder, hub_api):
    hub_api.create_repo.side_effect = HfHubHTTPError("403 Forbidden", response=MagicMock(status_code=403))
    with pytest.raises(UsageError, match="HTTP 403"):
        hub.push_folder(folder, "someone-else/bdh-tiny")


def test_cli_arguments_and_run(folder, hub_api, capsys):
    parser = argparse.ArgumentParser()
    hub.add_arguments(parser)
    args = parser.parse_args([str(folder), "--repo-id", "me/bdh-tiny", "--private", "--revision", "v1",
                              "--token", "hf_flag", "--message", "hello"])
    assert hub.run(args) == 0
    assert hub_api.create_repo.call_args.args[0].token == "hf_flag"
    assert hub_api.upload_folder.call_args.kwargs["commit_message"] == "hello"
    out = capsys.readouterr().out
    assert "me/bdh-tiny" in out and "v1" in out and COMMIT_URL in out
    with pytest.raises(SystemExit):
        parser.parse_args([str(folder)])  # --repo-id is required
