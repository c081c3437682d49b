"""Playground: a Space-style web app to chat with, compare and inspect hatchlings exports.

This one file is both `hatchlings serve`'s page and the `app.py` every export carries (copied from
hatchlings/serve/app_template.py), so that an export folder can be published as a Hugging Face Space as it
is. It therefore imports only gradio, transformers, torch and the standard library: a Space, or anyone who
downloads the folder, has no hatchlings installed, and the model itself comes through `trust_remote_code`
from the folder's own modeling files.

Run it as `python app.py [EXPORT ...]` (no argument: the folder this file is in); GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT choose the address, as for any Gradio app.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local playground phones nobody

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer  # noqa: E402

#: the folder this file is in: an export's own folder when it runs as that export's app.py
HERE = Path(__file__).resolve().parent
#: the file an export writes its architecture's extra generation controls into (hatchlings.serve)
CONTROLS_FILE = "playground.json"
#: requests waiting beyond the running ones are refused with "queue full" rather than piling up
QUEUE_SIZE = 16
#: requests that run at the same time (two tabs both progress; more only slow each other on a CPU)
CONCURRENCY = 2
#: the heat map covers at most this many prompt tokens (one forward pass per token)
HEATMAP_TOKENS = 48
_UNSET_LENGTH = 10**29  # tokenizer.model_max_length when none was saved
_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: Spaces and offline machines alike


class PlaygroundError(Exception):
    """A problem with the user's input or folder, shown as one message rather than a traceback."""


@dataclass
class Entry:
    """One loaded export: the model, its tokenizer and what the page shows about it."""

    name: str
    folder: Path
    model: object
    tokenizer: object
    card_text: str = ""
    controls: dict = field(default_factory=dict)  # name -> {"kind", "choices", "default", "kwarg"}

    @property
    def limit(self) -> int | None:
        """The most tokens the model takes, prompt and reply together (None: unbounded). A config that
        `accepts_longer_inputs` (HoloSpectralNet's positions size a kernel) sets no limit of its own; this
        file cannot import hatchlings' `evaluation.context_limit`, so it asks the same question here."""
        config = self.model.config
        own = None if getattr(config, "accepts_longer_inputs", False) else getattr(config, "max_position_embeddings", None)
        limits = [own, self.tokenizer.model_max_length]
        limits = [n for n in limits if isinstance(n, int) and 0 < n < _UNSET_LENGTH]
        return min(limits) if limits else None

    @property
    def chat_template(self) -> bool:
        """Talk through the chat template only to a model trained on it; others continue plain text."""
        return bool(getattr(self.model.config, "instruction_tuned", False)) and bool(
            getattr(self.tokenizer, "chat_template", None))


def check_export(folder: str | os.PathLike) -> Path:
    """The folder, if it looks like an export (config, weights, tokenizer); else a PlaygroundError saying why."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PlaygroundError(f"not a folder: {folder}")
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise PlaygroundError(f"{folder} is not an exported model folder (missing {', '.join(missing)}); "
                              "pass the folder train.py or export_hub_folder wrote")
    return folder


def read_controls(folder: Path) -> dict:
    """The architecture's extra generation controls that the export wrote down (none for older exports)."""
    path = folder / CONTROLS_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("generation_controls", {})


def load_export(folder: str | os.PathLike, name: str | None = None) -> Entry:
    """Load an export with remote code from its own folder, as a Space without hatchlings does."""
    folder = check_export(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    return make_entry(folder, model, tokenizer, read_controls(folder), name)


def make_entry(folder: Path, model, tokenizer, controls: dict, name: str | None = None) -> Entry:
    """An Entry for an already loaded model (hatchlings serve loads through its registered classes)."""
    readme = Path(folder) / "README.md"
    card = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    return Entry(name or Path(folder).resolve().name, Path(folder), model.eval(), tokenizer, card, controls)


# ------------------------------------------------------------------------------------------ generation

def prompt_ids(entry: Entry, text: str, history: list[dict] | None = None) -> list[int]:
    """Token ids of the prompt (templated conversation or plain text); refuses empty and over-long prompts."""
    if not text or not text.strip():
        raise PlaygroundError("Empty prompt: type some text first.")
    tok = entry.tokenizer
    if entry.chat_template:
        messages = [*(history or []), {"role": "user", "content": text}]
        while True:  # drop the oldest turns until the conversation fits
            rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(rendered, add_special_tokens=False, verbose=False)["input_ids"]
            if entry.limit is None or len(ids) < entry.limit or len(messages) <= 1:
                break
            messages = messages[2:]
    else:
        ids = tok(text, verbose=False)["input_ids"]
    if entry.limit is not None and len(ids) >= entry.limit:
        raise PlaygroundError(f"Prompt too long: {len(ids)} tokens, and {entry.name} takes at most "
                              f"{entry.limit} (prompt and reply together). Shorten it.")
    return ids


def generate_kwargs(entry: Entry, n_prompt: int, temperature: float, top_p: float, max_new_tokens: int,
                    extras: dict) -> dict:
    """`generate` keyword arguments: sampling settings, room left in the context, the architecture's extras."""
    room = int(max_new_tokens) if entry.limit is None else min(int(max_new_tokens), entry.limit - n_prompt)
    kwargs = {"max_new_tokens": max(room, 1), "do_sample": temperature > 0}
    if temperature > 0:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))
    for name, value in extras.items():
        spec = entry.controls.get(name)
        if spec is not None and value not in (None, ""):
            kwargs[spec["kwarg"]] = value
    return kwargs


