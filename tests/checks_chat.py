"""Contract check of `hatchlings chat` (hatchlings/chat.py): any architecture's export can be talked to."""

from __future__ import annotations

import pytest

import hatchlings.chat
from contract import ArchSpec
from hatchlings.chat import ChatSession, Settings
from hatchlings.generation import Utf8Streamer, generate_text
from hatchlings.errors import UsageError
from hatchlings.training.export import export_hub_folder

CONTEXT = 48  # tokens the tiny export takes, so that an over-long prompt is cheap to write


def export_for_chat(spec: ArchSpec, folder, *, instruction_tuned: bool):
    """A tiny export with a model card and a context of at most CONTEXT tokens (the tokenizer's maximum)."""
    model, tokenizer = spec.build_model(), spec.make_tokenizer()
    tokenizer.model_max_length = CONTEXT
    return export_hub_folder(model, tokenizer, folder, architecture=spec.arch,
                             train_info={"data": "tiny.txt", "steps": 7}, eval_results={"eval_loss": 5.5},
                             log_history=[], widget_prompts=["Hello"], instruction_tuned=instruction_tuned)


def check_chat(spec: ArchSpec, tmp_path, monkeypatch) -> None:
    """An instruction-tuned export talks through the chat template, streams exactly the reply it returns,
    keeps the history within the context (reset clears it), reports its card in /status and refuses an
    over-long prompt with a UsageError; an export without the flag continues plain text, keeping no history."""
    session = ChatSession.from_folder(export_for_chat(spec, tmp_path / "chat", instruction_tuned=True),
                                      settings=Settings(temperature=0.0, max_new_tokens=6))
    assert session.chat_template and session.limit <= CONTEXT
    prompts = []  # (prompt tokens, max_new_tokens) of every generation

    def spy(model, tokenizer, prompt, **kwargs):
        prompts.append((len(prompt), kwargs["max_new_tokens"]))
        return generate_text(model, tokenizer, prompt, **kwargs)

    monkeypatch.setattr(hatchlings.chat, "generate_text", spy)
    streamed = []

    class Collect(Utf8Streamer):
        def on_finalized_text(self, text, stream_end=False):
            streamed.append(text)

    for turn in range(6):  # more turns than the context holds: the oldest are dropped
        reply = session.send(f"Question {turn}?", streamer=Collect(session.tokenizer))
        assert "".join(streamed) == reply
        streamed.clear()
        assert session.history[-2:] == [{"role": "user", "content": f"Question {turn}?"},
                                        {"role": "assistant", "content": reply.strip()}]
    assert len(session.history) < 12 and all(n + 6 <= CONTEXT for n, _ in prompts), prompts
    status = session.command("/status")
    assert f"{session.model.num_parameters():,} parameters" in status and "data: tiny.txt" in status
    assert session.command("/reset") and session.history == []

    long_prompt = "Tell me a long story. " * 20
    assert len(session.tokenizer(long_prompt, verbose=False)["input_ids"]) > CONTEXT
    with pytest.raises(UsageError, match="too long"):
        session.send(long_prompt)

    plain = ChatSession.from_folder(export_for_chat(spec, tmp_path / "plain", instruction_tuned=False),
                                    settings=Settings(temperature=0.0, max_new_tokens=6))
    assert not plain.chat_template
    plain.send("Once upon a time")
    assert plain.history == [] and "plain continuation" in plain.command("/status")
