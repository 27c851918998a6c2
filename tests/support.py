"""Small real I/O implementations the agent tests plug in (fakes, not mocks)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from ports.events import (
    BidiAudioStreamEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTranscriptStreamEvent,
)
from ports.io import AgentView, PlaybackReport
from ports.model import BidiModelSession


def transcript(text: str, role: str = "assistant", rid: str = "r1", *, final: bool = True) -> BidiTranscriptStreamEvent:
    return BidiTranscriptStreamEvent(delta=text, text=text, role=role, is_final=final, response_id=rid)  # type: ignore[arg-type]


def audio(rid: str, ms: int = 20, rate: int = 24000, fill: int = 1) -> BidiAudioStreamEvent:
    frames = rate * ms // 1000
    return BidiAudioStreamEvent(audio=fill.to_bytes(2, "little") * frames, sample_rate=rate, response_id=rid)


def response(rid: str, *events: Any, stop: str = "complete") -> list[Any]:
    return [BidiResponseStartEvent(rid), *events, BidiResponseCompleteEvent(rid, stop)]  # type: ignore[arg-type]


class RecordingOutput:
    """An output that keeps every event and can signal when one arrives."""

    def __init__(self, until: Callable[[BidiOutputEvent], bool] | None = None) -> None:
        self.events: list[BidiOutputEvent] = []
        self.started = False
        self.stopped = False
        self.agent: AgentView | None = None
        self._until = until
        self.seen = anyio.Event()

    async def start(self, agent: AgentView) -> None:
        self.started = True
        self.agent = agent

    async def __call__(self, event: BidiOutputEvent) -> None:
        self.events.append(event)
        if self._until is not None and self._until(event):
            self.seen.set()

    async def stop(self) -> None:
        self.stopped = True

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class PlayingOutput(RecordingOutput):
    """An output that "plays" audio instantly and reports it, like a speaker would."""

    reports_playback = True

    def __init__(self, play_ms: float | None = None) -> None:
        super().__init__()
        self.played: list[BidiAudioStreamEvent] = []
        self._play_ms = play_ms

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if isinstance(event, BidiAudioStreamEvent) and event.response_id is not None:
            self.played.append(event)
            ms = sum(e.duration_ms for e in self.played if e.response_id == event.response_id)
            assert self.agent is not None
            self.agent.report_playback(PlaybackReport(event.response_id, ms))
        if isinstance(event, BidiInterruptionEvent):
            pass


class ScriptedInput:
    """An input that yields given items, then waits for ``release`` (or ends with EOF)."""

    def __init__(self, items: Iterable[BidiInputEvent | str | dict[str, Any]], *, eof: bool = False) -> None:
        self._items = list(items)
        self._eof = eof
        self.release = anyio.Event()
        self.stopped = False

    async def start(self, agent: AgentView) -> None:
        return None

    async def __call__(self) -> Any:
        if self._items:
            await anyio.lowlevel.checkpoint()
            return self._items.pop(0)
        if self._eof:
            raise EOFError
        await self.release.wait()
        raise EOFError

    async def stop(self) -> None:
        self.stopped = True


_DEFAULT_SIGINT_THEN_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def with_default_sigint(command: list[str]) -> list[str]:
    """``command`` as a terminal starts it: with SIGINT at its default disposition.

    A child inherits an *ignored* SIGINT (pytest run from ``nohup``, a
    background job of a non-interactive shell, some CI runners), and Python
    then installs no ``KeyboardInterrupt`` handler: a test that sends a real
    SIGINT would see it ignored. A tiny Python trampoline resets SIGINT to
    ``SIG_DFL`` and ``exec``s ``command`` (same PID, so ``send_signal`` reaches
    it), which then starts exactly as it would from a shell prompt.
    (No ``preexec_fn``: ``anyio.open_process`` has none, and it is unsafe with threads.)
    """
    if sys.platform == "win32":  # no inherited dispositions, and exec there is a new process
        return command
    return [sys.executable, "-c", _DEFAULT_SIGINT_THEN_EXEC, *command]


def our_tasks() -> set[str]:
    """Names of running tasks that belong to bidi-core."""
    names = set()
    for task in anyio.get_running_tasks():
        name = task.name or ""
        if name.startswith(("bidi_core", "tool ", "timer ", "output ", "input ")):
            names.add(name)
    return names


async def after_checkpoints(steps: int, then: Callable[[], object]) -> None:
    """Call ``then`` after ``steps`` scheduler checkpoints of this task: a cut placed by a count of
    the scheduler's turns, not by wall time (the cancellation sweep, the cut WebSocket opening)."""
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()
    then()


def thread_count() -> int:
    return threading.active_count()


# ---------------------------------------------------------------- driving a conversation against a simulator


