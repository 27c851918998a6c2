"""A lean WebSocket client: httpx connects, wsproto frames, no background task.

httpx (through httpx-ws) does what is hard to get right: the upgrade
handshake, TLS, proxies, custom CAs, headers. After the handshake we take the
raw network stream and speak WebSocket frames with wsproto in the caller's
own task. httpx-ws's default session reads in a background task and hands
every message over a memory stream, which costs about three times the CPU of
a direct read per message (measured in ``docs/design.md``); a voice session
receives fifty messages a second, so the provider's reader task reads frames
itself here. :class:`LeanWebSocket` plugs into httpx-ws as its
``session_class``.

Liveness: one watchdog task per connection wakes every ``ping_interval_s``,
sends a ping if nothing arrived since, and after ``read_timeout_s`` without a
byte (not even a pong) closes the stream, so the pending read fails with
:class:`BidiConnectionError`: a provider that goes silent with the socket open
becomes a reconnect, never an endless wait. (A timeout around every read
would cost a cancel scope and a timer per message; the benchmarks measured it
at a quarter of the reader's time at real-time pace.)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import httpx
import httpx_ws
import wsproto.events as ws_events
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.utilities import LocalProtocolError

from ports.errors import BidiConnectionError, BidiProviderError, redact

__all__ = ["LeanWebSocket", "WebSocketClosed", "open_websocket"]

logger = logging.getLogger("bidi_core.adapters.websocket")

_READ_SIZE = 65536


class WebSocketClosed(BidiConnectionError):
    """The peer closed the WebSocket (``code`` and ``reason`` are its own)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server closed the connection ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class LeanWebSocket:
    """One WebSocket connection over httpx's network stream (client side)."""

    ping_interval_s = 10.0
    read_timeout_s = 15.0
    close_timeout_s = 2.0

    def __init__(self, stream: Any, **_ignored: Any) -> None:
        # httpx-ws passes its own queue/keepalive settings; they describe its
        # background reader, which this class replaces.
        self._stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._write_lock = anyio.Lock()
        self._pending: deque[ws_events.Event] = deque()
        self._stream_ended = False
        self._parts: list[str | bytes] = []
        self._closed: WebSocketClosed | None = None
        self._dead: BidiConnectionError | None = None
        self._last_rx = 0.0
        self._watchdog_tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> LeanWebSocket:
        self._last_rx = anyio.current_time()
        self._watchdog_tg = anyio.create_task_group()
        await self._watchdog_tg.__aenter__()
        self._watchdog_tg.start_soon(self._watchdog, name="bidi_core websocket watchdog")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.aclose()
        finally:
            tg, self._watchdog_tg = self._watchdog_tg, None
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)

    async def _watchdog(self) -> None:
        """Ping a quiet connection; drop a dead one (see the module docstring)."""
        while self._closed is None:
            await anyio.sleep(self.ping_interval_s)
            quiet = anyio.current_time() - self._last_rx
            if quiet >= self.read_timeout_s:
                self._dead = BidiConnectionError(f"the server sent nothing for {self.read_timeout_s:g} s")
                logger.debug("%s", self._dead)
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout_s), suppress(Exception):
                    await self._stream.aclose()
                return
            if quiet >= self.ping_interval_s:
                with suppress(BidiConnectionError, LocalProtocolError):
                    await self._write(self._ws.send(ws_events.Ping(b"bidi")))

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            try:
                await self._stream.write(data)
            except Exception as exc:  # httpcore raises its own WriteError/OSError family
                raise BidiConnectionError(f"sending failed: {type(exc).__name__}") from None

    async def send_text(self, text: str) -> None:
        if self._closed is not None:
            raise self._closed
        await self._write(self._ws.send(ws_events.TextMessage(data=text)))

    async def receive(self) -> str | bytes:
        """The next whole message (text or binary)."""
        while True:
            while self._pending:
                event = self._pending.popleft()
                message = await self._handle(event)
                if message is not None:
                    return message
            await self._fill()

    async def _handle(self, event: ws_events.Event) -> str | bytes | None:
        if isinstance(event, ws_events.Message):
            data: str | bytes = event.data
            if event.message_finished and not self._parts:
                return data
            self._parts.append(data)
            if event.message_finished:
                parts, self._parts = self._parts, []
                return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
            return None
        if isinstance(event, ws_events.Ping):
            await self._write(self._ws.send(event.response()))
            return None
        if isinstance(event, ws_events.CloseConnection):
            self._closed = WebSocketClosed(event.code, event.reason or "")
            with suppress(BidiConnectionError, LocalProtocolError):
                await self._write(self._ws.send(event.response()))
            raise self._closed
        return None  # Pong and anything else: liveness is tracked by bytes arriving

    async def _fill(self) -> None:
        if self._closed is not None:
            raise self._closed
        data = await self._read()
        if self._stream_ended:
            self._closed = WebSocketClosed(1006, "connection lost without a close frame")
            raise self._closed
        self._ws.receive_data(data)
        self._pending.extend(self._ws.events())

    async def _read(self) -> bytes:
        try:
            data: bytes = await self._stream.read(_READ_SIZE)
        except Exception as exc:  # httpcore ReadError/OSError family, or the watchdog closed it
            if self._dead is not None:
                raise self._dead from None
            raise BidiConnectionError(f"receiving failed: {type(exc).__name__}") from None
        if not data:
            if self._dead is not None:
                raise self._dead
            self._stream_ended = True
        else:
            self._last_rx = anyio.current_time()
        return data

    async def aclose(self) -> None:
        """Say goodbye (a close frame, bounded in time), then drop the stream."""
        with anyio.CancelScope(shield=True):
            if self._closed is None and self._ws.state is ConnectionState.OPEN:
                with anyio.move_on_after(self.close_timeout_s):
                    with suppress(BidiConnectionError, LocalProtocolError):
                        await self._write(self._ws.send(ws_events.CloseConnection(code=1000)))
            with anyio.move_on_after(self.close_timeout_s):
                try:
                    await self._stream.aclose()
                except Exception:
                    logger.debug("closing the stream failed", exc_info=True)


