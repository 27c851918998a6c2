"""How hard the agent tries to keep a connection: backoff, limits, and what
counts as a failed connection."""

from __future__ import annotations

import attrs

__all__ = ["ReconnectPolicy"]


@attrs.frozen
class ReconnectPolicy:
    """How hard to try when a connection fails.

    ``max_attempts`` consecutive failures to connect end the conversation
    with the last error. Delays grow from ``initial_backoff_s`` by
    ``multiplier`` up to ``max_backoff_s``. A provider's refusal that is not
    retryable (bad credentials) is never retried. A provider that says how
    long to wait (``Retry-After``) is waited for, at most
    ``max_retry_after_s``.

    A connection that opened and then ended counts as a failure only if the
    provider said nothing on it and it lasted less than ``stable_after_s``:
    a provider that accepts and drops at once must not reconnect in a tight
    loop forever, but a quiet one that ends an idle stream after minutes
    (Nova Sonic's silence timeout) is healthy, however often it happens.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0
    stable_after_s: float = 10.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based): the backoff, or
        longer when the provider asked for it (``Retry-After``), up to
        ``max_retry_after_s``."""
        backoff = float(min(self.initial_backoff_s * self.multiplier ** (attempt - 1), self.max_backoff_s))
        if retry_after_s is None:
            return backoff
        return max(backoff, min(float(retry_after_s), self.max_retry_after_s))
