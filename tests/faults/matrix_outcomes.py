"""What a user needs from each fault, as checks on a played case (:class:`~tests.faults.matrix_engine.Played`).

Five outcomes cover the service's faults: the conversation goes on over a
new connection (:class:`Reconnects`), goes on over the same one with an error
event (:class:`Continues`), gets through a refused or silent start
(:class:`Recovers`), ends because the service ended the session
(:class:`Ends`), or ends with a typed error (:class:`Fails`). Two more are the
application's own parts: a slow output (:class:`FastOutputUnaffected`) and a
tool that fails (:class:`ToolFails`). Every check that a conversation went on
also checks the user's lines: each reached the service exactly once, in order.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from bidi_core import BidiResponseCompleteEvent
from tests.faults.matrix_engine import (
    Outcome,
    Played,
    assert_the_fault_cut_a_response,
    assert_the_tool_result_arrived_once,
)
from tests.test_providers_common import _gemini_responses

__all__ = ["Continues", "Ends", "Fails", "FastOutputUnaffected", "Reconnects", "Recovers", "ToolFails"]


def _accepted(sim: Any) -> list[Any]:
    """The connections (streams, for Nova) the simulator accepted."""
    return list(sim.streams if hasattr(sim, "streams") else sim.connections)


def _refused(sim: Any) -> list[Any]:
    """The handshakes (requests, for Nova) the simulator refused."""
    return list(sim.refused if hasattr(sim, "refused") else sim.rejected)


def _went_on(played: Played) -> None:
    """The conversation went on: no error, every line once and in order, the last one answered."""
    assert played.error is None, repr(played.error)
    assert not played.ended_by_itself, played.closes()
    assert played.typed() == list(played.lines)
    assert played.answered(played.lines[-1])
    if played.case.script == "tool":
        assert_the_tool_result_arrived_once(played)


@attrs.frozen
class Reconnects(Outcome):
    """A new connection continues the conversation; the restart events carry ``reasons``.

    ``repeatable``: the fault is a silence only a read timeout notices, and on a busy machine
    another quiet moment may be read as one more (same reason): at least the ``reasons``, then.
    """

    reasons: tuple[str, ...] = ("connection_lost",)
    repeatable: bool = False

    @property
    def label(self) -> str:  # type: ignore[override]
        return "reconnects" if self.reasons == ("connection_lost",) else f"reconnects ({', '.join(self.reasons)})"

    def check(self, played: Played) -> None:
        _went_on(played)
        restarts = played.restarts()
        if self.repeatable:
            assert restarts[: len(self.reasons)] == list(self.reasons), restarts
            assert set(restarts) <= set(self.reasons), restarts
        else:
            assert restarts == list(self.reasons), restarts
        assert len(_accepted(played.sim)) >= 2
        if played.case.setup.mid_response:
            assert_the_fault_cut_a_response(played)


@attrs.frozen
class Continues(Outcome):
    """The same connection goes on; the user was told with an error event of ``code``."""

    code: str

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"error event {self.code}"

    def check(self, played: Played) -> None:
        _went_on(played)
        assert self.code in played.error_codes(), played.error_codes()
        assert played.restarts() == []
        assert len(_accepted(played.sim)) == 1


@attrs.frozen
class Recovers(Outcome):
    """The start failed ``refusals`` times (refused, or silent) and was retried; with ``wait_s``, the
    retry came no sooner than that after the refusal (its ``Retry-After``)."""

    refusals: int = 1
    wait_s: float | None = None
    silent: bool = False

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"retried after {self.wait_s:g} s" if self.wait_s else "retried"

    def check(self, played: Played) -> None:
        _went_on(played)
        accepted = _accepted(played.sim)
        if self.silent:
            assert len(accepted) == self.refusals + 1  # the silent one(s), then the one that answered
            return
        refused = _refused(played.sim)
        assert len(refused) == self.refusals
        assert len(accepted) == 1
        if self.wait_s is not None:
            # Both stamped by the simulator's monotonic clock; a busy machine only makes the gap longer.
            assert accepted[0].opened_at - refused[-1].at >= self.wait_s


@attrs.frozen
class Ends(Outcome):
    """The service ended the session: the conversation closes with ``reason`` by itself, nothing retried."""

    reason: str = "provider_closed"
    ends_by_itself = True

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"ends ({self.reason})"

    def check(self, played: Played) -> None:
        assert played.error is None, repr(played.error)
        assert played.ended_by_itself
        assert played.closes() == [self.reason]
        assert played.restarts() == []
        assert len(_accepted(played.sim)) == 1


WRONG_SECRETS = (
    "sk-wrong-key-abcdefghijklmnop",
    "AIza-wrong-key-abcdefghijklmnop",
    "wrong-secret-key-0000000000000000",
)
"""The wrong credentials of tests.test_providers_common's ``wrong_model``s: no error may quote them either."""


