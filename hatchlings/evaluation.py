"""`hatchlings eval`: loss, perplexity and bits per byte of a saved model on a whole text file.

Why a sliding window: a causal model only sees `block_size` tokens at a time. Windows of `block_size` tokens
advance by `stride`, and each scores only the tokens the previous one did not (the standard strided-perplexity
method: labels are -100 over the overlapping context). Every token of the file except the first is scored
exactly once, and each with at least `block_size - stride` tokens of context (fewer only near the start).

`stride` is at most `block_size - 1`, its default: consecutive windows then share one token, which is the
context of the next window's first scored token. Disjoint blocks (stride == block_size, what the Trainer's
validation uses) could not score the first token of each block -- nothing precedes it inside its window --
and 1 token in every `block_size` would silently go unscored. The default keeps the disjoint blocks' mix of
contexts (1 to block_size - 1 tokens) and scores those tokens too.

The file's first token is never scored: nothing precedes it. A bos token could, but training never puts bos
before text (documents are packed as bytes + eos), so the model never learned what follows a bos.

The final numbers come from the `lm_perplexity` `evaluate` metric that ships in `hatchlings/metrics`, loaded
by path so no Hub access is needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:  # numpy is imported lazily at run time; the annotations name it
    import numpy as np

DEFAULT_BLOCK_SIZE = 256
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_limit(config) -> int | None:
    """The most positions a model's config allows; None when it declares none (BDH: RoPE + linear attention)
    or says longer inputs are fine (`accepts_longer_inputs`: HoloSpectralNet's max_position_embeddings sizes
    a finite kernel, not a limit). Evaluation, benchmarks, chat and probes all ask here."""
    if getattr(config, "accepts_longer_inputs", False):
        return None
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value
    return None


def _load(model_dir_or_model, tokenizer, device):
    """Model (eval mode, on `device`) and tokenizer; a folder is loaded without remote code."""
    import torch
    from transformers import AutoTokenizer

    from .training.export import load_model_folder

    if isinstance(model_dir_or_model, (str, Path)):
        model, saved_tokenizer = load_model_folder(model_dir_or_model)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return model, tokenizer or saved_tokenizer, str(model_dir_or_model)
    model = model_dir_or_model
    if device is not None:
        model.to(device)
    name = getattr(model, "name_or_path", "") or type(model).__name__
    if tokenizer is None:
        if name and (Path(name) / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(name)
        else:  # a model built in memory: the hatchlings models use the byte tokenizer
            from .tokenization import build_byte_tokenizer

            tokenizer = build_byte_tokenizer()
    return model, tokenizer, name


def read_text(file) -> str:
    """The file as UTF-8 text; a missing, unreadable or empty file is a user mistake, not a bug.

    Not UTF-8: the message names file:line as training's does (the same function words it).
    """
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        from .training.text import bad_utf8_line

        raise UsageError(bad_utf8_line(str(path)) or f"cannot read {path} as UTF-8 text: {err}") from None
    if not text:
        raise UsageError(f"data file is empty: {path}")
    return text


def token_bytes(text: str, offsets) -> "np.ndarray":
    """UTF-8 bytes each token stands for, from character offsets, summing exactly to the covered text.

    Per-token decoding would be wrong for byte tokens (one byte of a multi-byte character decodes to a
    3-byte replacement character), so bytes are measured on the original text: each token is charged the
    bytes of the characters it is the first to reach, and tokens that share one character span (the bytes
    of one multi-byte character) split its bytes evenly. For the byte tokenizer this is exactly 1 per token.
    """
    import numpy as np

    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    char_bytes = 1 + (codepoints >= 0x80) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    byte_at = np.concatenate([[0], np.cumsum(char_bytes, dtype=np.int64)])  # byte offset of each character
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], np.clip(offsets[:, 1], 0, len(codepoints))
    reached = np.maximum.accumulate(ends)
    new = byte_at[reached] - byte_at[np.concatenate([[0], reached[:-1]])]
    first = np.ones(len(offsets), dtype=bool)
    first[1:] = (starts[1:] != starts[:-1]) | (ends[1:] != ends[:-1])
    group = np.cumsum(first) - 1
    total, size = np.bincount(group, weights=new).astype(np.int64), np.bincount(group)
    rank = np.arange(len(offsets)) - np.flatnonzero(first)[group]
    return total[group] // size[group] + (rank < total[group] % size[group])


def _tokenize(text: str, tokenizer) -> tuple[list[int], "np.ndarray"]:
    """Token ids of the whole text (no bos, as in training) and the bytes each one covers."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
    except NotImplementedError:  # slow tokenizers have no offsets: spread the bytes evenly over the tokens
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
        offsets = [(0, len(text))] * len(enc["input_ids"])
    return list(enc["input_ids"]), token_bytes(text, offsets)


