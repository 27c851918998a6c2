"""What the core decides when the application's hooks refuse a call or fail, step by step.

The shell reports facts (``ToolRefused``: a ``before_tool_call`` hook refused,
or raised; ``HookFailed``: any other hook raised); the core answers the model
(an error result in the hook's words, or in ours when the check itself
failed, so the model is never left waiting), tells the user about a failure
(a ``hook_error`` event), and goes on. Every step compares the whole
:class:`Conversation` and the exact effects (:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

import pytest

from bidi_core.conversation import Phase
from bidi_core.effects import AppendHistory, Emit, SendToModel
from bidi_core.outbox import Entry, Outbox
from bidi_core.shell_events import HookFailed, ToolRefused
from ports.events import BidiErrorEvent, BidiToolResultEvent
from ports.messages import ToolResultMessage
from tests.conversation_support import connected, evolve, expect, tool_use


def _answered(tool_use_id: str, name: str, content: str) -> tuple[BidiToolResultEvent, ToolResultMessage]:
    result = BidiToolResultEvent(tool_use_id, name, "error", content)
    return result, ToolResultMessage(tool_use_id, name, "error", content)


@pytest.mark.parametrize(
    ("message", "words"),
    [("Ask the user first.", "Ask the user first."), (None, "The call to transfer was refused.")],
    ids=["in-the-hook's-words", "in-ours"],
)
def test_a_refused_call_is_answered_with_an_error_result_and_the_turn_goes_on(message: str | None, words: str) -> None:
    conv = tool_use(connected(), "t1", "transfer", amount=5)
    result, recorded = _answered("t1", "transfer", words)
    expect(
        conv,
        ToolRefused("t1", message=message),
        evolve(
            conv,
            phase=Phase.LISTENING,
            pending_tools=frozenset(),
            outbox=Outbox((), (Entry(0, result, recorded, "c1"),), next_seq=1),
        ),
        (Emit(result), AppendHistory(recorded), SendToModel(result, 0)),
    )


@pytest.mark.parametrize(
    ("detail", "told"),
    [("KeyError: 'account'", "KeyError: 'account'"), (None, "KeyError")],
    ids=["with-detail", "without"],
)
def test_a_check_that_fails_never_lets_the_call_run_and_the_user_hears_of_it(detail: str | None, told: str) -> None:
    """The model gets our words (never the exception's, which may hold data); the user gets an error event
    naming the hook, the tool and what went wrong. Another call still running keeps the turn."""
    conv = tool_use(tool_use(connected(), "t1", "transfer"), "t2", "lookup")
    result, recorded = _answered("t1", "transfer", "The tool call was not run: the check before it failed (KeyError).")
    error = BidiErrorEvent(f"before_tool_call hook failed for transfer: {told}", code="hook_error", details="KeyError")
    running = frozenset(c for c in conv.pending_tools if c.tool_use_id == "t2")
    expect(
        conv,
        ToolRefused("t1", error_type="KeyError", detail=detail),
        evolve(conv, pending_tools=running, outbox=Outbox((), (Entry(0, result, recorded, "c1"),), next_seq=1)),
        (Emit(error), Emit(result), AppendHistory(recorded), SendToModel(result, 0)),
    )


def test_a_refusal_for_a_call_no_longer_running_changes_nothing() -> None:
    """The call was withdrawn or answered already (the refusal raced with it): nothing to answer."""
    conv = tool_use(connected(), "t1", "transfer")
    expect(conv, ToolRefused("t2", message="no"), conv)


@pytest.mark.parametrize(
    ("detail", "told"), [("ValueError: bad", "ValueError: bad"), ("", "ValueError")], ids=["with-detail", "without"]
)
def test_a_failing_hook_is_reported_and_the_conversation_goes_on(detail: str, told: str) -> None:
    conv = tool_use(connected(), "t1", "transfer")
    error = BidiErrorEvent(f"after_tool_call hook failed: {told}", code="hook_error", details="ValueError")
    expect(conv, HookFailed("after_tool_call", "ValueError", detail), conv, (Emit(error),))
