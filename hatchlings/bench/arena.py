"""`hatchlings bench arena`: each architecture against Transformers' own GPT-2 and Llama, same data and budget.

The question users ask before picking an architecture: how good and how fast is it, against a normal
transformer of the same size, on the same data and budget? Every model here gets the same text (tiny
Shakespeare as bytes, first 90% train / last 10% validation), the same random batches in the same order,
the same AdamW + warm-up/cosine schedule, and a parameter count within 10% of GPT-2's. Per model:

- validation bits per byte over the whole validation split at the end, and a curve on 40 fixed validation
  blocks during training;
- training tokens/s from the median step time (a shared CPU is noisy; the median is robust);
- peak training memory: max allocated on CUDA; on CPU the growth of the process's peak resident memory
  from before the model was built (each model trains in a fresh process, so nothing carries over);
- generation ms/token at several contexts and time to first token, through `model.generate` with each
  model's own cache (the runner's shared timing).

Ratios against GPT-2 measured in the same run are the headline; absolute times only compare within one
machine. On CUDA the models train in bf16 autocast and under `torch.compile`; a model that fails to compile
falls back to eager and the reason is written into the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          get_cosine_schedule_with_warmup)

from ..metrics.lm_perplexity.lm_perplexity import lm_metrics
from .runner import Plot, Report, Table, generation_timing

DEFAULT_FILE = "../shared/data/tinyshakespeare.txt"
SIZES = {"micro": 64, "tiny": 128, "small": 256, "medium": 512}  # width (hidden size) of every model
LAYERS, HEADS = 4, 4
BASELINES = ("gpt2", "llama")
# hatchlings architectures: config fields of a model of the given width, matched to GPT-2's size
HATCHLINGS_SHAPES = {
    "bdh": lambda width: dict(hidden_size=width, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                              mlp_internal_dim_multiplier=16, dropout=0.0),
}
ARCHS = BASELINES + tuple(HATCHLINGS_SHAPES)


@dataclasses.dataclass(frozen=True)
class Settings:
    """One arena run: the data, budget and schedule every model shares, and how timing is done."""

    file: str = DEFAULT_FILE
    size: str = "tiny"
    budget_tokens: int = 300 * 16 * 256  # shared/BASELINES.md: 300 steps of 16 x 256 bytes
    batch_size: int = 16
    block_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.1
    eval_points: int = 6
    eval_blocks: int = 40
    seed: int = 1337
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False
    contexts: tuple[int, ...] = (64, 512, 2048)
    ttft_prompt: int = 1024
    gen_steps: int = 16
    repeats: int = 5
    timing: bool = True  # time generation (the scaling probe only needs the losses)
    models_dir: str | None = None  # save each trained model here (save_pretrained), for the probes
    threads: int = 0  # torch threads in each model's process (0 = torch's default)
    reuse_memory: bool = True  # glibc: serve large tensors from the heap, not fresh mmaps (see `reuse_freed_memory`)

    @property
    def steps(self) -> int:
        return max(1, self.budget_tokens // (self.batch_size * self.block_size))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size


# ------------------------------------------------------------------------------------------------ models

def build_model(arch: str, size: str, positions: int, vocab_size: int = 259, special_ids=(256, 257, 258)):
    """A freshly initialised model of `arch` at `size`; `positions` is the longest sequence it must take
    (only GPT-2 spends parameters on it: its learned position table)."""
    if size not in SIZES:
        raise ValueError(f"unknown arena size {size!r}; known: {', '.join(SIZES)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arena model {arch!r}; known: {', '.join(ARCHS)}")
    width = SIZES[size]
    pad, bos, eos = special_ids
    special = dict(pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=width, n_layer=LAYERS, n_head=HEADS,
                                          n_positions=positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                          **special))
    if arch == "llama":  # the shape of shared/BASELINES.md: intermediate 352 at width 128, tied embeddings
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=LAYERS,
                                            num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                            intermediate_size=11 * width // 4, tie_word_embeddings=True,
                                            max_position_embeddings=max(positions, 4096), **special))
    from ..modeling import config_class_for

    config = config_class_for(arch)(vocab_size=vocab_size, **special, **HATCHLINGS_SHAPES[arch](width))
    return AutoModelForCausalLM.from_config(config)


# -------------------------------------------------------------------------------------------------- data

def check_file(path: str) -> Path:
    from ..training.errors import UsageError

    if not Path(path).is_file():
        raise UsageError(f"arena data not found: {path} (pass --file; the arena uses tiny Shakespeare, "
                         "shared/data/tinyshakespeare.txt)")
    return Path(path)


def load_split(path: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The text as byte-tokenizer ids: (first 90% train, last 10% validation, bytes per token).

    Tokenized 64 KiB at a time (the byte tokenizer has no merges, so cutting anywhere gives the same ids):
    a whole-file `Encoding` with its offsets would be the process's largest allocation and would hide the
    training's peak memory.
    """
    from ..tokenization import build_byte_tokenizer

    text, tokenizer = check_file(path).read_text(encoding="utf-8"), build_byte_tokenizer()
    ids = torch.cat([torch.tensor(tokenizer(text[i:i + 2**16], add_special_tokens=False)["input_ids"])
                     for i in range(0, len(text), 2**16)])
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(text.encode("utf-8")) / len(ids)


