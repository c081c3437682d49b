"""`train.py` / `hatchlings train`: preset -> tokenizer, model, datasets -> Trainer -> Hub folder.

The same code runs as one process or as several under `accelerate launch` / `torchrun`: Trainer
handles the distributed sampler and gradient all-reduce; only rank 0 exports and prints the sample.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, default_data_collator, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..modeling import config_class_for
from ..tokenization import build_byte_tokenizer
from .config import RunConfig, parse_run_config
from .data import build_datasets
from .ema import EmaCallback
from .export import export_hub_folder, load_model_folder
from .losses import make_compute_loss
from .optim import build_optimizer
from .sparsity import track_sparsity
from .errors import UsageError
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
                                        ("z_loss", opt.z_loss), ("ema_decay", opt.ema_decay)) if v]
    return ", ".join([name, *extras]) + (" (EMA weights exported)" if opt.export_ema else "")


def _train_info(run: RunConfig, trainer, n_train_blocks: str, seconds: float) -> dict:
    args = trainer.args
    tokens = trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps \
        * args.world_size * run.data.block_size
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
    """Continue `prompt` by sampling: the quick look at what the model learned."""
    model.eval()
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             top_k=top_k)
    return tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _model_and_tokenizer(run: RunConfig):
    """A fresh model and byte tokenizer, or (continual learning) those of an exported folder."""
    if not run.init_from:
        tokenizer = build_byte_tokenizer()
        return build_model(run, tokenizer), tokenizer
    if run.model:
        raise UsageError("--init_from takes the architecture from the exported folder: remove the 'model' section")
    return load_model_folder(run.init_from)


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


def run_training(argv: list[str], callbacks: list | None = None) -> dict:
    """Train as the preset and flags say; return the final validation metrics.

    Ctrl+C / SIGTERM finish the current step, write a checkpoint and return (exit status 0), printing
    how to resume; the export is only written by a run that reached its last step.
    """
    run = parse_run_config(argv)
    set_seed(run.training.seed)
    model, tokenizer = _model_and_tokenizer(run)
    with run.training.main_process_first(desc="tokenizing"):
        train_ds, val_ds, stats = build_datasets(run.data, tokenizer)
    if not hasattr(train_ds, "__len__") and run.training.max_steps <= 0:
        raise UsageError("the training data is streamed (a file above data.streaming_threshold_mb): "
                         "give --max_steps, since the number of blocks is unknown in advance")
    cap = run.data.max_eval_blocks
    stop, opt = GracefulStop(), run.optimization
    ema = EmaCallback(opt.ema_decay) if opt.ema_decay > 0 else None
    trainer = HatchlingsTrainer(model=model, args=run.training, train_dataset=train_ds,
                                eval_dataset=val_ds.select(range(min(cap or len(val_ds), len(val_ds)))),
                                data_collator=default_data_collator, bytes_per_token=stats.bytes_per_token,
                                **_optimization_kwargs(model, run),
                                callbacks=[*(callbacks or []), *([ema] if ema else []), stop])  # stop decides last
    track_sparsity(trainer)  # BDH-like models only (forward takes output_sparsity); it logs, never steers training
    resume = _checkpoint_to_resume(run)
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
        metrics = trainer.evaluate(eval_dataset=val_ds)
        if trainer.is_world_process_zero():
            with ema.applied(trainer.model) if ema and opt.export_ema else contextlib.nullcontext():
                _finish(run, trainer, tokenizer, metrics, result.training_loss, _count(train_ds), seconds)
    del trainer, model
    _teardown()
    return metrics


def _validation_name(run: RunConfig) -> str:
    """What the reported validation numbers were measured on, in words."""
    if run.data.validation_file:
        return ", ".join(Path(f).name for f in run.data.validation_file)
    source = ", ".join(Path(f).name for f in run.data.train_file) if run.data.train_file else "pydoc_data topics"
    return f"last {run.data.validation_fraction:.0%} of {source}"


def _finish(run: RunConfig, trainer, tokenizer, metrics: dict, train_loss: float, n_train: str,
            seconds: float) -> None:
    """Export the Hub folder, print a sample and the one-line summary (rank 0 only)."""
    model = trainer.model
    prompt = run.generation.get("prompt", "\n")
    info = _train_info(run, trainer, n_train, seconds)
    out = export_hub_folder(
        model, tokenizer, run.training.output_dir, architecture=run.architecture,
        train_info=info,
        eval_results={"eval_loss": metrics["eval_loss"], "perplexity": metrics["eval_perplexity"],
                      "bits_per_byte": metrics["eval_bits_per_byte"], "dataset": _validation_name(run)},
        log_history=trainer.state.log_history, widget_prompts=[prompt],
        datasets=run.card.get("datasets"), license=run.card.get("license", "apache-2.0"))
    text = sample(model, tokenizer, prompt, **{k: v for k, v in run.generation.items() if k != "prompt"})
    print(f"--- sample ---\n{prompt}{text}\n--------------", flush=True)
    tokens = info["tokens seen"]
    print(f"[hatchlings] done: {trainer.state.global_step} steps, {tokens:,} tokens, {seconds:.0f}s, "
          f"train loss {train_loss:.4f}, "
          f"val loss {metrics['eval_loss']:.4f}, val bits/byte {metrics['eval_bits_per_byte']:.4f} -> {out}",
          flush=True)


def _teardown() -> None:
    """Destroy the process group explicitly: left to interpreter exit, gloo aborts a share of runs."""
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
