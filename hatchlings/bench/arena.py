"""`hatchlings bench arena`: each architecture against Transformers' own GPT-2 and Llama, same data and budget.

(HRM is also measured against Transformers' HrmTextForCausalLM, which joins every run as a third baseline.)

The question users ask before picking an architecture: how good and how fast is it, against a normal
transformer of the same size, on the same data and budget? Every model here gets the same text (tiny
Shakespeare as bytes, first 90% train / last 10% validation), the same random batches in the same order,
the same AdamW + warm-up/cosine schedule through the same loop as train.py (`HatchlingsTrainer`: its weight-
decay groups and shifted loss), and a parameter count within 10% of GPT-2's. Per model:

- validation bits per byte over the whole validation split at the end, and a curve on 40 fixed validation
  blocks during training;
- training tokens/s from the median step time (a shared CPU is noisy; the median is robust);
- peak training memory: max allocated on CUDA; on CPU the growth of the process's peak resident memory
  from before the model was built (each model trains in a fresh process, so nothing carries over);
- generation ms/token at several contexts (up to 8192 where the model's positions allow) and time to first
  token, through `model.generate` with each model's own cache (the runner's shared timing: a slope over
  several lengths, with its spread, "noisy" when it cannot be trusted).

Ratios against GPT-2 measured in the same run are the headline; absolute times only compare within one
machine. On CUDA the models train in bf16 autocast and under `torch.compile`; a model that fails to compile
falls back to eager and the reason is written into the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, HrmTextConfig, HrmTextForCausalLM,
                          LlamaConfig, LlamaForCausalLM, PrinterCallback, TrainerCallback, TrainingArguments,
                          default_data_collator)

from ..architectures import RECORDS, record_for
from ..data_sources import cached_path
from ..metrics.lm_perplexity.lm_perplexity import lm_metrics
from ..tokenization import TOKENIZER_KINDS
from .memory import peak_resident_mib, resident_mib, reuse_freed_memory
from .runner import Report, _synchronize, generation_timing

DEFAULT_FILE = str(cached_path("tinyshakespeare"))  # in the data folder after `hatchlings data get tinyshakespeare`
SIZES = {"micro": 64, "tiny": 128, "small": 256, "medium": 512}  # width (hidden size) of every model
LAYERS, HEADS = 4, 4
# The longest context a learned position table is grown to for timing: GPT-2's 8192 x 128 table would be
# 1.05M parameters, more than the whole tiny model, which is no longer the arena's shape; beyond it is "n/a".
LEARNED_POSITIONS = 2048
TRAIN_FRACTION = 0.9  # the first 90% of a text trains, the last 10% validates (unless a validation file is given)
# Transformers' own models; hrm_text (HrmTextForCausalLM, causal and cached) is the anchor of the HRM record
BASELINES = ("gpt2", "llama", "hrm_text")
ARCHS = BASELINES + tuple(RECORDS)  # each architecture's record gives its shape for a width (arena_shape)


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
    contexts: tuple[int, ...] = (64, 512, 2048, 8192)
    ttft_prompt: int = 1024
    gen_steps: int = 16
    repeats: int = 5
    timing: bool = True  # time generation (the scaling probe only needs the losses)
    tokenizer: str = "byte"  # byte, or a kind learned from the training text (char, word, bpe) for every model
    val_file: str | None = None  # validation text; None: the last 10% of `file`
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
    if arch == "hrm_text":  # shared/BASELINES.md's shape (2 layers per stack, H_cycles 2, L_cycles 2, prefix_lm
        # off), with tied embeddings like Llama here: 0.90M at width 128 (the untied 0.93M would be +9% of GPT-2)
        config = HrmTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=11 * width // 4,
                               num_attention_heads=HEADS, head_dim=width // HEADS, num_layers_per_stack=2,
                               H_cycles=2, L_cycles=2, prefix_lm=False, tie_word_embeddings=True,
                               max_position_embeddings=max(positions, 4096), **special)
        return HrmTextForCausalLM(config)
    record = record_for(arch)
    config = record.config_class(vocab_size=vocab_size, **special, **record.arena_shape(width))
    return AutoModelForCausalLM.from_config(config)


# -------------------------------------------------------------------------------------------------- data

def check_file(path: str) -> Path:
    from ..errors import UsageError

    if not Path(path).is_file():
        raise UsageError(f"arena data not found: {path} (pass --file, or fetch tiny Shakespeare: "
                         "`hatchlings data get tinyshakespeare`)")
    return Path(path)


def load_data(settings: Settings):
    """(train ids, validation ids, UTF-8 bytes per validation token, tokenizer) of a run: the byte split of
    `load_split`, or a tokenizer of `settings.tokenizer` learned from the training text only (the validation
    text's unknown words map to its unk token, whose bytes still count, so bits/byte stays exact)."""
    from ..tokenization import build_byte_tokenizer, build_tokenizer

    if settings.tokenizer == "byte" and settings.val_file is None:
        return (*load_split(settings.file), build_byte_tokenizer())
    text = check_file(settings.file).read_text(encoding="utf-8")
    if settings.val_file is None:
        cut = int(len(text) * TRAIN_FRACTION)
        text, val_text = text[:cut], text[cut:]
    else:
        val_text = check_file(settings.val_file).read_text(encoding="utf-8")
    tokenizer = build_tokenizer(settings.tokenizer, [text] if settings.tokenizer != "byte" else None)

    def encode(part: str) -> torch.Tensor:
        return torch.tensor(tokenizer(part, add_special_tokens=False)["input_ids"])

    val_ids = encode(val_text)
    return encode(text), val_ids, len(val_text.encode("utf-8")) / len(val_ids), tokenizer


def split_note(settings: Settings) -> str:
    """How a run's text was split and tokenized, for the reports."""
    tokens = "byte tokens" if settings.tokenizer == "byte" else \
        f"a {settings.tokenizer} tokenizer learned from the training text"
    split = "first 90% train, last 10% validation" if settings.val_file is None else \
        f"validation: {Path(settings.val_file).name}"
    return f"{tokens}; {split}"


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
    cut = int(len(ids) * TRAIN_FRACTION)
    return ids[:cut], ids[cut:], len(text.encode("utf-8")) / len(ids)


def _random_starts(n_ids: int, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random offsets of `length`-token windows in `n_ids` tokens: (count,)."""
    return torch.randint(0, n_ids - length + 1, (count,), generator=generator)


def random_blocks(ids: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`count` windows of `length` tokens at random offsets: (count, length)."""
    return torch.stack([ids[s:s + length] for s in _random_starts(len(ids), count, length, generator).tolist()])


class BatchSequence(torch.utils.data.Dataset):
    """The arena's training batches as blocks in batch order: read in order, `batch_size` at a time (the
    Trainer's sequential sampler), it gives every model the same `random_blocks` batches in the same order.

    Only the offsets are drawn up front, one batch at a time as `random_blocks` draws them, (steps x
    batch_size,); windows are sliced when read, so they never all sit in memory (and in the peak memory).
    """

    def __init__(self, ids: torch.Tensor, settings: "Settings"):
        generator = torch.Generator().manual_seed(settings.seed)
        self.ids, self.length = ids, settings.block_size
        self.starts = torch.cat([_random_starts(len(ids), settings.batch_size, settings.block_size, generator)
                                 for _ in range(settings.steps)])

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        block = self.ids[self.starts[i]:self.starts[i] + self.length]  # (block_size,)
        return {"input_ids": block, "labels": block}


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


def _compile_status(model, settings: Settings, sample: torch.Tensor) -> str:
    """Whether the model compiles ("yes", "off", or "failed, eager instead (why)"), tried on one forward and
    backward before training: the Trainer compiles only when this succeeded, so a failure is a reported result
    instead of a crash mid-training."""
    if not settings.compile:
        return "off"
    try:
        with _autocast(settings)():
            torch.compile(model)(input_ids=sample, use_cache=False).logits.float().sum().backward()
        return "yes"
    except Exception as err:  # the reason is the result: it goes into the report
        return f"failed, eager instead ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    finally:
        model.zero_grad(set_to_none=True)


class _StepClock(TrainerCallback):
    """Times each optimizer step (forward, backward, clipping, AdamW step: on_step_begin to on_step_end, the
    next batch's loading excluded) and measures the validation curve at the steps in `eval_at`."""

    def __init__(self, curve_point, eval_at: set[int], label: str, steps: int):
        self.curve_point, self.eval_at, self.label, self.steps = curve_point, eval_at, label, steps
        self.curve, self.step_times, self._start = [], [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()  # the step's kernels are done: the time is real
        self.step_times.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        """Every step logs its loss (logging_steps 1); at an evaluation step, add the curve point."""
        if "loss" in (logs or {}) and state.global_step in self.eval_at:
            self.curve.append(self.curve_point(model, state.global_step))
            print(f"[arena] {self.label}: step {state.global_step}/{self.steps}, train loss {logs['loss']:.3f}, "
                  f"val bits/byte (40 blocks) {self.curve[-1][1]:.3f}", flush=True)


def training_arguments(settings: Settings, output_dir: str, compiled: bool) -> TrainingArguments:
    """The arena's schedule as Trainer arguments: AdamW betas (0.9, 0.95) with `HatchlingsTrainer`'s decay groups
    (those of train.py), warm-up then cosine to 0, clipping at 1.0, batches read in order, nothing saved."""
    return TrainingArguments(
        output_dir=output_dir, max_steps=settings.steps, per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay, adam_beta1=0.9, adam_beta2=0.95,
        optim="adamw_torch", lr_scheduler_type="cosine", warmup_steps=round(settings.warmup_fraction * settings.steps),
        max_grad_norm=1.0, train_sampling_strategy="sequential", dataloader_num_workers=0, seed=settings.seed,
        bf16=settings.precision == "bf16", torch_compile=compiled, use_cpu=settings.device == "cpu",
        logging_steps=1, eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True)


def train(model, train_ids: torch.Tensor, val_ids: torch.Tensor, settings: Settings, bytes_per_token: float,
          label: str, optimization: dict | None = None) -> dict:
    """Train on the shared batch sequence through `HatchlingsTrainer` (train.py's loop, optimizer grouping and
    shifted loss); return the curve, median step time and compile status. `optimization` (OptimConfig fields,
    a record's arena_optimization) replaces the AdamW with train.py's optimizer of that name, same schedule."""
    from ..training.losses import declare_causal_lm_loss, make_compute_loss
    from ..training.optim import OptimConfig, build_optimizer
    from ..training.trainer import HatchlingsTrainer

    device, autocast = next(model.parameters()).device, _autocast(settings)
    curve_blocks = random_blocks(val_ids, settings.eval_blocks, settings.block_size,
                                 torch.Generator().manual_seed(settings.seed + 1))
    compiled = _compile_status(model, settings, curve_blocks[:2].to(device))

    def curve_point(trained, step: int) -> tuple[int, float]:
        loss = mean_loss(trained, curve_blocks, settings.batch_size, autocast)
        return step * settings.tokens_per_step, lm_metrics(loss, bytes_per_token)["bits_per_byte"]

    clock = _StepClock(curve_point, {round(k * settings.steps / settings.eval_points)
                                     for k in range(1, settings.eval_points + 1)}, label, settings.steps)
    declare_causal_lm_loss(model)  # Trainer counts GPT-2's targets right (num_items_in_batch)
    use_cache, model.config.use_cache = model.config.use_cache, False  # no KV cache is built while training
    with tempfile.TemporaryDirectory() as output_dir:
        args = training_arguments(settings, output_dir, compiled == "yes")
        optimizers = (build_optimizer(model, args, OptimConfig(**optimization)), None) if optimization else (None, None)
        trainer = HatchlingsTrainer(model=model, args=args, optimizers=optimizers,
                                    train_dataset=BatchSequence(train_ids, settings),
                                    data_collator=default_data_collator, compute_loss_func=make_compute_loss(),
                                    bytes_per_token=bytes_per_token, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # a log line per step; the clock prints the curve points
        trainer.train()
    model.config.use_cache = use_cache
    return {"curve": clock.curve, "median_step_s": statistics.median(clock.step_times),
            "train_s": sum(clock.step_times), "compiled": compiled}


# ---------------------------------------------------------------------------------------- one model, isolated

def measure(arch: str, settings: Settings) -> dict:
    """Train, evaluate and time one model. Runs in a fresh process (see `measure_isolated`)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    reused = settings.reuse_memory and settings.device == "cpu" and reuse_freed_memory()
    device = torch.device(settings.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # Trainer trains on the current CUDA device
    train_ids, val_ids, bytes_per_token, tokenizer = load_data(settings)
    vocab = dict(vocab_size=len(tokenizer), special_ids=(tokenizer.pad_token_id, tokenizer.bos_token_id,
                                                         tokenizer.eos_token_id))
    before = resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(settings.seed)
    model = build_model(arch, settings.size, positions=settings.block_size, **vocab).to(device)
    optimization = dict(record_for(arch).arena_optimization) if arch in RECORDS else {}
    result = train(model, train_ids, val_ids, settings, bytes_per_token, arch, optimization)
    result["optimization"] = optimization
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = peak_resident_mib()
        result["peak_memory_mib"] = peak - before if peak is not None and before is not None else None
    whole = val_ids[: len(val_ids) // settings.block_size * settings.block_size].view(-1, settings.block_size)
    loss = mean_loss(model, whole, settings.batch_size, _autocast(settings))
    result |= {"arch": arch, "params": model.num_parameters(), "val_loss": loss, "reused_memory": reused,
               "val_bits_per_byte": lm_metrics(loss, bytes_per_token)["bits_per_byte"]}
    if settings.models_dir:
        model.save_pretrained(Path(settings.models_dir) / arch)
        tokenizer.save_pretrained(Path(settings.models_dir) / arch)
    if settings.timing:
        result |= _generation(arch, settings, vocab)
    return result


def _generation(arch: str, settings: Settings, vocab: dict) -> dict:
    """Decoding cost at each context and time to first token of the arena's shape of `arch`."""
    # timed on a fresh model of the same shape with room for the longest context (GPT-2's learned position table
    # up to LEARNED_POSITIONS); speed does not depend on the weights' values
    longest = max(*settings.contexts, settings.ttft_prompt) + settings.gen_steps + 1
    torch.manual_seed(settings.seed)
    positions = min(longest, LEARNED_POSITIONS + settings.gen_steps + 1) if arch == "gpt2" else longest
    timing_model = build_model(arch, settings.size, positions=positions, **vocab).to(settings.device).eval()
    if settings.precision == "bf16":
        timing_model = timing_model.to(torch.bfloat16)
    timing = generation_timing(timing_model, sorted({*settings.contexts, settings.ttft_prompt}),
                               settings.gen_steps, settings.repeats)
    return {"generation": {c: timing[c] for c in settings.contexts},
            "ttft_ms": timing[settings.ttft_prompt].get("ttft_ms")}


def measure_isolated(arch: str, settings: Settings) -> dict:
    """`measure` in a fresh spawned process: peak memory is that model's alone, and no allocator state,
    compiled graph or thread pool of one model affects the next."""
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(measure, (arch, settings))
    finally:
        pool.close()  # close + join (not the context manager's terminate) lets the worker exit cleanly
        pool.join()


# --------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated, from {', '.join(ARCHS)}")
    parser.add_argument("--budget-tokens", "--budget_tokens", type=int, default=Settings.budget_tokens)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--size", default="tiny", choices=list(SIZES))
    parser.add_argument("--file", default=DEFAULT_FILE, help="training text (default: tiny Shakespeare, "
                                                             "fetched by `hatchlings data get tinyshakespeare`)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=Settings.batch_size)
    parser.add_argument("--block-size", "--block_size", type=int, default=Settings.block_size)
    parser.add_argument("--learning-rate", "--learning_rate", type=float, default=Settings.learning_rate)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile the models (auto: on CUDA only)")
    parser.add_argument("--contexts", default=",".join(map(str, Settings.contexts)),
                        help="generation contexts, comma-separated")
    parser.add_argument("--ttft-prompt", "--ttft_prompt", type=int, default=Settings.ttft_prompt)
    parser.add_argument("--gen-steps", "--gen_steps", type=int, default=Settings.gen_steps)
    parser.add_argument("--repeats", type=int, default=Settings.repeats)
    parser.add_argument("--eval-points", "--eval_points", type=int, default=Settings.eval_points)
    parser.add_argument("--default-malloc", "--default_malloc", action="store_true",
                        help="keep glibc's default large-allocation mmaps (slower for BDH's 32 MiB tensors)")
    parser.add_argument("--tokenizer", choices=list(TOKENIZER_KINDS), default="byte",
                        help="every model's tokenizer; char/word/bpe are learned from the training text (default: "
                             "byte, the arena's recipe)")
    parser.add_argument("--val-file", "--val_file", default=None,
                        help="validation text (default: the last 10%% of --file)")
    parser.add_argument("--timing", choices=["on", "off"], default="on", help="time generation (off: losses only)")
    parser.add_argument("--models-dir", "--models_dir", default=None,
                        help="where to save the trained models (default: runs/arena-<device>/models)")


def settings_from_args(args) -> tuple[Settings, list[str]]:
    """The run's Settings and the models to compare, checked (a bad flag fails before any training)."""
    from ..errors import UsageError

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
                    threads=torch.get_num_threads(), reuse_memory=not args.default_malloc, tokenizer=args.tokenizer,
                    val_file=args.val_file, timing=args.timing == "on"), archs


def run(args) -> Report:
    settings, archs = settings_from_args(args)
    for path in filter(None, (settings.file, settings.val_file)):
        check_file(path)  # a missing file fails now, not in a child process
    from .arena_report import curve_table, plots, summary_table

    results = [measure_isolated(arch, settings) for arch in archs]
    device_name = settings.device.split(":")[0]
    return Report(f"arena-{device_name}", [summary_table(results, settings), curve_table(results)],
                  plots(results, settings))
