"""`hatchlings chat D`: talk to an exported model in the terminal, token by token.

The conversation lives in `ChatSession` (model, tokenizer, settings, history; `send` and `command`), apart
from the terminal loop, so that a test or another front end (a local web app) drives the same object.

A model exported with `instruction_tuned: true` in its config.json (its training data held instruction
examples) is talked to through the tokenizer's chat template, with the conversation so far as context; any
other model simply continues each line as a prompt, since a base model was never taught the template's roles.

Lines that start with `/` are commands, so that prose is never mistaken for one (`//` sends a line that
starts with `/`). Architectures add commands through `ArchitectureRecord.chat_commands`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .architectures import record_of_model, resolve
from .generation import Utf8Streamer, check_generation_args, generate_text
from .tokenization import tokenizer_kind
from .errors import UsageError
from .evaluation import context_limit as config_limit

#: tokenizer.model_max_length when the tokenizer was saved without one (transformers' VERY_LARGE_INTEGER)
_UNSET_LENGTH = 10**29
#: generated tokens decoded to look for a sentence end (a multi-byte character fits many times over)
_SENTENCE_TAIL = 8
_SENTENCE_END = re.compile(r"[.!?]\s$")


@dataclass(frozen=True)
class Settings:
    """Sampling settings; `stop` is "eos" (the model's end of sequence) or "sentence" (also after . ! ?)."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float | None = None
    max_new_tokens: int = 200
    stop: str = "eos"

    def __post_init__(self):
        check_generation_args(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                              top_p=self.top_p)
        if self.stop not in ("eos", "sentence"):
            raise UsageError(f"stop must be 'eos' or 'sentence' (/stop eos|sentence), got {self.stop!r}")

    def describe(self) -> str:
        top_p = "off" if self.top_p is None else self.top_p
        return (f"temperature {self.temperature}, top_k {self.top_k}, top_p {top_p}, "
                f"max_new_tokens {self.max_new_tokens}, stop at {self.stop}")


class SentenceEnd(StoppingCriteria):
    """Stop once the generated text ends in `.`, `!` or `?` followed by whitespace (eos stops on its own).

    Only tokens after the prompt count, so a prompt that ends a sentence does not stop the reply at once."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        # input_ids: (batch, prompt + generated) -> (batch,) bool
        tails = input_ids[:, self.prompt_length:][:, -_SENTENCE_TAIL:]
        done = [bool(_SENTENCE_END.search(self.tokenizer.decode(row, skip_special_tokens=True)))
                for row in tails.tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def context_limit(model, tokenizer) -> int | None:
    """The most tokens the model takes (its position table or the tokenizer's maximum), None if unbounded."""
    limits = [config_limit(model.config), tokenizer.model_max_length]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < _UNSET_LENGTH]
    return min(limits) if limits else None


def uses_chat_template(model, tokenizer) -> bool:
    """Talk through the chat template only to a model trained on it (older exports carry no flag: plain)."""
    return bool(getattr(model.config, "instruction_tuned", False)) and bool(getattr(tokenizer, "chat_template",
                                                                                     None))


def card_tables(card_text: str) -> dict[str, list[tuple[str, str]]]:
    """The two-column tables of a model card's sections ("Training", "Evaluation"), as (item, value) rows.
    A subsection ("### Training history") is a section of its own, so its table is not read as the parent's."""
    tables, section = {}, None
    for line in card_text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            section = line.lstrip("#").strip()
        elif section and line.startswith("|") and not set(line) <= set("|-: "):
            item, _, value = line.strip().strip("|").partition("|")
            tables.setdefault(section, []).append((item.strip(), value.strip()))
    return {name: rows[1:] for name, rows in tables.items()}  # rows[0] is the header


class ChatSession:
    """One conversation with a model: `send(text)` generates a reply, `command("/name arg")` changes it.

    Both raise UsageError for bad input (an empty message, an over-long prompt, a bad value) so that every
    front end reports it as one line. In chat-template mode the history is the context of each reply, and
    the oldest turns are dropped when the prompt would not fit the model's context with `max_new_tokens`.
    """

    def __init__(self, model, tokenizer, *, settings: Settings | None = None, chat_template: bool | None = None,
                 card_text: str = "", name: str = "model", stages: list[dict] | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.settings = settings or Settings()
        self.chat_template = uses_chat_template(model, tokenizer) if chat_template is None else chat_template
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise UsageError("the tokenizer has no chat template: use plain continuation")
        self.history: list[dict[str, str]] = []
        self.card_text, self.name = card_text, name
        self.stages = stages or []  # the training history of an export (hatchlings.training.history)
        self.limit = context_limit(model, tokenizer)
        self.done = False  # set by /quit; front ends stop reading input
        self.generate_kwargs: dict = {}  # the architecture's extras (e.g. HRM's hrm_mode), set by its commands
        self.builtins = {"temp": self._temp, "top_k": self._top_k, "top_p": self._top_p, "max": self._max,
                         "stop": self._stop, "status": self._status, "reset": self._reset, "help": self._help,
                         "quit": self._quit}
        self.extras = self._extras()

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "ChatSession":
        """A session over an exported folder (load_model_folder), with its model card for /status."""
        from .training.export import load_model_folder
        from .training.history import read_history

        model, tokenizer = load_model_folder(folder)
        readme = Path(folder) / "README.md"
        card_text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        try:
            stages = read_history(folder)
        except ValueError as err:
            raise UsageError(str(err)) from None
        return cls(model, tokenizer, card_text=card_text, name=Path(folder).resolve().name, stages=stages, **kwargs)

    def _extras(self) -> dict:
        """The architecture's own commands (record.chat_commands), imported now so a typo fails at start."""
        try:
            targets = record_of_model(self.model).chat_commands
        except ValueError:  # not a hatchlings architecture: no extras
            return {}
        clash = sorted(set(targets) & set(self.builtins))
        if clash:
            raise ValueError(f"chat_commands may not redefine built-in commands: {', '.join(clash)}")
        return {name: resolve(target) for name, target in targets.items()}

    # ------------------------------------------------------------------------------------------ replies

    def send(self, text: str, streamer: Utf8Streamer | None = None) -> str:
        """Generate the reply to `text` (streamed to `streamer` as it comes) and return it."""
        if not text.strip():
            raise UsageError("empty message: type some text, or /help for the commands")
        ids = self._prompt_ids(text)
        s = self.settings
        stopping = StoppingCriteriaList([SentenceEnd(self.tokenizer, len(ids))]) if s.stop == "sentence" else None
        room = s.max_new_tokens if self.limit is None else min(s.max_new_tokens, self.limit - len(ids))
        reply = generate_text(self.model, self.tokenizer, ids, max_new_tokens=room, temperature=s.temperature,
                              top_k=s.top_k, top_p=s.top_p, streamer=streamer, stopping_criteria=stopping,
                              **self.generate_kwargs)
        if self.chat_template:
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.strip()}]
        return reply

    def _prompt_ids(self, text: str) -> list[int]:
        """The prompt's token ids: the templated conversation (oldest turns trimmed to fit) or the plain text.
        A prompt too long even alone is refused with the history left as it was."""
        history = self.history
        if not self.chat_template:
            ids = self.tokenizer(text, verbose=False)["input_ids"]  # we report a too-long prompt ourselves
        else:
            while True:
                ids = self._render(history + [{"role": "user", "content": text}])
                fits = self.limit is None or len(ids) + self.settings.max_new_tokens <= self.limit
                if fits or not history:
                    break
                history = history[2:]  # drop the oldest user + assistant turn
        if self.limit is not None and len(ids) >= self.limit:
            raise UsageError(f"the prompt is too long: {len(ids)} tokens, and the model takes at most "
                             f"{self.limit} (prompt and reply together); shorten it")
        self.history = history
        return ids

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        # The template writes its own bos, so the tokenizer must not add another.
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    # ----------------------------------------------------------------------------------------- commands

    def command(self, line: str) -> str:
        """Run one `/name [argument]` line and return the message to show."""
        name, _, argument = line.strip().removeprefix("/").partition(" ")
        handler = self.builtins.get(name)
        if handler is not None:
            return handler(argument.strip())
        if name in self.extras:
            return self.extras[name](self, argument.strip())
        raise UsageError(f"unknown command /{name}: /help lists the commands")

    def _set(self, **changes) -> str:
        self.settings = replace(self.settings, **changes)  # Settings checks the values
        return self.settings.describe()

    def _temp(self, argument: str) -> str:
        return self._set(temperature=_number(argument, float, "/temp X (0 = greedy)"))

    def _top_k(self, argument: str) -> str:
        return self._set(top_k=_number(argument, int, "/top_k N (0 = off)"))

    def _top_p(self, argument: str) -> str:
        return self._set(top_p=None if argument == "off" else _number(argument, float, "/top_p X (or off)"))

    def _max(self, argument: str) -> str:
        return self._set(max_new_tokens=_number(argument, int, "/max N (new tokens per reply)"))

    def _stop(self, argument: str) -> str:
        return self._set(stop=argument)

    def _reset(self, argument: str) -> str:
        self.history = []
        return "conversation cleared"

    def _quit(self, argument: str) -> str:
        self.done = True
        return "bye"

    def _help(self, argument: str) -> str:
        extras = "".join(f"\n  /{name} ...  ({self.model.config.model_type})" for name in sorted(self.extras))
        return ("commands: /temp X, /top_k N, /top_p X|off, /max N, /stop eos|sentence, /status, /reset, /help, "
                "/quit (or Ctrl+D)" + extras + "\nany other line is sent to the model (start it with // to send "
                "a line that begins with /)")

    def _status(self, argument: str) -> str:
        """Parameters, tokenizer, mode, settings, then training and evaluation as the model card states them."""
        tok = self.tokenizer
        kind = tokenizer_kind(tok) or type(tok).__name__
        context = f"{self.limit:,} tokens" if self.limit else "no maximum"
        mode = (f"chat template; turns in history: {len(self.history) // 2}" if self.chat_template
                else "plain continuation (not instruction-tuned)")
        lines = [f"model: {self.name} ({self.model.config.model_type}, {self.model.num_parameters():,} parameters)",
                 f"tokenizer: {kind}, vocabulary {len(tok)}; context: {context}",
                 f"mode: {mode}", f"settings: {self.settings.describe()}"]
        lines += [self.extras[name](self, "") for name in sorted(self.extras)]  # each extra's own state
        if self.stages:
            from .training.history import describe_stage

            lines += ["training history:"] + [f"  {describe_stage(stage)}" for stage in self.stages]
        tables = card_tables(self.card_text)
        for section in ("Training", "Evaluation"):
            lines += [f"{section.lower()}:"] + [f"  {item}: {value}" for item, value in tables.get(section, [])]
        return "\n".join(lines if tables else lines + ["training: no model card (README.md) in the folder"])


