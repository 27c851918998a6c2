"""The Gemini Live simulator: a WebSocket server on 127.0.0.1, TLS (trustme) or plain.

The handshake follows docs/protocols/gemini.md#connection: ``GET /ws/google.ai.generativelanguage.
{v1,v1beta,v1alpha}.GenerativeService.BidiGenerateContent`` with the key in
``x-goog-api-key`` (or the ``key`` query parameter). Another path is refused
with HTTP 404. A missing or wrong key is *not* refused at the upgrade: the
service reports errors as close frames with a readable reason (docs/protocols/gemini.md#errors), and
google-genai turns a close into ``APIError(code, reason)`` only after its setup
went out, so the simulator accepts the upgrade, reads the first message and
closes: **1008** "Method doesn't allow unregistered callers…" for a missing key
(Google's text for an unauthenticated call), **1007** "API key not valid. Please
pass a valid API key." for a wrong one (the text clients report from the
service for a bad or expired key). Everything after the handshake belongs to
:class:`~.connection.Connection` and :class:`~.session.LiveSession`.
"""

from __future__ import annotations

import logging
import re
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
    accept,
    drop_all,
    read_request,
    reject,
    send_raw_response,
)
from adapters.testing.gemini_simulator.connection import Connection
from adapters.testing.gemini_simulator.oracle import SimulatorBug
from adapters.testing.gemini_simulator.records import (
    ConnectionRecord,
    OracleFailure,
    RejectedHandshake,
    UserInput,
    redact_headers,
)
from adapters.testing.gemini_simulator.scenario import Reply, Scenario, ScenarioState
from adapters.testing.gemini_simulator.session import Context
from adapters.testing.gemini_simulator.state import Handles, SessionState

__all__ = ["GeminiLiveSimulator"]

logger = logging.getLogger("adapters.testing.gemini_simulator")

PATH = re.compile(r"/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\.BidiGenerateContent")
MISSING_KEY = (
    1008,
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API.",
)
BAD_KEY = (1007, "API key not valid. Please pass a valid API key.")
DEADLINE = (1011, "Deadline expired before operation could complete.")


