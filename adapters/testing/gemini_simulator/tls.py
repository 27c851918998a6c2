"""A throwaway certificate authority for the TLS simulator, made at start-up with ``trustme``.

google-genai rewrites any API-key base URL to ``wss://`` (docs/protocols/gemini.md#official-client), so the
simulator must speak TLS for the official client; our own client can use
``ws://`` for speed. The CA lives only as long as the simulator: its PEM is
written to a private temporary directory (for clients that want a path) and
removed on exit. The server certificate names ``127.0.0.1`` and ``localhost``.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

import trustme

__all__ = ["Authority"]


class Authority:
    """The CA, the server's TLS context, and the client-side trust that goes with them."""

    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="bidi-core Gemini Live simulator")
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = Path(tempfile.mkdtemp(prefix="gemini-sim-ca-"))
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