def _number(text: str, kind: type, usage: str):
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"usage: {usage}") from None


# ----------------------------------------------------------------------------------------- terminal loop

def run_terminal(session: ChatSession, stdin=None, out=None) -> int:
    """Read lines until /quit, end of input or Ctrl+C (all exit status 0); stream each reply to `out`."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if stdin is sys.stdin:
        stdin.reconfigure(errors="replace")  # a line that is not UTF-8 is sent with U+FFFD, not a traceback
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    mode = "chat template" if session.chat_template else "plain continuation"
    print(f"hatchlings chat: {session.name} ({mode}); /help for commands, Ctrl+D to leave", file=out, flush=True)
    streamer = Utf8Streamer(session.tokenizer, out=out)
    try:
        while not session.done:
            line = _read_line(stdin, "> " if interactive else "", out)
            if line is None:
                break
            try:
                if line.startswith("/") and not line.startswith("//"):
                    print(session.command(line), file=out, flush=True)
                else:
                    session.send(line.removeprefix("/"), streamer=streamer)
            except UsageError as err:
                print(f"! {err}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    if interactive:
        print(file=out, flush=True)
    return 0


def _read_line(stdin, prompt: str, out) -> str | None:
    """One line without its newline, or None at end of input; through input() for the terminal's own
    stdin and stdout, so that readline edits the line and knows where the prompt ends."""
    if stdin is sys.stdin and out is sys.stdout:
        try:
            return input(prompt)
        except EOFError:
            return None
    line = stdin.readline()
    return line.rstrip("\n") if line else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="folder written by train.py (or any export)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    parser.add_argument("--top_k", type=int, default=50, help="0 = off (default: %(default)s)")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling, in (0, 1] (default: off)")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="per reply (default: %(default)s)")
    parser.add_argument("--stop", choices=("eos", "sentence"), default="eos",
                        help="end a reply at end of sequence only, or also at a sentence end (default: eos)")
    parser.add_argument("--mode", choices=("auto", "chat", "plain"), default="auto",
                        help="chat template or plain continuation (default: auto, from the export's "
                             "instruction_tuned flag)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed, for a reproducible session")


def run(args: argparse.Namespace) -> int:
    settings = Settings(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, stop=args.stop)  # checked before the slow load
    if args.seed is not None:
        torch.manual_seed(args.seed)
    session = ChatSession.from_folder(args.model, settings=settings,
                                      chat_template={"auto": None, "chat": True, "plain": False}[args.mode])
    return run_terminal(session)
