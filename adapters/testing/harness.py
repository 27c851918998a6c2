"""The pieces of the property-test harness (:mod:`adapters.testing.agent_machine`) a test touches.

* :class:`ScriptedUser`: the person at the other end of your inputs. The
  harness makes them type and talk; your input reads what they do from
  :meth:`ScriptedUser.next` (or use :meth:`ScriptedUser.input`).
* :class:`Speaker`: where your output plays audio, like a phone line or a
  browser that buffers what it is sent and plays it in real time.
  :meth:`Speaker.write` queues audio, :meth:`Speaker.clear` drops what is
  queued (the "clear" message a phone line needs on barge-in), and nothing is
  heard until the harness lets time pass (:meth:`Speaker.play`). The
  harness's audio carries its response in every sample, so the speaker knows
  whose audio it plays.
* :class:`WatchedOutput`: wraps each output to see what reaches it.
* :func:`wait_quiet`, :func:`running_tasks` and :func:`busy_threads`: when
  nothing is left to run, and what is still running.
"""

from __future__ import annotations

import array
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
)

__all__ = [
    "ScriptedUser",
    "Speaker",
    "WatchedInlineOutput",
    "WatchedOutput",
    "busy_threads",
    "running_tasks",
    "tagged_audio",
    "wait_quiet",
    "watch",
]

# --------------------------------------------------------------------------- tagged audio


def tagged_audio(tag: int, frames: int, channels: int = 1) -> bytes:
    """PCM16 whose every sample is ``tag``: the harness's audio says whose it is."""
    return (array.array("h", [tag]) * (frames * channels)).tobytes()


def tags_of(audio: bytes) -> list[int]:
    """The sample values of PCM16 ``audio``, in order."""
    samples = array.array("h")
    samples.frombytes(audio[: len(audio) - len(audio) % 2])
    return samples.tolist()


# --------------------------------------------------------------------------- the user


class ScriptedUser:
    """What the user does, in order: texts they type and audio blocks they say.

    Inputs under test read it with ``await user.next()`` (the next item, as a
    ``str`` or a :class:`BidiAudioInputEvent`); :meth:`input` is the plain
    input that does only that.
    """

    def __init__(self) -> None:
        self.typed: list[str | BidiAudioInputEvent] = []
        """Everything the user did, in order."""
        self._pending: deque[str | BidiAudioInputEvent] = deque()
        self._arrived = anyio.Event()

    def __repr__(self) -> str:
        return f"<ScriptedUser {len(self.typed)} item(s), {len(self._pending)} not read yet>"

    def type(self, text: str) -> None:
        """The user types ``text``."""
        self._add(text)

    def say(self, block: BidiAudioInputEvent) -> None:
        """The user says ``block`` into the microphone."""
        self._add(block)

    def _add(self, item: str | BidiAudioInputEvent) -> None:
        self.typed.append(item)
        self._pending.append(item)
        self._arrived.set()

    @property
    def unread(self) -> int:
        """Items the inputs have not read yet."""
        return len(self._pending)

    async def next(self) -> str | BidiAudioInputEvent:
        """Wait for and return what the user does next."""
        while not self._pending:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._pending.popleft()

    def input(self) -> _UserInput:
        """A :class:`ports.io.BidiInput` that passes on what the user does, as it is."""
        return _UserInput(self)


class _UserInput:
    def __init__(self, user: ScriptedUser) -> None:
        self._user = user

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self) -> str | BidiInputEvent:
        return await self._user.next()

    async def stop(self) -> None:
        return None


# --------------------------------------------------------------------------- the speaker


@attrs.frozen
class Heard:
    """A stretch of audio the speaker played: ``ms`` of tag ``tag`` (0: silence)."""

    tag: int
    ms: float


class Speaker:
    """A playback device with a buffer and a clock the harness moves.

    ``write`` queues PCM16 (never blocks), ``clear`` drops everything queued,
    ``play(ms)`` plays ``ms`` of it (the harness's ``time_passes`` step).
    ``heard`` is what was played, in order; ``muted`` holds the tags no
    sample of which may be heard any more (the harness fills it: responses
    whose interruption reached every output). A sample of a muted tag played
    is a violation (``violations``).
    """

    def __init__(self, sample_rate: int = 24000, channels: int = 1) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._buffer = bytearray()
        self.heard: list[Heard] = []
        self.muted: set[int] = set()
        self.violations: list[str] = []
        self.names: dict[int, str] = {}
        """Tag -> what it stands for (a response id), for messages."""
        self.clears = 0

    def __repr__(self) -> str:
        return f"<Speaker {self.buffered_ms:.0f} ms queued, {sum(h.ms for h in self.heard):.0f} ms played>"

    @property
    def buffered_ms(self) -> float:
        return len(self._buffer) / (2 * self.channels) * 1000.0 / self.sample_rate

    def write(self, audio: bytes) -> None:
        """Queue ``audio`` (PCM16 at the speaker's rate and channels) for playing."""
        self._buffer += audio

    def clear(self) -> None:
        """Drop everything queued and not played yet."""
        self._buffer.clear()
        self.clears += 1

    def play(self, ms: float) -> None:
        """Play ``ms`` of what is queued (then silence), and check nothing muted is heard."""
        frame = 2 * self.channels
        size = int(ms * self.sample_rate / 1000.0) * frame
        chunk, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
        samples = tags_of(chunk)[:: self.channels]
        for tag in samples:
            if self.heard and self.heard[-1].tag == tag:
                last = self.heard[-1]
                self.heard[-1] = Heard(tag, last.ms + 1000.0 / self.sample_rate)
            else:
                self.heard.append(Heard(tag, 1000.0 / self.sample_rate))
        played = {tag for tag in samples if tag in self.muted}
        for tag in sorted(played):
            name = self.names.get(tag, f"tag {tag}")
            self.violations.append(f"the speaker played audio of {name} after its interruption reached the outputs")


