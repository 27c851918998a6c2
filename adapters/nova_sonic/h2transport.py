"""One HTTP/2 request stream over TLS, both directions at once, on AnyIO.

Bedrock's bidirectional stream is a single HTTP/2 POST whose request body
(our events) and response body (the model's) flow at the same time. The
``h2`` library keeps the protocol state; this module does the I/O:

* **one reader task** (started in the caller's task group by :func:`open_stream`)
  reads the socket, feeds ``h2``, and queues response DATA; it never waits for
  the consumer, so window updates, pings and resets are seen even while
  nobody reads events;
* **flow control both ways**: received DATA is acknowledged to ``h2`` when the
  consumer takes it (so the server's window is the buffer's bound, and a slow
  consumer slows the server down); sending waits for ``WindowUpdated`` when
  the window is spent, and cuts DATA frames at the peer's maximum frame size;
* **faults**: RST_STREAM, GOAWAY, a closed socket and ``h2`` protocol errors
  become :class:`BidiConnectionError` (retryable) or :class:`BidiProtocolError`;
  a non-200 response is read to its end and handed to ``error_for_response``;
* **liveness**: the shared watchdog (``adapters/liveness.py``) pings a quiet
  connection and, after ``read_timeout_s`` without a byte, fails it (a
  service that goes silent with the socket open is a reconnect, not an
  endless wait).

Writes of all tasks go through one lock; whoever flushes sends whatever ``h2``
has queued, in order.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Protocol

import anyio
import anyio.abc
import anyio.streams.tls
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

from adapters._exceptions import again, unwrapped
from adapters.connection import ConnectionOptions
from adapters.liveness import Watchdog
from adapters.recording import Tap
from ports.errors import BidiConnectionError, BidiError, BidiProtocolError

__all__ = ["ErrorForResponse", "H2Stream", "RecordedStream", "RequestStream", "open_stream", "recorded"]

logger = logging.getLogger("bidi_core.adapters.nova_sonic")

ErrorForResponse = Callable[[int, Mapping[str, str], bytes], BidiError]
"""Builds the error for a refused request from its status, headers and body."""

_READ_SIZE = 65536
_SENSITIVE = frozenset({"authorization", "x-amz-security-token"})
_MAX_ERROR_BODY = 16384


class RequestStream(Protocol):
    """What a Nova session needs of its stream: :class:`H2Stream`, a :class:`RecordedStream`, or a replay's."""

    @property
    def usable(self) -> bool: ...

    @property
    def response_headers(self) -> Mapping[str, str]: ...

    async def send(self, data: bytes) -> None: ...

    async def end(self) -> None: ...

    async def receive(self) -> bytes | None: ...

    async def wait_response(self) -> int: ...


def recorded(stream: H2Stream, tap: Tap | None) -> RequestStream:
    """``stream`` itself, or with a ``tap`` (a model's recording) a :class:`RecordedStream` around it."""
    return stream if tap is None else RecordedStream(stream, tap)


class RecordedStream:
    """A :class:`RequestStream` that tells a recording (``adapters/recording.py``) every message and the end."""

    def __init__(self, inner: RequestStream, tap: Tap) -> None:
        self._inner = inner
        self._tap = tap

    @property
    def usable(self) -> bool:
        return self._inner.usable

    @property
    def response_headers(self) -> Mapping[str, str]:
        return self._inner.response_headers

    async def send(self, data: bytes) -> None:
        await self._inner.send(data)
        self._tap.sent(data)

    async def end(self) -> None:
        await self._inner.end()

    async def receive(self) -> bytes | None:
        try:
            data = await self._inner.receive()
        except BidiError as exc:
            self._tap.failed(exc)
            raise
        if data is None:
            self._tap.server_ended(end_of_stream=True)
        else:
            self._tap.received(data)
        return data

    async def wait_response(self) -> int:
        try:
            return await self._inner.wait_response()
        except BidiError as exc:
            self._tap.failed(exc, during="response")
            raise


