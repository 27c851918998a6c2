"""Prototypes of the library changes that benchmarks/README.md proposes, as monkeypatches.

The benchmarks may not change the library; these patches exist so that each
proposed change can be measured before anyone makes it, with the same
workload and in the same run as the library as it is (``python -m
benchmarks.clients.bidi ... --prototype core-audio,wire-audio``; the suite
passes ``--prototype`` on with ``python -m benchmarks --prototype ...``). They
are measurement aids, not fixes: they skip what a real change must keep (see
each one), and nothing imports this module unless asked to.

* ``core-audio``: ``conversation._audio`` copies the whole 19-field state
  (``attrs.evolve``) for every chunk to add to ``received_ms``, which is read
  only when some output reports playback. The prototype returns the state
  unchanged when ``tracks_playback`` is off. (A real change must also keep
  ``received_ms`` right when playback reporting starts in the middle of a
  response.)
* ``wire-audio``: ``wire.decode_server_event`` built every event through
  cattrs; the prototype builds ``OutputAudioDelta`` directly after
  ``json.loads`` (other events unchanged). Landed in b8925bb (the prototype
  does nothing on a library that has ``wire.warm_up``).
* ``adapter-audio``: ``OpenAIRealtimeSession.receive`` awaits ``_translate``
  (a coroutine and a one-element list) for every message, and ``_translate``
  updates two dicts per audio chunk. The prototype handles audio deltas
  inline in ``receive`` (with the same bookkeeping, kept for the current item
  only until the item changes) and sends everything else the old way.
* ``ws-read``: ``WebSocketConnection._read`` reads through httpcore's stream
  wrapper, ``AnyIOStream.read``, which enters ``map_exceptions`` and
  ``anyio.fail_after(None)`` (a generator context manager and a cancel scope)
  for every read. The prototype reads the anyio (or trio) stream under it
  directly, keeping the watchdog's ``_last_rx`` and ``_dead``. (The other half
  of the first version of this prototype, liveness by one watchdog per
  connection instead of a ``move_on_after`` per read, landed in b8925bb.)
* ``warm-wire``: the first tool call of a process paid for cattrs generating
  the structure code of ``function_call_arguments.done`` and
  ``response.done`` (0.6-1 ms); the prototype generates the code of every
  server event when the first session opens (about 4 ms, once). Landed in
  b8925bb as ``wire.warm_up`` (the prototype then does nothing). (Tried and
  dropped: a checkpoint in the reader right after a tool call, so the tool
  task starts before the rest of the provider's burst is read. The tool then
  starts ~120 us sooner, but its result waits for the writer, which runs
  after the reader has finished the burst anyway: the round trip is set by
  the per-frame cost of the ~14 frames around the call.)
* ``anyio-read``: anyio's asyncio ``SocketStream.receive`` resumes and pauses
  the transport around every wait (two ``epoll_ctl`` calls per message when
  messages come one at a time). The prototype leaves reading on. This one is
  anyio's code: the fix belongs upstream, or in an asyncio-native reader.
  Landed as that reader in 1b1d827 (``adapters/_asyncio_stream.py``).

``ws-read`` and ``adapter-audio`` landed too (1440e52: the WebSocket reads an
anyio stream with no httpcore in between; f50412f: audio deltas inline in
``session.receive``); on such a library they do nothing. ``core-audio`` is the
one still open (``bidi_core/conversation.py``).
"""

from __future__ import annotations

import json
from typing import Any

PATCHES = ("core-audio", "wire-audio", "adapter-audio", "ws-read", "warm-wire", "anyio-read")


def _landed() -> set[str]:
    """Prototypes the library has since adopted: applying them is a no-op there."""
    import inspect

    from adapters import websocket
    from adapters.openai import wire

    landed = set()
    if hasattr(wire, "warm_up"):  # b8925bb
        landed |= {"wire-audio", "warm-wire"}
    if hasattr(wire, "audio_delta_fields"):  # f50412f: audio deltas inline in session.receive
        landed.add("adapter-audio")
    if "connection" in inspect.signature(websocket.WebSocketConnection).parameters:  # 1440e52: no httpcore stream
        landed.add("ws-read")
    if hasattr(websocket, "_asyncio_stream"):  # 1b1d827: anyio's asyncio socket stream is not used
        landed.add("anyio-read")
    return landed


def validate(names: str) -> list[str]:
    chosen = [n for n in names.split(",") if n]
    unknown = set(chosen) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown prototype(s) {sorted(unknown)}; choose from {', '.join(PATCHES)}")
    return chosen


def apply(names: str) -> list[str]:
    """Apply the named patches; returns those that changed anything."""
    chosen = validate(names)
    applied = []
    landed = _landed()
    for name in chosen:
        if name in landed:
            continue
        globals()["_" + name.replace("-", "_")]()
        applied.append(name)
    return applied


def _core_audio() -> None:
    import attrs

    from bidi_core import conversation as c
    from bidi_core.effects import Emit
    from ports.events import BidiAudioStreamEvent

    def audio(conv: c.Conversation, ev: BidiAudioStreamEvent) -> c.Result:
        rid = ev.response_id if ev.response_id is not None else conv.response_id
        if rid is None or rid != conv.response_id or rid in conv.interrupted_ids:
            return conv, ()
        if ev.response_id is None:
            ev = attrs.evolve(ev, response_id=rid)
        if not conv.tracks_playback:
            return conv, (Emit(ev),)
        return attrs.evolve(conv, received_ms=conv.received_ms + ev.duration_ms), (Emit(ev),)

    table: Any = c.TRANSITIONS
    for key in [k for k in table if k[1] is BidiAudioStreamEvent]:
        table[key] = c.Transition(audio, table[key].targets)


