"""The `hatchlings` command: train, generate, eval, push, bench, probe.

User mistakes (a missing file, a bad YAML key, an unknown architecture) end with one line on stderr
and exit status 2, never a traceback; genuine bugs still raise so they can be reported.
"""

from __future__ import annotations

import argparse
import sys

from .training.errors import UsageError


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    from .training.export import load_model_folder

    model, tokenizer = load_model_folder(args.model)
    model.eval()
    inputs = tokenizer(args.prompt, return_tensors="pt")
    sampling = {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k} if args.temperature > 0 \
        else {"do_sample": False}
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    torch.manual_seed(args.seed)
    if args.stream:
        print(args.prompt, end="", flush=True)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, streamer=streamer, **sampling)
    if not args.stream:
        print(args.prompt + tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return 0


def _train(rest: list[str]) -> int:
    from .training import run_training

    run_training(rest)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    run_benchmark(args.what, args.options, command=" ".join(["hatchlings", *sys.argv[1:]]))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchlings", description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a model (same flags as train.py)", add_help=False)
    gen = sub.add_parser("generate", help="continue a prompt with a saved model")
    gen.add_argument("model", help="folder written by train.py")
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--max_new_tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top_k", type=int, default=50)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    from . import evaluation, hub

    evaluation.add_arguments(sub.add_parser("eval", help="loss, perplexity and bits per byte of a model on a file"))
    hub.add_arguments(sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub"))
    from . import probes

    probes.add_arguments(sub.add_parser("probe", help="test an architecture's claims on a trained model "
                                                      "(markdown + JSON + PNG)"))
    from .bench import runner

    runner.add_arguments(sub.add_parser("bench", help="run a benchmark, write markdown + JSON (+ PNG) results"))
    return parser


def _push(args: argparse.Namespace) -> int:
    from . import hub

    return hub.run(args)


def _eval(args: argparse.Namespace) -> int:
    from . import evaluation

    return evaluation.run(args)


def _probe(args: argparse.Namespace) -> int:
    from . import probes

    return probes.run(args)


COMMANDS = {"generate": _generate, "eval": _eval, "bench": _bench, "push": _push, "probe": _probe}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["train"]:  # everything after `train` belongs to the training parser
            return _train(argv[1:])
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"hatchlings: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hatchlings: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
