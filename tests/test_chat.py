"""`hatchlings chat`: the session's commands and stopping, architecture extras, and the terminal loop driven
through a pipe and through a real pseudo-terminal (checks_chat.check_chat covers every architecture)."""

from __future__ import annotations

import dataclasses
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from checks_chat import export_for_chat
from contract import REPO_ROOT
from hatchlings import architectures
from hatchlings.chat import ChatSession, SentenceEnd, Settings
from hatchlings.cli import main
from hatchlings.errors import UsageError
from test_bdh import SPEC as BDH

LONG_PROMPT = "Tell me a long story. " * 20  # more than CONTEXT tokens
CHILD_ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def chat_export(tmp_path_factory):
    """A tiny instruction-tuned BDH export (context CONTEXT tokens), shared by this module's tests."""
    return export_for_chat(BDH, tmp_path_factory.mktemp("chat") / "tiny-bdh", instruction_tuned=True)


def echo_command(session, argument):
    """A chat command for the record-extras test: shows it received the session and the argument."""
    return f"echo {argument} from {session.name}"


def test_sentence_end_counts_only_generated_text(byte_tokenizer):
    """Stops after . ! or ? followed by whitespace, in the generated part only; eos is generate's own job."""
    prompt = byte_tokenizer("It ends. ")["input_ids"]
    stop = SentenceEnd(byte_tokenizer, len(prompt))

    def after(text):
        return bool(stop(torch.tensor([prompt + byte_tokenizer(text, add_special_tokens=False)["input_ids"]]),
                         None)[0])

    assert not after("")  # the prompt's own sentence end does not count
    assert [after(t) for t in ("Yes.", "Yes. ", "Why?\n", "No!\t", "3.5", "Dr.Who")] == \
        [False, True, True, True, False, False]


def test_stop_at_sentence_end_in_a_reply(chat_export):
    """With /stop sentence a reply ends right after its first sentence end; with /stop eos it runs to /max.
    Only '.', 'a' and ' ' may be generated (and never eos), so a sentence end soon comes by chance."""
    session = ChatSession.from_folder(chat_export, settings=Settings(max_new_tokens=40), chat_template=False)
    tok = session.tokenizer
    allowed = set(tok(". a", add_special_tokens=False)["input_ids"])
    session.model.generation_config.suppress_tokens = [i for i in range(len(tok)) if i not in allowed]
    torch.manual_seed(0)
    assert len(session.send("go")) == 40
    assert session.command("/stop sentence").endswith("stop at sentence")
    reply = session.send("go")
    assert reply.endswith(". ") and len(reply) < 40 and ". " not in reply[:-2], repr(reply)


def test_commands_change_settings_and_refuse_bad_values(chat_export):
    session = ChatSession.from_folder(chat_export)
    assert session.command("/temp 0.5").startswith("temperature 0.5")
    assert "top_p 0.9" in session.command("/top_p 0.9") and "top_p off" in session.command("/top_p off")
    assert "top_k 0" in session.command("  /top_k 0  ") and "max_new_tokens 7" in session.command("/max 7")
    before = session.settings
    for line, message in [("/temp -1", "temperature must be >= 0"), ("/temp warm", "usage: /temp"),
                          ("/top_p 1.5", "top_p must be in"), ("/max 0", "max_new_tokens must be at least 1"),
                          ("/stop never", "stop must be 'eos' or 'sentence'"), ("/bogus 3", "unknown command /bogus"),
                          ("/", "unknown command /")]:
        with pytest.raises(UsageError, match=message):
            session.command(line)
    assert session.settings == before  # a refused value changes nothing
    with pytest.raises(UsageError, match="empty message"):
        session.send("  ")
    assert "/stop eos|sentence" in session.command("/help")
    assert not session.done and session.command("/quit") and session.done


def test_architecture_chat_commands_come_from_the_record(chat_export, monkeypatch):
    """A record's chat_commands become /commands that get the session; they may not shadow built-ins."""
    record = architectures.RECORDS["bdh"]
    monkeypatch.setitem(architectures.RECORDS, "bdh",
                        dataclasses.replace(record, chat_commands={"echo": "test_chat:echo_command"}))
    session = ChatSession.from_folder(chat_export)
    assert session.command("/echo deep") == "echo deep from tiny-bdh"
    assert "/echo" in session.command("/help")
    monkeypatch.setitem(architectures.RECORDS, "bdh",
                        dataclasses.replace(record, chat_commands={"reset": "test_chat:echo_command"}))
    with pytest.raises(ValueError, match="reset"):
        ChatSession.from_folder(chat_export)


def test_old_export_without_flag_or_card_is_plain_continuation(tmp_path):
    """Exports from before the instruction_tuned flag (or without a card) still chat: plain continuation."""
    model, tokenizer = BDH.build_model(), BDH.make_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    session = ChatSession.from_folder(tmp_path, settings=Settings(temperature=0, max_new_tokens=3))
    assert not session.chat_template and session.limit == 1_000_000  # BDH has none: the tokenizer's
    session.send("Hello")
    status = session.command("/status")
    assert "plain continuation" in status and "no model card" in status and "context: 1,000,000 tokens" in status
    session.chat_template = True  # what --mode chat does
    session.send("Hello")
    assert [turn["role"] for turn in session.history] == ["user", "assistant"]


