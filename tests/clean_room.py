"""The clean room of contract check 7: what a Hub user without hatchlings gets.

Run as `python clean_room.py EXPORT_DIR PROMPT N` with HF_HUB_OFFLINE=1: hatchlings is blocked from
import (it is pip-installed editable, so leaving it off sys.path is not enough), the export is loaded with
trust_remote_code, and the greedy ids and the pipeline's text are printed after a RESULT marker.
"""

import importlib.abc
import json
import os
import sys

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

    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    folder, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    pipe = pipeline("text-generation", model=folder, trust_remote_code=True)
    text = pipe(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)[0]["generated_text"]
    print("\nRESULT " + json.dumps({"ids": ids[0].tolist(), "text": text, "module": type(model).__module__,
                                    "pipe_module": type(pipe.model).__module__,
                                    "leaked": sorted(m for m in sys.modules if m.split(".")[0] == "hatchlings")}))


if __name__ == "__main__":
    main()
