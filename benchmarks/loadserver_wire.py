"""The load server's wire: an HTTP request line, the WebSocket upgrade, frames.

Hand-written framing on a plain asyncio ``Protocol`` (the load server must
cost less than the clients it measures, so no WebSocket library and no task
per connection). :class:`WebSocketProtocol` reads the HTTP request, then
splits WebSocket frames and hands whole text messages to its subclass
(:class:`benchmarks.loadserver_conversation.Connection`), which decides what
they mean. Microphone appends are recognised from their first 128 bytes,
which are the only ones unmasked (enough to read a barge-in marker).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_APPEND = b"input_audio_buffer.append"


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


class WebSocketProtocol(asyncio.Protocol):
    """One client connection's bytes: HTTP request, then WebSocket frames.

    The subclass answers the request (``_http``: an upgrade or ``_http_reply``),
    takes microphone appends on their fast path (``_append``) and every other
    text message (``_message``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.websocket = False
        self.closed = False
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.can_write = asyncio.Event()
        self.can_write.set()

    # ------------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.can_write.set()

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

    def _http(self, request: str) -> None:
        raise NotImplementedError

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
        return False

    def _message(self, data: bytes) -> None:
        raise NotImplementedError