async def _upgrade_error(exc: httpx_ws.WebSocketUpgradeError, secrets: tuple[str, ...]) -> Exception:
    response = exc.response
    status = response.status_code
    body = ""
    with suppress(httpx.HTTPError, RuntimeError):
        body = (await response.aread()).decode("utf-8", "replace")[:500]
    message = redact(f"the server refused the WebSocket upgrade (HTTP {status}) {body}".strip(), *secrets)
    if status in (401, 403):
        return BidiProviderError(message, code="authentication_failed" if status == 401 else "forbidden")
    if status in (400, 404):
        return BidiProviderError(message, code="invalid_request")
    if status == 429:
        return BidiProviderError(message, code="rate_limited", retryable=True)
    return BidiConnectionError(message)


@asynccontextmanager
async def open_websocket(
    url: str,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...] = (),
    verify: Any = None,
    connect_timeout_s: float = 10.0,
) -> AsyncIterator[LeanWebSocket]:
    """Connect with httpx and yield a :class:`LeanWebSocket`.

    ``verify`` is httpx's (an ``ssl.SSLContext`` for a custom CA); httpx
    already honours ``SSL_CERT_FILE``. Raises :class:`BidiProviderError` when the server refuses (401/403 are
    not retryable; 429 is) and :class:`BidiConnectionError` when it cannot be
    reached. ``secrets`` are redacted from every message.
    """
    http_url = "http" + url[2:] if url.startswith("ws") else url
    timeout = httpx.Timeout(connect_timeout_s, read=None, write=connect_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, verify=verify if verify is not None else True) as client:
        try:
            async with httpx_ws.aconnect_ws(
                http_url,
                client,
                headers=dict(headers),
                session_class=LeanWebSocket,  # type: ignore[type-var]
                keepalive_ping_interval_seconds=None,
            ) as ws:
                yield ws
        except httpx_ws.WebSocketUpgradeError as exc:
            raise await _upgrade_error(exc, secrets) from None
        except (httpx.TransportError, OSError) as exc:
            raise BidiConnectionError(
                redact(f"cannot reach {http_url}: {type(exc).__name__}: {exc}", *secrets)
            ) from None