class TokenStreamer(TextIteratorStreamer):
    """Hands on the text after every token. The base class waits for a space or a newline, which a byte-level
    model may not write for a long while; only a trailing incomplete UTF-8 character (U+FFFD) is held back."""

    def put(self, value):
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())  # batch size 1: (1, n) or (n,)
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return
        self.on_finalized_text(text[self.print_len:])
        self.print_len = len(text)


def stream(entry: Entry, ids: list[int], kwargs: dict):
    """Yield (text so far, generated tokens, seconds) while `generate` runs in a thread, streaming its text."""
    streamer = TokenStreamer(entry.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    result, start = {}, time.perf_counter()

    def run():
        try:
            with torch.no_grad():
                result["ids"] = entry.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                     dtype=torch.long), streamer=streamer, **kwargs)
        except Exception as err:  # noqa: BLE001 -- reported on the page; the server keeps serving
            result["error"] = err
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text, None, time.perf_counter() - start
    thread.join()
    if "error" in result:
        raise PlaygroundError(f"{entry.name} failed to generate: {result['error']}")
    yield text, result["ids"].shape[1] - len(ids), time.perf_counter() - start


def stats_line(name: str, tokens: int | None, seconds: float, text: str) -> str:
    """The speed and length of one reply, as shown under it."""
    if tokens is None:
        return f"**{name}**: generating… {len(text)} characters, {seconds:.1f} s"
    return (f"**{name}**: {tokens} tokens, {len(text)} characters in {seconds:.2f} s "
            f"({tokens / max(seconds, 1e-9):.1f} tokens/s)")


# ----------------------------------------------------------------------------------------- model panel

def card_section(card: str, title: str) -> str:
    """The body of the card's `## title` section up to its first subsection (images need their folder)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^##)", card + "\n##", flags=re.M | re.S)
    return match.group(1).strip() if match else "_Not in the model card._"


def card_summary(card: str) -> str:
    """The card's first paragraph after its title: what the architecture is."""
    body = re.sub(r"\A---\n.*?\n---\n", "", card, flags=re.S)
    match = re.search(r"^# .*?\n\s*\n(.*?)(?:\n\s*\n|\Z)", body, flags=re.M | re.S)
    return match.group(1).strip() if match else "_No model card._"


def panel_markdown(entry: Entry) -> str:
    """Summary, the true parameter count (counted on the loaded weights), training data and eval results."""
    n = entry.model.num_parameters()
    mode = "chat template" if entry.chat_template else "plain completion"
    return "\n\n".join([
        f"### {entry.name}", card_summary(entry.card_text),
        f"**Parameters:** {n:,} (counted on the loaded weights) · **model_type:** "
        f"`{entry.model.config.model_type}` · **chat mode:** {mode} · **context:** {entry.limit or 'unbounded'}",
        "#### Training", card_section(entry.card_text, "Training"),
        "#### Evaluation", card_section(entry.card_text, "Evaluation")])


# ---------------------------------------------------------------------------------------- neuron heat map

