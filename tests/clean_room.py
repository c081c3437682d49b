"""The clean room of contract check 7: what a Hub user without hatchlings gets.

Run as `python clean_room.py EXPORT_DIR PROMPT N` with HF_HUB_OFFLINE=1: hatchlings is blocked from
import (it is pip-installed editable, so leaving it off sys.path is not enough), the export is loaded with
trust_remote_code, and the greedy ids and the pipeline's text are printed after a RESULT marker.

The tokenizer is loaded the two ways the README and the model card show, each with everything it prints,
logs or warns captured (a y/N remote-code prompt is printed before it waits for an answer):
  * `PreTrainedTokenizerFast.from_pretrained(folder)`: no flag and no remote code. Loaded first, so any
    remote module it imported would show in `tokenizer_remote_modules`.
  * `AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`: Transformers 5.23's AutoTokenizer reads
    the model config through AutoConfig before choosing a tokenizer class, and that config names remote
    code (`auto_map`); without the flag it prompts y/N for 15 s, then loads an empty config with a
    "model of type" warning, whatever tokenizer_config.json says.
"""

import contextlib
import importlib.abc
import io
import json
import logging
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hatchlings" or name.startswith("hatchlings."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the clean-room test)")


def main() -> None:
    sys.path[:] = [p for p in sys.path if p not in ("", ".", REPO, HERE)]
    sys.meta_path.insert(0, _Block())
    try:
        import hatchlings  # noqa: F401

        raise SystemExit("hatchlings is importable in the clean room")
    except ImportError:
        pass

    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, pipeline

    folder, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    plain, plain_output = _captured(lambda: PreTrainedTokenizerFast.from_pretrained(folder))
    remote_modules = sorted(m for m in sys.modules if m.startswith("transformers_modules"))
    tok, auto_output = _captured(lambda: AutoTokenizer.from_pretrained(folder, trust_remote_code=True))
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ids = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    pipe = pipeline("text-generation", model=folder, trust_remote_code=True)
    text = pipe(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)[0]["generated_text"]
    print("\nRESULT " + json.dumps({"ids": ids[0].tolist(), "text": text, "module": type(model).__module__,
                                    "pipe_module": type(pipe.model).__module__,
                                    "tokenizer_output": {"PreTrainedTokenizerFast": plain_output,
                                                         "AutoTokenizer": auto_output},
                                    "tokenizer_remote_modules": remote_modules,
                                    "tokenizer_ids": {"PreTrainedTokenizerFast": plain(prompt)["input_ids"],
                                                      "AutoTokenizer": tok(prompt)["input_ids"]},
                                    "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "hatchlings")}))


def _captured(load):
    """`load()` and all it wrote to stdout/stderr, logged through `transformers` or warned, as one string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("transformers")  # Transformers' handler keeps the real stderr: add ours
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = load()
    finally:
        logger.removeHandler(handler)
    return result, out.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)


if __name__ == "__main__":
    main()
