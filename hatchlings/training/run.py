"""`train.py` / `hatchlings train`: preset -> tokenizer, model, datasets -> Trainer -> Hub folder.

The same code runs as one process or as several under `accelerate launch` / `torchrun`: Trainer
handles the distributed sampler and gradient all-reduce; only rank 0 exports and prints the sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..architectures import config_class_for, record_for, record_of_model, resolve
from ..errors import UsageError
from ..generation import generate_text
from ..model_cards.card import CURVE_EVALUATED_ON, EVALUATED_ON, FINAL_EVAL_PREFIX
from ..tokenization import build_tokenizer, expand_char_vocab, tokenizer_kind
from ..tokenization.corpus import CorpusSample
from ..tokenization.resize import resize_for_new_tokens
from .adapters import adapter_exporter, check_checkpoint_kind, prepare_adapter
from .answers import card_answer_scores
from .config import RunConfig, parse_run_config
from .data import build_datasets, collate, holds_instructions
from .ema import EmaCallback
from .export import export_hub_folder, load_model_folder
from .history import add_stage, file_facts, read_history, same_data
from .losses import make_compute_loss
from .optim import build_optimizer
from .sparsity import track_sparsity
from .text import resolve_sources
from .trainer import GracefulStop, HatchlingsTrainer


def build_model(run: RunConfig, tokenizer):
    """A freshly initialised model of the run's architecture, sized to the tokenizer."""
    try:
        config = config_class_for(run.architecture)(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, **run.model)
    except (ValueError, TypeError) as err:
        raise UsageError(f"invalid model config: {err}") from None
    return AutoModelForCausalLM.from_config(config)


def _optimizer_name(run: RunConfig, args) -> str:
    opt = run.optimization
    name = "muon + adamw" if opt.name == "muon" else getattr(args.optim, "value", str(args.optim))
    extras = [f"{k} {v}" for k, v in (("wiener_snr", opt.wiener_snr), ("label_smoothing", opt.label_smoothing),
                                        ("z_loss", opt.z_loss), ("ema_decay", opt.ema_decay),
                                        ("hebbian_seed", opt.hebbian_seed)) if v]
    return ", ".join([name, *extras]) + (" (EMA weights exported)" if opt.export_ema else "")


def _train_info(run: RunConfig, trainer, n_train_blocks: str, seconds: float) -> dict:
    args = trainer.args
    # the Trainer's count of the input tokens it trained on (padding left out unless a flag says otherwise)
    tokens = trainer.state.num_input_tokens_seen
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else (platform.processor() or "CPU")
    return {
        "data": ", ".join(run.data.train_file) if run.data.train_file else "Python documentation (pydoc_data.topics)",
        "training blocks": f"{n_train_blocks} x {run.data.block_size} tokens",
        "steps": trainer.state.global_step,
        "tokens seen": tokens,
        "batch size (per device x accumulation x processes)":
            f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps} x {args.world_size}",
        "learning rate": args.learning_rate,
        "optimizer": _optimizer_name(run, args),
        "hardware": f"{args.world_size} x {device} ({torch.get_num_threads()} threads)",
        "wall time (s)": round(seconds, 1),
        "command": " ".join(["train.py", *sys.argv[1:]]),
    }


def sample(model, tokenizer, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
           top_k: int = 50) -> str:
    """Continue `prompt` (as `hatchlings generate` would): the quick look at what the model learned."""
    model.eval()
    return generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                         top_k=top_k)


def _say(run: RunConfig, message: str) -> None:
    if run.training.process_index == 0:
        print(f"[hatchlings] {message}", flush=True)


def _run_tokenizer(run: RunConfig):
    """The run's tokenizer: its kind (default: the architecture's), learned from the training text if need be."""
    kind = run.tokenizer.kind or record_for(run.architecture).tokenizer
    corpus = CorpusSample(run.data)
    try:
        tokenizer = build_tokenizer(kind, corpus, run.tokenizer.vocab_size, run.tokenizer.min_frequency)
    except ValueError as err:
        raise UsageError(f"tokenizer: {err}") from None
    if kind != "byte":
        _say(run, f"{kind} tokenizer: {len(tokenizer):,} tokens" + (f" ({corpus.sample_note()})"
                                                                     if corpus.sample_note() else ""))
    return tokenizer


