"""Signature checks: SigV4 on the request, then the chain of chunk signatures (docs/protocols/nova_sonic.md#signing).

The request signature is recomputed with botocore's ``SigV4Auth`` from the
headers the client *listed* in ``SignedHeaders`` (with the preset
``x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-EVENTS`` as the payload hash,
which botocore's canonical request takes verbatim). Its hex signature seeds the
chain: each event's signature covers the previous signature, the encoded
``:date`` header and the bytes of the inner message, so a dropped, reordered,
replayed or altered event breaks every signature after it.

This module is written from the protocol description, not from our client's
signer, and shares no code with it. Secrets never appear in the errors it raises.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping

import attrs
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from adapters.testing.nova_sonic_simulator.eventstream import Header, HeaderType, encode_headers

__all__ = ["AuthFailure", "ChunkChain", "RequestAuth", "verify_request"]

SERVICE = "bedrock"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
MAX_CLOCK_SKEW_S = 300.0
"""SigV4 requests older or newer than five minutes are refused (AWS's documented skew window)."""


class AuthFailure(Exception):
    """The request is refused before the stream starts: an HTTP status and the service's error type."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


@attrs.frozen(repr=False)
class RequestAuth:
    """What a verified request established: who signed it, and the seed of the chunk chain."""

    access_key_id: str
    secret: str
    region: str
    seed_signature: str

    def __repr__(self) -> str:
        return f"RequestAuth(access_key_id={self.access_key_id!r}, region={self.region!r}, secret=<redacted>)"


def _parse_authorization(value: str) -> tuple[str, list[str], list[str], str]:
    """``(credential parts, signed header names, ..., signature)`` of an ``AWS4-HMAC-SHA256`` header."""
    scheme, _, rest = value.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        raise AuthFailure(400, "IncompleteSignatureException", "Authorization header requires AWS4-HMAC-SHA256.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if not sep:
            continue
        fields[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise AuthFailure(
            400,
            "IncompleteSignatureException",
            f"Authorization header requires '{missing[0]}' parameter. Authorization=AWS4-HMAC-SHA256 <redacted>",
        )
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise AuthFailure(400, "IncompleteSignatureException", "Credential should be scoped to a valid region.")
    return credential[0], credential[1:4], fields["SignedHeaders"].split(";"), fields["Signature"]


def verify_request(
    *,
    method: str,
    authority: str,
    path: str,
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
    session_tokens: Mapping[str, str],
    region: str,
    now: datetime.datetime,
) -> RequestAuth:
    """Check the SigV4 signature of the request; :class:`AuthFailure` says why not, as the service would.

    ``headers`` are the request's regular headers, lower-case (``host`` is taken from ``:authority``).
    """
    authorization = headers.get("authorization")
    if authorization is None:
        raise AuthFailure(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    access_key, (date, scope_region, service), signed, signature = _parse_authorization(authorization)
    secret = credentials.get(access_key)
    if secret is None:
        raise AuthFailure(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    expected_token = session_tokens.get(access_key)
    if expected_token is not None and headers.get("x-amz-security-token") != expected_token:
        raise AuthFailure(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if scope_region != region or service != SERVICE:
        raise AuthFailure(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region and service '{SERVICE}'.",
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise AuthFailure(400, "IncompleteSignatureException", "X-Amz-Date is missing or malformed.") from None
    if amz_date[:8] != date:
        raise AuthFailure(403, "InvalidSignatureException", "Date in Credential scope does not match X-Amz-Date.")
    if abs((now - signed_at).total_seconds()) > MAX_CLOCK_SKEW_S:
        raise AuthFailure(403, "InvalidSignatureException", "Signature expired: the request time is too skewed.")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            raise AuthFailure(403, "InvalidSignatureException", f"'{required}' must be a signed header.")
    if headers.get("x-amz-content-sha256") != STREAMING_PAYLOAD or "x-amz-content-sha256" not in signed:
        raise AuthFailure(
            400, "ValidationException", f"x-amz-content-sha256 must be a signed header with {STREAMING_PAYLOAD}."
        )
    if "x-amz-security-token" in headers and "x-amz-security-token" not in signed:
        raise AuthFailure(403, "InvalidSignatureException", "'x-amz-security-token' must be a signed header.")

    request = AWSRequest(method=method, url=f"https://{authority}{path}")
    for name in signed:
        if name == "host":
            request.headers["host"] = authority
        elif name in headers:
            request.headers[name] = headers[name]
        else:
            raise AuthFailure(403, "InvalidSignatureException", f"Signed header {name!r} is missing.")
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret, headers.get("x-amz-security-token")), SERVICE, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise AuthFailure(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return RequestAuth(access_key_id=access_key, secret=secret, region=region, seed_signature=signature)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str) -> bytes:
    """``kSigning`` of SigV4 for ``date`` (``YYYYMMDD``)."""
    k_date = _hmac(f"AWS4{secret}".encode(), date)
    return _hmac(_hmac(_hmac(k_date, region), SERVICE), "aws4_request")


class ChunkChain:
    """Verifies event signatures in order; each verified signature becomes the next one's ``prior``."""

    def __init__(self, auth: RequestAuth) -> None:
        self._auth = auth
        self._prior = auth.seed_signature
        self._keys: dict[str, bytes] = {}
        self.verified = 0

    def expected(self, date_ms: int, inner: bytes) -> bytes:
        """The signature a correct signer puts on an event with this ``:date`` and inner message."""
        moment = datetime.datetime.fromtimestamp(date_ms / 1000, tz=datetime.UTC)
        amz = moment.strftime("%Y%m%dT%H%M%SZ")
        key = self._keys.get(amz[:8])
        if key is None:
            key = self._keys[amz[:8]] = signing_key(self._auth.secret, amz[:8], self._auth.region)
        date_header = encode_headers({":date": Header(HeaderType.TIMESTAMP, date_ms)})
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz,
                f"{amz[:8]}/{self._auth.region}/{SERVICE}/aws4_request",
                self._prior,
                hashlib.sha256(date_header).hexdigest(),
                hashlib.sha256(inner).hexdigest(),
            ]
        )
        return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()

    def verify(self, date_ms: int, signature: bytes, inner: bytes) -> bool:
        """True (and the chain advances) if ``signature`` is the next one in the chain."""
        expected = self.expected(date_ms, inner)
        if not hmac.compare_digest(expected, signature):
            return False
        self._prior = expected.hex()
        self.verified += 1
        return True
