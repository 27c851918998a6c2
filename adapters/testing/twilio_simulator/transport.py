"""What the carrier simulator says over the network: one HTTP POST (the voice webhook) and a WebSocket client.

Both on anyio (asyncio and Trio), the WebSocket with wsproto, the same
library our client uses but none of our code. The simulator dials the
server's real address (``connect``) while it signs the public URL, as Twilio
does behind a tunnel or a load balancer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from contextlib import suppress
from urllib.parse import urlencode

import anyio
import anyio.abc
import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

__all__ = ["HttpAnswer", "StreamSocket", "open_stream", "post_form", "twilio_signature"]


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(token, URL + each parameter's name and value, by name))."""
    data = url + "".join(f"{name}{value}" for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@attrs.frozen
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def post_form(
    host: str, port: int, path: str, params: Sequence[tuple[str, str]], headers: Sequence[tuple[str, str]]
) -> HttpAnswer:
    """POST ``params`` as ``application/x-www-form-urlencoded`` to ``host:port``; the whole answer."""
    body = urlencode(params).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    stream = await anyio.connect_tcp(host, port)
    async with stream:
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        data = b""
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                data += await stream.receive()
    raw_head, _, payload = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if answer_headers.get("transfer-encoding") == "chunked":
        payload = _unchunk(payload)
    return HttpAnswer(status, answer_headers, payload)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class StreamSocket:
    """The carrier's end of a Media Stream: text frames out, whole messages in, the close seen."""

    def __init__(self, stream: anyio.abc.SocketStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._parts: list[str] = []
        self._pending: list[str | bytes] = []
        self._send_lock = anyio.Lock()
        self.close_code: int | None = None
        self.closed_by_server = False

    async def send_text(self, text: str) -> bool:
        """One text frame; False once the connection is closed."""
        async with self._send_lock:
            if self.close_code is not None or self._ws.state is not ConnectionState.OPEN:
                return False  # closed, or the server's close frame came in while this send waited
            try:
                await self._stream.send(self._ws.send(TextMessage(data=text)))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError):
                return False
        return True

    async def receive(self) -> str | bytes | None:
        """The next whole message, or None once the connection is closed (by either side or dropped)."""
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self.close_code is not None:
                return None
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.close_code = self.close_code or 1006
                continue
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        self._pending.append("".join(self._parts))
                        self._parts = []
                elif isinstance(event, BytesMessage):
                    self._pending.append(bytes(event.data))
                elif isinstance(event, Ping):
                    async with self._send_lock:
                        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError):
                            await self._stream.send(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    self.closed_by_server = True
                    async with self._send_lock:
                        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError):
                            await self._stream.send(self._ws.send(event.response()))

    async def close(self, code: int = 1000) -> None:
        """Close (the carrier ends the stream): a close frame, then the TCP connection."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            if self.close_code is None:
                self.close_code = code
                async with self._send_lock:
                    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, LocalProtocolError):
                        await self._stream.send(self._ws.send(CloseConnection(code=code)))
            await self._stream.aclose()


async def open_stream(
    host: str, port: int, target: str, headers: Sequence[tuple[str, str]]
) -> StreamSocket | HttpAnswer:
    """The WebSocket upgrade to ``target``: an open :class:`StreamSocket`, or the refusal as an :class:`HttpAnswer`."""
    stream = await anyio.connect_tcp(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=f"{host}:{port}", target=target, extra_headers=[(k.encode(), v.encode()) for k, v in headers]
    )
    try:
        await stream.send(ws.send(request))
        rejected: RejectConnection | None = None
        body = b""
        while True:
            data = await stream.receive()
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return StreamSocket(stream, ws)
                if isinstance(event, RejectConnection):
                    rejected = event
                    if not event.has_body:
                        await stream.aclose()
                        return HttpAnswer(event.status_code, _lower(event.headers), b"")
                if isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished and rejected is not None:
                        await stream.aclose()
                        return HttpAnswer(rejected.status_code, _lower(rejected.headers), body)
    except BaseException:
        await stream.aclose()
        raise


def _lower(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in raw}