def activity_per_token(entry: Entry, ids: list[int]) -> dict[str, list[list[float]]]:
    """{series: [token][layer] values} from the model's `activity_series` (per-layer means over a prefix).

    The series are means over the prompt's tokens, so a causal model's value for token t alone is the
    difference of the prefix sums: (t + 1) * mean(prefix t) - t * mean(prefix t - 1).
    """
    series = getattr(entry.model, "activity_series", None)
    if not callable(series):
        raise PlaygroundError(f"{entry.name} reports no activity series (only some architectures do, e.g. BDH)")
    per_token, previous = {}, {}
    with torch.no_grad():
        for t in range(1, len(ids) + 1):
            means = series(torch.tensor([ids[:t]]))
            for name, values in means.items():
                values = values.float().cpu()
                own = values * t - previous.get(name, torch.zeros_like(values)) * (t - 1)
                per_token.setdefault(name, []).append(own.clamp(0, 1).tolist())
                previous[name] = values
    return per_token


def heatmap_html(entry: Entry, ids: list[int], per_token: dict[str, list[list[float]]]) -> str:
    """One table per series: a row per layer, a column per token, darker = more neurons active."""
    labels = [html.escape(entry.tokenizer.decode([i]).replace("\n", "⏎") or "·") for i in ids]
    parts = []
    for name, rows in per_token.items():
        head = "".join(f"<th>{label}</th>" for label in labels)
        body = ""
        for layer in range(len(rows[0])):
            cells = "".join(
                f'<td title="{name} layer {layer}, token {t}: {row[layer]:.1%}" '
                f'style="background: rgba(220, 80, 30, {row[layer]:.3f})">{100 * row[layer]:.0f}</td>'
                for t, row in enumerate(rows))
            body += f"<tr><th>layer {layer}</th>{cells}</tr>"
        parts.append(f"<h4>{html.escape(name)}: share of active units per token (%)</h4>"
                     f'<table class="heatmap"><tr><th></th>{head}</tr>{body}</table>')
    return '<div id="heatmap-tables">' + "".join(parts) + "</div>"


# ------------------------------------------------------------------------------------------------ page

CSS = """
.heatmap { border-collapse: collapse; font-size: 11px; margin-bottom: 12px; }
.heatmap td, .heatmap th { border: 1px solid #ddd; padding: 2px 4px; text-align: center; min-width: 22px; }
"""


def _control(name: str, spec: dict):
    """The Gradio input of one declared control: a dropdown of choices, a number or a checkbox."""
    label = f"{name} ({spec['kwarg']})"
    if spec["kind"] == "choice":
        return gr.Dropdown([("model default", "")] + [(str(c), c) for c in spec["choices"]], label=label,
                           value=spec.get("default") or "")
    if spec["kind"] == "bool":
        return gr.Checkbox(label=label, value=bool(spec.get("default")))
    return gr.Number(label=label, value=spec.get("default"), precision=0 if spec["kind"] == "int" else None)


def _warn(message: str) -> str:
    return f"⚠️ {message}"


def build_app(entries: list[Entry]) -> gr.Blocks:
    """The page: chat, side by side, model panels and the activity heat map, over the loaded entries."""
    by_name = {entry.name: entry for entry in entries}
    names = list(by_name)
    controls = {name: spec for entry in entries for name, spec in entry.controls.items()}
    with gr.Blocks(title="hatchlings playground") as demo:
        gr.Markdown("# hatchlings playground\nChat with, compare and inspect "
                    + ", ".join(f"`{n}`" for n in names) + ".")
        with gr.Accordion("Generation settings", open=True):
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
                max_new = gr.Slider(1, 512, value=64, step=1, label="max new tokens")
            with gr.Row():
                extras = [_control(name, spec) for name, spec in controls.items()]
        settings = [temperature, top_p, max_new, *extras]
        with gr.Tabs():
            with gr.Tab("Chat"):
                _chat_tab(by_name, names, list(controls), settings)
            with gr.Tab("Side by side"):
                _compare_tab(by_name, names, list(controls), settings)
            with gr.Tab("Models"):
                for entry in entries:
                    gr.Markdown(panel_markdown(entry))
                    curve = entry.folder / "loss_curve.png"
                    if curve.is_file():
                        gr.Image(str(curve), label=f"{entry.name}: loss curve", interactive=False, height=320)
            with gr.Tab("Neuron activity"):
                _activity_tab(by_name, names)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def _chat_tab(by_name: dict, names: list[str], control_names: list[str], settings: list) -> None:
    model = gr.Dropdown(names, value=names[0], label="model")
    chatbot = gr.Chatbot(label="conversation", elem_id="chatbot", height=320)
    history = gr.State([])
    prompt = gr.Textbox(label="message", placeholder="Type a prompt and press Enter", elem_id="chat-prompt")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        clear = gr.Button("Clear")
    status = gr.Markdown(elem_id="chat-status")

    def respond(message, past, name, temperature, top_p, max_new, *extra_values):
        """Stream one reply; in chat-template mode the conversation so far is its context."""
        entry = by_name[name]
        try:
            ids = prompt_ids(entry, message, past if entry.chat_template else None)
            kwargs = generate_kwargs(entry, len(ids), temperature, top_p, max_new,
                                     dict(zip(control_names, extra_values)))
            turn = [{"role": "user", "content": message}]
            for text, tokens, seconds in stream(entry, ids, kwargs):
                shown = past + turn + [{"role": "assistant", "content": text}]
                yield shown, shown, "", stats_line(name, tokens, seconds, text)
        except PlaygroundError as err:
            yield past, past, message, _warn(str(err))

    outputs = [chatbot, history, prompt, status]
    inputs = [prompt, history, model, *settings]
    send.click(respond, inputs, outputs, api_name="chat")
    prompt.submit(respond, inputs, outputs, api_name=False)
    clear.click(lambda: ([], [], ""), None, [chatbot, history, status], api_name=False)