def _model_and_tokenizer(run: RunConfig):
    """A fresh model and the run's tokenizer, or (continual learning) those of an exported folder, plus where
    this run starts in the training history (hatchlings.training.history).

    Continuing a char model on text with new characters appends them to the vocabulary (old ids stay) and
    grows the embeddings and head to match; an architecture whose record has a `growth` hook may add blocks
    for the new text. The optimizer, built later by the Trainer, sees every new tensor."""
    if not run.init_from:
        tokenizer = _run_tokenizer(run)
        return build_model(run, tokenizer), tokenizer, HistoryStart([], None, 0, _data_facts(run))
    if run.model:
        raise UsageError("--init_from takes the architecture from the exported folder: remove the 'model' section")
    model, tokenizer = load_model_folder(run.init_from)
    kind = tokenizer_kind(tokenizer)
    if run.tokenizer.kind and run.tokenizer.kind != kind:
        raise UsageError(f"--init_from: the exported tokenizer is {kind or 'not a hatchlings kind'}, "
                         f"not {run.tokenizer.kind}")
    try:
        start = HistoryStart(read_history(run.init_from), len(tokenizer), 0, _data_facts(run))
    except ValueError as err:
        raise UsageError(f"--init_from: {err}") from None
    if kind == "char":
        tokenizer, added = expand_char_vocab(tokenizer, CorpusSample(run.data))
        if added:
            old = resize_for_new_tokens(model, len(tokenizer), tokenizer.unk_token_id)
            _say(run, f"char vocabulary expanded by {added} new characters: {old} -> {len(tokenizer)} tokens")
    growth = record_of_model(model).growth
    if same_data(start.history[-1] if start.history else None, start.files):
        _say(run, f"same data as stage {start.history[-1]['stage']} of {run.init_from}: continuing that stage")
    elif growth:
        start.blocks_added, message = resolve(growth)(model, sum(f["characters"] for f in start.files))
        if message:
            _say(run, message)
    return model, tokenizer, start


@dataclasses.dataclass
class HistoryStart:
    """Where a run starts: the stages of its --init_from export, the vocabulary before this run changed it
    (None for a new model), the blocks the architecture's growth hook added and the file_facts of this run's
    training files (hashed once: they decide growth and the stage the export records)."""

    history: list[dict]
    vocab_before: int | None
    blocks_added: int
    files: list[dict]


def _data_facts(run: RunConfig) -> list[dict]:
    """file_facts of every training file ([] for the built-in corpus)."""
    return [file_facts(source.path) for source in resolve_sources(run.data.train_file or [])
            if Path(source.path).is_file()]


def _count(dataset) -> str:
    """Blocks in a dataset, or 'streamed' for an IterableDataset whose length is unknown."""
    return str(len(dataset)) if hasattr(dataset, "__len__") else "streamed"


def _optimization_kwargs(model, run: RunConfig) -> dict:
    """Trainer arguments for the `optimization` section. Plain AdamW stays Trainer's own (so `--optim` works);
    Muon or the Wiener-SNR wrapper are built here; label smoothing / z-loss use our shifted loss."""
    opt, kwargs = run.optimization, {}
    if opt.name != "adamw" or opt.wiener_snr:
        kwargs["optimizers"] = (build_optimizer(model, run.training, opt, verbose=run.training.process_index == 0), None)
    if opt.label_smoothing or opt.z_loss:
        kwargs["compute_loss_func"] = make_compute_loss(opt.label_smoothing, opt.z_loss)
    return kwargs


def _checkpoint_to_resume(run: RunConfig) -> str | None:
    """`--resume`: the newest complete checkpoint in output_dir (staged, torn saves are never candidates)."""
    if run.training.resume_from_checkpoint:
        return run.training.resume_from_checkpoint
    if not run.resume:
        return None
    folder = Path(run.training.output_dir)
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        raise UsageError(f"--resume: no checkpoint-* folder in {folder} to resume from")
    return last


def _hebbian_seed(run: RunConfig, model, train_ds) -> None:
    """Seed a new model's input embeddings from its training text (a resumed run's checkpoint replaces them)."""
    from .hebbian import seed_input_embeddings

    if run.init_from or run.lora.r:
        raise UsageError("optimization.hebbian_seed initialises a new model's embeddings: it cannot be combined "
                         "with --init_from or --lora_r")
    try:
        print(f"[hatchlings] {seed_input_embeddings(model, train_ds, seed=run.training.seed)}", flush=True)
    except ValueError as err:
        raise UsageError(f"optimization.hebbian_seed: {err}") from None