@attrs.frozen
class Fails(Outcome):
    """The conversation ends by itself with ``error`` (its class), whose text holds each of ``says`` and no
    secret. ``fatal``: not retried (the error says so, and the service was asked once, when it can
    tell: a TLS handshake that failed reached no record). ``closed``: the outputs were told
    (a close event, reason ``error``); an application's own failure is raised as itself instead,
    its outputs cancelled."""

    error: type[BaseException]
    says: tuple[str, ...] = ()
    fatal: bool = False
    closed: bool = True
    asked: int | None = None
    """How many times the service was asked (retried ``asked - 1`` times), when it must be exact."""
    ends_by_itself = True

    @property
    def label(self) -> str:  # type: ignore[override]
        tried = f", after {self.asked} attempts" if self.asked else ""
        return ("raises " if not self.closed else "") + self.error.__name__ + (", not retried" if self.fatal else tried)

    def check(self, played: Played) -> None:
        assert played.ended_by_itself
        assert isinstance(played.error, self.error), repr(played.error)
        text = str(played.error)
        for words in self.says:
            assert words in text, text
        for secret in (*played.provider.secrets, *WRONG_SECRETS):
            assert secret not in text
        if self.closed:
            assert played.closes() == ["error"], played.closes()
        asked = len(_accepted(played.sim)) + len(_refused(played.sim))
        if self.fatal:
            assert getattr(played.error, "retryable", None) is False
            assert asked <= 1, asked
        if self.asked is not None:
            assert asked == self.asked, asked


@attrs.frozen
class FastOutputUnaffected(Outcome):
    """An output stuck on its first event does not hold up another: the fast one saw the whole
    conversation meanwhile, and the slow one, let go, got the same events in the same order."""

    label = "fast output unaffected"

    def check(self, played: Played) -> None:
        _went_on(played)
        assert played.extra["slow_seen_when_fast_done"] == 1
        fast = played.out.events[: played.extra["fast_seen"]]
        assert any(isinstance(e, BidiResponseCompleteEvent) for e in fast)
        assert played.extra["slow_events"][: len(fast)] == fast


@attrs.frozen
class ToolFails(Outcome):
    """The tool failed (``says`` in its result): the model got an error result, the user a ``tool_error``
    event, and the conversation went on."""

    says: str

    @property
    def label(self) -> str:  # type: ignore[override]
        return "tool_error event, error result"

    def check(self, played: Played) -> None:
        assert played.error is None, repr(played.error)
        assert played.typed() == list(played.lines)
        assert played.answered(played.lines[-1])
        assert "tool_error" in played.error_codes()
        assert played.restarts() == []
        results = _tool_results(played)
        assert list(results) == ["call-1"]
        assert self.says in results["call-1"], results


def _tool_results(played: Played) -> dict[str, str]:
    """Call id -> the result the service received, as text (Gemini's error results have no ``output``)."""
    if played.provider.name == "gemini":
        return {r["id"]: json.dumps(r["response"]) for r in _gemini_responses(played.sim)}
    return played.provider.tool_results(played.sim)