class GeminiLiveSimulator:
    """A loopback Gemini Live service for tests: ``async with GeminiLiveSimulator() as sim``.

    Options (keyword-only):

    * ``api_key``: the key the client must present (None: any non-empty key);
    * ``scenario``: what the model says (:class:`~.scenario.Scenario`);
    * ``tls``: serve ``wss://`` with a CA made at start-up (:attr:`ca_cert_pem_path`,
      :meth:`client_ssl_context`), else ``ws://``;
    * ``connection_lifetime_s``: each connection gets ``goAway`` at ``lifetime - go_away_lead_s`` and is
      closed at ``lifetime`` with ``lifetime_close`` (default 1011 "Deadline expired before operation could
      complete.", the close clients report at the limit); scale the service's ~10 min down in tests;
    * ``handle_ttl_s``: resumption handles older than this are stale (1007 on resume);
    * ``speedup``: output pace as a multiple of real time (None: as fast as possible);
    * ``audio_handle_every_ms``: how much idle audio between resumption updates;
    * ``transparent_resumption``: accept the Vertex-only ``sessionResumption.transparent`` and report
      ``lastConsumedClientMessageIndex``;
    * ``strict``: raise :class:`~.oracle.SimulatorBug` when a message the simulator is about to send fails
      the server oracle (recorded either way);
    * ``refusals``: faults on the upgrade (the service itself refuses none: it closes after the setup):
      each :class:`~adapters.testing._simulator_kit.websocket_server.Refusal` refuses the next ``times``
      handshakes with its status, headers (``Retry-After``) and body, in order;
    * ``silent_connections``: indexes of accepted connections on which the service says nothing at all
      (no ``setupComplete``, no pong): a service that hangs after the upgrade.

    :meth:`inject` plays a :class:`~.scenario.Reply`'s connection fault on every open connection now.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        scenario: Scenario | None = None,
        tls: bool = True,
        connection_lifetime_s: float | None = None,
        go_away_lead_s: float = 1.0,
        lifetime_close: tuple[int, str] = DEADLINE,
        handle_ttl_s: float | None = None,
        speedup: float | None = None,
        audio_handle_every_ms: int = 1000,
        transparent_resumption: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = True,
        refusals: Sequence[Refusal] = (),
        silent_connections: Collection[int] = (),
    ) -> None:
        self.api_key = api_key
        self.silent_connections = frozenset(silent_connections)
        self._refusals = Refusals(refusals)
        self.scenario = scenario or Scenario()
        self.tls = tls
        self.transparent_resumption = transparent_resumption
        self.strict = strict
        self._host = host
        self._ctx = Context(
            scenario=ScenarioState(self.scenario),
            handles=Handles(handle_ttl_s),
            speedup=speedup,
            go_away_lead_s=go_away_lead_s,
            connection_lifetime_s=connection_lifetime_s,
            lifetime_close=lifetime_close,
            audio_handle_every_ms=audio_handle_every_ms,
            transparent_ok=transparent_resumption,
            on_state=self._on_state,
        )
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[RejectedHandshake] = []
        self.oracle_failures: list[OracleFailure] = []
        self.sessions: list[SessionState] = []
        self._current: SessionState | None = None
        self._live: list[Connection] = []
        self._changes = Changes()
        self._serving = Serving(host, port)
        self._authority: Authority | None = None
        self._server_ssl: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self.tls:
            self._authority = Authority()
            self._server_ssl = self._authority.server_context()
        await self._serving.serve(await self._serving.tcp(), self._handle)
        logger.info("Gemini Live simulator listening on %s", self.ws_base_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._serving.stop(exc_type, exc, tb)
        finally:
            if self._authority is not None:
                self._authority.remove()

    # ------------------------------------------------------------------ addresses and trust

    @property
    def port(self) -> int:
        return self._serving.port

    @property
    def ws_base_url(self) -> str:
        """``wss://127.0.0.1:PORT`` (or ``ws://`` without TLS)."""
        return f"{'wss' if self.tls else 'ws'}://{self._host}:{self.port}"

    @property
    def https_base_url(self) -> str:
        """``https://127.0.0.1:PORT``: what ``genai.Client(http_options={"base_url": ...})`` takes."""
        return f"{'https' if self.tls else 'http'}://{self._host}:{self.port}"

    def url(self, version: str = "v1beta") -> str:
        """The full endpoint for API ``version``."""
        return f"{self.ws_base_url}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"

    @property
    def ca_cert_pem_path(self) -> str:
        """Path of the CA certificate (PEM) that signed the server's; exists while the simulator runs."""
        if self._authority is None:
            raise RuntimeError("no TLS: the simulator runs with tls=False or is not running")
        return str(self._authority.ca_cert_pem_path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the simulator's CA."""
        if self._authority is None:
            raise RuntimeError("no TLS: the simulator runs with tls=False or is not running")
        return self._authority.client_context()

    # ------------------------------------------------------------------ records and faults

    @property
    def user_inputs(self) -> list[UserInput]:
        """The inputs the current session's state holds, in order (the session of the latest connection
        that completed a setup; across resumptions, minus what came after the handle it resumed from)."""
        return list(self._current.inputs) if self._current is not None else []

    async def drop_all(self) -> None:
        """Close every open connection at the TCP level, without a close frame, and wait until they are gone."""
        await drop_all(self._live)

    async def close_all(self, code: int = 1011, reason: str = "Internal error occurred.") -> None:
        """Send this close frame on every open connection (a service fault). Each ends when its client answers
        the close, or a grace period later; :meth:`wait_until` on ``record.closed`` waits for that."""
        for conn in list(self._live):
            await conn.close(code, reason)

    async def inject(self, fault: Reply) -> None:
        """Play ``fault``'s ``go_away``, then its connection fault (``drop``, ``reset``, ``close``, ``silence``,
        ``deaf``), on every open connection now; its other fields are ignored."""
        for conn in list(self._live):
            if fault.go_away:
                await conn.session.go_away()
            await conn.session.turns.fault(fault)

    async def go_away_all(self) -> None:
        """Send ``goAway`` on every open connection now; each ends ``go_away_lead_s`` later."""
        for conn in list(self._live):
            await conn.session.go_away()

    async def wait_until(self, predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever a record changes); TimeoutError after ``limit_s``."""
        with anyio.fail_after(limit_s):
            await self._changes.wait_until(predicate)

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        self._changes.notify()

    def _on_state(self, record: ConnectionRecord, state: SessionState) -> None:
        if not any(s is state for s in self.sessions):
            self.sessions.append(state)
        self._current = state
        self._notify()

    def _client_oracle_failure(self, index: int, message: Any, detail: str) -> None:
        self.oracle_failures.append(OracleFailure(index, "client", message, detail))
        logger.info("connection %d: client message refused: %s", index, detail)
        self._notify()

    def _server_oracle_failure(self, index: int, message: dict[str, Any], detail: str) -> None:
        self.oracle_failures.append(OracleFailure(index, "server", message, detail))
        self._notify()
        logger.error("simulator bug: %s fails the server oracle: %s", list(message), detail)
        if self.strict:
            raise SimulatorBug(f"server message {list(message)} fails the server oracle: {detail}")

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

    async def _handshake(self, stream: anyio.abc.ByteStream) -> Connection | None:
        ws = WSConnection(ConnectionType.SERVER)
        request = await read_request(stream, ws)
        if isinstance(request, RemoteProtocolError):
            await send_raw_response(stream, 400, _error_body(400, str(request), "INVALID_ARGUMENT"))
            return None
        if request is None:
            return None
        target = urlsplit(request.target)
        fault = self._refusals.next()
        if fault is not None:
            status = fault.status
            body = dict(fault.body) if fault.body is not None else _error_body(status, "", "")
            self.rejected.append(RejectedHandshake(target.path, status, body))
            logger.info("refused a handshake for %s: HTTP %d (a fault)", target.path, status)
            self._notify()
            await reject(stream, ws, status, body, fault.headers)
            return None
        match = PATH.fullmatch(target.path)
        if match is None:
            body = _error_body(404, f"Method not found: {target.path}", "NOT_FOUND")
            self.rejected.append(RejectedHandshake(target.path, 404, body))
            self._notify()
            await reject(stream, ws, 404, body)
            return None
        query = dict(parse_qsl(target.query))
        raw = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.extra_headers}
        key = raw.get("x-goog-api-key") or query.get("key")
        refusal: tuple[int, str] | None = None
        if not key:
            refusal = MISSING_KEY
        elif self.api_key is not None and key != self.api_key:
            refusal = BAD_KEY
        if "key" in query:
            query["key"] = "<redacted>"
        headers = redact_headers(list(request.extra_headers))
        headers["host"] = request.host
        record = ConnectionRecord(
            index=len(self.connections), path=target.path, api_version=match.group(1), query=query, headers=headers
        )
        if not await accept(stream, ws):
            return None
        self.connections.append(record)
        self._notify()
        logger.info("connection %d opened: %s", record.index, target.path)
        return Connection(self, record, stream, ws, refusal)


def _error_body(code: int, message: str, status: str) -> dict[str, Any]:
    """Google's REST error shape (a refusal fault without a body gets Google's status name for its code)."""
    if not status:
        status, text = _REFUSED.get(code, ("UNKNOWN", f"HTTP {code}"))
        message = message or text
    return {"error": {"code": code, "message": message, "status": status}}


_REFUSED = {
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
}
"""Google's status names and usual texts for the codes a refusal fault uses (google.rpc.Code)."""
