"""The WebSocket client: anyio connects, wsproto shakes hands, frames are read in the caller's task.

The connection is an anyio byte stream: on Trio ``anyio.connect_tcp`` (with
anyio's TLS for ``wss://``), on asyncio one straight on an asyncio transport
(``adapters/_asyncio_stream.py``: anyio's pauses and resumes the socket around
every read, a visible share of the client's CPU at real time). wsproto does the
upgrade handshake (the HTTP/1.1 ``Request``, then ``AcceptConnection`` or
``RejectConnection`` with the status and body), writes every frame, and reads
every frame but the common one: a whole message in one frame, which
:class:`WebSocketConnection` splits and decodes itself (far cheaper than wsproto;
see the class). A voice session receives fifty messages a second, so the
provider's reader task reads frames itself: no background reader handing
messages over a memory stream (more CPU per message, measured in
``benchmarks/README.md``), and no HTTP client's wrappers around every read
(httpx/httpcore cost a generator context manager and a cancel scope per read,
and memory at import; ``benchmarks/README.md`` has the figures).

How to connect is a :class:`~adapters.connection.ConnectionOptions`. TLS: one
default ``ssl.SSLContext`` per process, made once by
``ssl.create_default_context()`` (which honours ``SSL_CERT_FILE`` and
``SSL_CERT_DIR``), unless the options carry one. Proxies: the options' proxy,
or else one an ``HTTP(S)_PROXY`` or ``ALL_PROXY`` environment variable applies
to the host (and ``NO_PROXY`` does not exclude): the upgrade then goes through
httpx and httpx-ws, imported only then; frames are still read here.

Liveness: the shared watchdog (``adapters/liveness.py``), one task per
connection in a task group :func:`open_websocket` owns, pings a quiet
connection and, after ``read_timeout_s`` without a byte (not even a pong),
closes the stream, so the pending read fails with a retryable
:class:`BidiConnectionError`. (A timeout around every read would cost a cancel
scope and a timer per message, a large share of the reader's time at
real-time pace: ``benchmarks/README.md``.)
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from urllib.parse import urlsplit

import anyio
import anyio.abc
import wsproto.events as ws_events
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from adapters import _asyncio_stream
from adapters._exceptions import again, unwrapped
from adapters._ws_frames import OP_BINARY, OP_TEXT, masked_frame
from adapters.connection import ConnectionOptions
from adapters.liveness import Watchdog
from adapters.retry_after import retry_after_s
from adapters.tls import ssl_context_for
from adapters.urls import redacted_url
from ports.errors import (
    BidiConnectionError,
    BidiProtocolError,
    BidiProviderError,
    BidiUsageError,
    redact,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ErrorForResponse",
    "WebSocketClosed",
    "WebSocketConnection",
    "open_websocket",
    "ssl_context_for",
    "upgrade_refusal",
]

logger = logging.getLogger("bidi_core.adapters.websocket")

_READ_SIZE = 65536
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message a connection takes (16 MiB, far above any provider's: theirs are kilobytes). A frame
that claims more, or fragments adding up to more, end the connection with a :class:`BidiProtocolError`
(close 1009) before it is buffered: a broken or hostile server cannot make us hold gigabytes."""
_MAX_REJECT_BODY = 65536  # what we keep of a refusal's body (the message quotes 500 characters of it)
_TEXT = ws_events.TextMessage
_BYTES = ws_events.BytesMessage
_OPCODES = frozenset({0, 1, 2, 8, 9, 10})  # continuation, text, binary, close, ping, pong (RFC 6455 5.2)