def run_training(argv: list[str], callbacks: list | None = None, prog: str = "train.py") -> dict:
    """Train as the preset and flags say; return the final validation metrics.

    Ctrl+C / SIGTERM finish the current step, write a checkpoint and return (exit status 0), printing
    how to resume; the export is only written by a run that reached its last step.
    """
    run = parse_run_config(argv, prog=prog)
    set_seed(run.training.seed)
    model, tokenizer, origin = _model_and_tokenizer(run)
    model = prepare_adapter(run, model, tokenizer)  # --lora_r: only a LoRA adapter trains
    with run.training.main_process_first(desc="tokenizing"):
        train_ds, val_ds, stats = build_datasets(run.data, tokenizer)
    if not hasattr(train_ds, "__len__") and run.training.max_steps <= 0:
        raise UsageError("the training data is streamed (a file above data.streaming_threshold_mb): "
                         "give --max_steps, since the number of blocks is unknown in advance")
    cap = run.data.max_eval_blocks
    stop, opt = GracefulStop(), run.optimization
    if opt.hebbian_seed:
        _hebbian_seed(run, model, train_ds)
    ema = EmaCallback(opt.ema_decay) if opt.ema_decay > 0 else None
    trainer = HatchlingsTrainer(model=model, args=run.training, train_dataset=train_ds,
                                eval_dataset=val_ds.select(range(min(cap or len(val_ds), len(val_ds)))),
                                data_collator=collate, bytes_per_token=stats.bytes_per_token,
                                **_optimization_kwargs(model, run),
                                callbacks=[*(callbacks or []), *([ema] if ema else []), stop])  # stop decides last
    if ema and trainer.is_fsdp_enabled:
        raise UsageError("optimization.ema_decay does not work with FSDP yet (its shadow weights would be shards)")
    if run.lora.r and trainer.is_fsdp_enabled:
        raise UsageError("LoRA adapters do not work with FSDP yet "
                         "(the export gathers a plain model, without the adapter)")
    track_sparsity(trainer)  # BDH-like models only (forward takes output_sparsity); it logs, never steers training
    resume = _checkpoint_to_resume(run)
    check_checkpoint_kind(resume, adapter=bool(run.lora.r))
    if trainer.is_world_process_zero():
        print(f"[hatchlings] {run.architecture}: {model.num_parameters():,} parameters; {_count(train_ds)} train / "
              f"{len(val_ds)} validation blocks of {run.data.block_size} tokens"
              + (f"; resuming from {resume}" if resume else ""), flush=True)
    stop.install()
    try:
        start = time.time()
        result = trainer.train(resume_from_checkpoint=resume)
        seconds = time.time() - start
    finally:
        stop.uninstall()
    metrics = {}
    if stop.stopped_at is not None:
        if trainer.is_world_process_zero():
            print(f"[hatchlings] stopped at step {stop.stopped_at}; checkpoint saved in {run.training.output_dir}. "
                  f"Resume with: python train.py {' '.join(a for a in argv if a != '--resume')} --resume", flush=True)
    else:
        # The exported weights are the ones evaluated (the EMA's with export_ema; EMA refuses FSDP, so
        # trainer.model holds every weight): all validation blocks, logged apart from the periodic evaluations
        # on the first `cap` of them (see model_cards.card.FINAL_EVAL_PREFIX), returned as Trainer's eval_*.
        with ema.applied(trainer.model) if ema and opt.export_ema else contextlib.nullcontext():
            final = trainer.evaluate(eval_dataset=val_ds, metric_key_prefix=FINAL_EVAL_PREFIX)
            metrics = {"eval" + key.removeprefix(FINAL_EVAL_PREFIX): value for key, value in final.items()}
            metrics |= _variant_metrics(run, trainer, val_ds)
            model = trainer.unsharded_model()  # on every rank: under FSDP the full weights are gathered
            if trainer.is_world_process_zero():
                _finish(run, trainer, model, tokenizer, metrics, result.training_loss, origin, val_ds, seconds)
    del trainer, model
    _teardown()
    return metrics


