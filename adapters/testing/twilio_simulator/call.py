"""One simulated phone call: the caller's voice out at real-time pace, the server's audio played at real-time pace.

Written from Twilio's documentation of Media Streams (docs/protocols/twilio.md),
not from our bridge. The call plays Twilio's part:

* **caller audio**: one ``media`` message every 20 ms of the call's clock,
  whatever the caller is doing (silence is mu-law silence), as Twilio streams
  the inbound track; :meth:`SimulatedCall.say` queues speech (PCM16 at 8 kHz);
* **playback**: what the server sends is appended to a buffer that plays at
  real-time pace (a playhead that moves with the clock while there is audio,
  and stalls when the buffer runs dry). A ``mark`` is echoed when the audio
  before it has played; ``clear`` empties the buffer and echoes the pending
  marks at once (docs/protocols/twilio.md#marks-and-clear);
* **keys and hanging up**: :meth:`press` sends ``dtmf``, :meth:`hang_up` sends
  ``stop`` and closes the socket, as Twilio does when the caller hangs up.

Everything is recorded (:class:`CallRecord`) for assertions; the playback
accounting (what was buffered when, what was heard, what a clear discarded) is
the simulator's own, on its clock.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import deque
from typing import Any

import anyio
import anyio.abc
import attrs

from adapters.testing.twilio_simulator import g711
from adapters.testing.twilio_simulator.transport import StreamSocket

__all__ = ["CallRecord", "Clear", "SimulatedCall", "Speech"]

logger = logging.getLogger("bidi_core.testing.twilio_simulator")

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz
SAMPLES_PER_MS = 8


@attrs.define
class Speech:
    """One thing the caller said: when its first and last frames went out (``None`` until they did)."""

    ms: float
    started_at: float | None = None
    ended_at: float | None = None
    heard_ms_at_start: float | None = None
    """How much of the server's audio the caller had heard when this speech began."""


@attrs.frozen
class Clear:
    """A ``clear`` from the server: when, what it discarded, what had been heard by then."""

    at: float
    discarded_ms: float
    heard_ms: float


@attrs.define
class CallRecord:
    """What happened on one call, for assertions."""

    call_sid: str
    stream_sid: str
    webhook_status: int | None = None
    twiml: str | None = None
    stream_url: str | None = None
    parameters: dict[str, str] = attrs.field(factory=dict)
    rejected: str | None = None
    """``<Reject>``'s reason, when the webhook rejected the call."""
    handshake_status: int | None = None
    """The HTTP status of a refused WebSocket upgrade (101 when accepted)."""
    sent: list[dict[str, Any]] = attrs.field(factory=list)
    """Every message the carrier sent, media included (payloads as bytes)."""
    received: list[dict[str, Any]] = attrs.field(factory=list)
    """Every message the server sent, media payloads replaced by their length."""
    violations: list[str] = attrs.field(factory=list)
    """Server messages Twilio would refuse (docs/protocols/twilio.md#messages-to-twilio)."""
    heard: bytearray = attrs.field(factory=bytearray, repr=False)
    """The mu-law the caller heard, in order (silence between bursts not included)."""
    heard_at: list[tuple[float, float]] = attrs.field(factory=list)
    """``(time, total heard ms)`` each time the playhead moved."""
    received_ms: float = 0.0
    """Audio the server sent, in total."""
    media_arrivals: list[tuple[float, float]] = attrs.field(factory=list)
    """``(time, ms buffered just after it arrived)`` for every ``media`` message: the lead the server keeps."""
    marks_echoed: list[tuple[float, str]] = attrs.field(factory=list)
    clears: list[Clear] = attrs.field(factory=list)
    speech: list[Speech] = attrs.field(factory=list)
    digits: list[str] = attrs.field(factory=list)
    hung_up_at: float | None = None
    closed_by_server: bool = False
    close_code: int | None = None
    ended_at: float | None = None

    @property
    def heard_ms(self) -> float:
        return len(self.heard) / SAMPLES_PER_MS

    @property
    def max_buffered_ms(self) -> float:
        return max((ms for _, ms in self.media_arrivals), default=0.0)

    def heard_pcm(self) -> bytes:
        """What the caller heard, as PCM16 at 8 kHz."""
        return g711.decode(bytes(self.heard))