# --------------------------------------------------------------------------- watching outputs


class WatchedOutput:
    """Wraps an output (a ``BidiOutput`` or an async callable) and records what reaches it.

    An audio chunk of a response after that response's interruption reached
    this output (or of a response older than the interrupted one) is a
    violation of the library's guarantee.
    """

    def __init__(self, inner: Any, name: str, on_interruption: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.name = name
        self.events: list[BidiOutputEvent] = []
        self.violations: list[str] = []
        self.started: list[str] = []
        """Response ids started, in order."""
        self.fenced: set[str] = set()
        """Responses whose interruption (theirs, or a later one's) reached this output."""
        self._on_interruption = on_interruption

    def __repr__(self) -> str:
        return f"<WatchedOutput {self.name}>"

    @property
    def reports_playback(self) -> bool:
        return bool(getattr(self.inner, "reports_playback", False))

    async def start(self, agent: Any) -> None:
        start = getattr(self.inner, "start", None)
        if start is not None:
            await start(agent)

    async def __call__(self, event: BidiOutputEvent) -> None:
        self._see(event)
        await self.inner(event)

    def _see(self, event: BidiOutputEvent) -> None:
        self.events.append(event)
        if isinstance(event, BidiResponseStartEvent):
            self.started.append(event.response_id)
        elif isinstance(event, BidiAudioStreamEvent) and event.response_id in self.fenced:
            self.violations.append(f"output {self.name} received audio of {event.response_id} after its interruption")
        elif isinstance(event, BidiInterruptionEvent):
            self.fenced.update(self.started)
            if self._on_interruption is not None:
                self._on_interruption()

    async def stop(self) -> None:
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            await stop()


class WatchedInlineOutput(WatchedOutput):
    """A :class:`WatchedOutput` of an output that takes events on the spot (``offer``, a
    :class:`ports.io.BidiInlineOutput`): what it accepts there reached it as well."""

    def offer(self, event: BidiOutputEvent) -> bool:
        taken = bool(self.inner.offer(event))
        if taken:
            self._see(event)
        return taken


def watch(output: Any, name: str, on_interruption: Callable[[], None] | None = None) -> WatchedOutput:
    """A watched ``output``, inline (with ``offer``) if the output is."""
    kind = WatchedInlineOutput if callable(getattr(output, "offer", None)) else WatchedOutput
    return kind(output, name, on_interruption)


# --------------------------------------------------------------------------- quiet, tasks, threads


async def wait_quiet(backend: str) -> None:
    """Return once every other task of the event loop waits for something (a thread, a timer, an
    event) and no callback is due.

    Trio's ``wait_all_tasks_blocked``. On asyncio the same test anyio makes, without its 0.1 s pause
    (a test steps thousands of times), and also waiting for the loop's ready callbacks: anyio
    delivers a cancellation by a callback, before which every task may look blocked.
    """
    if backend == "trio":
        import trio.testing

        await trio.testing.wait_all_tasks_blocked()
        return
    import asyncio

    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0)
        if getattr(loop, "_ready", ()):  # callbacks due this turn (asyncio's own loop keeps them there)
            continue
        if all(task is me or task.done() or _blocked(task) for task in asyncio.all_tasks()):
            return


def _blocked(task: Any) -> bool:
    waiter = getattr(task, "_fut_waiter", None)  # what the task awaits (asyncio's own bookkeeping)
    return waiter is not None and not waiter.done()


def running_tasks() -> dict[int, str]:
    """Every task of the running event loop: id -> name (system tasks included on Trio)."""
    return {task.id: str(task.name) for task in anyio.get_running_tasks()}


_THREAD_MACHINERY = (
    "threading",
    "queue",
    "concurrent.futures",
    "selectors",
    "asyncio",
    "anyio._backends._asyncio",
    "anyio.to_thread",
    "trio._core._thread_cache",
    "trio._threads",
    "outcome",
)
"""Modules an idle worker thread of a pool waits in."""


def busy_threads(before: Sequence[threading.Thread]) -> list[str]:
    """Threads not in ``before`` that run code other than a thread pool's idle wait."""
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread() or not thread.is_alive():
            continue
        frame = frames.get(thread.ident or -1)
        code: list[str] = []
        while frame is not None:
            module = str(frame.f_globals.get("__name__", ""))
            if not module.startswith(_THREAD_MACHINERY):
                code.append(f"{module}.{frame.f_code.co_name}")
            frame = frame.f_back
        if code:
            busy.append(f"{thread.name} (in {code[0]})")
    return busy


async def checkpoints(count: int) -> None:
    """Let the event loop run ``count`` times."""
    for _ in range(count):
        await anyio.lowlevel.checkpoint()


def make_audio_input(tag: int, sample_rate: int, ms: int = 20) -> BidiAudioInputEvent:
    """A microphone block whose samples all say ``tag``."""
    return BidiAudioInputEvent(audio=tagged_audio(tag, sample_rate * ms // 1000), sample_rate=sample_rate)


__all__ += ["Heard", "checkpoints", "make_audio_input", "tags_of"]