def sliding_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) per window: ids[begin:end] go in, targets first_scored..end-1 are scored.

    Window j begins at j * stride and scores from where the previous one ended, so targets 1..n_tokens-1 are
    each scored once; the last window may be short. `stride < block_size` guarantees every window's first
    target has a token before it in the window.
    """
    if not 1 <= stride < block_size:
        raise ValueError(f"stride must be in [1, block_size - 1 = {block_size - 1}], got {stride}")
    windows, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        windows.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def _score(model, ids: list[int], windows, batch_size: int, model_kwargs: dict | None = None) -> list[float]:
    """Summed NLL (nats) of each window's scored targets; windows of equal length are batched; `model_kwargs`
    go to every forward call."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    sums: list[float] = [0.0] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: windows[i][1] - windows[i][0])
    batches, current = [], []
    for i in order:
        if current and (len(current) == batch_size or
                        windows[i][1] - windows[i][0] != windows[current[0]][1] - windows[current[0]][0]):
            batches.append(current)
            current = []
        current.append(i)
    batches.append(current)
    for batch in batches:
        x = torch.tensor([ids[windows[i][0]:windows[i][1]] for i in batch], device=device)
        logits = model(input_ids=x, use_cache=False, **(model_kwargs or {})).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        nll = nll.view(len(batch), -1)
        for row, i in enumerate(batch):
            begin, end, first = windows[i]
            sums[i] = nll[row, first - begin - 1:end - begin - 1].sum().item()
    return sums


def evaluate_file(model_dir_or_model, file, *, block_size: int | None = None, stride: int | None = None,
                  batch_size: int = 8, max_tokens: int | None = None, tokenizer=None,
                  device: str | None = None, model_kwargs: dict | None = None) -> dict:
    """Score every token of `file` with a strided sliding window; return loss, perplexity, bits/byte, ...

    `block_size` defaults to the model's declared context (or 256), `stride` to `block_size - 1` (windows
    sharing one token); `max_tokens` evaluates only the start of the file. A model object may be passed
    instead of a folder (with `tokenizer`, or the byte tokenizer is used). `model_kwargs` go to every forward
    call as they are: an architecture's extras, such as HRM's `hrm_mode`.
    """
    import evaluate
    import torch

    from .metrics import METRICS_DIR

    text = read_text(file)
    model, tokenizer, name = _load(model_dir_or_model, tokenizer, device)
    limit = context_limit(model.config)
    if block_size is None:
        block_size = limit or DEFAULT_BLOCK_SIZE
    if stride is None:
        stride = block_size - 1
    if block_size < 2:
        raise UsageError(f"--block_size must be >= 2, got {block_size}")
    if limit is not None and block_size > limit:
        raise UsageError(f"--block_size {block_size} exceeds the model's context of {limit} tokens")
    if not 1 <= stride < block_size:
        raise UsageError(f"--stride must be between 1 and --block_size - 1 ({block_size - 1}), got {stride} "
                         "(windows must overlap, or the first token of each would go unscored)")
    if batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {batch_size}")
    ids, nbytes = _tokenize(text, tokenizer)
    if max_tokens is not None:
        ids, nbytes = ids[:max_tokens], nbytes[:max_tokens]
    if len(ids) < 2:
        raise UsageError(f"{file} has {len(ids)} token(s); at least 2 are needed to score one prediction")

    windows = sliding_windows(len(ids), block_size, stride)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            sums = _score(model, ids, windows, batch_size, model_kwargs)
    finally:
        model.train(was_training)
    metric = evaluate.load(str(METRICS_DIR / "lm_perplexity"), keep_in_memory=True)
    scores = metric.compute(nll_sum=sums, n_tokens=[end - first for _, end, first in windows],
                            n_bytes=[int(nbytes[first:end].sum()) for _, end, first in windows])
    return {"model": name, "file": str(file), "block_size": block_size, "stride": stride, **scores,
            "file_tokens": len(ids), "windows": len(windows)}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `hatchlings eval` flags (the caller owns the parser, so this only adds to it)."""
    parser.add_argument("model", help="folder written by train.py (config.json + tokenizer)")
    parser.add_argument("--file", required=True, help="UTF-8 text file to score (all of it)")
    parser.add_argument("--block_size", type=int, default=None,
                        help=f"tokens per window (default: the model's context, else {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--stride", type=int, default=None,
                        help="tokens each window advances, at most block_size - 1 (the default: windows share "
                             "one token); smaller = more context per scored token, slower")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--max_tokens", type=int, default=None, help="score only the first N tokens of the file")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: cuda if available)")
    parser.add_argument("--output", default=None, help="JSON results path (default: <model>/eval_<file stem>.json)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a one-line summary and the JSON, write the JSON; 0 on success."""
    result = evaluate_file(args.model, args.file, block_size=args.block_size, stride=args.stride,
                           batch_size=args.batch_size, max_tokens=getattr(args, "max_tokens", None),
                           device=getattr(args, "device", None))
    output = Path(args.output) if args.output else Path(args.model) / f"eval_{Path(args.file).stem}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    output.write_text(text + "\n")
    print(f"[hatchlings] eval {Path(args.file).name}: {result['tokens']} of {result['file_tokens']} tokens scored "
          f"(all but the first), loss {result['loss']:.4f}, "
          f"perplexity {result['perplexity']:.3f}, bits/byte {result['bits_per_byte']:.4f} "
          f"(block {result['block_size']}, stride {result['stride']}) -> {output}")
    print(text)
    return 0