class SimulatedCall:
    """A call in progress on the carrier simulator (made by :meth:`TwilioCarrierSimulator.call`)."""

    def __init__(self, record: CallRecord, account_sid: str, parameters: dict[str, str]) -> None:
        self.record = record
        self._account_sid = account_sid
        self._parameters = parameters
        self._socket: StreamSocket | None = None
        self._sequence = 0
        self._speech: deque[tuple[Speech, bytes]] = deque()
        # playback: mu-law not yet played, and the marks among it (position in samples since the call began)
        self._buffer = bytearray()
        self._received_samples = 0
        self._played_samples = 0
        self._marks: deque[tuple[int, str]] = deque()
        self._playhead_at: float | None = None  # when the playhead last moved (None: stalled, nothing to play)
        self._changed = anyio.Event()
        self._ended = anyio.Event()
        self._hung_up = False

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # ------------------------------------------------------------------ cues

    def say(self, pcm8k: bytes) -> Speech:
        """Queue speech (PCM16 LE at 8 kHz): it goes out frame by frame after what is queued already."""
        speech = Speech(len(pcm8k) / 2 / SAMPLES_PER_MS)
        self.record.speech.append(speech)
        self._speech.append((speech, g711.encode(pcm8k)))
        return speech

    async def press(self, digit: str) -> None:
        """The caller presses a key: a ``dtmf`` message."""
        self.record.digits.append(digit)
        await self._send(
            {"event": "dtmf", "streamSid": self.record.stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}}
        )

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (a carrier bug, or an attacker who got past the gates)."""
        if self._socket is not None:
            self.record.sent.append({"raw": text})
            await self._socket.send_text(text)

    async def hang_up(self) -> None:
        """The caller hangs up: ``stop``, then the socket closes."""
        if self._hung_up or self._socket is None:
            return
        self._hung_up = True
        self.record.hung_up_at = anyio.current_time()
        await self._send({"event": "stop", "streamSid": self.record.stream_sid, "stop": self._ids()})
        await self._socket.close()

    async def wait_heard(self, ms: float) -> None:
        """Until the caller has heard ``ms`` of the server's audio (bound it with ``anyio.fail_after``)."""
        while self.record.heard_ms < ms:
            await self._wait()

    async def wait_speech_done(self, speech: Speech) -> None:
        while speech.ended_at is None and not self.ended:
            await self._wait()

    async def wait_clear(self, count: int = 1) -> None:
        while len(self.record.clears) < count and not self.ended:
            await self._wait()

    async def wait_ended(self) -> None:
        """Until the stream is over (either side closed it)."""
        await self._ended.wait()

    async def wait_until(self, predicate: Any) -> None:
        while not predicate():
            if self.ended:
                return
            await self._wait()

    async def _wait(self) -> None:
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ------------------------------------------------------------------ running the stream

    async def run(
        self, socket: StreamSocket, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """``connected`` and ``start``, then caller audio, playback and the server's messages until the end."""
        self._socket = socket
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "streamSid": self.record.stream_sid,
                "start": {
                    **self._ids(),
                    "streamSid": self.record.stream_sid,
                    "tracks": ["inbound"],
                    "customParameters": self._parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stream_caller)
                tg.start_soon(self._play)
                await self._listen()
                tg.cancel_scope.cancel()
        finally:
            self.record.close_code = socket.close_code
            self.record.closed_by_server = socket.closed_by_server and not self._hung_up
            self.record.ended_at = anyio.current_time()
            self._ended.set()
            self._notify()
            await socket.close()

    def _ids(self) -> dict[str, str]:
        return {"accountSid": self._account_sid, "callSid": self.record.call_sid}

    async def _send(self, message: dict[str, Any]) -> bool:
        if self._socket is None:
            return False
        self._sequence += 1
        message = {"sequenceNumber": str(self._sequence), **message}
        self.record.sent.append(message)
        return await self._socket.send_text(json.dumps(message))

    async def _stream_caller(self) -> None:
        """One 20 ms ``media`` message per 20 ms of the clock, on a fixed schedule (late frames catch up)."""
        t0 = anyio.current_time()
        chunk = 0
        current: tuple[Speech, bytes] | None = None
        offset = 0
        while not self._hung_up:
            now = anyio.current_time()
            self._advance(now)  # marks due are echoed before the next frame: the server sees them in order
            if current is None and self._speech:
                current, offset = self._speech.popleft(), 0
                current[0].started_at = now
                current[0].heard_ms_at_start = self.record.heard_ms
            if current is not None:
                speech, data = current
                frame = data[offset : offset + FRAME_BYTES]
                offset += FRAME_BYTES
                if offset >= len(data):
                    speech.ended_at = now
                    current = None
                    self._notify()
                frame = frame.ljust(FRAME_BYTES, bytes([g711.SILENCE]))
            else:
                frame = bytes([g711.SILENCE]) * FRAME_BYTES
            chunk += 1
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(int((now - t0) * 1000)),
                "payload": base64.b64encode(frame).decode(),
            }
            if not await self._send({"event": "media", "streamSid": self.record.stream_sid, "media": media}):
                return
            await anyio.sleep_until(t0 + chunk * FRAME_MS / 1000)

    async def _listen(self) -> None:
        assert self._socket is not None
        while True:
            message = await self._socket.receive()
            if message is None:
                return
            if isinstance(message, bytes):
                self.record.violations.append("a binary frame")
                continue
            try:
                data = json.loads(message)
            except ValueError:
                self.record.violations.append("a frame that is not JSON")
                continue
            await self._on_message(data)
            self._notify()

    async def _on_message(self, data: Any) -> None:
        event = data.get("event") if isinstance(data, dict) else None
        if event not in ("media", "mark", "clear"):
            self.record.violations.append(f"an unsupported message: {str(event)[:40]}")
            self.record.received.append({"event": event})
            return
        if data.get("streamSid") != self.record.stream_sid:
            self.record.violations.append(f"{event} for another stream")
        now = anyio.current_time()
        self._advance(now)
        if event == "media":
            try:
                payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (KeyError, TypeError, ValueError):
                self.record.violations.append("media without a base64 payload")
                return
            self.record.received.append({"event": "media", "bytes": len(payload), "at": now})
            self._buffer += payload
            self._received_samples += len(payload)
            self.record.received_ms += len(payload) / SAMPLES_PER_MS
            if self._playhead_at is None:
                self._playhead_at = now
            self.record.media_arrivals.append((now, len(self._buffer) / SAMPLES_PER_MS))
        elif event == "mark":
            name = data.get("mark", {}).get("name") if isinstance(data.get("mark"), dict) else None
            if not isinstance(name, str):
                self.record.violations.append("mark without a name")
                return
            self.record.received.append({"event": "mark", "name": name, "at": now})
            self._marks.append((self._received_samples, name))
            await self._echo_due_marks()
        else:
            self.record.received.append({"event": "clear", "at": now})
            discarded = len(self._buffer) / SAMPLES_PER_MS
            self.record.clears.append(Clear(now, discarded, self.record.heard_ms))
            self._buffer.clear()
            self._played_samples = self._received_samples
            self._playhead_at = None
            await self._echo_due_marks()  # every pending mark comes back at once

    # ------------------------------------------------------------------ playback

    def _advance(self, now: float) -> None:
        """Move the playhead to ``now``: real time while there is audio; it stalls when the buffer runs dry."""
        if self._playhead_at is None:
            return
        samples = int((now - self._playhead_at) * 8000)
        if samples <= 0:
            return
        take = min(samples, len(self._buffer))
        if take:
            self.record.heard += self._buffer[:take]
            del self._buffer[:take]
            self._played_samples += take
            self.record.heard_at.append((now, self.record.heard_ms))
            self._notify()
        self._playhead_at = None if not self._buffer else self._playhead_at + take / 8000

    async def _echo_due_marks(self) -> None:
        while self._marks and self._marks[0][0] <= self._played_samples:
            _, name = self._marks.popleft()
            self.record.marks_echoed.append((anyio.current_time(), name))
            await self._send({"event": "mark", "streamSid": self.record.stream_sid, "mark": {"name": name}})

    async def _play(self) -> None:
        """The playhead's own pace: wake at the next mark (or every frame) while there is audio to play."""
        while True:
            now = anyio.current_time()
            self._advance(now)
            await self._echo_due_marks()
            if not self._buffer:
                await self._wait()
                continue
            to_next_mark = (self._marks[0][0] - self._played_samples) / 8000 if self._marks else FRAME_MS / 1000
            await anyio.sleep(max(0.001, min(to_next_mark, FRAME_MS / 1000)))