class H2Stream:
    """The client side of one request stream. Build it with :func:`open_stream`."""

    def __init__(
        self,
        sock: anyio.abc.ByteStream,
        error_for_response: ErrorForResponse,
        *,
        read_timeout_s: float = 15.0,
    ) -> None:
        self.read_timeout_s = read_timeout_s
        self._sock = sock
        self._error_for_response = error_for_response
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config=config)
        self._write_lock = anyio.Lock(fast_acquire=True)  # uncontended: no trip through the scheduler
        self._changed = anyio.Event()
        self.stream_id = 0
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._error_body = bytearray()
        self._remote_ended = False
        self._local_ended = False
        self._error: BidiError | None = None
        self._watchdog = Watchdog(read_timeout_s)
        self.frames_received = 0

    # ------------------------------------------------------------------ state

    def _notify(self) -> None:
        """Wake every task waiting for progress (data, window, response, failure)."""
        self._changed.set()
        self._changed = anyio.Event()

    def _fail(self, error: BidiError) -> None:
        if self._error is None:
            self._error = error
            logger.debug("stream %d failed: %s", self.stream_id, error)
        self._notify()

    @property
    def failed(self) -> BidiError | None:
        return self._error

    def _raised(self, otherwise: BidiError) -> BidiError:
        """What to raise: a fresh copy of the stream's failure (``again`` in ``adapters/_exceptions.py``:
        the kept error raised itself would hold this stream in a reference cycle), else ``otherwise``."""
        return otherwise if self._error is None else again(self._error)

    @property
    def remote_ended(self) -> bool:
        return self._remote_ended

    @property
    def local_ended(self) -> bool:
        return self._local_ended

    @property
    def usable(self) -> bool:
        """Whether we may still send on the stream."""
        return self._error is None and not self._local_ended

    # ------------------------------------------------------------------ writing

    async def _flush(self) -> None:
        """Write everything ``h2`` has queued, including what other tasks queue meanwhile."""
        async with self._write_lock:
            while data := self._conn.data_to_send():
                try:
                    await self._sock.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError) as exc:
                    failure = BidiConnectionError(f"sending failed: {type(exc).__name__}")  # kept, never raised
                    self._fail(failure)
                    raise self._raised(failure) from None
                except BaseException:
                    # Cancelled half-way through a write: the peer may have half a frame.
                    self._fail(BidiConnectionError("a write was cancelled half-way; the connection is unusable"))
                    raise

    async def _flush_if_idle(self) -> None:
        """Flush unless a write is in progress; its writer's loop then sends what we queued.

        The reader and the consumer use this for acknowledgements, pings and
        settings, so they never wait behind a large write stuck on TCP (the
        reader must keep reading, or two peers that both write could wait on
        each other forever).
        """
        if not self._write_lock.locked():
            await self._flush()

    async def start(self, headers: Sequence[tuple[str, str]]) -> None:
        """Send the connection preface and the request headers (no END_STREAM)."""
        self._conn.initiate_connection()
        self.stream_id = self._conn.get_next_available_stream_id()
        # Never-indexed: hpack keeps them out of its tables and prints them redacted in its DEBUG log.
        sent = [NeverIndexedHeaderTuple(k, v) if k in _SENSITIVE else (k, v) for k, v in headers]
        # hpack also logs the whole encoded block at DEBUG: Huffman-coded, not hidden. Nothing
        # else can run while this synchronous call does, so muting its logger for it is exact.
        hpack_log = logging.getLogger("hpack.hpack")
        was_disabled, hpack_log.disabled = hpack_log.disabled, True
        try:
            self._conn.send_headers(self.stream_id, sent, end_stream=False)
        finally:
            hpack_log.disabled = was_disabled
        await self._flush()

    def _raise_if_unsendable(self) -> None:
        # A stream the server ended is only half-closed: we may still send (the
        # service ends its side first after an error, and reads our goodbye).
        if self._error is not None:
            raise again(self._error)
        if self._local_ended:
            raise BidiConnectionError("the request stream is already closed")

    async def send(self, data: bytes) -> None:
        """Send request body bytes, waiting for flow-control credit as needed.

        A server that answers pings but grants no credit for ``read_timeout_s``
        fails the stream: the watchdog only sees silence, and the wait would
        otherwise last forever (the setup, unlike ``NovaSonicSession.send``, has
        no bound of its own).
        """
        view = memoryview(data)
        offset = 0
        starved_until: float | None = None
        while offset < len(view):
            changed = self._changed
            self._raise_if_unsendable()
            try:
                credit = min(self._conn.local_flow_control_window(self.stream_id), self._conn.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                raise self._raised(BidiConnectionError("the server closed the stream")) from None
            if credit <= 0:
                if starved_until is None:
                    starved_until = anyio.current_time() + self.read_timeout_s
                with anyio.move_on_after(starved_until - anyio.current_time()):
                    await changed.wait()
                if anyio.current_time() >= starved_until and self._error is None:
                    self._fail(
                        BidiConnectionError(f"the server granted no flow-control credit for {self.read_timeout_s:g} s")
                    )
                continue
            starved_until = None
            chunk = view[offset : offset + credit]
            try:
                self._conn.send_data(self.stream_id, chunk.tobytes())
            except h2.exceptions.ProtocolError as exc:  # the connection closed under us
                raise self._raised(BidiConnectionError(f"the connection cannot send: {exc}")) from None
            offset += len(chunk)
            await self._flush()

    async def end(self) -> None:
        """Send END_STREAM: the request body is complete."""
        if self._local_ended or self._error is not None:
            return
        self._local_ended = True
        try:
            self._conn.end_stream(self.stream_id)
        except h2.exceptions.ProtocolError:  # reset or closed meanwhile: nothing to end
            return
        await self._flush()

    # ------------------------------------------------------------------ reading

    async def receive(self) -> bytes | None:
        """The next piece of the response body; ``None`` once the server ended it.

        Raises the stream's failure, or the error built from a non-200 response.
        """
        while True:
            changed = self._changed
            if self._chunks:
                data, flow_length = self._chunks.popleft()
                if flow_length:
                    with suppress(h2.exceptions.ProtocolError):
                        self._conn.acknowledge_received_data(flow_length, self.stream_id)
                    if self._error is None:
                        await self._flush_if_idle()
                return data
            if self._remote_ended and self.status == 200:
                return None  # a complete response; a socket closed after it is no fault of the stream
            if self._error is not None:
                raise again(self._error)
            await changed.wait()

    async def wait_response(self) -> int:
        """Wait for a 200 response's headers, or raise: the stream's failure, or (once
        its body is read) the error built from a refusal."""
        while True:
            changed = self._changed
            if self._error is not None:
                raise again(self._error)
            if self.status == 200:
                return self.status
            await changed.wait()

    async def run_reader(self) -> None:
        """Read the socket until it closes or fails (the one reader task)."""
        while self._error is None:
            try:
                data = await self._sock.receive(_READ_SIZE)
            except anyio.EndOfStream:
                self._fail(BidiConnectionError("the server closed the connection"))
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError) as exc:
                self._fail(BidiConnectionError(f"receiving failed: {type(exc).__name__}"))
                return
            self._watchdog.received()
            try:
                events = self._conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._fail(BidiProtocolError(f"HTTP/2 protocol error from the server: {exc}"))
                with suppress(BidiError):
                    await self._flush()  # h2 queued a GOAWAY for the server
                return
            for event in events:
                self._handle(event)
            try:
                await self._flush_if_idle()
            except BidiError:
                return
            self._notify()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self.frames_received += 1
            if event.stream_id != self.stream_id:
                return
            if self.status == 200:
                self._chunks.append((event.data, event.flow_controlled_length))
            else:
                # An error body: read it all, acknowledging at once (nobody consumes it).
                if len(self._error_body) < _MAX_ERROR_BODY:
                    self._error_body += event.data[: _MAX_ERROR_BODY - len(self._error_body)]
                with suppress(h2.exceptions.ProtocolError):
                    self._conn.acknowledge_received_data(event.flow_controlled_length, self.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            if event.stream_id == self.stream_id:
                self.response_headers = {str(k): str(v) for k, v in (event.headers or [])}
                try:
                    self.status = int(self.response_headers.get(":status", "0"))
                except ValueError:
                    self.status = 0
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id == self.stream_id:
                self._remote_ended = True
                self._refused()
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id == self.stream_id:
                if self._refused():
                    return
                if self._remote_ended:
                    self._local_ended = True  # the server is done and tells us to stop sending
                    return
                self._fail(BidiConnectionError(f"the server reset the stream (HTTP/2 error {event.error_code!s})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            if self._refused():
                return
            if self._remote_ended and self._local_ended:
                return
            self._fail(
                BidiConnectionError(
                    f"the server closed the connection (GOAWAY, error {event.error_code!s}, "
                    f"last stream {event.last_stream_id})"
                )
            )
        elif isinstance(event, h2.events.TrailersReceived):
            logger.debug("trailers: %s", [k for k, _ in event.headers or []])
        # WindowUpdated, RemoteSettingsChanged, pings and acks: h2 has done the work;
        # the notify after this batch wakes senders waiting for credit.

    def _refused(self) -> bool:
        """If the response is an error status, fail with the mapped error; say whether it was."""
        if self.status is None or self.status == 200:
            return False
        self._fail(self._error_for_response(self.status, self.response_headers, bytes(self._error_body)))
        return True

    async def run_watchdog(self) -> None:
        """Ping a quiet connection; fail a silent one (``adapters/liveness.py``); return once stopped."""
        await self._watchdog.run(self._ping, self._silent)

    def stop_watching(self) -> None:
        """Make :meth:`run_watchdog` return (the connection is ending; see ``Watchdog.stop``)."""
        self._watchdog.stop()

    async def _ping(self) -> None:
        if self._error is None:
            with suppress(BidiError, h2.exceptions.ProtocolError):
                self._conn.ping(b"bidicore")
                await self._flush_if_idle()

    async def _silent(self, error: BidiConnectionError) -> None:
        self._fail(error)
        with suppress(Exception):
            await self._sock.aclose()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Say GOAWAY (if the connection still works) and close the socket."""
        with anyio.CancelScope(shield=True):
            if self._error is None:
                with anyio.move_on_after(timeout_s), suppress(BidiError, h2.exceptions.ProtocolError):
                    self._conn.close_connection()
                    await self._flush()
            if self._error is None:  # closed on purpose: not a failure worth a log line
                self._error = BidiConnectionError("the connection is closed")
                self._notify()
            with anyio.move_on_after(timeout_s), suppress(Exception):
                await self._sock.aclose()


@asynccontextmanager
async def open_stream(
    host: str,
    port: int,
    headers: Sequence[tuple[str, str]],
    *,
    ssl_context: ssl.SSLContext,
    error_for_response: ErrorForResponse,
    options: ConnectionOptions,
    tls_hostname: str | None = None,
) -> AsyncIterator[H2Stream]:
    """Connect with TLS (ALPN ``h2``) through ``ssl_context``, start the request, run the reader; yield the stream.

    ``options`` gives the connect timeout (TCP and TLS), the read timeout (the
    watchdog's) and the close timeout (its proxy is not for this transport:
    the model refuses one). Leaving the block closes the connection
    and stops the reader: nothing of this module runs afterwards. The caller's
    own error comes out as itself, not wrapped in the task group's exception
    group (the reader and the watchdog never raise).
    """
    try:
        with anyio.fail_after(options.connect_timeout_s):
            # Not "standard compatible": closing does not wait for the server's TLS close_notify
            # (HTTP/2 ends with GOAWAY; a server that never answers would hold every close, a
            # cancelled one included, for the whole close timeout), and a close without it is EOF.
            sock = await anyio.connect_tcp(
                host,
                port,
                tls=True,
                ssl_context=ssl_context,
                tls_hostname=tls_hostname or host,
                tls_standard_compatible=False,
            )
    except TimeoutError:
        raise BidiConnectionError(
            f"connecting to {host}:{port} timed out after {options.connect_timeout_s:g} s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise BidiConnectionError(
            f"TLS certificate of {host}:{port} not trusted ({exc.verify_message}); "
            "for a private CA set AWS_CA_BUNDLE or pass verify=/ssl_context=",
            retryable=False,
        ) from None
    except (OSError, ssl.SSLError, anyio.BrokenResourceError) as exc:
        raise BidiConnectionError(f"cannot reach {host}:{port}: {type(exc).__name__}: {exc}") from None
    try:
        alpn = sock.extra(anyio.streams.tls.TLSAttribute.alpn_protocol, None)
        if alpn != "h2":
            raise BidiConnectionError(f"{host}:{port} did not agree to HTTP/2 (ALPN {alpn!r})", retryable=False)
        stream = H2Stream(sock, error_for_response, read_timeout_s=options.read_timeout_s)
        await stream.start(headers)
        with unwrapped():
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.run_reader, name="bidi_core nova reader")
                tg.start_soon(stream.run_watchdog, name="bidi_core nova watchdog")
                try:
                    yield stream
                finally:
                    await stream.aclose(options.close_timeout_s)
                    # Ended, not cancelled: a cancelled task's error holds its frames, and so this stream,
                    # in a reference cycle (see Watchdog.stop). The closed socket ends the reader; both
                    # are cancelled only if they do not end in time.
                    stream.stop_watching()
                    tg.cancel_scope.deadline = min(
                        tg.cancel_scope.deadline, anyio.current_time() + options.close_timeout_s
                    )
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(options.close_timeout_s), suppress(Exception):
            await sock.aclose()
