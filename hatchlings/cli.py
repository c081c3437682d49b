"""The `hatchlings` command: train, generate, eval, push, bench, probe, chat, serve.

User mistakes (a missing file, a bad YAML key, an unknown architecture) end with one line on stderr
and exit status 2, never a traceback; genuine bugs still raise so they can be reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import UsageError


def _generate(args: argparse.Namespace) -> int:
    from .generation import Utf8Streamer, check_generation_args, generate_text
    from .training.export import load_model_folder

    options = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k}
    check_generation_args(**options)  # before the (slow) model load
    model, tokenizer = load_model_folder(args.model)
    model.eval()
    streamer = Utf8Streamer(tokenizer, out=sys.stdout) if args.stream else None
    if args.stream:
        print(args.prompt, end="", flush=True)
    text = generate_text(model, tokenizer, args.prompt, seed=args.seed, streamer=streamer, **options)
    if not args.stream:
        print(args.prompt + text)
    return 0


def _train(rest: list[str], prog: str | None = None) -> int:
    from .training import run_training

    # train.py (also under accelerate launch / torchrun) hands its flags to main(): name it in --help and errors
    if prog is None:
        prog = "train.py" if Path(sys.argv[0]).name == "train.py" else "hatchlings train"
    run_training(rest, prog=prog)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmark

    run_benchmark(args.what, args.options, command=" ".join(["hatchlings", *sys.argv[1:]]))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchlings", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a model (same flags as train.py)", add_help=False)
    gen = sub.add_parser("generate", help="continue a prompt with a saved model")
    gen.add_argument("model", help="folder written by train.py")
    gen.add_argument("--prompt", default="\n", help="text to continue; empty starts from bos (default: a newline)")
    gen.add_argument("--max_new_tokens", type=int, default=200, help="at least 1 (default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top_k", type=int, default=50, help="sample among the k likeliest tokens, 0 = all "
                                                           "(default: %(default)s)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    from . import evaluation, hub

    evaluation.add_arguments(sub.add_parser("eval", help="loss, perplexity and bits per byte of a model on a file"))
    hub.add_arguments(sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub"))
    from . import probes

    probes.add_arguments(sub.add_parser("probe", help="test an architecture's claims on a trained model "
                                                      "(markdown + JSON + PNG)"))
    from .bench import runner

    runner.add_arguments(sub.add_parser("bench", help="run a benchmark, write markdown + JSON (+ PNG) results"))
    from . import data_sources

    data_sources.add_arguments(sub.add_parser("data", help="fetch the corpora the README and benchmarks use"))
    from . import chat

    chat.add_arguments(sub.add_parser("chat", help="talk to a saved model in the terminal, streaming tokens"))
    from . import serve

    serve.add_arguments(sub.add_parser("serve", help="a local web app to chat with, compare and inspect "
                                                     "exported models (needs the [serve] extra)"))
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


def _data(args: argparse.Namespace) -> int:
    from . import data_sources

    return data_sources.run(args)


def _chat(args: argparse.Namespace) -> int:
    from . import chat

    return chat.run(args)


def _serve(args: argparse.Namespace) -> int:
    from . import serve

    return serve.run(args)


COMMANDS = {"generate": _generate, "eval": _eval, "bench": _bench, "push": _push, "probe": _probe, "data": _data,
            "chat": _chat, "serve": _serve}


def main(argv: list[str] | None = None, *, train_prog: str | None = None) -> int:
    """Run one command; `train_prog` names the training entry point the user typed (`python -m hatchlings.train`,
    `train.py`) in its --help and errors, since `train` is reached through main() from each of them."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["train"]:  # everything after `train` belongs to the training parser
            return _train(argv[1:], train_prog)
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
