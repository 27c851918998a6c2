"""The conversation's connections: when to connect, reconnect, back off and
give up; rotation before a provider's limit; leaving a connection; closing
the conversation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from bidi_core.effects import (
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    CloseConnection,
    Effect,
    Emit,
    OpenConnection,
    RetractHistory,
    StartTimer,
)
from bidi_core.outbox_rules import (
    hand_off,
)
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    Started,
    StopRequested,
    TimerFired,
)
from bidi_core.state import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    CONNECTION_TIMERS,
    GRACEFUL,
    ROTATION_TIMER,
    STABLE_TIMER,
    Conversation,
    Phase,
    Result,
    remember_interrupted,
)
from ports.errors import BidiConnectionError, BidiProtocolError, BidiProviderError, BidiResumptionRejectedError
from ports.events import (
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiResponseCompleteEvent,
    BidiResumptionUpdateEvent,
    StopReason,
)


def margin(margin_s: float, limit_s: float) -> float:
    """How long before a connection limit to start rotating: the configured
    margin, but never more than a tenth of the limit (a short limit would
    otherwise rotate the moment a connection opens, forever)."""
    return min(margin_s, limit_s / 10)


def retryable(error: BaseException) -> bool:
    """Whether another connection may help after ``error``. A message we
    could not understand is worth a fresh connection; an exception that is no
    :class:`BidiError` is a bug in an adapter, and hiding it would hide the bug."""
    if isinstance(error, BidiProtocolError):
        return True
    if isinstance(error, BidiProviderError | BidiConnectionError):
        return error.retryable  # the only errors that say whether retrying may help
    return False  # a usage error included


def open(conv: Conversation) -> Effect:
    return OpenConnection(conv.resume_handle)


def retry_later(conv: Conversation, error: BaseException, effects: Iterable[Effect]) -> Result:
    """Count a failed attempt: back off before the next one, or, after
    ``max_attempts`` in a row, give up with ``error``."""
    failures = conv.failures + 1
    policy = conv.config.reconnect
    conv = attrs.evolve(conv, failures=failures)
    if failures >= policy.max_attempts:
        return close(conv, "error", error, effects)
    wait = policy.delay(failures, getattr(error, "retry_after_s", None))
    return conv, (*effects, StartTimer(BACKOFF_TIMER, wait))


# --------------------------------------------------------------------------- handlers: connections


def started(conv: Conversation, ev: Started) -> Result:
    declared = ev.outputs_report_playback
    conv = attrs.evolve(conv, tracks_playback=declared is True, audio_unobserved=declared is False)
    return conv, (open(conv),)


def connected(conv: Conversation, ev: Connected) -> Result:
    resumed = conv.resume_handle is not None
    effects: list[Effect] = [Emit(BidiConnectionStartEvent(connection_id=ev.connection_id, model=ev.model))]
    limit = ev.capabilities.max_connection_s
    if limit is not None:
        effects.append(StartTimer(CONNECTION_AGE_TIMER, limit - margin(conv.config.rotation_margin_s, limit)))
    effects.append(StartTimer(STABLE_TIMER, conv.config.reconnect.stable_after_s))
    conv = attrs.evolve(
        conv,
        phase=Phase.LISTENING,
        capabilities=ev.capabilities,
        connection_id=ev.connection_id,
        response_id=None,
        interrupted_ids=(),  # response ids belong to a connection
        rotation_due=None,
        connection_proven=False,
        outbox=conv.outbox.begin_connection(resumed),
    )
    conv, sent = hand_off(conv)
    return conv, (*effects, *sent)


def connect_failed(conv: Conversation, ev: ConnectFailed) -> Result:
    if isinstance(ev.error, BidiResumptionRejectedError):
        # Not a failure: the provider is there, it only forgot the session. The
        # next attempt, at once, opens a fresh one seeded with the history.
        details = f"{ev.error}; starting a fresh session seeded with the history"
        conv = attrs.evolve(conv, resume_handle=None)
        return conv, (Emit(BidiConnectionRestartEvent(reason="resumption_rejected", details=details)), open(conv))
    if not retryable(ev.error):
        return close(conv, "error", ev.error, ())
    return retry_later(conv, ev.error, ())


def connection_ended(conv: Conversation, ev: ConnectionEnded) -> Result:
    if ev.connection_id != conv.connection_id:
        return conv, ()  # a connection the core had already left
    if ev.error is None:
        # The service ended the session for good (the adapter tells that from the
        # endings a new connection may continue): so does the conversation.
        return close(conv, "provider_closed", None, ())
    if not retryable(ev.error):
        return close(conv, "error", ev.error, ())
    details = str(ev.error)
    proven = conv.connection_proven
    conv, effects = leave(conv, "connection_lost", details)
    if proven:
        return conv, (*effects, open(conv))
    # Lost before the provider said anything, and soon: back off as for a failed connect.
    error = BidiConnectionError(f"the connection failed {conv.failures + 1} times in a row: {details}")
    return retry_later(conv, error, effects)


def stable(conv: Conversation, ev: TimerFired) -> Result:
    return attrs.evolve(conv, connection_proven=True, failures=0), ()


def backoff_over(conv: Conversation, ev: TimerFired) -> Result:
    return conv, (open(conv),)


def leave(conv: Conversation, reason: str, details: str | None) -> Result:
    """Leave the current connection. A response in flight is cut off: its
    audio is discarded and it completes with ``error`` (``interrupted`` if it
    was). The audio of a finished response plays on (a rotation at a turn
    boundary must not cut off the answer the user is hearing); it now belongs
    to an earlier connection. What the writer had not written waits again."""
    effects: list[Effect] = []
    if conv.response_id is not None:
        rid = conv.response_id
        cut: StopReason = "interrupted" if conv.phase is Phase.INTERRUPTED else "error"
        effects = [ClearPlayback(rid), Emit(BidiResponseCompleteEvent(response_id=rid, stop_reason=cut))]
        conv = attrs.evolve(
            conv, interrupted_ids=remember_interrupted(conv, rid), audible_id=None, played_ms=0.0, received_ms=0.0
        )
    elif conv.audible_id is not None:
        conv = attrs.evolve(conv, audible_from_old_connection=True)
    effects += [CancelTimer(name) for name in CONNECTION_TIMERS]
    effects += [Emit(BidiConnectionRestartEvent(reason=reason, details=details)), CloseConnection(reason)]
    effects += [RetractHistory(e.history) for e in reversed(conv.outbox.in_flight) if e.history is not None]
    conv = attrs.evolve(
        conv,
        phase=Phase.RESTARTING,
        response_id=None,
        rotation_due=None,
        connection_id=None,
        outbox=conv.outbox.leave_connection(),
    )
    return conv, tuple(effects)


def rotate(conv: Conversation, details: str) -> Result:
    """Replace a healthy connection now (its limit is near)."""
    conv, effects = leave(conv, "expiring", details)
    return conv, (*effects, open(conv))


def expiring(conv: Conversation, ev: BidiConnectionExpiringEvent) -> Result:
    """Rotate at the next turn boundary (a settling rule), but before the deadline."""
    grace = max(ev.time_left_s - 1.0, 0.0)
    why = f"provider closes in {ev.time_left_s:g}s"
    return attrs.evolve(conv, rotation_due=why), (StartTimer(ROTATION_TIMER, grace),)


def connection_age(conv: Conversation, ev: TimerFired) -> Result:
    limit = conv.capabilities.max_connection_s or conv.config.rotation_margin_s
    return expiring(conv, BidiConnectionExpiringEvent(time_left_s=margin(conv.config.rotation_margin_s, limit)))


def rotation_deadline(conv: Conversation, ev: TimerFired) -> Result:
    if conv.rotation_due is None:
        return conv, ()
    return rotate(conv, "connection limit reached mid-turn")


def resume_handle(conv: Conversation, ev: BidiResumptionUpdateEvent) -> Result:
    return attrs.evolve(conv, resume_handle=ev.handle, outbox=conv.outbox.confirm(ev.inputs_included)), ()


def close(conv: Conversation, reason: Any, error: BaseException | None, effects: Iterable[Effect]) -> Result:
    """End the conversation. A graceful end lets the last words play out; any
    other end silences the outputs."""
    effects = list(effects)
    if conv.audible_id is not None and reason not in GRACEFUL:
        effects.append(ClearPlayback(conv.audible_id))
    if conv.response_id is not None:
        # Every response start gets its completion, also when the conversation ends mid-response.
        effects.append(Emit(BidiResponseCompleteEvent(response_id=conv.response_id, stop_reason="interrupted")))
    effects += [CancelTool(c.tool_use_id) for c in sorted(conv.pending_tools, key=lambda c: c.tool_use_id)]
    effects += [CancelTimer(name) for name in (*CONNECTION_TIMERS, BACKOFF_TIMER)]
    effects += [Emit(BidiConnectionCloseEvent(reason=reason, connection_id=conv.connection_id)), Close(reason, error)]
    new = attrs.evolve(
        conv,
        phase=Phase.CLOSED,
        response_id=None,
        audible_id=None,
        audible_from_old_connection=False,
        pending_tools=frozenset(),
        withdrawn_tools=frozenset(),
        outbox=conv.outbox.clear(),
        rotation_due=None,
    )
    return new, tuple(effects)


def stop(conv: Conversation, ev: StopRequested) -> Result:
    return close(conv, ev.reason, None, ())
