"""`hatchlings probe hrm depth`: what each depth mode (N cycles x T steps) of one HRM costs and buys.

The same weights run at every depth, so a deeper mode is only worth its compute if it predicts better. Per
mode (config.depth_modes, or --modes) this measures:

- bits/byte on a text file (`hatchlings eval`'s strided sliding window, through `evaluate_file` with the mode
  passed to every forward), on the first --max_tokens tokens;
- generation ms/token through `model.generate` with the KV cache (the benchmarks' `decode_timing`: slope of
  time against new tokens, greedy, after a prompt);
- on the prompt, the state after every module call: ||z|| and ||z - z_before|| per position (the model's
  `output_states=True`). HRM's blocks are post-norm, so ||z|| is sqrt(D) by construction; the change (the
  HRM paper's forward residual) shows whether L converges within a cycle and H across cycles;
- with ACT (config.act), the cycle each prompt token halts at; an ACT model runs halt_max_steps cycles in
  every mode (the mode's T still applies), so the modes differ only in T.
"""

from __future__ import annotations

import argparse

import torch

from ..errors import UsageError
from ..reports import Plot, Table, panels_figure

PROMPT_CHARS = 64  # default prompt: the text's first characters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the HRM probes (depth and quality share --modes)."""
    group = parser.add_argument_group("hrm depth, hrm quality")
    group.add_argument("--modes", default=None, help="comma-separated HRM depth modes (default: all of the model's "
                                                     "config.depth_modes)")
    group.add_argument("--decode_tokens", type=int, default=32, help="depth: new tokens of the longest timed "
                                                                     "generation")
    group.add_argument("--repeats", type=int, default=3, help="depth: timed repeats per mode (median reported)")


def load_hrm(folder):
    """Model (eval mode) and tokenizer of an HRM export; any other model is refused."""
    from ..training.export import load_model_folder

    model, tokenizer = load_model_folder(folder)
    if model.config.model_type != "hatchlings_hrm":
        raise UsageError(f"model {folder} is a {model.config.model_type!r} model; this probe needs 'hatchlings_hrm'")
    return model.eval(), tokenizer


def selected_modes(config, modes: str | None) -> list[str]:
    """The depth modes to probe: --modes (validated, in the order given) or all of the config's, cheapest first."""
    if modes is None:
        return sorted(config.depth_modes, key=lambda mode: (block_calls(config, mode), mode))
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in config.depth_modes]
    if unknown or not chosen:
        raise UsageError(f"unknown depth mode(s) {', '.join(unknown) or '(none given)'}; the model's modes: "
                         f"{', '.join(config.depth_modes)}")
    return chosen


def depth_of(config, mode: str) -> tuple[int, int]:
    """(cycles, steps) a forward runs in `mode` (ACT: halt_max_steps cycles)."""
    n, t = config.depth(mode)
    return (config.halt_max_steps if config.act else n), t


