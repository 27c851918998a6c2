"""Is it Twilio? ``X-Twilio-Signature`` on the voice webhook and on the stream's WebSocket upgrade.

Twilio signs each request with the account's auth token: base64 of
HMAC-SHA1(token, the full URL it requested followed by every POST parameter,
sorted by name, each name immediately followed by its value)
(docs/protocols/twilio.md#request-signatures). The URL is the one Twilio
called, which behind a proxy or tunnel is not the one the server sees: the
bridge is told its public URL. Like Twilio's own libraries we accept the URL
with and without the scheme's default port (docs/protocols/twilio.md#request-signatures).

Each stream also carries a per-call token of ours as a ``<Parameter>``
(:func:`call_token`): the webhook, whose signature is checked, hands it out,
and the stream's ``start`` must bring it back for the same call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from adapters.web.auth import Accept, AuthHook, Handshake, Refuse

__all__ = ["SIGNATURE_HEADER", "call_token", "compute_signature", "signature_valid", "stream_signature_auth"]

SIGNATURE_HEADER = "x-twilio-signature"

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def compute_signature(auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> str:
    """The signature Twilio sends for a request to ``url`` with these POST parameters."""
    pairs = sorted(params.items() if isinstance(params, Mapping) else params)
    data = url + "".join(name + value for name, value in pairs)
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """``url`` as given, without its scheme's default port, and with it."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if default is not None:
        if parts.port is None:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
        elif parts.port == default:
            variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


def signature_valid(
    auth_token: str, signature: str | None, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]] = ()
) -> bool:
    """Whether ``signature`` is Twilio's for this request (compared in constant time; None is never valid)."""
    if not signature:
        return False
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    given = signature.encode()
    return any(
        hmac.compare_digest(compute_signature(auth_token, candidate, pairs).encode(), given)
        for candidate in _port_variants(url)
    )


def stream_signature_auth(auth_token: str, stream_url: str) -> AuthHook:
    """An auth hook for the stream's WebSocket upgrade: Twilio's signature of ``stream_url`` (no parameters).

    Twilio tells Media Streams servers to check the header
    (docs/protocols/twilio.md#request-signatures); the URL it signs for the
    upgrade is our reading (the ``wss://`` URL of the ``<Stream>``), so the
    ``https://`` spelling of the same URL is accepted too.
    """
    parts = urlsplit(stream_url)
    alternate = urlunsplit(parts._replace(scheme={"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)))

    def check(handshake: Handshake) -> Accept | Refuse:
        signature = handshake.headers.get(SIGNATURE_HEADER)
        if signature_valid(auth_token, signature, stream_url) or signature_valid(auth_token, signature, alternate):
            return Accept(identity="twilio")
        return Refuse(403, "twilio_signature")

    return check


def call_token(auth_token: str, call_sid: str) -> str:
    """The per-call token the webhook puts in the ``<Stream>`` and the stream's ``start`` must bring back."""
    return hmac.new(auth_token.encode(), b"bidi-core stream " + call_sid.encode(), hashlib.sha256).hexdigest()