class WebSocketClosed(BidiConnectionError):
    """The peer closed the WebSocket (``code`` and ``reason`` are its own)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the server closed the connection ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[type[WebSocketClosed], tuple[int, str]]:
        return type(self), (self.code, self.reason)  # pickled (and copied) by code and reason


class WebSocketConnection:
    """One open WebSocket connection (client side) over an anyio byte stream.

    Made by :func:`open_websocket`. ``connection`` is wsproto's, after the
    handshake; ``first_frames`` the bytes that came after the 101 response.

    Received frames are split here: a whole text or binary message in one
    well-formed frame (the server's audio deltas, almost every frame) is
    decoded here, far cheaper than wsproto's parse (``benchmarks/README.md``); everything
    else (control frames, fragments, anything unusual) goes to wsproto frame
    by frame, so its state and its protocol errors are those of a connection
    that saw every frame. A frame header this splitter does not expect (a
    mask, reserved bits, an unknown opcode) hands the rest of the connection
    to wsproto for good.

    Writes: a whole message is framed by ``adapters/_ws_frames.py`` (the bytes
    wsproto would build, cheaper) while the connection is open and without
    extensions, everything else by wsproto. Every frame is written whole under one lock, so tasks that write
    (the provider's sender, its reader answering a ping or sending a message
    of its own, the watchdog) never interleave inside a frame. A write cut
    off half-way (cancelled, or failed) may have left part of a frame on the
    wire; the connection then refuses every later write, the close frame
    included, since the peer would read it as the rest of the torn frame.

    :meth:`send_now` writes whole text messages without waiting, when the
    stream can take them at once (:class:`~adapters._asyncio_stream.AsyncioStream`,
    asyncio's ``transport.write`` never blocks) and no write is in progress;
    otherwise it writes nothing. A task that must not wait (the core stepping
    a microphone block) writes that way instead of waking a writer task.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        connection: WSConnection,
        first_frames: bytes = b"",
        *,
        read_timeout_s: float = 15.0,
        close_timeout_s: float = 3.0,
    ) -> None:
        self._stream = stream
        self._ws = connection
        # Uncontended (the usual case: one writer task) it takes no trip through the scheduler.
        self._write_lock = anyio.Lock(fast_acquire=True)
        self._close_timeout_s = close_timeout_s
        # wsproto events, and whole messages (str or bytes) decoded by _feed, in order.
        self._pending: deque[ws_events.Event | str | bytes] = deque(connection.events())
        self._rest: list[bytes] = []  # an incomplete frame's bytes so far
        self._rest_size = 0
        self._rest_need = 0  # bytes that frame needs in all (0: its header is incomplete)
        self._fragmented = False  # wsproto holds the first fragments of a message
        self._wsproto_only = False  # an unexpected header: wsproto parses everything from then on
        self._stream_ended = False
        self._parts: list[str | bytes] = []
        self._parts_size = 0
        self._too_big: BidiProtocolError | None = None  # a message over MAX_MESSAGE_BYTES: the connection is done
        self._closed: WebSocketClosed | None = None
        self._dead: BidiConnectionError | None = None  # the watchdog gave up on the server
        self._torn: BidiConnectionError | None = None  # a write was cut off: no more writes
        self._watchdog = Watchdog(read_timeout_s)
        # Whole messages are framed by _ws_frames unless an extension was negotiated (we offer none;
        # a connection made elsewhere might have): then wsproto frames them, applying it.
        self._own_frames = getattr(getattr(connection, "_proto", None), "extensions", None) == []
        # A stream that can write without waiting (asyncio's), for send_now; anyio's streams cannot.
        self._direct: _asyncio_stream.WritesAtOnce | None = (
            stream if isinstance(stream, _asyncio_stream.WritesAtOnce) and self._own_frames else None
        )
        if first_frames:
            with suppress(BidiProtocolError):  # too big: kept in _too_big, raised by the first receive()
                self._feed(first_frames)

    async def __aenter__(self) -> WebSocketConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def close_timeout_s(self) -> float:
        return self._close_timeout_s

    def stop_watching(self) -> None:
        """Make :meth:`watch` return (the connection is ending)."""
        self._watchdog.stop()

    async def watch(self) -> None:
        """Run the liveness watchdog (``adapters/liveness.py``) until the server goes silent."""
        self._watchdog.received()
        await self._watchdog.run(self._ping, self._silent)

    async def _ping(self) -> None:
        if self._write_lock.locked():
            # A write is in progress: bytes are going out, or stuck (a peer that reads nothing).
            # Waiting behind it would keep the watchdog from ever calling the peer silent.
            return
        if self._closed is None and self._ws.state is ConnectionState.OPEN:
            with suppress(BidiConnectionError, LocalProtocolError):
                await self._write(self._ws.send(ws_events.Ping(b"bidi")))

    async def _silent(self, error: BidiConnectionError) -> None:
        self._dead = error
        logger.debug("%s", error)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout_s), suppress(Exception):
            await self._stream.aclose()

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            if self._torn is not None:
                raise again(self._torn)
            try:
                await self._stream.send(data)
            except Exception as exc:  # anyio's Broken/ClosedResourceError, OSError, ssl.SSLError
                # The watchdog closing a silent server's stream under a blocked write: say that, not how.
                self._torn = self._dead or BidiConnectionError(f"sending failed: {type(exc).__name__}")
                raise again(self._torn) from None
            except BaseException:
                self._torn = BidiConnectionError("a write was cut off half-way; the connection cannot be written to")
                raise

    async def send_text(self, text: str) -> None:
        if self._closed is not None:
            raise again(self._closed)
        if self._own_frames and self._ws.state is ConnectionState.OPEN:
            frame = masked_frame(OP_TEXT, text.encode())  # what wsproto would build, cheaper (_ws_frames.py)
        else:
            try:
                frame = self._ws.send(_TEXT(data=text))
            except LocalProtocolError:
                raise self._closing() from None
        await self._write(frame)

    async def send_bytes(self, data: bytes) -> None:
        if self._closed is not None:
            raise again(self._closed)
        if self._own_frames and self._ws.state is ConnectionState.OPEN:
            frame = masked_frame(OP_BINARY, bytes(data))
        else:
            try:
                frame = self._ws.send(_BYTES(data=data))
            except LocalProtocolError:
                raise self._closing() from None
        await self._write(frame)

    def send_now(self, build: Callable[[], Sequence[str]]) -> bool:
        """Write the text messages ``build()`` returns, now and whole, or nothing.

        ``build`` is called only when every message can go out without waiting: the
        stream takes bytes at once, the connection is open and no other write is in
        progress (that write goes first; the caller then sends through :meth:`send_text`,
        which waits its turn). True when they were written; False when ``build`` was not
        called. What ``build`` raises propagates, with nothing written.
        """
        direct = self._direct
        if (
            direct is None
            or self._write_lock.locked()
            or self._torn is not None
            or self._closed is not None
            or self._ws.state is not ConnectionState.OPEN
            or not direct.writable_now()
        ):
            return False
        texts = build()
        if texts:
            direct.write_now(b"".join([masked_frame(OP_TEXT, text.encode()) for text in texts]))
        return True

    def _closing(self) -> WebSocketClosed:
        """Why wsproto refuses to send: the peer's close frame came in the same read as messages
        ``receive()`` has not handed out yet (its close is then waiting among them, and ``receive()``
        will answer it), or the connection failed; either way, the connection is closed."""
        for item in self._pending:
            if isinstance(item, ws_events.CloseConnection):
                return WebSocketClosed(item.code, item.reason or "")
        return WebSocketClosed(1006, f"the connection is {self._ws.state.name.lower().replace('_', ' ')}")

    async def receive(self) -> str | bytes:
        """The next whole message (text or binary)."""
        if self._too_big is not None:
            raise again(self._too_big)
        pending = self._pending
        while True:
            while pending:
                item = pending.popleft()
                kind = type(item)
                if kind is str or kind is bytes:  # decoded by _feed
                    return item  # type: ignore[return-value]
                if (kind is _TEXT or kind is _BYTES) and item.message_finished and not self._parts:  # type: ignore[union-attr]
                    data: str | bytes = item.data  # type: ignore[union-attr]
                    return data
                message = await self._handle(item)  # type: ignore[arg-type]
                if message is not None:
                    return message
            if self._closed is not None:
                raise again(self._closed)
            chunk = await self._read()
            if self._stream_ended:
                self._closed = WebSocketClosed(1006, "connection lost without a close frame")
                raise again(self._closed)
            self._feed(chunk)

    def _feed(self, data: bytes) -> None:
        """Split received bytes into frames (see the class docstring)."""
        if type(data) is not bytes:
            data = bytes(data)  # what is decoded here is handed out as bytes
        if self._wsproto_only:
            self._to_wsproto(data)
            return
        if self._rest:
            self._rest.append(data)
            self._rest_size += len(data)
            if self._rest_size < self._rest_need:
                return
            data = b"".join(self._rest)
            self._rest, self._rest_size, self._rest_need = [], 0, 0
        pending = self._pending
        size = len(data)
        pos = 0
        while size - pos >= 2:
            first, second = data[pos], data[pos + 1]
            opcode = first & 0x0F
            if first & 0x70 or second & 0x80 or opcode not in _OPCODES:
                # Reserved bits, a masked frame, an unknown opcode: wsproto says what is wrong.
                self._wsproto_only = True
                self._to_wsproto(data[pos:])
                return
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                start += 2
                if size < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            elif length == 127:
                start += 8
                if size < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
                if length > MAX_MESSAGE_BYTES:
                    raise again(self._oversized(f"a frame of {length} bytes"))
            end = start + length
            if end > size:
                self._rest_need = end - pos
                break
            if first & 0x80 and opcode <= 2 and opcode and not self._fragmented:
                # A whole message in one frame.
                if opcode == 2:
                    pending.append(data[start:end])
                    pos = end
                    continue
                try:
                    pending.append(data[start:end].decode())
                    pos = end
                    continue
                except UnicodeDecodeError:
                    pass  # wsproto closes with 1007
            if opcode <= 2:
                self._fragmented = not first & 0x80
            self._to_wsproto(data[pos:end])
            pos = end
            if self._ws.state is not ConnectionState.OPEN:  # it closed (or failed): the rest is its
                self._wsproto_only = True
                if pos < size:
                    self._to_wsproto(data[pos:])
                return
        if pos < size:
            self._rest = [data[pos:]]
            self._rest_size = size - pos
        else:
            self._rest_need = 0

    def _oversized(self, what: str) -> BidiProtocolError:
        self._too_big = BidiProtocolError(
            f"the server sent {what}, larger than the {MAX_MESSAGE_BYTES >> 20} MiB a message may have"
        )
        return self._too_big

    def _to_wsproto(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._pending.extend(self._ws.events())

    async def _handle(self, event: ws_events.Event) -> str | bytes | None:
        if isinstance(event, ws_events.Message):
            self._parts.append(event.data)
            self._parts_size += len(event.data)
            if self._parts_size > MAX_MESSAGE_BYTES:
                raise again(self._oversized(f"a message of more than {self._parts_size} bytes"))
            if event.message_finished:
                self._parts_size = 0
                parts, self._parts = self._parts, []
                return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
            return None
        if isinstance(event, ws_events.Ping):
            if self._ws.state is ConnectionState.OPEN:  # not when its close came in the same read
                await self._write(self._ws.send(event.response()))
            return None
        if isinstance(event, ws_events.CloseConnection):
            self._closed = WebSocketClosed(event.code, event.reason or "")
            with suppress(BidiConnectionError, LocalProtocolError):
                await self._write(self._ws.send(event.response()))
            raise again(self._closed)
        return None  # Pong and anything else: liveness is tracked by bytes arriving

    async def _read(self) -> bytes:
        try:
            data = await self._stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            data = b""
        except Exception as exc:  # Broken/ClosedResourceError, OSError, ssl.SSLError, or the watchdog closed it
            if self._dead is not None:
                raise again(self._dead) from None
            raise BidiConnectionError(f"receiving failed: {type(exc).__name__}") from None
        if not data:
            if self._dead is not None:
                raise again(self._dead)
            self._stream_ended = True
        else:
            self._watchdog.last_rx = time.monotonic()
        return data

    async def aclose(self) -> None:
        """Say goodbye (a close frame, bounded in time), then drop the stream."""
        with anyio.CancelScope(shield=True):
            if self._closed is None and self._torn is None and self._ws.state is ConnectionState.OPEN:
                code = 1009 if self._too_big is not None else 1000  # 1009: "message too big" (RFC 6455 7.4.1)
                with anyio.move_on_after(self._close_timeout_s):
                    with suppress(BidiConnectionError, LocalProtocolError):
                        await self._write(self._ws.send(ws_events.CloseConnection(code=code)))
            with anyio.move_on_after(self._close_timeout_s):
                try:
                    await self._stream.aclose()
                except Exception:
                    logger.debug("closing the stream failed", exc_info=True)


# --------------------------------------------------------------------------- connecting

ErrorForResponse = Callable[[int, Mapping[str, str], bytes], Exception]
"""Builds the error for a refused upgrade from its status, headers (lower-case names) and body."""


def upgrade_refusal(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    secrets: tuple[str, ...] = (),
    credential: str = "credentials",
) -> Exception:
    """The error for a refused upgrade, for any provider: 401/403 are not retryable (the message names
    the ``credential``, whatever the body says), 429 is, 400/404 are ``invalid_request``, anything else is
    a :class:`BidiConnectionError`; a ``Retry-After`` says how long to wait before the next attempt.
    The body is quoted (500 characters), secrets redacted."""
    text = body.decode("utf-8", "replace")[:500]
    why = {401: f": the {credential} was not accepted", 403: f": the {credential} may not do this"}.get(status, "")
    message = redact(f"the server refused the WebSocket upgrade (HTTP {status}{why}) {text}".strip(), *secrets)
    if status in (401, 403):
        return BidiProviderError(message, code="authentication_failed" if status == 401 else "forbidden")
    if status in (400, 404):
        return BidiProviderError(message, code="invalid_request")
    wait = retry_after_s(headers)
    if status == 429:
        return BidiProviderError(message, code="rate_limited", retryable=True, retry_after_s=wait)
    return BidiConnectionError(message, retry_after_s=wait)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy httpx would use for this host from the environment, if any.

    The standard library's reading of the ``*_proxy`` variables and ``NO_PROXY`` matching,
    imported only when such a variable is set: ``urllib.request`` brings ``http.client`` and
    ``email`` with it, a third of the package's import time for what most processes never need."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # what getproxies_environment() would find: nothing
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    # proxy_bypass_environment is public but missing from typeshed.
    bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy


async def _handshake(
    stream: anyio.abc.ByteStream,
    host: str,
    target: str,
    headers: Mapping[str, str],
    secrets: tuple[str, ...],
    error_for_response: ErrorForResponse,
) -> tuple[WSConnection, bytes]:
    """The upgrade: wsproto's connection, and the bytes that came after the 101 response
    (the first frames, which :class:`WebSocketConnection` parses itself)."""
    handshake = H11Handshake(ConnectionType.CLIENT)
    try:
        extra = [(k.encode("ascii"), v.encode("utf-8")) for k, v in headers.items() if k.lower() != "host"]
        host = next((v for k, v in headers.items() if k.lower() == "host"), host)
        request = handshake.send(ws_events.Request(host=host, target=target, extra_headers=extra))
    except (UnicodeError, LocalProtocolError, ValueError) as exc:
        raise BidiUsageError(redact(f"cannot send these headers: {exc}", *secrets)) from None
    await stream.send(request)
    status: int | None = None
    refusal_headers: dict[str, str] = {}
    body = bytearray()
    head = b""
    while True:
        try:
            data = await stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            if status is not None:  # a refusal whose body runs to the end of the connection
                raise error_for_response(status, refusal_headers, bytes(body)) from None
            raise BidiConnectionError("the server closed the connection during the WebSocket handshake") from None
        after = b""
        if status is None:
            # wsproto is given the response's head only: what follows a 101 is frames.
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > _MAX_REJECT_BODY:
                    raise BidiConnectionError("the server's answer to the WebSocket upgrade has no end of headers")
                continue
            data, after, head = head[: end + 4], head[end + 4 :], b""
        for chunk in (data, after):
            if not chunk:
                continue
            try:
                handshake.receive_data(chunk)
                events = list(handshake.events())
            except RemoteProtocolError as exc:
                raise BidiConnectionError(redact(f"the WebSocket handshake failed: {exc}", *secrets)) from None
            for event in events:
                if isinstance(event, ws_events.AcceptConnection):
                    assert handshake.connection is not None
                    return handshake.connection, after
                if isinstance(event, ws_events.RejectConnection):
                    status = event.status_code
                    refusal_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers or ()}
                    if not event.has_body:
                        raise error_for_response(status, refusal_headers, b"")
                elif isinstance(event, ws_events.RejectData) and status is not None:
                    if len(body) < _MAX_REJECT_BODY:
                        body += event.data
                    if event.body_finished:
                        raise error_for_response(status, refusal_headers, bytes(body))