def _compare_tab(by_name: dict, names: list[str], control_names: list[str], settings: list) -> None:
    prompt = gr.Textbox(label="prompt (sent to every model)", elem_id="sbs-prompt")
    run = gr.Button("Compare", variant="primary", elem_id="sbs-run")
    status = gr.Markdown(elem_id="sbs-status")
    texts, stats = [], []
    with gr.Row():
        for i, name in enumerate(names):
            with gr.Column():
                texts.append(gr.Textbox(label=name, lines=6, elem_id=f"sbs-out-{i}"))
                stats.append(gr.Markdown(elem_id=f"sbs-stats-{i}"))

    def compare(message, temperature, top_p, max_new, *extra_values):
        """The same prompt to each model in turn, streaming each reply with its speed and length."""
        out, lines = [""] * len(names), [""] * len(names)
        for i, name in enumerate(names):
            entry = by_name[name]
            try:
                ids = prompt_ids(entry, message)
                kwargs = generate_kwargs(entry, len(ids), temperature, top_p, max_new,
                                         dict(zip(control_names, extra_values)))
                for text, tokens, seconds in stream(entry, ids, kwargs):
                    out[i], lines[i] = text, stats_line(name, tokens, seconds, text)
                    yield *out, *lines, ""
            except PlaygroundError as err:
                lines[i] = _warn(str(err))
                yield *out, *lines, _warn(str(err))
                if not (message or "").strip():
                    return  # the same message for every model

    run.click(compare, [prompt, *settings], [*texts, *stats, status], api_name="compare")


def _activity_tab(by_name: dict, names: list[str]) -> None:
    model = gr.Dropdown(names, value=names[0], label="model")
    prompt = gr.Textbox(label=f"prompt (the first {HEATMAP_TOKENS} tokens are shown)", elem_id="act-prompt")
    run = gr.Button("Show activity", elem_id="act-run")
    out = gr.HTML(elem_id="heatmap")

    def activity(name, message):
        """Heat maps of every activity series the model reports, per token and layer."""
        entry = by_name[name]
        try:
            if not (message or "").strip():
                raise PlaygroundError("Empty prompt: type some text first.")
            ids = entry.tokenizer(message, verbose=False)["input_ids"][:HEATMAP_TOKENS]
            return heatmap_html(entry, ids, activity_per_token(entry, ids))
        except PlaygroundError as err:
            return f"<p>{html.escape(_warn(str(err)))}</p>"

    run.click(activity, [model, prompt], out, api_name="activity")


def launch(demo: gr.Blocks, entries: list[Entry], host: str | None = None, port: int | None = None, **kwargs):
    """Serve the page; the export folders are allowed so that their loss-curve images load."""
    theme = gr.themes.Soft(font=_FONTS, font_mono=["ui-monospace", "monospace"])
    return demo.launch(server_name=host, server_port=port, allowed_paths=[str(e.folder) for e in entries],
                       theme=theme, css=CSS, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """`python app.py [EXPORT ...]`: a Space runs it with no argument, for the folder this file is in."""
    folders = (sys.argv[1:] if argv is None else argv) or [HERE]
    try:
        entries = [load_export(folder) for folder in folders]
    except PlaygroundError as err:
        raise SystemExit(f"playground: error: {err}") from None
    launch(build_app(entries), entries)


if __name__ == "__main__":
    main()