class Texts:
    """An input that types lines, each after the previous answer completed (a
    polite user); pass ``observe`` as an output so it sees the answers."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = list(lines)
        self.ready = anyio.Event()
        self.ready.set()

    async def __call__(self) -> str:
        if not self.lines:
            await anyio.sleep_forever()
        await self.ready.wait()
        self.ready = anyio.Event()
        return self.lines.pop(0)

    async def observe(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "complete":
            self.ready.set()


class _Notifying:
    """An output as it is (its lifecycle and attributes such as ``reports_playback``
    included), plus a call to ``notify`` each time it has taken an event."""

    def __init__(self, output: Any, notify: Callable[[], None]) -> None:
        self._output = output
        self._notify = notify

    def __getattr__(self, name: str) -> Any:
        return getattr(self._output, name)

    async def start(self, agent: AgentView) -> None:
        if callable(start := getattr(self._output, "start", None)):
            await start(agent)

    async def __call__(self, event: BidiOutputEvent) -> None:
        try:
            await self._output(event)
        finally:
            self._notify()

    async def stop(self) -> None:
        if callable(stop := getattr(self._output, "stop", None)):
            await stop()


async def run_until(
    agent: Any, inputs: list[Any], outputs: list[Any], done: Callable[[], bool], limit_s: float = 15
) -> None:
    """Run the agent until ``done()`` holds for the events seen, then stop it; fail after ``limit_s``.

    ``done()`` is checked each time any output has taken an event, never by
    polling. Not only when one watcher output has: every output takes events
    in a task of its own, in no set order, so the output ``done()`` reads may
    take the last event of a turn after the watcher did, and nothing would
    wake the wait again.
    """
    changed = anyio.Event()

    def notify() -> None:
        nonlocal changed
        changed.set()
        changed = anyio.Event()

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, inputs, [_Notifying(output, notify) for output in outputs])
        with anyio.fail_after(limit_s):
            while not done():
                await changed.wait()
        agent.request_stop()


def finals(out: RecordingOutput, role: str | None = None) -> list[str]:
    """The final transcripts an output saw (of one role, or all)."""
    return [t.text for t in out.of(BidiTranscriptStreamEvent) if t.is_final and role in (None, t.role)]


def assert_no_secret(caplog: pytest.LogCaptureFixture, secret: str) -> None:
    """``secret`` is in no captured log record: message, arguments or exception."""
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in str(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            assert secret not in str(record.exc_info[1])


_HEX_SIGNATURE = re.compile(r"\b[0-9a-f]{64}\b")


def assert_no_aws_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No credential or signature in any log record of this process, except hpack's
    *decoder* lines: those are the simulator reading our request headers (our
    client decodes only response headers, which carry none)."""
    assert caplog.records
    # hpack's encoder logs whole header blocks Huffman-coded, which hides nothing: look for that form too.
    coded = [repr(HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(s.encode()))[2:-1] for s in secrets]
    for record in caplog.records:
        if record.name == "hpack.hpack" and record.funcName == "encode":
            assert not any(c in record.getMessage() for c in coded), "hpack logged a credential, Huffman-coded"
        if record.name == "hpack.hpack" and "decode" in record.funcName:
            continue
        text = record.getMessage() + str(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        for secret in secrets:
            assert secret not in text, record.name
        assert not _HEX_SIGNATURE.search(text), f"a signature-like value in a log of {record.name}: {text[:200]}"


# ---------------------------------------------------------------- the offline quickstarts

ROOT = Path(__file__).resolve().parent.parent


def run_quickstart_offline(example: str, backend: str, wav: Path, env: dict[str, str]) -> list[str]:
    """Run one provider's quickstart as a user would, offline against its
    simulator, and check the story every quickstart tells: a spoken question,
    a tool call, a barge-in, ``stop_conversation``, the reply in ``wav``.
    Returns the printed lines for provider-specific checks."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{example}.py"), "--backend", backend, "--wav", str(wav)],
        capture_output=True,
        text=True,
        timeout=45,
        env={**env, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "You: What's the weather like in Paris?" in lines
    assert '[tool] get_weather({"location": "Paris"})' in lines
    interrupted = lines.index("[interrupted]")
    assert lines.index("You: Sorry, that's all I needed. Please stop the conversation.") > interrupted
    assert lines[-2:] == ["[conversation ended: user_request]", f"The assistant's audio is in {wav}"]
    with wave.open(str(wav), "rb") as reply:
        assert reply.getframerate() == 24000
        seconds = reply.getnframes() / 24000
    # Some of the answer was played before the user talked over it, not all of it.
    assert 1.0 < seconds < 9.0
    return lines


async def receive_until_end(session: BidiModelSession, into: list[Any] | None = None) -> list[Any]:
    """Every event ``session.receive()`` returns until the provider ends the connection (``anyio.EndOfStream``).

    Events go into ``into`` as they arrive, so a caller still has them when an error ends the loop."""
    events: list[Any] = [] if into is None else into
    while True:
        try:
            events.append(await session.receive())
        except anyio.EndOfStream:
            return events
