"""What a web server allows a client: one frozen value, read by the I/O and by the app."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["WebLimits"]


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class WebLimits:
    """Per worker (process) and per conversation limits.

    Admission (the app): ``max_conversations`` open at once per worker; beyond
    it the WebSocket handshake is refused with HTTP 503 and ``Retry-After:
    retry_after_s``. ``max_duration_s``: a conversation's time limit.
    ``idle_timeout_s``: the longest the client may send neither audio nor
    text. ``drain_s``: on shutdown, how long running conversations may go on
    before they are closed. ``close_grace_s``: how long a conversation told to
    end may take to close politely before it is cancelled.

    Input (the I/O): ``max_frame_bytes`` per WebSocket message;
    ``max_messages_per_s`` (with a burst of ``message_burst``) frames of any
    kind; audio at most ``max_audio_speed`` times real time (with
    ``audio_burst_ms`` saved up). What exceeds them is dropped with an
    ``error`` to the client; a client that keeps flooding (more than twice the
    message rate for about ``flood_close_s``) is disconnected (close code 1008).
    ``start_timeout_s``: how long the client has to send ``start``.
    """

    max_conversations: int = attrs.field(default=50, validator=_positive)
    retry_after_s: int = attrs.field(default=5, validator=_positive)
    max_duration_s: float | None = attrs.field(default=30 * 60.0, validator=_positive)
    idle_timeout_s: float | None = attrs.field(default=60.0, validator=_positive)
    drain_s: float = attrs.field(default=30.0, validator=_positive)
    close_grace_s: float = attrs.field(default=5.0, validator=_positive)
    max_frame_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    max_messages_per_s: float = attrs.field(default=100.0, validator=_positive)
    message_burst: float = attrs.field(default=200.0, validator=_positive)
    max_audio_speed: float = attrs.field(default=2.0, validator=_positive)
    audio_burst_ms: float = attrs.field(default=5000.0, validator=_positive)
    flood_close_s: float = attrs.field(default=10.0, validator=_positive)
    start_timeout_s: float = attrs.field(default=10.0, validator=_positive)

    def for_client(self) -> dict[str, float | int | None]:
        """The limits a client is told in the ``session`` message."""
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_messages_per_s": self.max_messages_per_s,
            "idle_timeout_s": self.idle_timeout_s,
            "max_duration_s": self.max_duration_s,
        }
