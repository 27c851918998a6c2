"""How the conversation drives its outbox: what the user said or a tool
returned enters it, goes to the open connection up to the send window, and
joins the history at hand-off; what a result for a gone call becomes. (The
outbox itself, :mod:`bidi_core.outbox`, only keeps the stages.)"""

from __future__ import annotations

import json
from typing import Any

from bidi_core.effects import (
    AppendHistory,
    Effect,
    Emit,
    SendToModel,
)
from bidi_core.outbox import Entry
from bidi_core.shell_events import (
    InvalidInput,
    UserInput,
    Written,
)
from bidi_core.state import (
    LIVE_PHASES,
    UNCONFIRMED_SLACK,
    Conversation,
    Result,
    with_outbox,
)
from ports.events import (
    BidiErrorEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
)
from ports.messages import Message, TextMessage, ToolResultMessage


def orphaned_result_text(result: BidiToolResultEvent) -> str:
    """What the model reads when a tool outlived the connection that called it.

    A new connection (a fresh session, or a resumed one, whose provider issues
    no resumption handle while calls are pending) never issued that call and
    refuses a result naming it; the history tells the model the call was made,
    so its outcome goes in as the user's text.
    """
    content = result.content
    body = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)
    return f"(The tool {result.name} returned {result.status}: {body})"


def history_of(item: object) -> Message | None:
    """What an outbox item adds to the history when it is written."""
    if isinstance(item, BidiTextInputEvent):
        return TextMessage(role="user", text=item.text)
    if isinstance(item, BidiToolResultEvent):
        return ToolResultMessage(item.tool_use_id, item.name, item.status, item.content)
    return None


def accept(conv: Conversation, item: Any, issued_on: str | None = None) -> Result:
    """Take ``item`` into the outbox; hand it to the connection if one is open."""
    config, box = conv.config, conv.outbox
    if (
        conv.phase in LIVE_PHASES
        and not isinstance(item, BidiToolResultEvent)  # a result may be record-only: the general path
        and box.can_hand_at_once(item, config.max_buffered_audio, config.send_window)
        and not (box.in_flight and record_only(conv, box.in_flight[0]))
    ):
        # User input on a live connection with room: one copy of the outbox and of the state, the
        # same result as the general path below (tests/test_outbox.py checks it). User input was
        # issued by no connection (only a tool result has ``issued_on``).
        box, entry = box.accept_in_flight(item, history_of(item))
        return with_outbox(conv, box), send_entry(conv, entry)
    box = box.accept(item, config.max_buffered_audio, history_of(item), issued_on)
    return hand_off(with_outbox(conv, box))


def hand_off(conv: Conversation) -> Result:
    """Give the open connection's writer what waits, up to the send window."""
    if conv.phase not in LIVE_PHASES or not conv.outbox.waiting:
        return conv, ()
    box, entries = conv.outbox.hand(conv.config.send_window)
    conv = with_outbox(conv, box)
    effects: list[Effect] = []
    for entry in entries:
        effects += send_entry(conv, entry)
    settled = settle_unsent(conv)
    if len(settled.outbox.in_flight) < len(conv.outbox.in_flight) and settled.outbox.waiting:
        settled, more = hand_off(settled)  # the window has room again
        effects += more
    return settled, tuple(effects)


def record_only(conv: Conversation, entry: Entry) -> bool:
    """A cancelled result for a call of an earlier connection: nobody on this
    connection waits for it, so it is recorded (the history keeps the pair) and
    never sent."""
    item = entry.item
    return (
        isinstance(item, BidiToolResultEvent) and item.status == "cancelled" and entry.issued_on != conv.connection_id
    )


def send_entry(conv: Conversation, entry: Entry) -> tuple[Effect, ...]:
    """Hand one entry to the writer; its history is recorded now, so the
    history keeps the order things were said in."""
    recorded: tuple[Effect, ...] = (AppendHistory(entry.history),) if entry.history is not None else ()
    if record_only(conv, entry):
        return recorded
    item = entry.item
    if isinstance(item, BidiToolResultEvent) and entry.issued_on != conv.connection_id:
        item = BidiTextInputEvent(text=orphaned_result_text(item))
    return (*recorded, SendToModel(item, entry.seq))


def settle_unsent(conv: Conversation) -> Conversation:
    """Record-only entries leave the outbox once everything handed before them
    was written (until then a lost connection retracts them with the others,
    so the history keeps its order); they never count as written."""
    box = conv.outbox
    while box.in_flight and record_only(conv, box.in_flight[0]):
        box = box.withdraw(box.in_flight[0].seq)
    return conv if box is conv.outbox else with_outbox(conv, box)


def written(conv: Conversation, seq: int) -> Result:
    """Entry ``seq`` reached the provider: forget it (or keep it for a resumed
    session until the provider confirms it). One whose connection ended while
    it was being written had its history retracted: it did arrive, so the
    record comes back."""
    keep = conv.config.max_buffered_audio + UNCONFIRMED_SLACK if conv.capabilities.resumable else None
    box, entry, returned = conv.outbox.mark_written(seq, keep)
    conv = settle_unsent(with_outbox(conv, box))
    if returned and entry is not None and entry.history is not None:
        return conv, (AppendHistory(entry.history),)
    return conv, ()


# --------------------------------------------------------------------------- handlers: user input


def user_input(conv: Conversation, ev: UserInput) -> Result:
    return accept(conv, ev.event)


def item_written(conv: Conversation, ev: Written) -> Result:
    conv, recorded = written(conv, ev.seq)
    conv, sent = hand_off(conv)
    return conv, recorded + sent


def invalid_input(conv: Conversation, ev: InvalidInput) -> Result:
    # A bad message from a client (say, a browser socket) must not end the conversation.
    return conv, (Emit(BidiErrorEvent(message=ev.message, code="invalid_input")),)
