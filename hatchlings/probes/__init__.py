"""`hatchlings probe <arch> <what> MODEL_DIR`: analyses that test an architecture's claims on a trained model.

Each architecture's record names the probes it offers (`probes`: name -> "module:function"), so probes are
keyed (arch, probe): `hatchlings probe hrm sparsity` reaches HRM's sparsity probe or says that HRM has none,
never BDH's code. For BDH: `sparsity` (few neurons active per token), `neurons` (monosemantic neurons,
against a GPT-2 baseline), `state` (working memory held in the Hebbian synaptic state), `merge`, `scaling`.
For HRM: `depth` (bits/byte, ms/token and the z_L/z_H states per depth mode), `quality` (generated text
scored per depth mode next to other exports). For Hybrid: `ablate`, `shuffle`, `segments`, `controller`,
`gates` (the seed's tables: validation loss under evaluation-time interventions, and the mixer's weights).
For HRAN: `collapse` (chatbots trained with each mechanism switched off, their answers scored for repetition).
A probe takes the parsed arguments and returns (tables, matplotlib figure or None); `run` writes
them as `<arch>-<what>.md/.json/.png` into the output folder and prints the tables. A claim that does not
hold at a model's scale is reported as measured, not treated as an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..architectures import RECORDS, resolve
from ..reports import write_results
from ..errors import UsageError
from . import common, hran_collapse, hrm_depth, hrm_quality, merge, scaling
_NOT_IN_COMMAND = ("command", "arch", "what", "model", "output_dir")  # do not change the results


class _JoinRepeated(argparse.Action):
    """A repeated flag adds to a comma-separated list, so none is silently dropped and the value stays one
    string (`_command` writes it back as a single flag, and a probe taking one folder refuses a list)."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest)
        setattr(namespace, self.dest, values if previous is None else f"{previous},{values}")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `hatchlings probe` flags: shared ones once, then one group per probe that has its own."""
    parser.add_argument("arch", help=f"architecture of the model ({', '.join(RECORDS)})")
    parser.add_argument("what", help="probe to run (" + "; ".join(
        f"{arch}: {', '.join(record.probes) or 'none'}" for arch, record in RECORDS.items()) + ")")
    parser.add_argument("model", help="folder written by train.py")
    parser.add_argument("--file", default=None, help="UTF-8 text to probe with (default: tiny Shakespeare, "
                                                     "fetched by `hatchlings data get tinyshakespeare`)")
    parser.add_argument("--block_size", type=int, default=common.DEFAULT_BLOCK_SIZE, help="tokens per block")
    parser.add_argument("--max_tokens", type=int, default=common.DEFAULT_MAX_TOKENS,
                        help="tokens probed, as blocks spread evenly over the text")
    parser.add_argument("--batch_size", type=int, default=8, help="blocks per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything sampled (prompts, pairs, bootstrap)")
    parser.add_argument("--output_dir", default=None, help="where results go (default: MODEL_DIR/probes)")
    group = parser.add_argument_group("neurons")
    group.add_argument("--top_k", type=int, default=8, help="neurons shown per concept family")
    group.add_argument("--threshold", type=float, default=0.5, help="score above which a neuron counts as selective")
    group.add_argument("--min_support", type=int, default=20, help="probed positions a neuron must be active on "
                                                                    "to be scored")
    group.add_argument("--baseline", default=None, action=_JoinRepeated,
                       help="neurons: a GPT-2 folder (save_pretrained) scored the same way; state: causal LM "
                            "folders with the byte tokenizer given the same working-memory test (repeat the flag "
                            "or separate folders with commas)")
    group = parser.add_argument_group("state")
    group.add_argument("--prompt", default=None, help="text whose state is read (default: a passage of the text)")
    group.add_argument("--control", default=None, help="text the state is compared with (default: another passage)")
    group.add_argument("--top_pairs", type=int, default=5, help="strengthened neuron pairs shown per layer")
    group.add_argument("--pairs", type=int, default=64, help="A/B pairs of the working-memory test")
    group.add_argument("--filler_tokens", type=int, default=128, help="tokens of text between the fact and the query")
    merge.add_arguments(parser)
    scaling.add_arguments(parser)
    hrm_depth.add_arguments(parser)
    hrm_quality.add_arguments(parser)
    hran_collapse.add_arguments(parser)
    return parser


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces the results: the flags that differ from their defaults (every probe's
    flags share one parser, so the defaults of the others would only be noise; the output folder does not
    change the results)."""
    defaults = vars(add_arguments(argparse.ArgumentParser()).parse_args([args.arch, args.what, args.model]))
    options = " ".join(f"--{key} {value!r}" if isinstance(value, str) else f"--{key} {value}"
                       for key, value in vars(args).items()
                       if key not in _NOT_IN_COMMAND and value is not None and value != defaults.get(key))
    return f"hatchlings probe {args.arch} {args.what} {args.model} {options}"


def run(args: argparse.Namespace) -> int:
    """Run the probe, write `<arch>-<what>.md/.json/.png`, print its tables; 0 on success."""
    import torch

    if args.arch not in RECORDS:
        raise UsageError(f"no probes for architecture {args.arch!r}: it is not registered (known: "
                         f"{', '.join(RECORDS)})")
    offered = RECORDS[args.arch].probes
    if args.what not in offered:
        raise UsageError(f"unknown probe {args.what!r} for {args.arch}; it offers: {', '.join(offered) or 'none'}")
    torch.manual_seed(args.seed)
    tables, figure = resolve(offered[args.what])(args)
    name = f"{args.arch}-{args.what}"
    output = Path(args.output_dir) if args.output_dir else Path(args.model) / "probes"
    paths = list(write_results(name, tables, output, _command(args), heading="Probe"))
    if figure is not None:
        paths.append(output / f"{name}.png")
        figure.savefig(paths[-1], format="png")
    for table in tables:
        print(table.markdown())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = ["add_arguments", "run"]
