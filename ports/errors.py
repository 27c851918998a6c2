"""The error tree, typed by who is to blame.

Adapters raise these; the core handles them; users catch them. Every message
is written for the person reading a traceback, and none ever contains a
credential: adapters pass secrets through :func:`redact` before they build a
message from anything that might hold one.
"""

from __future__ import annotations

import re

__all__ = [
    "BidiConnectionError",
    "BidiError",
    "BidiProtocolError",
    "BidiProviderError",
    "BidiResumptionRejectedError",
    "BidiToolError",
    "BidiUsageError",
    "redact",
]


class BidiError(Exception):
    """Base class of every error bidi-core raises on purpose."""


class BidiUsageError(BidiError):
    """The caller used the API wrongly: bad argument, wrong order, wrong task.

    Fix the calling code; retrying will not help.
    """


class BidiProviderError(BidiError):
    """The provider refused: bad credentials, quota, an invalid request.

    ``code`` and ``message`` are the provider's own. ``retryable`` says whether
    the same request may succeed later (a provider's internal error) or never
    will (authentication, invalid argument). ``retry_after_s`` is how long the
    provider asked us to wait first (an HTTP ``Retry-After``), if it did.
    """

    def __init__(
        self, message: str, *, code: str | None = None, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code else self.message


class BidiResumptionRejectedError(BidiProviderError):
    """The provider refused to resume a session from its handle (expired, unknown).

    Raised when entering :meth:`~ports.model.BidiModel.connect`. The core
    answers by opening a fresh session seeded with the history, at once, and
    says so in a ``BidiConnectionRestartEvent`` with reason
    ``"resumption_rejected"``.
    """

    def __init__(self, message: str, *, code: str | None = "resumption_rejected") -> None:
        super().__init__(message, code=code, retryable=True)


class BidiProtocolError(BidiError):
    """The provider sent something we cannot understand.

    ``raw`` keeps the start of the offending message (at most 500 characters)
    for the bug report.
    """

    RAW_LIMIT = 500

    def __init__(self, message: str, *, raw: str | bytes | None = None) -> None:
        super().__init__(message)
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        self.raw = raw[: self.RAW_LIMIT] if raw is not None else None


class BidiConnectionError(BidiError):
    """The transport failed: refused, reset, timed out, closed mid-stream.

    ``retryable`` is True when reconnecting may help (the default for
    transport faults). ``retry_after_s`` is how long the server asked us to
    wait first (an HTTP ``Retry-After`` on a 503), if it did.
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class BidiToolError(BidiError):
    """A tool could not be run: unknown name, bad arguments, it raised, it timed out."""


_SECRET_PARAMS = re.compile(
    r"(?i)((?:api[_-]?key|key|token|access[_-]?token|signature|x-amz-security-token"
    r"|x-amz-signature|authorization|secret)=)[^&\s]+"
)


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with every given secret and every credential-like query
    parameter replaced by ``***``.

    Secrets shorter than four characters are ignored: replacing "a" everywhere
    would make the message unreadable without protecting anything.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_PARAMS.sub(r"\1***", text)
