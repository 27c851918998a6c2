"""The simulator object: a TLS listener with ALPN ``h2`` on 127.0.0.1 and the records tests assert on.

TLS because the real endpoint is HTTPS and the official SDK's CRT transport
only does duplex HTTP/2 over TLS (docs/protocols/nova_sonic.md#official-sdk); the certificate is made at
start-up by ``trustme`` (a throwaway CA, a leaf for ``127.0.0.1`` and
``localhost``). A connection that does not negotiate ``h2`` is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import trustme
from anyio.streams.tls import TLSAttribute, TLSListener

from adapters.testing._simulator_kit.listener import Changes, Serving
from adapters.testing.nova_sonic_simulator.h2conn import H2ServerConnection
from adapters.testing.nova_sonic_simulator.records import (
    RefusedRequest,
    SchemaFailure,
    SignatureFailure,
    StreamRecord,
)
from adapters.testing.nova_sonic_simulator.scenario import Fault, Scenario, ScenarioState
from adapters.testing.nova_sonic_simulator.session import SessionOptions, SimContext

__all__ = ["NovaSonicSimulator"]

logger = logging.getLogger("adapters.testing.nova_sonic_simulator")

STREAM_LIFETIME_S = 480.0
"""botocore's model: the stream "remains open for 8 minutes"."""
SILENCE_TIMEOUT_S = 175.0
"""About 175 s without input ends the stream with InternalErrorCode=531 (docs/protocols/nova_sonic.md#limits)."""


class NovaSonicSimulator:
    """A loopback Bedrock ``InvokeModelWithBidirectionalStream`` for Nova Sonic.

    ``async with NovaSonicSimulator() as sim:`` serves on 127.0.0.1 until the block ends.

    Point a client at :attr:`endpoint_url` and trust :attr:`ca_cert_pem_path`
    (or use :meth:`client_ssl_context`). Options:

    * ``credentials``: access key id -> secret key the signatures must verify with;
      ``session_tokens``: access key id -> the ``x-amz-security-token`` it must send;
    * ``region``: the region of the credential scope;
    * ``scenario``: what the model says (:class:`~.scenario.Scenario`); ``faults``: :class:`~.scenario.Fault`;
    * ``stream_lifetime_s``: the 8-minute stream limit, scaled down in tests; after it a
      ``modelTimeoutException`` ends the stream (what users report at the limit);
    * ``silence_timeout_s``: no audio or text input this long ends the stream with a
      ``validationException`` mentioning ``InternalErrorCode=531``;
    * ``max_frame_size`` / ``initial_window_size``: the server's HTTP/2 SETTINGS (the largest DATA
      frame the client may send; the per-stream window the client must respect);
    * ``data_frame_bytes``: cap on the DATA frames the simulator sends (default: as large as
      the client allows), to split output messages across many frames;
    * ``speedup``: pace of the assistant's audio as a multiple of real time; None (default): as
      fast as flow control allows. Barge-in needs the audio to be still going out when the
      user speaks, so barge-in tests pace it (``speedup=1.0`` with a long ``audio_ms``);
    * ``audio_chunk_ms``: milliseconds of 24 kHz audio per ``audioOutput`` event.

    Records: :attr:`streams`, :attr:`refused`, :attr:`user_inputs`,
    :attr:`schema_failures`, :attr:`signature_failures`; :meth:`wait_until`. :meth:`inject`
    plays a :class:`~.scenario.Fault` on every open stream now (a fault at a moment the test
    chooses, e.g. while a tool runs).
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        session_tokens: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        scenario: Scenario | None = None,
        faults: Sequence[Fault] = (),
        stream_lifetime_s: float = STREAM_LIFETIME_S,
        silence_timeout_s: float = SILENCE_TIMEOUT_S,
        max_frame_size: int = 16_384,
        initial_window_size: int = 65_535,
        data_frame_bytes: int | None = None,
        speedup: float | None = None,
        audio_chunk_ms: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.credentials: Mapping[str, str] = dict(credentials or {"AKIDTEST": "secret-key"})
        self.session_tokens: Mapping[str, str] = dict(session_tokens or {})
        self.region = region
        self.scenario = scenario or Scenario()
        self.max_frame_size = max_frame_size
        self.initial_window_size = initial_window_size
        self.data_frame_bytes = data_frame_bytes
        self._host = host
        self._state = ScenarioState(self.scenario, faults)
        self.streams: list[StreamRecord] = []
        self.refused: list[RefusedRequest] = []
        self.user_inputs: list[tuple[Any, ...]] = []
        self.schema_failures: list[SchemaFailure] = []
        self.signature_failures: list[SignatureFailure] = []
        self._ctx = SimContext(
            state=self._state,
            options=SessionOptions(
                stream_lifetime_s=stream_lifetime_s,
                silence_timeout_s=silence_timeout_s,
                speedup=speedup,
                audio_chunk_ms=audio_chunk_ms,
            ),
            user_inputs=self.user_inputs,
            schema_failures=self.schema_failures,
            signature_failures=self.signature_failures,
            notify=self._notify,
        )
        self._requests = 0
        self._live: list[H2ServerConnection] = []
        self._changes = Changes()
        self._serving = Serving(host, port)
        self._tmpdir: str | None = None
        self._ca: trustme.CA | None = None
        self.ca_cert_pem_path = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._ca = trustme.CA()
        leaf = self._ca.issue_cert("127.0.0.1", "localhost")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(server_ctx)
        server_ctx.set_alpn_protocols(["h2"])
        self._tmpdir = tempfile.mkdtemp(prefix="nova-sim-")
        self.ca_cert_pem_path = os.path.join(self._tmpdir, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_cert_pem_path)
        tcp = await self._serving.tcp()
        await self._serving.serve(TLSListener(tcp, server_ctx, standard_compatible=False), self._handle)
        logger.info("Nova Sonic simulator listening on %s", self.endpoint_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._serving.stop(exc_type, exc, tb)
        finally:
            for record in self.streams:
                if record.ended_by is None:
                    record.ended_by = "server"
            if self._tmpdir is not None:
                with contextlib.suppress(OSError):
                    os.remove(self.ca_cert_pem_path)
                    os.rmdir(self._tmpdir)

    @property
    def port(self) -> int:
        return self._serving.port

    @property
    def endpoint_url(self) -> str:
        """``https://127.0.0.1:PORT``: the Bedrock Runtime endpoint to give a client."""
        return f"https://{self._host}:{self.port}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this simulator's CA and offers ALPN ``h2``."""
        ctx = ssl.create_default_context(cafile=self.ca_cert_pem_path)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def inject(self, fault: Fault) -> None:
        """Play ``fault`` (its kind, error code and message; its triggers are ignored) on every open stream now."""
        for conn in list(self._live):
            for stream in list(conn.streams.values()):
                if stream.session is not None and not stream.closed:
                    stream.session.inject(fault)
        await anyio.lowlevel.checkpoint()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; checked whenever a record changes. Bound it with ``anyio.fail_after``."""
        await self._changes.wait_until(predicate)

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        self._changes.notify()

    def _next_request_index(self) -> int:
        index = self._requests
        self._requests += 1
        return index

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        try:
            if stream.extra(TLSAttribute.alpn_protocol, None) != "h2":
                logger.info("closed a connection that did not negotiate h2")
                return
            conn = H2ServerConnection(self, stream)
            self._live.append(conn)
            try:
                await conn.run()
            finally:
                self._live.remove(conn)
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await anyio.aclose_forcefully(stream)
