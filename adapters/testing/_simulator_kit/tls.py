"""A throwaway certificate authority for a WebSocket simulator's TLS, made at start-up with ``trustme``.

google-genai rewrites any API-key base URL to ``wss://`` (docs/protocols/gemini.md#official-client), so the
Gemini simulator must speak TLS for the official client; the OpenAI simulator
offers it for the faults that need it (a TLS connection closed without
``close_notify``, a certificate the client does not trust). Our own client can
use ``ws://`` for speed. The CA lives only as long as the simulator: its PEM is
written to a private temporary directory (for clients that want a path) and
removed on exit. The server certificate names ``127.0.0.1`` and ``localhost``.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
from pathlib import Path

import anyio
import anyio.abc
import trustme
from anyio.streams.tls import TLSStream

__all__ = ["Authority", "accept_tls"]

TLS_HANDSHAKE_TIMEOUT_S = 10.0


class Authority:
    """The CA, the server's TLS context, and the client-side trust that goes with them."""

    def __init__(self, name: str = "Gemini Live", prefix: str = "gemini-sim-ca-") -> None:
        self._ca = trustme.CA(organization_name=f"bidi-core {name} simulator")
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.ca_cert_pem_path = self._dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_cert_pem_path))

    def server_context(self) -> ssl.SSLContext:
        """A server context with the issued certificate; HTTP/1.1 only (WebSocket upgrades need it)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A default client context that trusts this CA (and nothing else)."""
        ctx = ssl.create_default_context()
        self._ca.configure_trust(ctx)
        return ctx

    def remove(self) -> None:
        """Delete the PEM written for clients."""
        shutil.rmtree(self._dir, ignore_errors=True)


async def accept_tls(
    tcp: anyio.abc.SocketStream, context: ssl.SSLContext, logger: logging.Logger
) -> anyio.abc.ByteStream | None:
    """``tcp`` with the server's side of TLS on it; None if the handshake failed (a client that does not
    trust the CA, say) or took longer than :data:`TLS_HANDSHAKE_TIMEOUT_S`.

    Not "standard compatible": closing sends no ``close_notify``, as a service whose connection drops
    does, and a client's missing one is no error."""
    with anyio.move_on_after(TLS_HANDSHAKE_TIMEOUT_S):
        try:
            return await TLSStream.wrap(tcp, server_side=True, ssl_context=context, standard_compatible=False)
        except (ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            logger.info("TLS handshake failed: %s", exc)
    return None