def block_calls(config, mode: str) -> int:
    """Transformer block calls per token in `mode`: N*T*L_layers + N*H_layers."""
    n, t = depth_of(config, mode)
    return n * t * config.L_layers + n * config.H_layers


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """(1, T) ids of the prompt, without bos (as the text is scored)."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise UsageError("the prompt is empty")
    return ids


def read_states(model, ids: torch.Tensor, mode: str) -> dict:
    """Per module call (execution order) the mean over the prompt of ||z|| and ||z - z_before||, and with ACT the
    halting cycle of every prompt token."""
    with torch.no_grad():
        out = model(ids, use_cache=False, hrm_mode=mode, output_states=True)
    calls = [{"module": module, "cycle": cycle, "step": step, "norm": norm[0].mean().item(),
              "change": change[0].mean().item(), "relative": (change[0] / norm[0]).mean().item()}
             for module, cycle, step, norm, change in out.state_norms]
    halts = out.halt_cycles[0].tolist() if out.halt_cycles is not None else None
    return {"calls": calls, "halt_cycles": halts}


def measure(model, tokenizer, file, prompt: str, modes: list[str], args) -> dict:
    """mode -> {"eval": evaluate_file's result, "timing": decode_timing's, "states": read_states'}."""
    from ..bench.runner import decode_timing
    from ..evaluation import evaluate_file

    ids = prompt_ids(tokenizer, prompt)
    results = {}
    for mode in modes:
        kwargs = {"hrm_mode": mode}
        results[mode] = {
            "eval": evaluate_file(model, file, block_size=args.block_size, batch_size=args.batch_size,
                                  max_tokens=args.max_tokens, tokenizer=tokenizer, model_kwargs=kwargs),
            "timing": decode_timing(model, ids, args.decode_tokens, args.repeats, generate_kwargs=kwargs),
            "states": read_states(model, ids, mode)}
    return results


def _mode_table(model, results: dict, file, prompt_tokens: int, args) -> Table:
    from ..bench.runner import ms_per_token_cell

    cfg, rows = model.config, []
    for mode, r in results.items():
        n, t = depth_of(cfg, mode)
        rows.append({"mode": mode, "N x T": f"{n}x{t}", "block calls/token": block_calls(cfg, mode),
                     "bits/byte": r["eval"]["bits_per_byte"], "loss": r["eval"]["loss"],
                     "ms/token": ms_per_token_cell(r["timing"]), "ttft ms": r["timing"]["ttft_ms"]})
    first = next(iter(results.values()))["eval"]
    notes = [f"bits/byte: {file}, {first['tokens']:,} tokens scored (first {first['file_tokens']:,} of the file, "
             f"--max_tokens), windows of {first['block_size']} advancing {first['stride']}.",
             f"ms/token: greedy `generate` with the KV cache after a {prompt_tokens}-token prompt, slope over "
             f"1..{1 + args.decode_tokens} new tokens, median of {args.repeats} repeats (± half the IQR); "
             "ttft: prefill + one token."]
    if cfg.act:
        notes.append(f"ACT is on: every mode runs halt_max_steps = {cfg.halt_max_steps} cycles (N of the mode is "
                     "not used) and each token reads the cycle its Q-head halts at.")
    return Table("Bits/byte and generation speed per depth mode", list(rows[0]), rows, notes)


def _state_table(model, results: dict) -> Table:
    rows = [{"mode": mode, "call": i + 1, "module": c["module"], "cycle": c["cycle"] + 1, "step": c["step"] + 1,
             "mean ‖z‖": c["norm"], "mean ‖z - z_before‖": c["change"], "mean relative change": c["relative"]}
            for mode, r in results.items() for i, c in enumerate(r["states"]["calls"])]
    return Table("z_L and z_H after every module call, mean over the prompt's positions", list(rows[0]), rows,
                 [f"Calls in execution order (per cycle: T L steps, then one H update; cycle and step 1-based). "
                  f"Post-norm blocks keep ||z|| at sqrt(D) = {model.config.hidden_size ** 0.5:.3g}; the change "
                  "from the state before the call is what converges (or not) with depth."])


def _halt_table(results: dict) -> Table:
    rows = []
    for mode, r in results.items():
        halts = r["states"]["halt_cycles"]
        rows.append({"mode": mode, "mean halt cycle": sum(halts) / len(halts), "min": min(halts), "max": max(halts),
                     "per prompt token": " ".join(map(str, halts))})
    return Table("ACT: cycle each prompt token halts at", list(rows[0]), rows,
                 ["The Q-head halts a token at its first cycle with q_halt > q_continue (halt_max_steps at the "
                  "latest); 1-based."])


def _plots(results: dict, act: bool) -> list[Plot]:
    """The deepest mode's calls in order (norm and change of z_L, z_H), the change per L step and per cycle of
    every mode, and with ACT the halting cycle per prompt token."""
    deepest = max(results, key=lambda mode: len(results[mode]["states"]["calls"]))
    norms, changes_L, changes_H, halts = {}, {}, {}, {}
    for mode, r in results.items():
        calls = r["states"]["calls"]
        for module, target in (("L", changes_L), ("H", changes_H)):
            mine = [(i + 1, c) for i, c in enumerate(calls) if c["module"] == module]
            target[mode] = (list(range(1, len(mine) + 1)), [c["change"] for _, c in mine])
            if mode == deepest:
                for key, label in (("norm", "‖z_{}‖"), ("change", "‖z_{} - before‖")):
                    norms[label.format(module)] = ([i for i, _ in mine], [c[key] for _, c in mine])
        if act:
            halt = r["states"]["halt_cycles"]
            halts[mode] = (list(range(len(halt))), halt)
    plots = [Plot(f"{deepest}: z_L, z_H after each module call (prompt mean)", "call (execution order)", "norm",
                  norms),
             Plot("z_L change per L step", "L step (over all cycles)", "‖z_L - z_L before‖", changes_L),
             Plot("z_H change per cycle", "cycle", "‖z_H - z_H before‖", changes_H)]
    if act:
        plots.append(Plot("ACT halting cycle per prompt token", "position", "halt cycle", halts))
    return plots


def run(args):
    """Measure every selected mode; returns (tables, figure)."""
    from ..data_sources import default_file
    from ..evaluation import read_text

    model, tokenizer = load_hrm(args.model)
    modes = selected_modes(model.config, args.modes)
    file = default_file("tinyshakespeare") if args.file is None else args.file
    prompt = args.prompt if args.prompt is not None else read_text(file)[:PROMPT_CHARS]
    if args.decode_tokens < 1 or args.repeats < 1:
        raise UsageError("--decode_tokens and --repeats must be at least 1")
    results = measure(model, tokenizer, file, prompt, modes, args)
    tables = [_mode_table(model, results, file, prompt_ids(tokenizer, prompt).shape[1], args),
              _state_table(model, results)]
    tables[1].notes.append(f"Prompt: {prompt!r}")
    if model.config.act:
        tables.append(_halt_table(results))
    return tables, panels_figure(_plots(results, model.config.act))