_DEFAULT_OPTIONS = ConnectionOptions()


@asynccontextmanager
async def open_websocket(
    url: str,
    headers: Mapping[str, str],
    *,
    secrets: tuple[str, ...] = (),
    options: ConnectionOptions = _DEFAULT_OPTIONS,
    error_for_response: ErrorForResponse | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """Connect, upgrade, and yield a :class:`WebSocketConnection` watched for liveness; close it on exit.

    ``url`` is ``ws://``, ``wss://``, ``http://`` or ``https://`` (a path and
    a query string are kept). ``options`` (:class:`ConnectionOptions`): its
    ``connect_timeout_s`` bounds the TCP connection, TLS and the upgrade
    together; ``read_timeout_s`` is the watchdog's; ``ssl_context`` is the TLS
    trust (``None``: the process's default, see :func:`ssl_context_for`);
    ``proxy``, or else the environment's, sends the upgrade through httpx. A
    refused upgrade raises ``error_for_response(status, headers, body)``
    (default :func:`upgrade_refusal`); a server that cannot be reached or does
    not answer in time, :class:`BidiConnectionError`. ``secrets`` are redacted
    from every message.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise BidiUsageError(redact(f"not a WebSocket URL: {url!r}", *secrets))
    tls = scheme in ("wss", "https")
    http_scheme = "https" if tls else "http"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise BidiUsageError(redact(f"not a valid port in {url!r}", *secrets)) from None
    refusal = error_for_response or partial(upgrade_refusal, secrets=secrets)
    proxy = options.proxy or _proxy_for(http_scheme, parts.hostname)
    if proxy is not None:
        from adapters._websocket_proxy import open_via_httpx  # httpx and httpx-ws: only when a proxy applies

        connecting = open_via_httpx(url, http_scheme, proxy, headers, secrets, options, refusal)
    else:
        connecting = _open_direct(url, headers, secrets, options, refusal)
    async with connecting as ws, _watched(ws):
        yield ws


@asynccontextmanager
async def _watched(ws: WebSocketConnection) -> AsyncIterator[None]:
    """Run the connection's watchdog in a task group around the caller's block.

    The caller's own error comes out as itself (the watchdog never raises),
    not wrapped in the group's exception group."""
    with unwrapped():
        async with anyio.create_task_group() as tg:
            tg.start_soon(ws.watch, name="bidi_core websocket watchdog")
            try:
                yield
            finally:
                # Stopped, not cancelled (see Watchdog.stop); cancelled only if it does not stop in time
                # (a ping blocked on a peer that reads nothing).
                ws.stop_watching()
                tg.cancel_scope.deadline = min(tg.cancel_scope.deadline, anyio.current_time() + ws.close_timeout_s)


@asynccontextmanager
async def _open_direct(
    url: str,
    headers: Mapping[str, str],
    secrets: tuple[str, ...],
    options: ConnectionOptions,
    error_for_response: ErrorForResponse,
) -> AsyncIterator[WebSocketConnection]:
    parts = urlsplit(url)
    tls = parts.scheme.lower() in ("wss", "https")
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    context = (options.ssl_context or ssl_context_for(None)) if tls else None
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if tls else 80):
        host_header += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    where = redacted_url(f"{'https' if tls else 'http'}://{host_header}{parts.path}", *secrets, with_query=False)

    stream: anyio.abc.ByteStream | None = None
    try:
        with anyio.fail_after(options.connect_timeout_s):
            if _asyncio_stream.on_asyncio():
                stream = await _asyncio_stream.connect(host, port, context, tls_hostname=host if tls else None)
            else:
                stream = await (
                    anyio.connect_tcp(host, port, ssl_context=context, tls_hostname=host, tls_standard_compatible=False)
                    if tls
                    else anyio.connect_tcp(host, port)
                )
            connection, first_frames = await _handshake(
                stream, host_header, target, headers, secrets, error_for_response
            )
    except BaseException as exc:
        if stream is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(options.close_timeout_s):
                await stream.aclose()
        if isinstance(exc, TimeoutError):
            raise BidiConnectionError(
                f"cannot reach {where}: no answer within {options.connect_timeout_s:g} s"
            ) from None
        if isinstance(exc, ssl.SSLCertVerificationError):
            # Not a passing fault: the next attempt meets the same certificate. Say whose, and why.
            raise BidiConnectionError(
                redact(
                    f"the TLS certificate of {host_header if ':' in host_header else f'{host}:{port}'} is not "
                    f"trusted ({exc.verify_message}); for a private "
                    "CA pass ConnectionOptions(ssl_context=...) or set SSL_CERT_FILE",
                    *secrets,
                ),
                retryable=False,
            ) from None
        if isinstance(exc, OSError | anyio.BrokenResourceError | anyio.EndOfStream | ssl.SSLError):
            raise BidiConnectionError(redact(f"cannot reach {where}: {type(exc).__name__}: {exc}", *secrets)) from None
        raise
    async with WebSocketConnection(
        stream,
        connection,
        first_frames,
        read_timeout_s=options.read_timeout_s,
        close_timeout_s=options.close_timeout_s,
    ) as ws:
        yield ws
