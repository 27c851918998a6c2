"""One TLS connection speaking HTTP/2 as the server (h2, ``client_side=False``) on an AnyIO byte stream.

The reader task is the only one feeding h2; any task may write, under one lock,
by calling h2 and then :meth:`H2ServerConnection.flush`. Flow control is done
both ways:

* inbound: received DATA is acknowledged after the session has processed it,
  and h2 emits WINDOW_UPDATE lazily (when half the window is consumed, or the
  window is empty), so a client with a small window really waits;
* outbound: a message goes out in DATA frames no larger than the client's
  SETTINGS_MAX_FRAME_SIZE, the stream and connection windows, and the
  simulator's ``data_frame_bytes``; when the window is empty the writer waits for
  the client's WINDOW_UPDATE (counted in the stream's record).

Request handling (docs/protocols/nova_sonic.md#connection): ``POST /model/{modelId}/invoke-with-bidirectional-stream``
with the SigV4 headers. A request the service would refuse gets an HTTP error
response (``x-amzn-requestid``, ``x-amzn-errortype``, JSON ``{"message": ...}``);
an accepted one gets ``:status 200`` at once and its body is the stream.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import uuid
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from adapters.testing._simulator_kit.tcp import reset_on_close
from adapters.testing.nova_sonic_simulator.errors import ServiceException
from adapters.testing.nova_sonic_simulator.records import RefusedRequest, StreamRecord, redact_headers
from adapters.testing.nova_sonic_simulator.session import StreamSession
from adapters.testing.nova_sonic_simulator.sigv4 import AuthFailure, ChunkChain, verify_request

if TYPE_CHECKING:
    from adapters.testing.nova_sonic_simulator.server import NovaSonicSimulator

__all__ = ["MODEL_IDS", "H2ServerConnection"]

logger = logging.getLogger("adapters.testing.nova_sonic_simulator")

MODEL_IDS = frozenset({"amazon.nova-sonic-v1:0", "amazon.nova-2-sonic-v1:0"})
PATH_PREFIX = "/model/"
PATH_SUFFIX = "/invoke-with-bidirectional-stream"
EVENTSTREAM = "application/vnd.amazon.eventstream"
WRITE_TIMEOUT_S = 10.0
"""A client that stops reading (TCP) or stops granting window for this long is dropped."""


class _Stream:
    """The :class:`~.session.StreamLink` of one accepted HTTP/2 stream."""

    def __init__(self, conn: H2ServerConnection, stream_id: int, record: StreamRecord) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.record = record
        self.session: StreamSession | None = None
        self.closed = False
        self._send_lock = anyio.Lock()

    async def send_message(self, data: bytes) -> bool:
        conn = self.conn
        async with self._send_lock:
            view = memoryview(data)
            with anyio.move_on_after(WRITE_TIMEOUT_S) as timeout:
                while view:
                    if self.closed or conn.closed or conn.silent:
                        return False
                    try:
                        window = conn.h2.local_flow_control_window(self.stream_id)
                    except StreamClosedError:
                        return False
                    size = min(window, conn.h2.max_outbound_frame_size, len(view))
                    if conn.sim.data_frame_bytes is not None:
                        size = min(size, conn.sim.data_frame_bytes)
                    if size <= 0:
                        self.record.window_waits += 1
                        await conn.window_changed()
                        continue
                    try:
                        conn.h2.send_data(self.stream_id, bytes(view[:size]))
                    except (StreamClosedError, FlowControlError, ProtocolError):
                        return False
                    view = view[size:]
                    await conn.flush()
            if timeout.cancelled_caught:
                logger.info("stream %d: the client stopped reading; dropping the connection", self.record.index)
                conn.abort()
                return False
            return True

    async def end_stream(self) -> None:
        async with self._send_lock:
            if self.closed or self.conn.closed:
                return
            try:
                self.conn.h2.end_stream(self.stream_id)
            except (StreamClosedError, ProtocolError):
                return
            await self.conn.flush()

    def reset(self, error_code: int) -> None:
        if self.closed or self.conn.closed:
            return
        self.closed = True
        with contextlib.suppress(StreamClosedError, ProtocolError):
            self.conn.h2.reset_stream(self.stream_id, error_code)
        self.conn.flush_soon()

    def goaway(self, error_code: int) -> None:
        self.conn.goaway(error_code)

    def drop(self) -> None:
        logger.info("stream %d: dropping the connection", self.record.index)
        self.conn.abort()

    def tcp_reset(self) -> None:
        logger.info("stream %d: resetting the TCP connection", self.record.index)
        reset_on_close(self.conn.stream)
        self.conn.abort()

    def silence(self) -> None:
        self.conn.silent = True

    def deafen(self) -> None:
        self.conn.silent = True
        self.conn.deaf = True


class H2ServerConnection:
    """An accepted TLS connection: the HTTP/2 reader, the writer lock and the streams."""

    def __init__(self, sim: NovaSonicSimulator, stream: anyio.abc.ByteStream) -> None:
        self.sim = sim
        self.stream = stream
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.closed = False
        self.streams: dict[int, _Stream] = {}
        self._lock = anyio.Lock()
        self._window = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._dropped = False
        self.silent = False
        """A fault: nothing more is written (h2's output, PING acks included, is discarded)."""
        self.deaf = False
        """A fault: the socket is not read any more either."""

    # ------------------------------------------------------------------ writing

    async def flush(self) -> None:
        async with self._lock:
            data = self.h2.data_to_send()
            if not data or self.closed or self.silent:
                return
            with anyio.move_on_after(WRITE_TIMEOUT_S) as timeout:
                try:
                    await self.stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    self.abort()
            if timeout.cancelled_caught:  # the client stopped reading: a half-written frame ends the connection
                self.abort()

    def flush_soon(self) -> None:
        if self._tg is not None and not self.closed:
            self._tg.start_soon(self.flush)

    async def window_changed(self) -> None:
        await self._window.wait()

    def _notify_window(self) -> None:
        self._window.set()
        self._window = anyio.Event()

    def goaway(self, error_code: int) -> None:
        """GOAWAY now; the connection closes once it is written."""
        if self.closed or self._closing:
            return
        self._closing = True
        with contextlib.suppress(ProtocolError):
            self.h2.close_connection(error_code=error_code)
        if self._tg is not None:
            self._tg.start_soon(self._close_after_flush)

    async def _close_after_flush(self) -> None:
        await self.flush()
        self.abort()

    def abort(self) -> None:
        """Stop everything of this connection; the TCP connection closes."""
        if self.closed:
            return
        self.closed = True
        self._dropped = True
        self._window.set()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # ------------------------------------------------------------------ the reader

    async def run(self) -> None:
        self.h2.initiate_connection()
        # Announced after the preface: they bind the client when it reads them, and us once it acknowledges them
        # (h2 keeps them pending until then), so data the client sent under the defaults is not a violation.
        self.h2.update_settings(
            {
                SettingCodes.INITIAL_WINDOW_SIZE: self.sim.initial_window_size,
                SettingCodes.MAX_FRAME_SIZE: self.sim.max_frame_size,
                SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            }
        )
        why = "server"  # unless the reader saw the client go, or the connection was dropped
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self.flush()
                why = await self._read_loop()
                tg.cancel_scope.cancel()
        finally:
            if self._dropped:
                why = "connection_lost"
            self.closed = True
            self._window.set()
            for stream in self.streams.values():
                if stream.session is not None:
                    stream.session.on_reset(why)
                elif stream.record.ended_by is None:
                    stream.record.ended_by = why
            self.sim._notify()

    async def _read_loop(self) -> str:
        while True:
            if self.deaf:
                await anyio.sleep_forever()  # a fault: until the connection ends, nothing is read
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return "connection_lost"
            try:
                events = self.h2.receive_data(data)
            except ProtocolError as exc:
                logger.info("HTTP/2 protocol error from the client: %s", exc)
                await self.flush()  # h2 queued a GOAWAY
                return "connection_lost"
            for event in events:
                self._on_event(event)
            await self.flush()
            if self._closing:
                await anyio.sleep_forever()  # _close_after_flush ends the connection

    def _on_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, DataReceived):
            assert event.stream_id is not None and event.data is not None
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.session is not None and not stream.closed:
                stream.session.on_data(event.data)
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and stream.session is not None and not stream.closed:
                stream.session.on_end_stream()
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and not stream.closed:
                stream.closed = True
                if stream.session is not None:
                    stream.session.on_reset("client_reset")
            self._notify_window()
        elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
            self._notify_window()
        elif isinstance(event, ConnectionTerminated):
            self._closing = True
            self.abort()

    def _on_request(self, event: RequestReceived) -> None:
        assert event.stream_id is not None and event.headers is not None
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        # h2 types headers as bytes, but this connection decodes them (header_encoding="utf-8").
        for name, value in cast(list[tuple[str, str]], event.headers):
            target = pseudo if name.startswith(":") else headers
            target[name] = f"{target[name]},{value}" if name in target else value
        sim = self.sim
        request_index = sim._next_request_index()
        path = pseudo.get(":path", "")
        faults = sim._state.faults_for(request_index)
        if any(f.after_events is None and f.kind in ("silence", "deaf") for f in faults):
            # A service that accepts the request and then says nothing, not even the response headers.
            self.silent = True
            self.deaf = any(f.kind == "deaf" for f in faults)
        refusal: ServiceException | None = None
        retry_after: str | None = None
        model_id = ""
        try:
            auth = verify_request(
                method=pseudo.get(":method", ""),
                authority=pseudo.get(":authority", ""),
                path=path,
                headers=headers,
                credentials=sim.credentials,
                session_tokens=sim.session_tokens,
                region=sim.region,
                now=datetime.datetime.now(datetime.UTC),
            )
        except AuthFailure as failure:
            self._refuse(
                event.stream_id, request_index, path, headers, failure.status, failure.error_type, failure.message
            )
            return
        route = urlsplit(path).path  # the official SDK sends an empty query: ".../invoke-with-bidirectional-stream?"
        if pseudo.get(":method") != "POST" or not (route.startswith(PATH_PREFIX) and route.endswith(PATH_SUFFIX)):
            self._refuse(event.stream_id, request_index, path, headers, 404, "UnknownOperationException", "")
            return
        model_id = unquote(route[len(PATH_PREFIX) : -len(PATH_SUFFIX)])
        if model_id not in MODEL_IDS:
            refusal = ServiceException.validation("The provided model identifier is invalid.")
        elif headers.get("content-type") != EVENTSTREAM:
            refusal = ServiceException.validation(f"Content-Type must be {EVENTSTREAM}.")
        else:
            refusing = next((f for f in faults if f.after_events is None and f.is_exception), None)
            if refusing is not None:
                refusal = refusing.exception()
                retry_after = refusing.retry_after
        if refusal is not None:
            self._refuse(
                event.stream_id,
                request_index,
                path,
                headers,
                refusal.status,
                refusal.error_type,
                refusal.message,
                retry_after,
            )
            return
        record = StreamRecord(
            index=len(sim.streams),
            request_index=request_index,
            model_id=model_id,
            access_key_id=auth.access_key_id,
            path=path,
            headers=redact_headers(headers),
        )
        stream = _Stream(self, event.stream_id, record)
        stream.session = StreamSession(stream, sim._ctx, record, ChunkChain(auth), faults)
        self.streams[event.stream_id] = stream
        sim.streams.append(record)
        self.h2.send_headers(
            event.stream_id,
            [(":status", "200"), ("content-type", EVENTSTREAM), ("x-amzn-requestid", str(uuid.uuid4()))],
        )
        logger.info("stream %d opened: %s by %s", record.index, model_id, auth.access_key_id)
        sim._notify()
        assert self._tg is not None
        self._tg.start_soon(self._run_stream, stream)
        stream.session.fire_immediate_faults()

    async def _run_stream(self, stream: _Stream) -> None:
        assert stream.session is not None
        try:
            await stream.session.run()
        finally:
            stream.closed = True
            self.sim._notify()

    def _refuse(
        self,
        stream_id: int,
        request_index: int,
        path: str,
        headers: dict[str, str],
        status: int,
        error_type: str,
        message: str,
        retry_after: str | None = None,
    ) -> None:
        body = json.dumps({"message": message} if message else {}).encode()
        self.sim.refused.append(
            RefusedRequest(request_index, path, redact_headers(headers), status, error_type, message)
        )
        logger.info("refused a request for %s: HTTP %d %s", path, status, error_type)
        response = [
            (":status", str(status)),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-amzn-requestid", str(uuid.uuid4())),
            ("x-amzn-errortype", error_type),
        ]
        if retry_after is not None:
            response.append(("retry-after", retry_after))
        self.h2.send_headers(stream_id, response)
        try:
            self.h2.send_data(stream_id, body, end_stream=True)
        except FlowControlError:  # a client window smaller than an error body: give up on the body
            self.h2.reset_stream(stream_id, 0)
        self.sim._notify()
