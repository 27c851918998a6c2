"""SigV4 for the request, and the chain of per-event chunk signatures.

The HTTP/2 request is signed with botocore's :class:`SigV4Auth`, the payload
hash being the literal ``STREAMING-AWS4-HMAC-SHA256-EVENTS``. Its signature
seeds a chain: each event we send is wrapped in an outer message whose
``:chunk-signature`` header signs the event together with the previous
signature (docs/protocols/nova_sonic.md#signing, checked against the official SDK's
``AsyncEventSigner``)::

    sts = "AWS4-HMAC-SHA256-PAYLOAD\\n{amz}\\n{date}/{region}/bedrock/aws4_request\\n{prior}\\n"
          + sha256hex(headers(":date")) + "\\n" + sha256hex(event)
    sig = HMAC(kSigning, sts)

Nothing here logs: botocore's ``add_auth`` writes the signature to its DEBUG
log, so we run the same steps of ``SigV4Auth`` without that line.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable, Mapping

import attrs
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from adapters.nova_sonic.eventstream import encode_headers, encode_message

__all__ = [
    "SERVICE",
    "STREAMING_PAYLOAD",
    "AwsCredentials",
    "EventSigner",
    "SignedRequest",
    "sign_request",
    "signing_key",
]

SERVICE = "bedrock"
"""The signing name of Bedrock Runtime (not ``bedrock-runtime``)."""
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
_SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.frozen
class AwsCredentials:
    """One frozen set of AWS credentials; the secret parts are in no repr."""

    access_key: str
    secret_key: str = attrs.field(repr=False)
    token: str | None = attrs.field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The strings that must never reach a log or an error message."""
        return tuple(s for s in (self.secret_key, self.token) if s)


@attrs.frozen
class SignedRequest:
    """The headers to send (lower-cased, as HTTP/2 wants) and the seed of the chain."""

    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    seed_signature: str = attrs.field(repr=False)


class _QuietSigV4Auth(SigV4Auth):  # type: ignore[misc]
    """``SigV4Auth.add_auth`` minus its DEBUG lines (one prints the signature) and
    with the timestamp given, so tests can pin it."""

    def sign_at(self, request: AWSRequest, timestamp: str) -> str:
        request.context["timestamp"] = timestamp
        self._modify_request_before_signing(request)
        canonical = self.canonical_request(request)
        signature: str = self.signature(self.string_to_sign(request, canonical), request)
        self._inject_signature_to_request(request, signature)
        return signature


def sign_request(
    credentials: AwsCredentials,
    region: str,
    url: str,
    *,
    now: datetime.datetime | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> SignedRequest:
    """Sign ``POST url`` for an event stream; return the headers and the seed signature."""
    request = AWSRequest(
        method="POST",
        url=url,
        headers={
            "Content-Type": "application/vnd.amazon.eventstream",
            "X-Amz-Content-SHA256": STREAMING_PAYLOAD,
            **(extra_headers or {}),
        },
    )
    botocore_credentials = Credentials(credentials.access_key, credentials.secret_key, credentials.token)
    auth = _QuietSigV4Auth(botocore_credentials, SERVICE, region)
    timestamp = (now or _utcnow()).strftime(_SIGV4_TIMESTAMP)
    signature = auth.sign_at(request, timestamp)
    headers = tuple((name.lower(), str(value)) for name, value in request.headers.items())
    return SignedRequest(headers=headers, seed_signature=signature)


def signing_key(secret_key: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """SigV4's derived key for one day, region and service."""

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()

    return mac(mac(mac(mac(f"AWS4{secret_key}".encode(), date), region), service), "aws4_request")


class EventSigner:
    """Wraps each outgoing event in a signed message, continuing the chain.

    Not safe for concurrent use: the chain is an order, so the caller signs
    and sends one message at a time (the session holds a lock around both).
    ``clock`` returns the current UTC time (tests pin it).
    """

    def __init__(
        self,
        credentials: AwsCredentials,
        region: str,
        seed_signature: str,
        *,
        clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self._credentials = credentials
        self._region = region
        self._prior = seed_signature
        self._clock = clock
        self._key_date = ""
        self._key = b""

    def __repr__(self) -> str:
        return f"EventSigner(access_key={self._credentials.access_key!r}, region={self._region!r})"

    def _key_for(self, date: str) -> bytes:
        if date != self._key_date:
            self._key = signing_key(self._credentials.secret_key, date, self._region)
            self._key_date = date
        return self._key

    def sign(self, payload: bytes) -> bytes:
        """The outer message carrying ``payload`` (an encoded inner message, or
        ``b""`` for the end-of-input frame), with ``:date`` and ``:chunk-signature``."""
        now = self._clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        amz = now.strftime(_SIGV4_TIMESTAMP)
        date_header = {":date": now}
        string_to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz,
                f"{amz[:8]}/{self._region}/{SERVICE}/aws4_request",
                self._prior,
                hashlib.sha256(encode_headers(date_header)).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            )
        )
        signature = hmac.new(self._key_for(amz[:8]), string_to_sign.encode("utf-8"), hashlib.sha256).digest()
        self._prior = signature.hex()
        return encode_message({":date": now, ":chunk-signature": signature}, payload)