def _wire_audio() -> None:
    from adapters.openai import wire

    original = wire.decode_server_event
    audio_type = wire.OutputAudioDelta

    def decode(text: str | bytes) -> Any:
        try:
            data = json.loads(text)
        except ValueError:
            return original(text)
        if type(data) is dict and data.get("type") == "response.output_audio.delta":
            try:
                return audio_type(
                    data["response_id"],
                    data["item_id"],
                    data["delta"],
                    data.get("output_index", 0),
                    data.get("content_index", 0),
                )
            except KeyError:
                pass
        return original(text)

    wire.decode_server_event = decode


def _adapter_audio() -> None:
    import base64
    import binascii

    from adapters.openai import session as s
    from adapters.openai import wire
    from ports.events import BidiAudioStreamEvent, BidiErrorEvent

    async def receive(self: Any) -> Any:
        audio_type = wire.OutputAudioDelta
        rate = s.SAMPLE_RATE
        while True:
            try:
                frame = await self._ws.receive()
            except s.WebSocketClosed as exc:
                if exc.code == 1000:
                    return
                raise
            try:
                event = wire.decode_server_event(frame)
            except wire.MalformedServerEvent as exc:
                yield BidiErrorEvent(message=f"malformed server message: {exc}", code="protocol_error")
                continue
            if type(event) is audio_type:
                try:
                    pcm = base64.b64decode(event.delta, validate=True)
                except (binascii.Error, ValueError):
                    yield BidiErrorEvent(message="audio delta is not valid base64", code="protocol_error")
                    continue
                item = event.item_id
                if item != self._proto_item:
                    self._proto_item = item
                    self._audio_item.setdefault(event.response_id, item)
                self._audio_bytes[item] = self._audio_bytes.get(item, 0) + len(pcm)
                yield BidiAudioStreamEvent(pcm, "pcm", rate, 1, event.response_id)
                continue
            for out in await self._translate(event):
                yield out

    s.OpenAIRealtimeSession._proto_item = None  # type: ignore[attr-defined]
    s.OpenAIRealtimeSession.receive = receive  # type: ignore[method-assign]


def _ws_read() -> None:
    import anyio

    from adapters import websocket
    from ports.errors import BidiConnectionError

    original = websocket.WebSocketConnection._read

    async def read(self: Any) -> bytes:
        outer = self._stream
        inner = getattr(getattr(outer, "_stream", None), "_stream", None)
        # httpcore's anyio backend wraps an anyio stream (receive); its trio backend a trio stream (receive_some).
        receive = getattr(inner, "receive", None) or getattr(inner, "receive_some", None)
        if receive is None or getattr(outer, "_leading_data", b""):
            data: bytes = await original(self)
            return data
        try:
            data = await receive(websocket._READ_SIZE)
        except anyio.EndOfStream:
            data = b""
        except Exception as exc:  # anyio's and trio's Broken/ClosedResourceError, OSError
            if getattr(self, "_dead", None) is not None:
                raise self._dead from None
            raise BidiConnectionError(f"receiving failed: {type(exc).__name__}") from None
        if not data:
            if getattr(self, "_dead", None) is not None:
                raise self._dead
            self._stream_ended = True
        else:
            self._last_rx = anyio.current_time()
        return data

    websocket.WebSocketConnection._read = read  # type: ignore[method-assign]


def _warm_wire() -> None:
    from adapters.openai import session as s
    from adapters.openai import wire

    inner = s.OpenAIRealtimeSession.setup

    async def setup(self: Any, model_id: str, request: Any) -> None:
        if not getattr(wire, "_proto_warm", False):
            for cls in set(wire._SERVER_TYPES.values()):
                wire.converter.get_structure_hook(cls)
            wire._proto_warm = True  # type: ignore[attr-defined]
        await inner(self, model_id, request)

    s.OpenAIRealtimeSession.setup = setup  # type: ignore[method-assign]


def _anyio_read() -> None:
    from anyio._backends import _asyncio as backend

    async def receive(self: Any, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        with self._receive_guard:
            if not protocol.read_event.is_set() and not self._transport.is_closing() and not protocol.is_at_eof:
                if not getattr(self, "_reading_on", False):
                    self._transport.resume_reading()
                    self._reading_on = True
                await protocol.read_event.wait()
            else:
                await backend.AsyncIOBackend.checkpoint()
            try:
                chunk: bytes = protocol.read_queue.popleft()
            except IndexError:
                if self._closed:
                    raise backend.ClosedResourceError from None
                if protocol.exception:
                    raise backend.BrokenResourceError from protocol.exception
                raise backend.EndOfStream from None
            if len(chunk) > max_bytes:
                chunk, leftover = chunk[:max_bytes], chunk[max_bytes:]
                protocol.read_queue.appendleft(leftover)
            if not protocol.read_queue:
                protocol.read_event.clear()
        return chunk

    backend.SocketStream.receive = receive  # type: ignore[method-assign]
