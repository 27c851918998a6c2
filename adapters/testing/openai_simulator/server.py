"""The transport: the kit's WebSocket server loop (:mod:`.._simulator_kit.websocket_server`) with OpenAI's handshake.

The handshake follows docs/protocols/openai.md#connection: ``GET /v1/realtime?model=…``
with ``Authorization: Bearer <key>``; a wrong or missing key is refused with
HTTP 401 and the REST error body, and ``OpenAI-Beta: realtime=v1`` is accepted
only to be told ``beta_api_shape_disabled`` and closed (docs/protocols/openai.md#retired-beta). Everything after
the handshake is :class:`~.session.RealtimeSession`'s business; this module
records and checks what goes over the wire in JSON text frames: every server
event passes the server oracle before it is written.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.utilities import RemoteProtocolError

from adapters.testing._simulator_kit.listener import Changes, Serving
from adapters.testing._simulator_kit.tls import Authority, accept_tls
from adapters.testing._simulator_kit.websocket_server import (
    Refusal,
    Refusals,
    WebSocketConnection,
    accept,
    drop_all,
    read_request,
    reject,
    send_raw_response,
)
from adapters.testing.openai_simulator.errors import ServiceError, SimulatorBug
from adapters.testing.openai_simulator.oracle import check_server_event
from adapters.testing.openai_simulator.records import (
    ClientError,
    ConnectionRecord,
    OracleFailure,
    ReceivedMessage,
    RejectedHandshake,
    Truncation,
    redact_headers,
)
from adapters.testing.openai_simulator.scenario import Reply, Scenario, ScenarioState
from adapters.testing.openai_simulator.session import Ids, RealtimeSession, SessionContext

__all__ = ["OpenAIRealtimeSimulator"]

logger = logging.getLogger("adapters.testing.openai_simulator")

INSECURE_KEY_PREFIX = "openai-insecure-api-key."


class _Connection(WebSocketConnection):
    """One accepted WebSocket connection: the :class:`~.session.Link` its session talks to (JSON text frames)."""

    def __init__(
        self,
        sim: OpenAIRealtimeSimulator,
        record: ConnectionRecord,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        *,
        beta: bool,
    ) -> None:
        super().__init__(stream, ws, notify=sim._notify, logger=logger)
        self.sim = sim
        self.index = record.index
        self.record = record
        self.beta = beta
        self._messages = 0
        self.session = RealtimeSession(self, sim._ctx, model=record.model)

    # ------------------------------------------------------------------ Link

    async def send(
        self,
        event: dict[str, Any],
        *,
        skip_if: Callable[[], bool] | None = None,
        then: Callable[[], None] | None = None,
    ) -> bool:
        if self.closing:
            return False
        # Stamped in place (type first, then event_id, as the service orders them) so callers see the id.
        rest = {k: v for k, v in event.items() if k not in ("type", "event_id")}
        event_type = event["type"]
        event.clear()
        event.update({"type": event_type, "event_id": self.sim._ctx.ids.new("event"), **rest})
        detail = check_server_event(event)
        if detail is not None:
            self.sim._oracle_failure(self.index, event, detail)
        text = json.dumps(event)

        def record() -> None:
            self.record.sent.append(json.loads(text))
            self.sim._notify()

        return await self.send_message(text, unless=skip_if, on_write=record, then=then)

    async def send_frame(self, data: str | bytes) -> bool:
        return await self.send_message(data)

    def record_client_error(self, message: Any, error_event: dict[str, Any]) -> None:
        error = error_event["error"]
        logger.info("connection %d: refused a client event: %s (%s)", self.index, error["message"], error["code"])
        self.sim.client_errors.append(ClientError(self.index, message, error_event))
        self.sim._notify()

    def record_truncation(self, item_id: str, content_index: int, audio_end_ms: int, audio_ms: int) -> None:
        self.sim.truncations.append(Truncation(self.index, item_id, content_index, audio_end_ms, audio_ms))
        self.sim._notify()

    # ------------------------------------------------------------------ the WebSocket loop's hooks

    async def on_open(self) -> None:
        if self.index in self.sim.silent_connections:
            self.silence()  # accepted, then nothing: no session.created, no pong
            return
        if self.sim.session_limit_s is not None:
            self.spawn(lambda: self._expire_after(self.sim.session_limit_s or 0.0))
        if self.beta:
            await self.session.refuse_beta()
        else:
            await self.session.start()

    def on_ending(self, why: str, close: tuple[int, str] | None) -> None:
        self.record.close_reason = why

    def on_stop(self) -> None:
        self.session.stop()

    def on_finished(self) -> None:
        self.record.closed = True
        if self.record.close_reason is None:
            self.record.close_reason = "server"
        logger.info("connection %d closed (%s)", self.index, self.record.close_reason)

    async def _expire_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        await self.session.expire()

    async def on_message(self, data: str | bytes) -> None:
        message: Any
        if isinstance(data, bytes):
            message = "<binary frame>"  # the service speaks text frames only; the session refuses it
        else:
            try:
                message = json.loads(data)
            except ValueError:
                message = data
        if self.closing:
            return
        self.record.received.append(message)
        self.sim.received.append(ReceivedMessage(self.index, message))
        self.sim._notify()
        self._messages += 1
        await self.session.handle(message)
        limit = self.sim._drop_after(self.index)
        if limit is not None and self._messages >= limit:
            await self.drop()


class OpenAIRealtimeSimulator:
    """A loopback OpenAI Realtime (GA) service for tests: ``async with OpenAIRealtimeSimulator() as sim``.

    Point a client at :attr:`base_url` (``ws://127.0.0.1:PORT/v1``, ``wss://`` with ``tls``; clients
    append ``/realtime?model=…``). Options:

    * ``api_key``: the key ``Authorization: Bearer`` must carry (None: any key);
    * ``scenario``: what the model says (:class:`~.scenario.Scenario`);
    * ``session_limit_s``: seconds until the session expires as at the service's
      60-minute limit (``error`` ``session_expired`` naming ``session_limit_minutes``,
      then a close); scale it down in tests;
    * ``drop_after_messages``: drop the TCP connection without a close frame after
      this many client messages: an int for every connection, or a list by
      connection index (None entries and indexes past the end never drop);
    * ``speedup``: output pace as a multiple of real time (None: as fast as
      possible, one scheduling checkpoint between deltas);
    * ``strict``: raise :class:`~.errors.SimulatorBug` when an event the simulator
      is about to send fails the server oracle (it is recorded either way);
    * ``refusals``: faults on the upgrade: each
      :class:`~adapters.testing._simulator_kit.websocket_server.Refusal` refuses the next
      ``times`` handshakes with its status, headers (``Retry-After``) and body, in order;
    * ``silent_connections``: indexes of accepted connections on which the service says
      nothing at all (no ``session.created``, no pong): a service that hangs after the upgrade;
    * ``tls``: serve ``wss://`` with a CA made at start-up (:attr:`ca_cert_pem_path`,
      :meth:`client_ssl_context`), as the real service does; off by default (``ws://`` is faster).

    :meth:`inject` plays a :class:`~.scenario.Reply`'s connection fault on every open
    connection now (a fault at a moment the test chooses, e.g. while a tool runs).

    Records for assertions: :attr:`connections`, :attr:`rejected`,
    :attr:`received`, :attr:`truncations`, :attr:`client_errors`,
    :attr:`oracle_failures`; :meth:`wait_until` waits for a condition on them.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        scenario: Scenario | None = None,
        session_limit_s: float | None = None,
        session_limit_minutes: int = 60,
        drop_after_messages: int | Sequence[int | None] | None = None,
        speedup: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = True,
        refusals: Sequence[Refusal] = (),
        silent_connections: Collection[int] = (),
        tls: bool = False,
    ) -> None:
        self.api_key = api_key
        self.tls = tls
        self._authority: Authority | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self.silent_connections = frozenset(silent_connections)
        self._refusals = Refusals(refusals)
        self.scenario = scenario or Scenario()
        self.session_limit_s = session_limit_s
        self.drop_after_messages = drop_after_messages
        self.strict = strict
        self._host = host
        self._ctx = SessionContext(
            state=ScenarioState(self.scenario),
            ids=Ids(),
            speedup=speedup,
            limit_minutes_text=session_limit_minutes,
            expires_in_s=session_limit_s if session_limit_s is not None else 3600.0,
        )
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[RejectedHandshake] = []
        self.received: list[ReceivedMessage] = []
        self.truncations: list[Truncation] = []
        self.client_errors: list[ClientError] = []
        self.oracle_failures: list[OracleFailure] = []
        self._live: list[_Connection] = []
        self._changes = Changes()
        self._serving = Serving(host, port)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self.tls:
            self._authority = Authority("OpenAI Realtime", prefix="openai-sim-ca-")
            self._server_ssl = self._authority.server_context()
        await self._serving.serve(await self._serving.tcp(), self._handle)
        logger.info("OpenAI Realtime simulator listening on %s", self.base_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._serving.stop(exc_type, exc, tb)
        finally:
            if self._authority is not None:
                self._authority.remove()

    @property
    def port(self) -> int:
        return self._serving.port

    @property
    def base_url(self) -> str:
        """``ws://HOST:PORT/v1`` (``wss://`` with TLS): what ``AsyncOpenAI(websocket_base_url=...)`` takes."""
        return f"{'wss' if self.tls else 'ws'}://{self._host}:{self.port}/v1"

    @property
    def ca_cert_pem_path(self) -> str:
        """Path of the CA certificate (PEM) that signed the server's; exists while a TLS simulator runs."""
        if self._authority is None:
            raise RuntimeError("no TLS: the simulator runs with tls=False or is not running")
        return str(self._authority.ca_cert_pem_path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the simulator's CA."""
        if self._authority is None:
            raise RuntimeError("no TLS: the simulator runs with tls=False or is not running")
        return self._authority.client_context()

    @property
    def url(self) -> str:
        """The full endpoint for the default model."""
        return f"{self.base_url}/realtime?model=gpt-realtime"

    async def drop_all(self) -> None:
        """Close every open connection at the TCP level, without a close frame, and wait until they are gone."""
        await drop_all(self._live)

    async def inject(self, fault: Reply) -> None:
        """Play ``fault``'s connection fault (``drop``, ``reset``, ``close``, ``session_limit``, ``silence``,
        ``deaf``) on every open connection now; its other fields are ignored."""
        for conn in list(self._live):
            await conn.session.play_fault(fault)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is checked whenever a record changes.

        Bound it with ``anyio.fail_after``: the simulator does not guess how long a test may wait.
        """
        await self._changes.wait_until(predicate)

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        self._changes.notify()

    def _oracle_failure(self, index: int, event: dict[str, Any], detail: str) -> None:
        self.oracle_failures.append(OracleFailure(index, event, detail))
        self._notify()
        logger.error("simulator bug: %s fails the server oracle: %s", event.get("type"), detail)
        if self.strict:
            raise SimulatorBug(f"server event {event.get('type')!r} fails the server oracle: {detail}")

    def _drop_after(self, index: int) -> int | None:
        limit = self.drop_after_messages
        if limit is None or isinstance(limit, int):
            return limit
        return limit[index] if index < len(limit) else None

    async def _handle(self, tcp: anyio.abc.SocketStream) -> None:
        stream: anyio.abc.ByteStream = tcp
        try:
            if self._server_ssl is not None:
                wrapped = await accept_tls(tcp, self._server_ssl, logger)
                if wrapped is None:
                    return
                stream = wrapped
            conn = await self._handshake(stream)
            if conn is None:
                return
            self._live.append(conn)
            try:
                await conn.run()
            finally:
                self._live.remove(conn)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _handshake(self, stream: anyio.abc.ByteStream) -> _Connection | None:
        ws = WSConnection(ConnectionType.SERVER)
        request = await read_request(stream, ws)
        if isinstance(request, RemoteProtocolError):
            body = {"error": {"message": str(request), "type": "invalid_request_error", "param": None, "code": None}}
            await send_raw_response(stream, 400, body)
            self.rejected.append(RejectedHandshake("", {}, 400, body))
            self._notify()
            return None
        if request is None:
            return None
        target = urlsplit(request.target)
        headers = redact_headers(list(request.extra_headers), list(request.subprotocols))
        headers["host"] = request.host
        raw = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.extra_headers}
        key: str | None = None
        scheme, _, token = raw.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
        subprotocol: str | None = None
        for proto in request.subprotocols:
            if proto.startswith(INSECURE_KEY_PREFIX):
                key = key or proto[len(INSECURE_KEY_PREFIX) :]
            elif proto == "realtime":
                subprotocol = "realtime"
        refusal: tuple[int, ServiceError] | None = None
        fault = self._refusals.next()
        if fault is not None:
            body = dict(fault.body) if fault.body is not None else _status_body(fault.status)
            self.rejected.append(RejectedHandshake(target.path, headers, fault.status, body))
            logger.info("refused a handshake for %s: HTTP %d (a fault)", target.path, fault.status)
            self._notify()
            await reject(stream, ws, fault.status, body, fault.headers)
            return None
        if key is None:
            refusal = (401, ServiceError.missing_api_key())
        elif self.api_key is not None and key != self.api_key:
            refusal = (401, ServiceError.invalid_api_key(key))
        elif target.path.rstrip("/") != "/v1/realtime":
            refusal = (404, ServiceError.not_found("GET", target.path))
        if refusal is not None:
            status, error = refusal
            body = error.to_http_body()
            self.rejected.append(RejectedHandshake(target.path, headers, status, body))
            logger.info("refused a handshake for %s: HTTP %d %s", target.path, status, error.message)
            self._notify()
            await reject(stream, ws, status, body)
            return None
        query = dict(parse_qsl(target.query))
        record = ConnectionRecord(
            index=len(self.connections),
            path=target.path,
            query=query,
            headers=headers,
            model=query.get("model", "gpt-realtime"),
            subprotocol=subprotocol,
        )
        if not await accept(stream, ws, subprotocol):
            return None
        self.connections.append(record)
        self._notify()
        logger.info("connection %d opened: %s model=%s", record.index, target.path, record.model)
        beta = "realtime=v1" in raw.get("openai-beta", "").replace(" ", "")
        return _Connection(self, record, stream, ws, beta=beta)


def _status_body(status: int) -> dict[str, Any]:
    """The REST error body for a refusal fault given without one (texts are our inference)."""
    if status == 429:
        error = ServiceError("Rate limit reached for requests. Please try again later.", "rate_limit_exceeded")
    elif status >= 500:
        error = ServiceError("The server is overloaded or not ready yet.", None, type="server_error")
    else:
        error = ServiceError(f"The request was refused (HTTP {status}).", None)
    return error.to_http_body()
