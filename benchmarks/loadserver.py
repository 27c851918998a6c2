"""A lean OpenAI Realtime (GA) load server for the benchmarks.

Why not the simulator (``adapters.testing.openai_simulator``)? It validates
every message with pydantic and runs a task per response, which would cost
more than the clients being measured. This server speaks just enough of the
GA protocol for all three clients (the shapes follow the simulator's, which
follow ``docs/protocols/openai.md``; ``--self-check`` passes
one of each through the simulator's schema oracle when it is installed), with
hand-written WebSocket framing on a plain asyncio ``Protocol``:

* audio delta frames are pre-encoded; per chunk only the 18-byte stamp
  (:mod:`benchmarks.workload`) is base64-encoded, at the moment of writing;
* microphone appends are recognised from their first 128 bytes, which are the
  only ones unmasked (enough to read a barge-in marker); everything else is
  parsed as JSON;
* real-time streams are paced by one timer for all sessions, in 1 ms slots,
  each session in its own slot, so that the sessions' chunks are spread over
  the 20 ms period as independent callers' would be, not sent in one burst.

It runs in its own process (pinned to the second core), so its CPU never
counts as a client's. ``GET /stats?key=K`` returns what the server measured
for the client runs filed under key K (speech_started times, tool round
trips); ``GET /load`` the server's CPU share since the previous ``/load``.

    python -m benchmarks.loadserver --profile full --port 0      # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from benchmarks.workload import (
    BARGE_MARKER,
    MARKER,
    PROFILES,
    STAMP,
    STAMP_BYTES,
    TOOL_NAME,
    Scenario,
    parse_model_id,
    pin_to_cpu,
    raise_fd_limit,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_APPEND = b"input_audio_buffer.append"
_SLOT_S = 0.001
_SLOTS = 20  # one 20 ms period


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A server frame (never masked)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def _unmask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


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


class Connection(asyncio.Protocol):
    """One client connection: HTTP upgrade, then WebSocket frames."""

    def __init__(self, server: LoadServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.websocket = False
        self.closed = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.can_write.set()
        for timer in self.timers:
            timer.cancel()
        for task in self.tasks:
            task.cancel()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.websocket:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            request = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            self._http(request)
            if not self.websocket:
                return
        self._frames()

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

    def _http_reply(self, body: Any, status: str = "200 OK") -> None:
        data = json.dumps(body).encode()
        self.transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        self.transport.close()

    # ------------------------------------------------------------------ WebSocket frames

    def _frames(self) -> None:
        buf = self.buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            mask = b""
            if b1 & 0x80:
                mask = bytes(buf[pos + head : pos + head + 4])
                head += 4
            if size - pos < head + length:
                break
            start = pos + head
            pos = start + length
            self._frame(b0 & 0x80, b0 & 0x0F, mask, buf, start, length)
            if self.closed:
                return
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, mask: bytes, buf: bytearray, start: int, length: int) -> None:
        if opcode == 0x1 and fin and not self.fragments:
            if length > 64:
                prefix = _unmask(memoryview(buf)[start : start + min(length, 128)], mask)
                if _APPEND in prefix and self._append(prefix):
                    return
            self._message(_unmask(memoryview(buf)[start : start + length], mask))
            return
        if opcode in (0x0, 0x1, 0x2):
            if opcode:
                self.fragment_opcode = opcode
            self.fragments.append(_unmask(memoryview(buf)[start : start + length], mask))
            if fin:
                data, self.fragments = b"".join(self.fragments), []
                if self.fragment_opcode == 0x1:
                    self._message(data)
            return
        payload = _unmask(memoryview(buf)[start : start + length], mask)
        if opcode == 0x8:  # close: answer and hang up
            self.transport.write(_frame(payload[:2], 0x8))
            self.transport.close()
            self.closed = True
        elif opcode == 0x9:
            self.transport.write(_frame(payload, 0xA))

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


class LoadServer:
    def __init__(self, profile: str, api_key: str) -> None:
        self.scenarios = PROFILES[profile]
        self.api_key = api_key
        self.stats = Stats()
        self.pacer = Pacer()
        self.event_ids = itertools.count(1)
        self.tone = _tone(max(s.chunk_bytes for s in self.scenarios.values()))


async def serve(profile: str, port: int, api_key: str, ready: Callable[[int], None]) -> None:
    server = LoadServer(profile, api_key)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), "127.0.0.1", port, backlog=4096)
    ready(listener.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        # Started by the driver with a pipe for stdin: leave when the driver goes, however it goes.
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    async with listener:
        await stop.wait()


def self_check() -> int:
    """Pass one of every event the server sends through the simulator's server
    oracle (the official ``openai`` types); needs the ``simulators`` extra."""
    try:
        from adapters.testing.openai_simulator import check_server_event
    except ImportError as exc:
        print(f"self-check skipped: {exc}")
        return 0
    sent: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def close(self) -> None:
            pass

    async def run() -> None:
        server = LoadServer("quick", "k")
        failures = 0
        for name in ("rt20", "duplex"):
            conn = Connection(server)
            conn.transport = Sink()  # type: ignore[assignment]
            conn.websocket = True
            conn.scenario = server.scenarios[name]
            conn.stats = server.stats.for_key(name)
            conn._on_session_update({"type": "session.update", "session": {"type": "realtime"}})
            text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            conn._on_conversation_item_create({"type": "conversation.item.create", "item": text})
            output = {"type": "function_call_output", "call_id": "call_1", "output": "12:00"}
            conn._on_conversation_item_create({"type": "conversation.item.create", "item": output})
            if name == "duplex":
                conn._mic(b"\0" * 6)  # the mic starts: turn 0
                conn.active and conn.active.tick()  # type: ignore[func-returns-value]
                conn._tool_call(3)
                conn._on_response_create({"type": "response.create"})
                assert conn.active is not None
                conn._mic(MARKER.pack(BARGE_MARKER, 3))
            else:
                conn._on_response_create({"type": "response.create"})
                r = conn.active
                assert r is not None
                while r.tick():
                    pass
        seen: set[str] = set()
        for data in sent:
            n = data[1] & 0x7F
            body = data[2 + (2 if n == 126 else 8 if n == 127 else 0) :]
            event = json.loads(body)
            if event["type"] in seen:
                continue
            seen.add(event["type"])
            problem = check_server_event(event)
            if problem:
                failures += 1
                print(f"{event['type']}: {problem}")
        print(f"self-check: {len(seen)} event types, {failures} rejected by the official types")
        if failures:
            raise SystemExit(1)

    asyncio.run(run())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-bench-not-a-secret")
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin the server to (default: none)")
    parser.add_argument("--self-check", action="store_true", help="validate the events against the openai types")
    args = parser.parse_args()
    if args.self_check:
        raise SystemExit(self_check())
    pin_to_cpu(args.cpu)
    raise_fd_limit()

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    asyncio.run(serve(args.profile, args.port, args.api_key, ready))


if __name__ == "__main__":
    main()