def _variant_metrics(run: RunConfig, trainer, val_ds) -> dict[str, float]:
    """Validation bits/byte under each of the architecture's evaluation variants (record.eval_variants; HRM:
    every depth mode), on all validation blocks, as `eval_bits_per_byte (<label>)`."""
    target = record_for(run.architecture).eval_variants
    if not target:
        return {}
    config, metrics = trainer.model.config, {}
    for label, overrides in resolve(target)(config).items():
        saved = {key: getattr(config, key) for key in overrides}
        config.update(overrides)
        try:
            result = trainer.evaluate(eval_dataset=val_ds, metric_key_prefix="variant_eval")
        finally:
            config.update(saved)
        metrics[f"eval_bits_per_byte ({label})"] = result["variant_eval_bits_per_byte"]
    return metrics


def _validation_name(run: RunConfig) -> str:
    """What the reported validation numbers were measured on, in words."""
    if run.data.validation_file:
        return ", ".join(Path(f).name for f in run.data.validation_file)
    source = ", ".join(Path(f).name for f in run.data.train_file) if run.data.train_file else "pydoc_data topics"
    return f"last {run.data.validation_fraction:.0%} of {source}"


def _evaluated_on(run: RunConfig, trainer, n_val: int) -> dict[str, str]:
    """What the final figures and (if any were logged) the periodic validation points were measured on."""
    measured = {EVALUATED_ON: f"all {n_val} validation blocks of {run.data.block_size} tokens"}
    if any("eval_loss" in entry for entry in trainer.state.log_history):
        k = len(trainer.eval_dataset)
        measured[CURVE_EVALUATED_ON] = (f"all {n_val} validation blocks" if k == n_val
                                        else f"first {k} of {n_val} validation blocks")
    return measured


def _finish(run: RunConfig, trainer, model, tokenizer, metrics: dict, train_loss: float, start: HistoryStart,
            val_ds, seconds: float) -> None:
    """Export the Hub folder, print a sample and the one-line summary (rank 0 only).

    An instruction-tuned model's card also scores its answers to held-out instructions (answers.py)."""
    prompt = run.generation.get("prompt", "\n")
    info = _train_info(run, trainer, _count(trainer.train_dataset), seconds)
    evaluation = {"dataset": _validation_name(run), **_evaluated_on(run, trainer, len(val_ds)),
                  "eval_loss": metrics["eval_loss"], "perplexity": metrics["eval_perplexity"],
                  "bits_per_byte": metrics["eval_bits_per_byte"],
                  **{key.removeprefix("eval_"): value for key, value in metrics.items()
                     if key.startswith("eval_bits_per_byte (")},
                  **card_answer_scores(model, tokenizer, val_ds)}
    exporter = adapter_exporter(run)
    # a full export says whether it was instruction-tuned (so `hatchlings chat` knows to use the chat template)
    # and carries the training history of every stage before it
    extra = {} if exporter else {"instruction_tuned": holds_instructions(trainer.train_dataset),
                                 "history": _history(run, trainer, tokenizer, start, evaluation, info)}
    out = (exporter or export_hub_folder)(
        model, tokenizer, run.training.output_dir, architecture=run.architecture, **extra,
        train_info=info, eval_results=evaluation, log_history=trainer.state.log_history, widget_prompts=[prompt],
        datasets=run.card.get("datasets"), license=run.card.get("license", "apache-2.0"))
    text = sample(model, tokenizer, prompt, **{k: v for k, v in run.generation.items() if k != "prompt"})
    print(f"--- sample ---\n{prompt}{text}\n--------------", flush=True)
    tokens = info["tokens seen"]
    print(f"[hatchlings] done: {trainer.state.global_step} steps, {tokens:,} tokens, {seconds:.0f}s, "
          f"train loss {train_loss:.4f}, "
          f"val loss {metrics['eval_loss']:.4f}, val bits/byte {metrics['eval_bits_per_byte']:.4f} -> {out}",
          flush=True)


def _history(run: RunConfig, trainer, tokenizer, start: HistoryStart, evaluation: dict, info: dict) -> list[dict]:
    """The export's training history: the --init_from export's stages plus this run's."""
    blocks = len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else None
    return add_stage(start.history, files=start.files,
                     data_tokens=blocks * run.data.block_size if blocks is not None else None,
                     steps=trainer.state.global_step, tokens_seen=info["tokens seen"],
                     vocab_before=start.vocab_before, vocab_after=len(tokenizer), blocks_added=start.blocks_added,
                     evaluation={k: evaluation[k] for k in ("dataset", "eval_loss", "bits_per_byte")},
                     init_from=Path(run.init_from).name if run.init_from else None)


def _teardown() -> None:
    """Destroy the process group explicitly: left to interpreter exit, gloo aborts a share of runs."""
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
