"""The load server's side of the conversation: what it answers, and when.

Each :class:`Connection` plays one scenario of :mod:`benchmarks.workload`
(chosen by the client's ``?model=``) on top of the framing of
:mod:`benchmarks.loadserver_wire`:

* audio delta frames are pre-encoded; per chunk only the 18-byte stamp
  (:mod:`benchmarks.workload`) is base64-encoded, at the moment of writing;
* real-time streams are paced by one timer for all sessions, in 1 ms slots,
  each session in its own slot, so that the sessions' chunks are spread over
  the 20 ms period as independent callers' would be, not sent in one burst;
* in duplex the server's "VAD" starts each turn, a barge-in marker in a
  microphone chunk fires ``speech_started`` and cancels, and some turns begin
  with a function call whose round trip the server times.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from benchmarks.loadserver_wire import _GUID, WebSocketProtocol, _frame
from benchmarks.workload import (
    BARGE_MARKER,
    MARKER,
    PROFILES,
    STAMP,
    STAMP_BYTES,
    TOOL_NAME,
    Scenario,
    parse_model_id,
)

if TYPE_CHECKING:
    from benchmarks.loadserver import LoadServer

_SLOT_S = 0.001
_SLOTS = 20  # one 20 ms period


def _tone(n_bytes: int) -> bytes:
    """Some non-silent PCM (a 440 Hz-ish sawtooth), so nothing compresses it away."""
    out = bytearray(n_bytes)
    for i in range(0, n_bytes - 1, 2):
        sample = ((i // 2) * 600) % 16000 - 8000
        out[i : i + 2] = sample.to_bytes(2, "little", signed=True)
    return bytes(out)


class Stats:
    """What the server measured, filed by the key in the client's ``?model=``."""

    def __init__(self) -> None:
        self.by_key: dict[str, dict[str, Any]] = {}
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def for_key(self, key: str) -> dict[str, Any]:
        rec = self.by_key.get(key)
        if rec is None:
            rec = {
                "connections": 0,
                "speech_started_ns": {},
                "tool_rtt_ns": [],
                "chunks_sent": 0,
                "mic_chunks": 0,
                "errors_sent": [],
            }
            self.by_key[key] = rec
        return rec

    def load(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        share = (cpu - self._cpu) / max(wall - self._wall, 1e-9)
        self._cpu, self._wall = cpu, wall
        return share


class Pacer:
    """One timer for every real-time stream: each stream owns a 1 ms slot of
    the 20 ms period and sends one chunk each time its slot comes round."""

    def __init__(self) -> None:
        self.slots: list[list[Response]] = [[] for _ in range(_SLOTS)]
        self._next_slot = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def add(self, response: Response) -> None:
        if response.conn.scenario.first_chunk_at_once and not response.tick():
            return  # the first chunk goes out now (time to first audio), the rest in the slot
        self.slots[next(self._next_slot) % _SLOTS].append(response)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in itertools.count(1):
            delay = start + i * _SLOT_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            slot = self.slots[i % _SLOTS]
            if slot:
                slot[:] = [r for r in slot if r.tick()]


class Response:
    """One audio response being streamed (unpaced, or paced by the :class:`Pacer`)."""

    def __init__(self, conn: Connection, turn: int, n_chunks: int) -> None:
        self.conn = conn
        self.turn = turn
        self.n_chunks = n_chunks
        self.sent = 0
        self.id = conn.new_id("resp")
        self.item_id = conn.new_id("item")
        self.where = {"response_id": self.id, "item_id": self.item_id, "output_index": 0, "content_index": 0}
        sc = conn.scenario
        chunk = sc.chunk_bytes
        rest = base64.b64encode(conn.server.tone[STAMP_BYTES:chunk]).decode("ascii")
        head = json.dumps({"type": "response.output_audio.delta", **self.where}, separators=(",", ":"))
        self._prefix = (head[:-1] + ',"delta":"').encode()
        self._suffix = (rest + '","event_id":"event_').encode()
        self.transcript = ""
        self.finished = False

    def tick(self) -> bool:
        """Send the next chunk; False once the response is over (for the pacer)."""
        if self.finished or self.conn.closed:
            return False
        self.send_chunk()
        if self.sent >= self.n_chunks:
            self.conn.finish_response(self)
            return False
        return True

    def send_chunk(self) -> None:
        conn = self.conn
        seq = self.sent
        self.sent += 1
        stamp = base64.b64encode(STAMP.pack(time.monotonic_ns(), self.turn, seq) + b"\0\0")
        payload = self._prefix + stamp + self._suffix + str(next(conn.server.event_ids)).encode() + b'"}'
        conn.transport.write(_frame(payload))
        conn.stats["chunks_sent"] += 1
        every = conn.scenario.transcript_every
        if every and seq % every == every - 1:
            word = f"w{seq} "
            self.transcript += word
            conn.send_event({"type": "response.output_audio_transcript.delta", **self.where, "delta": word})


class Connection(WebSocketProtocol):
    """One client connection: HTTP upgrade, then the conversation its scenario scripts."""

    def __init__(self, server: LoadServer) -> None:
        super().__init__()
        self.server = server
        self.scenario: Scenario = PROFILES["full"]["rt20"]
        self.key = ""
        self.stats: dict[str, Any] = {}
        self.ids = itertools.count(1)
        self.next_turn = 0
        self.active: Response | None = None
        self.last_item: str | None = None
        self.mic_started = False
        self.configured = False
        self.follow_up_turn: int | None = None
        self.tool_sent_ns: dict[str, int] = {}
        self.user_speaking = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: list[asyncio.TimerHandle] = []

    # ------------------------------------------------------------------ transport

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for timer in self.timers:
            timer.cancel()
        for task in self.tasks:
            task.cancel()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids)}"

    # ------------------------------------------------------------------ HTTP

    def _http(self, request: str) -> None:
        lines = request.split("\r\n")
        _method, target, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        url = urlsplit(target)
        query = parse_qs(url.query)
        if url.path == "/stats":
            key = query.get("key", [""])[0]
            body = self.server.stats.by_key.get(key, {}) if key else self.server.stats.by_key
            self._http_reply(body)
            return
        if url.path == "/load":
            self._http_reply({"cpu_fraction": self.server.stats.load()})
            return
        if headers.get("upgrade", "").lower() != "websocket" or "sec-websocket-key" not in headers:
            self._http_reply({"error": "not a websocket upgrade"}, status="400 Bad Request")
            return
        if headers.get("authorization", "") != f"Bearer {self.server.api_key}":
            self._http_reply({"error": {"code": "invalid_api_key"}}, status="401 Unauthorized")
            return
        try:
            scenario_name, self.key = parse_model_id(query.get("model", [""])[0])
            self.scenario = self.server.scenarios[scenario_name]
        except (ValueError, KeyError):
            self._http_reply({"error": "model must be bench-<scenario>-<key>"}, status="400 Bad Request")
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest()).decode()
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.websocket = True
        self.stats = self.server.stats.for_key(self.key)
        self.stats["connections"] += 1
        session = {"type": "realtime", "object": "realtime.session", "id": self.new_id("sess"), "model": "gpt-realtime"}
        self.send_event({"type": "session.created", "session": session})

    def _append(self, prefix: bytes) -> bool:
        """The fast path for a microphone chunk; False if the prefix is not enough."""
        at = prefix.find(b'"audio"')
        if at < 0:
            return False
        quote = prefix.find(b'"', at + 7)
        if quote < 0 or quote + 9 > len(prefix):
            return False
        self.stats["mic_chunks"] += 1
        self._mic(base64.b64decode(prefix[quote + 1 : quote + 9]))
        return True

    def _message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            self._error("invalid_json", "We could not parse the JSON body of your request.")
            return
        handler: Callable[[dict[str, Any]], None] | None = getattr(self, "_on_" + kind.replace(".", "_"), None)
        if handler is not None:
            handler(message)

    # ------------------------------------------------------------------ sending

    def send_event(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        event["event_id"] = f"event_{next(self.server.event_ids)}"
        self.transport.write(_frame(json.dumps(event, separators=(",", ":")).encode()))

    def _error(self, code: str, message: str) -> None:
        self.stats.setdefault("errors_sent", []).append(code)
        self.send_event({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message}})

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append(asyncio.get_running_loop().call_later(delay, fn))

    # ------------------------------------------------------------------ client events

    def _on_session_update(self, message: dict[str, Any]) -> None:
        session = dict(message.get("session") or {})
        session.update({"object": "realtime.session", "id": "sess_bench"})
        self.send_event({"type": "session.updated", "session": session})
        self.configured = True
        self._maybe_start_duplex()

    def _on_input_audio_buffer_append(self, message: dict[str, Any]) -> None:
        self.stats["mic_chunks"] += 1
        self._mic(base64.b64decode(str(message.get("audio", ""))[:8]))

    def _on_conversation_item_create(self, message: dict[str, Any]) -> None:
        item = dict(message.get("item") or {})
        item.setdefault("id", self.new_id("item"))
        item["status"] = "completed"
        item.setdefault("object", "realtime.item")
        self._item_added(item)
        if item.get("type") == "function_call_output":
            sent = self.tool_sent_ns.pop(str(item.get("call_id")), None)
            if sent is not None:
                now = time.monotonic_ns()
                self.stats["tool_rtt_ns"].append(now - sent)
                self.stats.setdefault("tool_calls_ns", []).append([str(item.get("call_id")), sent, now])

    def _on_response_create(self, message: dict[str, Any]) -> None:
        if self.active is not None:
            self._error("conversation_already_has_active_response", "Conversation already has an active response")
            return
        if self.scenario.kind == "duplex":
            if self.follow_up_turn is None:
                self.stats.setdefault("unexpected", []).append("response.create")
                return
            turn, self.follow_up_turn = self.follow_up_turn, None
            self._start_audio(turn)
            return
        turn = self.next_turn
        self.next_turn += 1
        self._start_audio(min(turn, self.scenario.last_turn))

    def _on_response_cancel(self, message: dict[str, Any]) -> None:
        if self.active is None:
            self._error("response_cancel_not_active", "Cancellation failed: no active response found")
            return
        self._cancel(self.active, "client_cancelled")

    def _on_conversation_item_truncate(self, message: dict[str, Any]) -> None:
        self.send_event(
            {
                "type": "conversation.item.truncated",
                "item_id": message.get("item_id"),
                "content_index": message.get("content_index", 0),
                "audio_end_ms": message.get("audio_end_ms", 0),
            }
        )

    # ------------------------------------------------------------------ responses

    def _item_added(self, item: dict[str, Any]) -> None:
        previous, self.last_item = self.last_item, item["id"]
        self.send_event({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self.send_event({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    def _response_object(self, rid: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": rid,
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": "conv_bench",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
            "usage": None,
            "metadata": None,
        }

    def _usage(self, audio_ms: int) -> dict[str, Any]:
        out_audio = audio_ms // 50
        return {
            "total_tokens": 20 + out_audio,
            "input_tokens": 20,
            "output_tokens": out_audio,
            "input_token_details": {"text_tokens": 20, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 0, "audio_tokens": out_audio},
        }

    def _start_audio(self, turn: int) -> None:
        """``response.created`` ... ``content_part.added``, then the deltas."""
        sc = self.scenario
        r = Response(self, turn, sc.chunks_in_turn(turn))
        self.active = r
        self.send_event({"type": "response.created", "response": self._response_object(r.id, "in_progress", [])})
        item = {
            "id": r.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.send_event({"type": "response.output_item.added", "response_id": r.id, "output_index": 0, "item": item})
        previous, self.last_item = self.last_item, r.item_id
        self.send_event({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self.send_event({"type": "response.content_part.added", **r.where, "part": {"type": "audio", "transcript": ""}})
        if sc.paced:
            self.server.pacer.add(r)
        else:
            task = asyncio.get_running_loop().create_task(self._unpaced(r))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _unpaced(self, r: Response) -> None:
        """As fast as the client reads (the socket's flow control decides)."""
        while r.sent < r.n_chunks and not r.finished and not self.closed:
            if not self.can_write.is_set():
                await self.can_write.wait()
            r.send_chunk()
            if r.sent % 64 == 0:
                await asyncio.sleep(0)
        if not r.finished and not self.closed:
            self.finish_response(r)

    def _close_parts(self, r: Response, status: str) -> dict[str, Any]:
        self.send_event({"type": "response.output_audio.done", **r.where})
        self.send_event({"type": "response.output_audio_transcript.done", **r.where, "transcript": r.transcript})
        part = {"type": "audio", "transcript": r.transcript}
        self.send_event({"type": "response.content_part.done", **r.where, "part": part})
        item = {
            "id": r.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": r.transcript}],
        }
        self.send_event({"type": "response.output_item.done", "response_id": r.id, "output_index": 0, "item": item})
        self.send_event({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        return item

    def finish_response(self, r: Response) -> None:
        r.finished = True
        if self.active is r:
            self.active = None
        item = self._close_parts(r, "completed")
        done = self._response_object(r.id, "completed", [item])
        done["usage"] = self._usage(r.sent * self.scenario.chunk_ms)
        self.send_event({"type": "response.done", "response": done})
        if self.scenario.kind == "duplex":
            self._later(0.1, lambda: self._duplex_turn(r.turn + 1))

    def _cancel(self, r: Response, reason: str) -> None:
        r.finished = True
        if self.active is r:
            self.active = None
        item = self._close_parts(r, "incomplete")
        done = self._response_object(r.id, "cancelled", [item])
        done["status_details"] = {"type": "cancelled", "reason": reason}
        done["usage"] = self._usage(r.sent * self.scenario.chunk_ms)
        self.send_event({"type": "response.done", "response": done})

    # ------------------------------------------------------------------ duplex: the server's VAD drives the turns

    def _mic(self, head: bytes) -> None:
        if not self.mic_started:
            self.mic_started = True
            self._maybe_start_duplex()
        if head[:4] != BARGE_MARKER:
            return
        _, turn = MARKER.unpack(head[: MARKER.size])
        r = self.active
        if r is None or r.turn != turn:
            self.stats.setdefault("unexpected", []).append(f"barge-in for turn {turn} with no such response")
            return
        self.user_speaking = True
        self.stats["speech_started_ns"][str(turn)] = time.monotonic_ns()
        self.send_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_speech"})
        self._cancel(r, "turn_detected")  # interrupt_response: cancelled right after speech_started
        self._later(0.15, lambda: self._duplex_turn(turn + 1))

    def _maybe_start_duplex(self) -> None:
        if self.scenario.kind == "duplex" and self.mic_started and self.configured and self.next_turn == 0:
            self._duplex_turn(0)

    def _duplex_turn(self, turn: int) -> None:
        if self.closed or turn > self.scenario.last_turn:
            return
        self.next_turn = turn + 1
        user_item = self.new_id("item")
        if not self.user_speaking:
            self.send_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": user_item})
        self.user_speaking = False
        self.send_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 500, "item_id": user_item})
        self.send_event(
            {"type": "input_audio_buffer.committed", "previous_item_id": self.last_item, "item_id": user_item}
        )
        self._item_added(
            {
                "id": user_item,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )
        if self.scenario.is_tool_turn(turn):
            self._tool_call(turn)
        else:
            self._start_audio(turn)

    def _tool_call(self, turn: int) -> None:
        """A response that is one function call, sent in one write; the round
        trip runs from that write to the ``function_call_output`` item."""
        rid, item_id, call_id = self.new_id("resp"), self.new_id("item"), f"call_{turn}_{self.key[-8:]}"
        self.send_event({"type": "response.created", "response": self._response_object(rid, "in_progress", [])})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": TOOL_NAME,
            "call_id": call_id,
            "arguments": "",
        }
        self.send_event({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        self.send_event({"type": "conversation.item.added", "previous_item_id": self.last_item, "item": item})
        self.last_item = item_id
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "call_id": call_id}
        args = '{"zone":"UTC"}'
        self.send_event({"type": "response.function_call_arguments.delta", **where, "delta": args})
        self.follow_up_turn = turn
        self.tool_sent_ns[call_id] = time.monotonic_ns()
        self.send_event(
            {"type": "response.function_call_arguments.done", **where, "name": TOOL_NAME, "arguments": args}
        )
        done_item = {**item, "status": "completed", "arguments": args}
        self.send_event({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done_item})
        self.send_event({"type": "conversation.item.done", "previous_item_id": None, "item": done_item})
        done = self._response_object(rid, "completed", [done_item])
        done["usage"] = self._usage(0)
        self.send_event({"type": "response.done", "response": done})