def random_blocks(ids: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`count` windows of `length` tokens at random offsets: (count, length)."""
    starts = torch.randint(0, len(ids) - length + 1, (count,), generator=generator)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def mean_loss(model, blocks: torch.Tensor, batch_size: int, autocast=contextlib.nullcontext) -> float:
    """Mean next-token cross-entropy (nats) over every prediction in `blocks` (n, T), each forward pass under
    the context `autocast()` returns (the training's mixed precision, if any)."""
    from ..training.losses import causal_lm_loss

    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for chunk in blocks.split(batch_size):
            chunk = chunk.to(device)
            predictions = chunk.shape[0] * (chunk.shape[1] - 1)
            total += causal_lm_loss(model(input_ids=chunk, use_cache=False).logits, chunk).item() * predictions
            count += predictions
    model.train()
    return total / count


# ---------------------------------------------------------------------------------------------- training

def _autocast(settings: Settings):
    if settings.precision == "bf16":
        return lambda: torch.autocast(device_type=settings.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext


def _optimizer(model, settings: Settings):
    """AdamW with decay on matrices and embeddings only (not on norms and biases), warm-up then cosine to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.95))
    warmup = round(settings.warmup_fraction * settings.steps)
    return opt, get_cosine_schedule_with_warmup(opt, warmup, settings.steps)


def _compiled(model, settings: Settings, sample: torch.Tensor):
    """The model's forward under torch.compile, or (eager forward, why not) if it cannot compile."""
    if not settings.compile:
        return model, "off"
    try:
        forward = torch.compile(model)
        with _autocast(settings)():
            forward(input_ids=sample, use_cache=False).logits.float().sum().backward()  # compile fwd + bwd now
        model.zero_grad(set_to_none=True)
        return forward, "yes"
    except Exception as err:  # the reason is the result: it goes into the report
        model.zero_grad(set_to_none=True)
        return model, f"failed, eager instead ({type(err).__name__}: {str(err).splitlines()[0][:120]})"


def train(model, train_ids: torch.Tensor, val_ids: torch.Tensor, settings: Settings, bytes_per_token: float,
          label: str) -> dict:
    """Train on the shared batch sequence; return the curve, median step time and compile status."""
    from ..training.losses import causal_lm_loss

    device, autocast = next(model.parameters()).device, _autocast(settings)
    batches = torch.Generator().manual_seed(settings.seed)  # the same batches, in the same order, for every model
    curve_blocks = random_blocks(val_ids, settings.eval_blocks, settings.block_size,
                                 torch.Generator().manual_seed(settings.seed + 1))
    forward, compiled = _compiled(model, settings, curve_blocks[:2].to(device))
    opt, schedule = _optimizer(model, settings)
    eval_at = {round(k * settings.steps / settings.eval_points) for k in range(1, settings.eval_points + 1)}
    curve, step_times = [], []
    model.train()
    for step in range(1, settings.steps + 1):
        ids = random_blocks(train_ids, settings.batch_size, settings.block_size, batches).to(device)
        start = time.perf_counter()
        with autocast():
            loss = causal_lm_loss(forward(input_ids=ids, use_cache=False).logits, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        loss = loss.item()  # also waits for the device, so the step time is real
        step_times.append(time.perf_counter() - start)
        if step in eval_at:
            bpb = lm_metrics(mean_loss(model, curve_blocks, settings.batch_size, autocast), bytes_per_token)
            curve.append((step * settings.tokens_per_step, bpb["bits_per_byte"]))
            print(f"[arena] {label}: step {step}/{settings.steps}, train loss {loss:.3f}, "
                  f"val bits/byte (40 blocks) {curve[-1][1]:.3f}", flush=True)
    return {"curve": curve, "median_step_s": statistics.median(step_times), "train_s": sum(step_times),
            "compiled": compiled}


# ---------------------------------------------------------------------------------------- one model, isolated

def _resident_mib() -> float | None:
    """Current resident memory of this process (Linux /proc), or None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_resident_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def reuse_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory for large tensors instead of mapping fresh pages each time.

    glibc serves allocations of 32 MiB and more (its largest mmap threshold) with a new mmap, and the first
    touch of every page then faults. A BDH tiny training step allocates a few dozen (H, B, T, N) neuron
    tensors of exactly 32 MiB, so it pays that on every one (about 20% of its step time on 2 cores), while
    smaller models' tensors are recycled from the heap. Turning mmap off (and heap trimming down) gives
    every model the recycled-memory behaviour; users can do the same with the environment variables
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296. Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def measure(arch: str, settings: Settings) -> dict:
    """Train, evaluate and time one model. Runs in a fresh process (see `measure_isolated`)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    reused = settings.reuse_memory and settings.device == "cpu" and reuse_freed_memory()
    device = torch.device(settings.device)
    train_ids, val_ids, bytes_per_token = load_split(settings.file)
    before = _resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(settings.seed)
    model = build_model(arch, settings.size, positions=settings.block_size).to(device)
    result = train(model, train_ids, val_ids, settings, bytes_per_token, arch)
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _peak_resident_mib()
        result["peak_memory_mib"] = peak - before if peak is not None and before is not None else None
    whole = val_ids[: len(val_ids) // settings.block_size * settings.block_size].view(-1, settings.block_size)
    loss = mean_loss(model, whole, settings.batch_size, _autocast(settings))
    result |= {"arch": arch, "params": model.num_parameters(), "val_loss": loss, "reused_memory": reused,
               "val_bits_per_byte": lm_metrics(loss, bytes_per_token)["bits_per_byte"]}
    if settings.models_dir:
        _save(model, Path(settings.models_dir) / arch)
    if settings.timing:
        result |= _generation(arch, settings)
    return result


def _generation(arch: str, settings: Settings) -> dict:
    """ms/token at each context and time to first token of the arena's shape of `arch`."""
    # generation is timed on a fresh model of the same shape with room for the longest context (GPT-2's
    # position table is sized to the training block); speed does not depend on the weights' values
    longest = max(*settings.contexts, settings.ttft_prompt) + settings.gen_steps + 1
    torch.manual_seed(settings.seed)
    timing_model = build_model(arch, settings.size, positions=longest).to(settings.device).eval()
    if settings.precision == "bf16":
        timing_model = timing_model.to(torch.bfloat16)
    timing = generation_timing(timing_model, sorted({*settings.contexts, settings.ttft_prompt}),
                               settings.gen_steps, settings.repeats)
    return {"ms_per_token": {c: timing[c]["ms_per_token"] for c in settings.contexts},
            "ttft_ms": timing[settings.ttft_prompt]["ttft_ms"]}


def _save(model, folder: Path) -> None:
    from ..tokenization import build_byte_tokenizer

    model.save_pretrained(folder)
    build_byte_tokenizer().save_pretrained(folder)


def measure_isolated(arch: str, settings: Settings) -> dict:
    """`measure` in a fresh spawned process: peak memory is that model's alone, and no allocator state,
    compiled graph or thread pool of one model affects the next."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(measure, (arch, settings))
    finally:
        pool.close()  # close + join (not the context manager's terminate) lets the worker exit cleanly
        pool.join()


# ------------------------------------------------------------------------------------------------ report

def _ratio(value, reference) -> float | str:
    return value / reference if value is not None and reference else ""


def summary_table(results: list[dict], settings: Settings) -> Table:
    """One row per model, with the ratios to GPT-2 (first model) that the arena reports as its headline."""
    ref = next((r for r in results if r["arch"] == "gpt2"), results[0])
    contexts = settings.contexts
    rows = []
    for r in results:
        tokens_s = settings.tokens_per_step / r["median_step_s"]
        ms = r["ms_per_token"]
        rows.append({
            "model": r["arch"], "params": f"{r['params']:,}", "params / GPT-2": _ratio(r["params"], ref["params"]),
            "val bits/byte": r["val_bits_per_byte"],
            "train tokens/s": tokens_s, "tokens/s / GPT-2": _ratio(tokens_s, settings.tokens_per_step / ref["median_step_s"]),
            "peak train MiB": r["peak_memory_mib"] if r["peak_memory_mib"] is not None else "n/a",
            **{f"ms/token @{c}": ms[c] for c in contexts},
            f"ms/token @{contexts[-1]} / GPT-2": _ratio(ms[contexts[-1]], ref["ms_per_token"][contexts[-1]]),
            f"@{contexts[-1]} / @{contexts[0]}": _ratio(ms[contexts[-1]], ms[contexts[0]]),
            f"TTFT ms @{settings.ttft_prompt}": r["ttft_ms"], "compiled": r["compiled"],
        })
    memory = "max allocated" if settings.device.startswith("cuda") else \
        "growth of peak resident memory from before the model was built (fresh process per model)"
    return Table(f"Arena: {settings.size} models, {settings.steps * settings.tokens_per_step:,} training tokens of "
                 f"{Path(settings.file).name}", list(rows[0]), rows, notes=[
        f"same data (byte tokens; first 90% train, last 10% validation), same {settings.steps} batches of "
        f"{settings.batch_size} x {settings.block_size} in the same order, AdamW lr {settings.learning_rate} betas "
        f"(0.9, 0.95) wd {settings.weight_decay} on matrices, {settings.warmup_fraction:.0%} warm-up then cosine, "
        f"grad clip 1.0, seed {settings.seed}, {settings.device} {settings.precision}"
        + (", glibc malloc reusing freed memory for large tensors in every model's process (no --default-malloc)"
           if all(r.get("reused_memory") for r in results) else ""),
        "val bits/byte: the whole validation split in disjoint blocks of the training length",
        "train tokens/s: tokens per step / median step time (forward, backward, optimizer step)",
        f"peak train MiB: {memory}",
        f"generation: greedy `generate` with each model's cache, batch 1, {settings.gen_steps} new tokens after a "
        f"random prompt of the given context, median of {settings.repeats}; time to first token = prefill of a "
        f"{settings.ttft_prompt}-token prompt + one token. Timed on a fresh model of the same shape whose "
        "position table covers the longest context (GPT-2 trains with one sized to the block)",
    ])


def curve_table(results: list[dict]) -> Table:
    """Validation bits/byte (40 fixed blocks) at each evaluation point, one column per model."""
    points = [tokens for tokens, _ in results[0]["curve"]]
    rows = [{"training tokens": f"{tokens:,}", **{r["arch"]: r["curve"][i][1] for r in results}}
            for i, tokens in enumerate(points)]
    return Table("Validation bits/byte over the budget (40 fixed validation blocks)",
                 ["training tokens", *(r["arch"] for r in results)], rows)


def plots(results: list[dict], settings: Settings) -> list[Plot]:
    return [Plot("Validation bits/byte vs training tokens", "training tokens", "bits per byte",
                 {r["arch"]: ([t for t, _ in r["curve"]], [b for _, b in r["curve"]]) for r in results}),
            Plot("Generation cost vs context (greedy, batch 1)", "context (tokens)", "ms per new token",
                 {r["arch"]: (list(settings.contexts), [r["ms_per_token"][c] for c in settings.contexts])
                  for r in results}, logx=True)]


# --------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated, from {', '.join(ARCHS)}")
    parser.add_argument("--budget-tokens", "--budget_tokens", type=int, default=Settings.budget_tokens)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--file", default=DEFAULT_FILE, help="training text (default: tiny Shakespeare)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=Settings.batch_size)
    parser.add_argument("--block-size", "--block_size", type=int, default=Settings.block_size)
    parser.add_argument("--learning-rate", "--learning_rate", type=float, default=Settings.learning_rate)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the models (auto: on CUDA only)")
    parser.add_argument("--contexts", default="64,512,2048", help="generation contexts, comma-separated")
    parser.add_argument("--ttft-prompt", "--ttft_prompt", type=int, default=Settings.ttft_prompt)
    parser.add_argument("--gen-steps", "--gen_steps", type=int, default=Settings.gen_steps)
    parser.add_argument("--repeats", type=int, default=Settings.repeats)
    parser.add_argument("--eval-points", "--eval_points", type=int, default=Settings.eval_points)
    parser.add_argument("--default-malloc", "--default_malloc", action="store_true",
                        help="keep glibc's default large-allocation mmaps (slower for BDH's 32 MiB tensors)")
    parser.add_argument("--models-dir", "--models_dir", default=None,
                        help="where to save the trained models (default: runs/arena-<device>/models)")


def settings_from_args(args) -> tuple[Settings, list[str]]:
    """The run's Settings and the models to compare, checked (a bad flag fails before any training)."""
    from ..training.errors import UsageError

    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ARCHS))
    if unknown or not archs:
        raise UsageError(f"--archs: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(ARCHS)}")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    device_name = args.device.split(":")[0]
    try:
        contexts = tuple(sorted(int(c) for c in args.contexts.split(",")))
    except ValueError:
        raise UsageError(f"--contexts must be comma-separated integers, got {args.contexts!r}") from None
    if args.budget_tokens < args.batch_size * args.block_size:
        raise UsageError(f"--budget-tokens {args.budget_tokens} is less than one step "
                         f"({args.batch_size} x {args.block_size} tokens)")
    return Settings(file=args.file, size=args.size, budget_tokens=args.budget_tokens, batch_size=args.batch_size,
                    block_size=args.block_size, learning_rate=args.learning_rate, eval_points=args.eval_points,
                    device=args.device, precision=("bf16" if cuda else "fp32") if args.precision == "auto" else args.precision,
                    compile=cuda if args.compile == "auto" else args.compile == "on", contexts=contexts,
                    ttft_prompt=args.ttft_prompt, gen_steps=args.gen_steps, repeats=args.repeats,
                    models_dir=args.models_dir or f"runs/arena-{device_name}/models",
                    threads=torch.get_num_threads(), reuse_memory=not args.default_malloc), archs


def run(args) -> Report:
    settings, archs = settings_from_args(args)
    check_file(settings.file)  # a missing file fails now, not in a child process
    results = [measure_isolated(arch, settings) for arch in archs]
    device_name = settings.device.split(":")[0]
    return Report(f"arena-{device_name}", [summary_table(results, settings), curve_table(results)],
                  plots(results, settings))
