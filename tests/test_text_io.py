"""BidiTextIO over real file descriptors (pipes, a pty, files) and in-memory stdout."""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import anyio
import anyio.lowlevel
import pytest

import adapters.text._input as text_input
from adapters.text import BidiTextInput, BidiTextIO, BidiTextOutput
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.io import BidiInput, BidiOutput

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="readiness polling of pipes is POSIX only")
CLEAR = "\r\x1b[K"


class TtyStringIO(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Pipe:
    """A real pipe standing in for stdin; the test writes into it."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def write(self, data: bytes | str) -> None:
        os.write(self.w, data.encode() if isinstance(data, str) else data)

    def close_writer(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def close(self) -> None:
        self.close_writer()
        os.close(self.r)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.close()


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partial lines are cut to the terminal's width; make that width known."""
    monkeypatch.setenv("COLUMNS", "100")


def transcript(text: str, role: str = "assistant", *, final: bool, rid: str | None = "r1") -> BidiTranscriptStreamEvent:
    return BidiTranscriptStreamEvent(delta=text, text=text, role=role, is_final=final, response_id=rid)  # type: ignore[arg-type]


def text_io(stdin: Pipe | int | None = None, prompt: str = "", *, tty: bool = False) -> tuple[BidiTextIO, io.StringIO]:
    out = TtyStringIO() if tty else io.StringIO()
    fd = stdin.r if isinstance(stdin, Pipe) else stdin
    return BidiTextIO(prompt, stdin=fd, stdout=out), out


def other_threads() -> list[str]:
    """Threads besides the main one, minus the Trio test harness's own worker.

    The anyio pytest plugin runs Trio in guest mode: when every task sleeps
    with a deadline, Trio waits for I/O in a cached worker named
    "Trio thread N". That thread is the harness's, not ours. A function run by
    ``trio.to_thread`` renames its worker while it runs, and asyncio's workers
    are "AnyIO worker thread", so a thread left reading stdin still shows here.
    """
    return sorted(
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("Trio thread ")
    )


async def read(inp: BidiTextInput) -> str:
    with anyio.fail_after(5):
        event = await inp()
    assert isinstance(event, BidiTextInputEvent)
    assert event.role == "user"
    return event.text


# ------------------------------------------------------------------ shape


def test_the_halves_implement_the_ports() -> None:
    io_ = BidiTextIO()
    assert isinstance(io_.input(), BidiInput)
    assert isinstance(io_.output(), BidiOutput)
    assert io_.input() is io_.input()
    assert io_.output() is io_.output()


# ------------------------------------------------------------------ input


@posix_only
async def test_lines_are_read_stripped_and_blank_lines_skipped(pipe: Pipe) -> None:
    io_, _ = text_io(pipe)
    inp = io_.input()
    await inp.start(None)  # type: ignore[arg-type]
    pipe.write("  hello  \n\n   \nworld\r\n")
    assert await read(inp) == "hello"
    assert await read(inp) == "world"
    await inp.stop()


@posix_only
async def test_a_line_split_across_writes_is_joined(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    results: list[str] = []

    async def reader() -> None:
        results.append(await read(inp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        pipe.write("what is the wea")
        await anyio.wait_all_tasks_blocked()
        assert results == []  # half a line is not a line
        pipe.write("ther in Paris?\n")
    assert results == ["what is the weather in Paris?"]


@posix_only
async def test_a_multibyte_character_split_across_writes_survives(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    encoded = "café ☕ ok\n".encode()
    cut = encoded.index("☕".encode()) + 1  # in the middle of the 3-byte cup
    results: list[str] = []

    async def reader() -> None:
        results.append(await read(inp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        pipe.write(encoded[:cut])
        await anyio.wait_all_tasks_blocked()
        pipe.write(encoded[cut:])
    assert results == ["café ☕ ok"]


@posix_only
async def test_lines_that_arrive_together_are_kept_for_later_calls(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    pipe.write("one\ntwo\nthree\n")
    pipe.close_writer()
    assert [await read(inp) for _ in range(3)] == ["one", "two", "three"]
    with pytest.raises(EOFError):
        await inp()


@posix_only
async def test_end_of_file_delivers_the_last_line_then_raises_eoferror(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    pipe.write("no newline at the end")
    pipe.close_writer()
    assert await read(inp) == "no newline at the end"
    with anyio.fail_after(5), pytest.raises(EOFError):
        await inp()
    with pytest.raises(EOFError):  # and it stays at the end
        await inp()


@posix_only
async def test_end_of_file_while_waiting_raises_eoferror(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()

    async def closer() -> None:
        await anyio.wait_all_tasks_blocked()
        pipe.close_writer()

    async with anyio.create_task_group() as tg:
        tg.start_soon(closer)
        with anyio.fail_after(5), pytest.raises(EOFError):
            await inp()


@posix_only
async def test_waiting_does_not_block_the_event_loop(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    ticks = 0
    results: list[str] = []

    async def reader() -> None:
        results.append(await read(inp))

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(ticker)
        await anyio.wait_all_tasks_blocked()
        assert ticks == 10
        assert results == []
        pipe.write("go\n")
    assert results == ["go"]


@posix_only
async def test_cancelling_a_pending_read_returns_promptly_and_leaves_no_thread(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    threads_before = other_threads()
    blocking_before = os.get_blocking(pipe.r)
    finished = False
    reader_scope = anyio.CancelScope()

    async def reader() -> None:
        nonlocal finished
        with reader_scope:
            await inp()
        finished = True

    with anyio.fail_after(5):  # the cancelled read returns promptly
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert other_threads() == threads_before  # waiting uses no thread either
            reader_scope.cancel()
    assert finished
    assert other_threads() == threads_before
    await inp.stop()
    assert os.get_blocking(pipe.r) == blocking_before

    # The descriptor is free again: the next call reads normally, nothing was lost.
    pipe.write("after\n")
    assert await read(inp) == "after"


@posix_only
async def test_move_on_after_a_pending_read_keeps_the_partial_line(pipe: Pipe) -> None:
    inp = text_io(pipe)[0].input()
    threads_before = other_threads()
    pipe.write("par")
    with anyio.move_on_after(0.05) as scope:
        await inp()
    assert scope.cancelled_caught
    assert other_threads() == threads_before
    pipe.write("tial\n")
    assert await read(inp) == "partial"


@posix_only
async def test_the_prompt_is_shown_before_waiting(pipe: Pipe) -> None:
    io_, out = text_io(pipe, prompt="> ")
    inp = io_.input()
    results: list[str] = []

    async def reader() -> None:
        results.append(await read(inp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert out.getvalue() == "> "
        pipe.write("a\n")
    pipe.write("b\n")
    assert await read(inp) == "b"
    # A pipe does not echo: the cursor is still after the first prompt.
    assert out.getvalue() == "> \n> "
    assert results == ["a"]


@posix_only
async def test_no_prompt_when_it_is_empty(pipe: Pipe) -> None:
    io_, out = text_io(pipe)
    pipe.write("x\n")
    assert await read(io_.input()) == "x"
    assert out.getvalue() == ""


@pytest.fixture
def pipe_stream(pipe: Pipe) -> Iterator[TextIO]:
    """The read end of the pipe as a text stream, the way sys.stdin wraps fd 0."""
    with open(pipe.r, encoding="utf-8", closefd=False) as stream:
        yield stream


@posix_only
async def test_stdin_may_be_a_text_stream_with_a_descriptor(pipe: Pipe, pipe_stream: TextIO) -> None:
    inp = BidiTextIO(stdin=pipe_stream, stdout=io.StringIO()).input()
    pipe.write("from the stream ✓\n")
    assert await read(inp) == "from the stream ✓"


async def test_stdin_redirected_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "script.txt"
    path.write_text("first\n\nsecond\n", encoding="utf-8")
    fd = os.open(path, os.O_RDONLY)
    try:
        inp = BidiTextIO(stdin=fd, stdout=io.StringIO()).input()
        assert [await read(inp), await read(inp)] == ["first", "second"]
        with pytest.raises(EOFError):
            await inp()
    finally:
        os.close(fd)


@posix_only
async def test_stdin_from_dev_null_is_at_end_of_file() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        inp = BidiTextIO(stdin=fd, stdout=io.StringIO()).input()
        with anyio.fail_after(5), pytest.raises(EOFError):
            await inp()
    finally:
        os.close(fd)


@posix_only
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
async def test_a_terminal_stdin_is_read_line_by_line() -> None:
    primary, secondary = os.openpty()
    try:
        out = TtyStringIO()
        inp = BidiTextIO("> ", stdin=secondary, stdout=out).input()
        results: list[str] = []

        async def reader() -> None:
            results.append(await read(inp))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            os.write(primary, b"typed\n")
        assert results == ["typed"]
        # The terminal echoed the newline: the next prompt needs no line break.
        os.write(primary, b"again\n")
        assert await read(inp) == "again"
        assert out.getvalue() == "> > "
    finally:
        os.close(primary)
        os.close(secondary)


async def test_a_stream_without_descriptor_is_read_in_a_worker_thread() -> None:
    inp = BidiTextIO(stdin=io.StringIO("one\n\n two \nlast"), stdout=io.StringIO()).input()
    assert [await read(inp) for _ in range(3)] == ["one", "two", "last"]
    with pytest.raises(EOFError):
        await inp()


async def test_no_stdin_at_all_is_end_of_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    inp = BidiTextIO(stdout=io.StringIO()).input()
    with pytest.raises(EOFError):
        await inp()


async def test_the_windows_fallback_reads_the_descriptor_in_a_thread(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_input, "_USE_THREAD", True)
    inp = text_io(pipe)[0].input()
    pipe.write("via a thread\n")
    pipe.close_writer()
    assert await read(inp) == "via a thread"
    with pytest.raises(EOFError):
        await inp()


# ------------------------------------------------------------------ output


async def render(out: BidiTextOutput, *events: object) -> None:
    for event in events:
        await out(event)  # type: ignore[arg-type]


async def test_not_a_tty_prints_only_final_transcripts() -> None:
    io_, out = text_io()
    output = io_.output()
    await output.start(None)  # type: ignore[arg-type]
    await render(
        output,
        transcript("hi", "user", final=False, rid=None),
        transcript("hi there", "user", final=True, rid=None),
        transcript("Hel", final=False),
        transcript("Hello", final=False),
        transcript("Hello! How can I help?", final=True),
    )
    await output.stop()
    assert out.getvalue() == "You: hi there\nAssistant: Hello! How can I help?\n"


async def test_on_a_tty_partials_are_rewritten_in_place_and_the_final_kept() -> None:
    io_, out = text_io(tty=True)
    output = io_.output()
    await render(
        output,
        transcript("Hel", final=False),
        transcript("Hello", final=False),
        transcript("Hello there.", final=True),
        transcript("Next", final=False, rid="r2"),
        transcript("Next one.", final=True, rid="r2"),
    )
    assert out.getvalue() == (
        f"Assistant: Hel{CLEAR}Assistant: Hello{CLEAR}Assistant: Hello there.\n"
        f"Assistant: Next{CLEAR}Assistant: Next one.\n"
    )


async def test_on_a_tty_another_line_first_finishes_the_partial_line() -> None:
    io_, out = text_io(tty=True)
    output = io_.output()
    await render(
        output,
        transcript("Let me check", final=False),
        BidiToolUseEvent("t1", "get_weather", {"location": "Paris"}),
        transcript("It is sunny", final=False, rid="r2"),
        BidiInterruptionEvent("user_speech", "r2"),
    )
    assert out.getvalue() == (
        'Assistant: Let me check\n[tool] get_weather({"location": "Paris"})\nAssistant: It is sunny\n[interrupted]\n'
    )


async def test_on_a_tty_a_partial_of_another_speaker_starts_a_new_line() -> None:
    io_, out = text_io(tty=True)
    await render(
        io_.output(),
        transcript("what is", "user", final=False, rid=None),
        transcript("Sure", final=False),
        transcript("what is up", "user", final=True, rid=None),
    )
    assert out.getvalue() == "You: what is\nAssistant: Sure\nYou: what is up\n"


async def test_on_a_tty_a_long_partial_shows_its_tail_within_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    io_, out = text_io(tty=True)
    long = "word " * 20 + "end"
    await render(io_.output(), transcript(long, final=False))
    shown = out.getvalue()
    assert len(shown) == 39
    assert shown.startswith("Assistant: ...")
    assert shown.endswith("word end")


async def test_output_stop_finishes_a_partial_line() -> None:
    io_, out = text_io(tty=True)
    output = io_.output()
    await render(output, transcript("cut sh", final=False))
    await output.stop()
    assert out.getvalue() == "Assistant: cut sh\n"


async def test_other_events_render_as_bracketed_lines() -> None:
    io_, out = text_io()
    await render(
        io_.output(),
        BidiConnectionStartEvent("c1", "model-x"),
        BidiResponseStartEvent("r1"),
        BidiAudioStreamEvent(b"\x00\x00" * 240, response_id="r1"),
        BidiUsageEvent(1, 2, 3),
        BidiInterruptionEvent("user_speech", "r1"),
        BidiResponseCompleteEvent("r1", "interrupted"),
        BidiToolUseEvent("t1", "get_weather", {"location": "Paris"}),
        BidiToolResultEvent("t1", "get_weather", "success", {"temp_c": 21}),
        BidiToolResultEvent("t2", "lookup", "error", "line one\nline two"),
        BidiToolResultEvent("t3", "noop", "cancelled"),
        BidiErrorEvent("rate limited", "429"),
        BidiErrorEvent("odd frame"),
        BidiConnectionRestartEvent("connection_lost"),
        BidiConnectionCloseEvent("complete"),
    )
    assert out.getvalue().splitlines() == [
        "[interrupted]",
        '[tool] get_weather({"location": "Paris"})',
        '[tool] get_weather -> success: {"temp_c": 21}',
        "[tool] lookup -> error: line one line two",
        "[tool] noop -> cancelled",
        "[error] rate limited (429)",
        "[error] odd frame",
        "[reconnecting: connection_lost]",
        "[conversation ended: complete]",
    ]


async def test_long_tool_results_are_truncated() -> None:
    io_, out = text_io()
    await render(io_.output(), BidiToolResultEvent("t1", "read_file", "success", "x" * 5000))
    line = out.getvalue().rstrip("\n")
    assert line.startswith("[tool] read_file -> success: xxx")
    assert line.endswith("...")
    assert len(line) <= len("[tool] read_file -> success: ") + 200


@posix_only
async def test_output_lines_never_join_the_prompt_and_the_prompt_comes_back(pipe: Pipe) -> None:
    io_, out = text_io(pipe, prompt="> ", tty=True)
    inp, output = io_.input(), io_.output()
    results: list[str] = []

    async def reader() -> None:
        results.append(await read(inp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await render(
            output,
            transcript("Hi", final=False),
            transcript("Hi!", final=True),
            BidiErrorEvent("oops"),
        )
        pipe.write("bye\n")
    assert results == ["bye"]
    await render(output, BidiConnectionCloseEvent("user_request"))
    await output.stop()
    assert out.getvalue() == (
        f"> \nAssistant: Hi{CLEAR}Assistant: Hi!\n> \n[error] oops\n> \n[conversation ended: user_request]\n"
    )


@posix_only
async def test_the_prompt_is_not_shown_again_after_the_conversation_ends(pipe: Pipe) -> None:
    io_, out = text_io(pipe, prompt="> ")
    inp, output = io_.input(), io_.output()
    async with anyio.create_task_group() as tg:
        tg.start_soon(inp)
        await anyio.wait_all_tasks_blocked()
        await render(output, BidiConnectionCloseEvent("complete"))
        tg.cancel_scope.cancel()
    await inp.stop()
    await render(output, BidiErrorEvent("late"))
    await output.stop()
    assert out.getvalue() == "> \n[conversation ended: complete]\n[error] late\n"
