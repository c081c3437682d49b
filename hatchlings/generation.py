"""Text generation shared by `hatchlings generate` and `hatchlings chat`: argument checks and clean output.

Why not transformers' TextStreamer: with a byte tokenizer one token is one UTF-8 byte, so the decoded
text of a half-generated character is the replacement character `�`. TextStreamer holds text back at
word boundaries but prints whatever the decode gives, so a `�` could reach the terminal before the rest
of the character arrived (and the final decode of a run cut off by max_new_tokens ended in `�` too).
`Utf8Streamer` only ever emits text that ends on a complete character; `generate_text` uses it for
streamed and non-streamed output alike, so both print the same text.
"""

from __future__ import annotations

import sys
from typing import TextIO

import torch
from transformers import BatchEncoding
from transformers.generation.streamers import BaseStreamer

from .errors import UsageError

#: What a lossy UTF-8 decode puts where bytes do not (yet) form a character.
REPLACEMENT = "\ufffd"
#: A UTF-8 character is at most 4 bytes: a `�` still at the end after this many more tokens is a
#: genuinely invalid byte, not a character in progress, and is emitted as it is.
MAX_PENDING_TOKENS = 4


class Utf8Streamer(BaseStreamer):
    """Streams generated text to `out` (None: only collect it), never splitting a UTF-8 character.

    `text` holds what this streamer emitted for the current (or last) generation; `generate_text`
    returns it. Subclass and override `on_finalized_text` to send the pieces elsewhere (a queue, a UI).
    At the end of a generation a newline is written to `out` and an unfinished character is dropped.
    """

    def __init__(self, tokenizer, skip_prompt: bool = True, skip_special_tokens: bool = True,
                 out: TextIO | None = sys.stdout):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.skip_special_tokens = skip_special_tokens
        self.out = out
        self.text = ""
        self._cache: list[int] = []  # tokens since the last point where everything decoded was emitted
        self._emitted = 0  # characters of decode(_cache) already emitted
        self._held_puts = 0  # consecutive puts that ended in an unfinished character
        self._at_start = True

    def put(self, value: torch.Tensor) -> None:
        """Receive new token ids ((1, T) prompt first, then (1,) or (1, 1) per step) from `generate`."""
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("Utf8Streamer streams one sequence; got a batch of "
                                 f"{value.shape[0]}")
            value = value[0]
        if self._at_start:  # the first put of a generation is the prompt
            self._at_start = False
            self.text = ""
            if self.skip_prompt:
                return
        self._cache.extend(value.tolist())
        decoded = self.tokenizer.decode(self._cache, skip_special_tokens=self.skip_special_tokens)
        complete = decoded.rstrip(REPLACEMENT)
        self._held_puts = self._held_puts + 1 if len(complete) < len(decoded) else 0
        if self._held_puts >= MAX_PENDING_TOKENS:  # an invalid byte, not a character in progress
            complete, self._held_puts = decoded, 0
        self._emit(complete[self._emitted:])
        if len(complete) == len(decoded):
            self._cache, self._emitted = [], 0
        else:
            self._emitted = len(complete)

    def end(self) -> None:
        """Finish a generation: drop an unfinished character, end the line, reset for the next one."""
        self._cache, self._emitted, self._held_puts = [], 0, 0
        self._at_start = True
        self.on_finalized_text("", stream_end=True)

    def _emit(self, piece: str) -> None:
        if piece:
            self.text += piece
            self.on_finalized_text(piece)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Write a piece of complete text (and a newline at the end of a generation) to `out`."""
        if self.out is not None:
            self.out.write(text + ("\n" if stream_end else ""))
            self.out.flush()


def check_generation_args(*, max_new_tokens: int, temperature: float, top_k: int,
                          top_p: float | None = None) -> None:
    """Refuse values `generate` would crash on or silently reinterpret (a negative temperature used to
    mean greedy); each message names the command-line flag."""
    if max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top_k must be >= 0 (0 = no top-k filtering), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top_p must be in (0, 1], got {top_p}")


def generate_text(model, tokenizer, prompt: str | list[int], *, max_new_tokens: int, temperature: float,
                  top_k: int, top_p: float | None = None, seed: int | None = None,
                  streamer: Utf8Streamer | None = None, stopping_criteria=None, **model_kwargs) -> str:
    """Continue `prompt` and return the new text (complete characters only, special tokens removed).

    temperature 0 is greedy decoding; otherwise sampling with `top_k` (0 = off) and `top_p`. An empty
    prompt starts from the tokenizer's bos (its post-processor adds it). `streamer` (a Utf8Streamer)
    receives the text as it is generated; without one the text is only collected. A list of token ids
    is used as it is (a rendered chat template already holds its bos); `stopping_criteria` (a
    transformers StoppingCriteriaList) can end a generation early, as `hatchlings chat` does at a sentence end.
    `model_kwargs` go to `generate` as they are: an architecture's extras, such as HRM's `hrm_mode`.
    """
    check_generation_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    if streamer is not None and not isinstance(streamer, Utf8Streamer):
        raise TypeError(f"streamer must be a Utf8Streamer, got {type(streamer).__name__}")
    if isinstance(prompt, str):
        inputs = tokenizer(prompt, return_tensors="pt")  # input_ids (1, T), bos first
    else:
        ids = torch.tensor([list(prompt)], dtype=torch.long)  # (1, T)
        inputs = BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    if inputs["input_ids"].shape[1] == 0:
        raise UsageError("the prompt is empty and the tokenizer adds no bos token to start from")
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    streamer = streamer if streamer is not None else Utf8Streamer(tokenizer, out=None)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, streamer=streamer,
                       stopping_criteria=stopping_criteria, **sampling, **model_kwargs)
    return streamer.text