def test_cli_refuses_bad_flags_before_loading(tmp_path, capsys):
    assert main(["chat", str(tmp_path), "--temperature", "-1"]) == 2
    assert main(["chat", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["hatchlings: error: --temperature must be >= 0 (0 = greedy), got -1.0",
                   f"hatchlings: error: not a saved model folder (no config.json): {tmp_path / 'missing'}"]


def test_chat_through_stdin(chat_export):
    """Piped input: replies are streamed in full, bad lines get one '!' line each (bytes that are not UTF-8
    are sent as U+FFFD), end of input exits 0."""
    expected = ChatSession.from_folder(chat_export, settings=Settings(temperature=0, max_new_tokens=12)) \
        .send("Hello")
    lines = [b"/temp 0", b"/max 12", b"Hello", b"", b"/bogus", b"/max lots", b"/status", b"//slash",
             b"not UTF-8: \xff\xfe", LONG_PROMPT.encode(), b"/reset"]
    proc = subprocess.run([sys.executable, "-m", "hatchlings.cli", "chat", str(chat_export)],
                          input=b"\n".join(lines) + b"\n", capture_output=True, timeout=300,
                          cwd=REPO_ROOT, env=CHILD_ENV)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert out.startswith("hatchlings chat: tiny-bdh (chat template); /help for commands")
    assert f"\n{expected}\n" in out
    errors = [line for line in out.splitlines() if line.startswith("! ")]
    assert [e.split(":")[0] for e in errors] == ["! empty message", "! unknown command /bogus", "! usage",
                                                "! the prompt is too long"], errors
    assert "history" in out and "data: tiny.txt" in out and out.rstrip().endswith("conversation cleared")


def _read_until(fd: int, marker: bytes, transcript: bytearray, start: int, deadline: float) -> int:
    """Read the pty into `transcript` until `marker` appears at or after `start`; the index after it.
    Fails (rather than hangs) at `deadline` or when the child closes the terminal first."""
    while transcript.find(marker, start) < 0:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"timed out waiting for {marker!r}; got {bytes(transcript)[-2000:]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"the chat ended before {marker!r}; got {bytes(transcript)[-2000:]!r}")
        transcript += chunk
    return transcript.find(marker, start) + len(marker)


def _wait_exit(pid: int, fd: int, deadline: float, transcript: bytearray | None = None) -> int | None:
    """Drain the pty (into `transcript`) until the child exits: its exit status, or None at `deadline`."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                continue
            if transcript is not None:
                transcript += data
    return None


def test_chat_in_a_pseudo_terminal(chat_export):
    """In a terminal: a '> ' prompt, commands and replies, and Ctrl+C leaves with status 0, no traceback."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the chat, with the pty as its controlling terminal
        # a user's shell starts programs with SIGINT at its default; an ignored SIGINT would be inherited through
        # exec (and Python then installs no KeyboardInterrupt handler), whatever the test process did before
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(REPO_ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "hatchlings.cli", "chat", str(chat_export),
                                   "--temperature", "0", "--max_new_tokens", "8"], CHILD_ENV)
    deadline = time.monotonic() + 300
    transcript, position = bytearray(), 0
    try:
        for send, wait_for in [(None, b"> "), (b"/status\n", b"settings: temperature 0.0"), (None, b"> "),
                               (b"Hi\n", b"> "), (b"/nonsense\n", b"! unknown command /nonsense"),
                               (None, b"> ")]:
            if send:
                os.write(fd, send)
            position = _read_until(fd, wait_for, transcript, position, deadline)
        os.write(fd, b"\x03")  # Ctrl+C: the terminal sends SIGINT
        # CPython's readline waits in select() on stdin and checks signals when select is interrupted; a SIGINT
        # that lands after the prompt is drawn but before select() starts is only acted on at the next input
        # (a race of input() itself, seen here under load). A newline is that next input, and the chat must
        # still leave through KeyboardInterrupt with status 0, not answer it.
        # Leaving gets its own time (a loaded machine may have spent most of `deadline` above). If the first
        # Ctrl+C hit that race, a newline releases it; a second Ctrl+C, as a user would press, covers a
        # SIGINT that landed while readline was switching terminal modes.
        status, leave_by = None, time.monotonic() + 120
        for nudge in (None, b"\n", b"\x03"):
            if nudge:
                os.write(fd, nudge)
            status = _wait_exit(pid, fd, min(leave_by, time.monotonic() + 20), transcript)
            if status is not None:
                break
        if status is None:
            status = _wait_exit(pid, fd, leave_by, transcript)
        assert status == 0, f"the chat did not leave on Ctrl+C (status {status}); got {bytes(transcript)[-2000:]!r}"
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert b"Traceback" not in transcript
