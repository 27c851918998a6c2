"""The outbox, step by step: what the user said before a connection opened
goes out first and in order; the send window bounds what the writer holds;
each item is ``SendToModel(item, seq)`` and the shell reports ``Written(seq)``;
user text (and tool results) join the history when handed to a live
connection and are retracted if it ends before writing them (and recorded
again if the write is reported late); a provider that resumes sessions gets
what it has not confirmed again; the audio cap holds over every stage.

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

from bidi_core.conversation import BACKOFF_TIMER, STABLE_TIMER, Conversation, ConversationConfig, Phase, step
from bidi_core.effects import AppendHistory, Emit, OpenConnection, RetractHistory, SendToModel, StartTimer
from bidi_core.outbox import Entry, Outbox
from bidi_core.shell_events import Connected, ConnectionEnded, TimerFired, ToolCancelled, UserInput, Written
from ports.errors import BidiConnectionError
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionStartEvent,
    BidiResumptionUpdateEvent,
    BidiTextInputEvent,
)
from ports.messages import TextMessage, ToolResultMessage
from ports.model import ModelCapabilities
from tests.conversation_support import (
    connected,
    cut_off,
    evolve,
    expect,
    heard,
    left,
    responding,
    started,
    text,
    tool_use,
)

RESUMABLE = ModelCapabilities(resumable=True)


def audio(n: int) -> BidiAudioInputEvent:
    return BidiAudioInputEvent(bytes([n, 0]) * 8)


def said(seq: int, s: str) -> Entry:
    return Entry(seq, BidiTextInputEvent(s), TextMessage("user", s))


def opened(connection_id: str = "c2") -> tuple[Emit, StartTimer]:
    return Emit(BidiConnectionStartEvent(connection_id, "m")), StartTimer(STABLE_TIMER, 10.0)


def test_input_while_connecting_is_flushed_in_order_on_connect() -> None:
    conv = started(ConversationConfig(max_buffered_audio=2))
    a1, a2, a3 = audio(1), audio(2), audio(3)
    one, two = said(0, "one"), said(3, "two")
    conv = expect(conv, text("one"), evolve(conv, outbox=Outbox((one,), next_seq=1)))
    conv = expect(conv, UserInput(a1), evolve(conv, outbox=Outbox((one, Entry(1, a1)), next_seq=2, audio=1)))
    conv = expect(
        conv, UserInput(a2), evolve(conv, outbox=Outbox((one, Entry(1, a1), Entry(2, a2)), next_seq=3, audio=2))
    )
    conv = expect(
        conv, text("two"), evolve(conv, outbox=Outbox((one, Entry(1, a1), Entry(2, a2), two), next_seq=4, audio=2))
    )
    # The third audio block is over the cap: the oldest audio goes, text stays.
    waiting = (one, Entry(2, a2), two, Entry(4, a3))
    conv = expect(conv, UserInput(a3), evolve(conv, outbox=Outbox(waiting, next_seq=5, audio=2, dropped_audio=1)))
    # The connection opens: everything goes out, in order; text is recorded as it is handed over.
    conv = expect(
        conv,
        Connected("c1", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c1",
            outbox=Outbox((), waiting, next_seq=5, audio=2, dropped_audio=1),
        ),
        (
            *opened("c1"),
            AppendHistory(TextMessage("user", "one")),
            SendToModel(BidiTextInputEvent("one"), 0),
            SendToModel(a2, 2),
            AppendHistory(TextMessage("user", "two")),
            SendToModel(BidiTextInputEvent("two"), 3),
            SendToModel(a3, 4),
        ),
    )
    for n, seq in enumerate((0, 2, 3, 4), start=1):
        box = conv.outbox
        conv = expect(
            conv,
            Written(seq),
            evolve(conv, outbox=evolve(box, in_flight=box.in_flight[1:], written=n, audio=box.audio - (seq in (2, 4)))),
        )
    assert conv.outbox == Outbox(next_seq=5, written=4, dropped_audio=1)
    # The next block goes straight out (the window has room); the drop stays counted.
    a4 = audio(4)
    expect(
        conv,
        UserInput(a4),
        evolve(conv, outbox=Outbox((), (Entry(5, a4),), next_seq=6, audio=1, written=4, dropped_audio=1)),
        (SendToModel(a4, 5),),
    )


def test_the_send_window_bounds_what_the_writer_holds() -> None:
    conv = connected(conv=started(ConversationConfig(send_window=2)))
    a, b, c = said(0, "a"), said(1, "b"), said(2, "c")
    conv = expect(
        conv,
        text("a"),
        evolve(conv, outbox=Outbox((), (a,), next_seq=1)),
        (AppendHistory(a.history), SendToModel(a.item, 0)),  # type: ignore[arg-type]
    )
    conv = expect(
        conv,
        text("b"),
        evolve(conv, outbox=Outbox((), (a, b), next_seq=2)),
        (AppendHistory(b.history), SendToModel(b.item, 1)),  # type: ignore[arg-type]
    )
    # The window is full: c waits, and is not recorded yet.
    conv = expect(conv, text("c"), evolve(conv, outbox=Outbox((c,), (a, b), next_seq=3)))
    # a is written: c takes its place.
    conv = expect(
        conv,
        Written(0),
        evolve(conv, outbox=Outbox((), (b, c), next_seq=3, written=1)),
        (AppendHistory(c.history), SendToModel(c.item, 2)),  # type: ignore[arg-type]
    )
    conv = expect(conv, Written(1), evolve(conv, outbox=Outbox((), (c,), next_seq=3, written=2)))
    conv = expect(conv, Written(2), evolve(conv, outbox=Outbox(next_seq=3, written=3)))


def _two_handed_then_lost() -> Conversation:
    """ "a" and an audio block handed to c1 (proven), then "b"; c1 ends before
    writing anything: their records are taken back, latest first."""
    conv = responding(connected())
    a, block, b = said(0, "a"), Entry(1, audio(1)), said(2, "b")
    for event, entry in ((text("a"), a), (UserInput(audio(1)), block), (text("b"), b)):
        record = (AppendHistory(entry.history),) if entry.history is not None else ()
        box = conv.outbox
        conv = expect(
            conv,
            event,
            evolve(
                conv,
                outbox=evolve(
                    box, in_flight=(*box.in_flight, entry), next_seq=entry.seq + 1, audio=box.audio + entry.is_audio
                ),
            ),
            (*record, SendToModel(entry.item, entry.seq)),
        )
    return expect(
        conv,
        ConnectionEnded("c1", BidiConnectionError("reset")),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_id=None,
            interrupted_ids=("r1",),
            outbox=Outbox((a, block, b), next_seq=3, audio=1),
        ),
        (
            *cut_off("r1", "error", "connection_lost", "reset"),
            RetractHistory(TextMessage("user", "b")),
            RetractHistory(TextMessage("user", "a")),
            OpenConnection(None),
        ),
    )


def test_history_handed_to_a_connection_that_ends_unwritten_is_retracted_and_recorded_again_when_sent() -> None:
    conv = _two_handed_then_lost()
    a, block, b = conv.outbox.waiting
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            interrupted_ids=(),
            connection_proven=False,
            outbox=Outbox((), (a, block, b), next_seq=3, audio=1),
        ),
        (
            *opened(),
            AppendHistory(TextMessage("user", "a")),
            SendToModel(a.item, 0),
            SendToModel(block.item, 1),
            AppendHistory(TextMessage("user", "b")),
            SendToModel(b.item, 2),
        ),
    )
    for seq in (0, 1, 2):
        conv, effects = step(conv, Written(seq))
        assert effects == ()
    assert conv.outbox == Outbox(next_seq=3, written=3)


def test_a_write_reported_after_the_connection_ended_takes_the_record_back() -> None:
    """The writer wrote "a" as the connection ended: it did arrive. Its record
    comes back, and it is not sent again."""
    conv = _two_handed_then_lost()
    _, block, b = conv.outbox.waiting
    conv = expect(
        conv,
        Written(0),
        evolve(conv, outbox=Outbox((block, b), next_seq=3, audio=1, written=1)),
        (AppendHistory(TextMessage("user", "a")),),
    )
    # An audio block has no record to take back.
    conv = expect(conv, Written(1), evolve(conv, outbox=Outbox((b,), next_seq=3, written=2)))
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            interrupted_ids=(),
            connection_proven=False,
            outbox=Outbox((), (b,), next_seq=3),
        ),
        (*opened(), AppendHistory(TextMessage("user", "b")), SendToModel(b.item, 2)),
    )


# --------------------------------------------------------------------------- providers that resume sessions


def _write(conv: Conversation, event: UserInput) -> Conversation:
    """Hand ``event`` to the open connection and report it written."""
    seq = conv.outbox.next_seq
    conv, effects = step(conv, event)
    assert effects[-1] == SendToModel(event.event, seq)
    conv, effects = step(conv, Written(seq))
    assert effects == ()
    return conv


def test_a_resumed_session_gets_again_what_the_provider_had_not_confirmed() -> None:
    conv = connected(RESUMABLE)
    conv = _write(conv, text("a"))
    # Written, kept until the provider confirms it (its record is in the history already).
    kept_a = Entry(0, BidiTextInputEvent("a"))
    assert conv.outbox == Outbox(unconfirmed=(kept_a,), next_seq=1, written=1)
    conv = expect(conv, BidiResumptionUpdateEvent("h1", inputs_included=0), evolve(heard(conv), resume_handle="h1"))
    conv = _write(conv, text("b"))
    conv = _write(conv, UserInput(audio(1)))
    kept_b, kept_block = Entry(1, BidiTextInputEvent("b")), Entry(2, audio(1))
    assert conv.outbox == Outbox(unconfirmed=(kept_a, kept_b, kept_block), next_seq=3, audio=1, written=3)
    # The provider's session holds the first item written on this connection.
    conv = expect(
        conv,
        BidiResumptionUpdateEvent("h2", inputs_included=1),
        evolve(
            conv,
            resume_handle="h2",
            outbox=Outbox(unconfirmed=(kept_b, kept_block), next_seq=3, audio=1, written=3, confirmed=1),
        ),
    )
    conv = _write(conv, text("c"))
    conv = expect(
        conv,
        ConnectionEnded("c1", BidiConnectionError("reset")),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection("h2")),
    )
    # Resumed: what it had not confirmed goes again, first, and is not recorded twice.
    kept_c = Entry(3, BidiTextInputEvent("c"))
    conv = expect(
        conv,
        Connected("c2", "m", RESUMABLE),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            connection_proven=False,
            outbox=Outbox((), (kept_b, kept_block, kept_c), next_seq=4, audio=1),
        ),
        (
            *opened(),
            SendToModel(BidiTextInputEvent("b"), 1),
            SendToModel(audio(1), 2),
            SendToModel(BidiTextInputEvent("c"), 3),
        ),
    )
    for seq in (1, 2, 3):
        conv, _ = step(conv, Written(seq))
    # Without a count, the provider holds everything written so far.
    conv = expect(
        conv,
        BidiResumptionUpdateEvent("h3"),
        evolve(heard(conv), resume_handle="h3", outbox=Outbox(next_seq=4, written=3, confirmed=3)),
    )


def test_a_fresh_session_after_a_resumable_one_forgets_the_unconfirmed() -> None:
    """No handle: the next session is seeded with the history, which holds
    what was written already; the unconfirmed audio no longer counts."""
    conv = responding(connected(RESUMABLE))
    conv = _write(conv, UserInput(audio(1)))
    conv = _write(conv, text("a"))
    assert (len(conv.outbox.unconfirmed), conv.outbox.audio) == (2, 1)
    conv, _ = step(conv, ConnectionEnded("c1", BidiConnectionError("reset")))
    conv = expect(
        conv,
        Connected("c2", "m", RESUMABLE),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            interrupted_ids=(),
            connection_proven=False,
            outbox=Outbox(next_seq=2),
        ),
        opened(),
    )


def test_the_audio_cap_holds_over_the_unconfirmed_and_never_drops_what_the_writer_holds() -> None:
    conv = connected(RESUMABLE, started(ConversationConfig(max_buffered_audio=2)))
    conv = _write(conv, UserInput(audio(1)))
    conv = _write(conv, UserInput(audio(2)))
    assert conv.outbox.audio == 2
    # A third block: the oldest unconfirmed one goes (as if confirmed), the new one is sent.
    conv = expect(
        conv,
        UserInput(audio(3)),
        evolve(
            conv,
            outbox=Outbox(
                (),
                (Entry(2, audio(3)),),
                (Entry(1, audio(2)),),
                next_seq=3,
                audio=2,
                written=2,
                confirmed=1,
                dropped_audio=1,
            ),
        ),
        (SendToModel(audio(3), 2),),
    )
    # A fourth: the unconfirmed one goes.
    conv = expect(
        conv,
        UserInput(audio(4)),
        evolve(
            conv,
            outbox=Outbox(
                (),
                (Entry(2, audio(3)), Entry(3, audio(4))),
                next_seq=4,
                audio=2,
                written=2,
                confirmed=2,
                dropped_audio=2,
            ),
        ),
        (SendToModel(audio(4), 3),),
    )
    # A fifth: both held ones are the writer's; the newest is dropped.
    conv = expect(conv, UserInput(audio(5)), evolve(conv, outbox=evolve(conv.outbox, next_seq=5, dropped_audio=3)))
    assert conv.outbox.audio == 2


def test_the_unconfirmed_are_bounded_for_a_provider_that_never_confirms() -> None:
    conv = connected(RESUMABLE, started(ConversationConfig(max_buffered_audio=1)))
    for n in range(258):
        conv = _write(conv, text(f"t{n}"))
    # The cap on audio plus room for 256 other items: the oldest counts as confirmed.
    assert len(conv.outbox.unconfirmed) == 257
    assert conv.outbox.unconfirmed[0].seq == 1
    assert (conv.outbox.written, conv.outbox.confirmed) == (258, 1)


def test_a_result_only_recorded_does_not_shift_the_count_of_what_a_resumed_session_holds() -> None:
    """``inputs_included`` counts the items passed to ``session.send()`` on
    this connection. A cancelled result for a call of an earlier connection is
    only recorded, never sent: it must not count among them."""
    conv = connected(RESUMABLE)
    conv = expect(conv, BidiResumptionUpdateEvent("h1"), evolve(heard(conv), resume_handle="h1"))
    conv = tool_use(conv, "t1", "slow")
    conv, _ = step(conv, ConnectionEnded("c1", BidiConnectionError("reset")))
    conv, _ = step(conv, ToolCancelled("t1"))
    conv, effects = step(conv, Connected("c2", "m", RESUMABLE))
    assert not [e for e in effects if isinstance(e, SendToModel)]  # only recorded
    conv = _write(conv, text("a"))  # the first item sent on c2
    # The provider's session holds that one item: nothing is left to send again.
    conv, _ = step(conv, BidiResumptionUpdateEvent("h2", inputs_included=1))
    conv, _ = step(conv, ConnectionEnded("c2", BidiConnectionError("reset")))
    _, effects = step(conv, Connected("c3", "m", RESUMABLE))
    assert SendToModel(BidiTextInputEvent("a"), 1) not in effects, "the resumed session hears 'a' twice"


def test_a_result_only_recorded_keeps_its_place_in_the_history() -> None:
    """The history keeps the order things were said in: the user's "a" came
    before the (cancelled) result of t1, and stays before it however often
    the connection is lost."""
    conv = tool_use(responding(connected()), "t1", "slow")
    conv, _ = step(conv, ConnectionEnded("c1", BidiConnectionError("reset")))
    conv, _ = step(conv, text("a"))
    conv, _ = step(conv, ToolCancelled("t1"))
    history: list[object] = []
    for event in (
        Connected("c2", "m"),  # hands "a" over, records the result
        ConnectionEnded("c2", BidiConnectionError("reset")),  # "a" was not written: retracted
        TimerFired(BACKOFF_TIMER),
        Connected("c3", "m"),  # hands "a" over again
    ):
        conv, effects = step(conv, event)
        for effect in effects:
            if isinstance(effect, AppendHistory):
                history.append(effect.message)
            elif isinstance(effect, RetractHistory):
                history.remove(effect.message)
    said = TextMessage("user", "a")
    cancelled = ToolResultMessage("t1", "slow", "cancelled", "The tool call was cancelled.")
    assert history == [said, cancelled]
