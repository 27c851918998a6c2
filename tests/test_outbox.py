"""The outbox (bidi_core/outbox.py): every accepted item reaches a connection
exactly once, in order, whatever connections are lost; the audio it holds
never exceeds the cap; what a resumable provider did not confirm is sent
again, first, to a resumed session and forgotten by a fresh one.

The examples drive the outbox the way the core does (accept, hand, written,
leave, begin, confirm); the properties let hypothesis choose when connections
break and what the writer managed to write before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bidi_core import BidiAgent
from bidi_core.outbox import Entry, Outbox
from bidi_core.state import Conversation, Phase, with_outbox
from ports.events import BidiAudioInputEvent, BidiTextInputEvent, ModelEvent
from ports.messages import TextMessage
from ports.model import ConnectRequest, ModelCapabilities, ModelInput


def _text(s: str) -> BidiTextInputEvent:
    return BidiTextInputEvent(s)


def _audio(n: int) -> BidiAudioInputEvent:
    return BidiAudioInputEvent(n.to_bytes(2, "little"))


def _write(box: Outbox, window: int = 16, keep: int | None = None) -> tuple[Outbox, list[Entry]]:
    """Hand everything and write it all, as an idle connection would."""
    written: list[Entry] = []
    while True:
        box, handed = box.hand(window)
        if not handed:
            return box, written
        for entry in handed:
            box, done, returned = box.mark_written(entry.seq, keep)
            assert done == entry
            assert not returned
            written.append(entry)


def test_items_are_numbered_in_order_and_keep_what_the_history_needs() -> None:
    box = Outbox().accept(_text("a"), 10, TextMessage("user", "a")).accept(_audio(1), 10)
    assert [e.seq for e in box.waiting] == [0, 1]
    assert box.waiting[0].history == TextMessage("user", "a")
    assert box.audio == 1


def test_the_window_bounds_what_is_in_flight() -> None:
    box = Outbox()
    for i in range(5):
        box = box.accept(_audio(i), 10)
    box, handed = box.hand(2)
    assert [e.seq for e in handed] == [0, 1]
    box, more = box.hand(2)
    assert more == ()
    box, _, _ = box.mark_written(0, None)
    box, more = box.hand(2)
    assert [e.seq for e in more] == [2]
    assert [e.seq for e in box.in_flight] == [1, 2]


def test_what_was_in_flight_waits_again_first_when_the_connection_is_lost() -> None:
    box = Outbox()
    for s in "abcd":
        box = box.accept(_text(s), 10)
    box, _ = box.hand(2)
    box, _, _ = box.mark_written(0, None)
    box = box.leave_connection().begin_connection(resumed=False)
    box, written = _write(box)
    assert [e.item for e in written] == [_text("b"), _text("c"), _text("d")]


def test_an_item_written_as_its_connection_ended_is_not_sent_again() -> None:
    box = Outbox().accept(_text("a"), 10).accept(_text("b"), 10)
    box, _ = box.hand(16)
    box = box.leave_connection()
    box, entry, returned = box.mark_written(0, None)
    assert entry is not None
    assert entry.item == _text("a")
    assert returned
    box, written = _write(box.begin_connection(resumed=False))
    assert [e.item for e in written] == [_text("b")]


def test_a_resumed_session_gets_the_unconfirmed_items_again_first_without_history() -> None:
    box = Outbox()
    for s in "abc":
        box = box.accept(_text(s), 10, TextMessage("user", s))
    box, _ = _write(box, keep=100)
    box = box.confirm(1)  # the provider's session holds "a"
    box = box.accept(_text("d"), 10, TextMessage("user", "d"))
    box = box.leave_connection().begin_connection(resumed=True)
    box, written = _write(box, keep=100)
    assert [e.item for e in written] == [_text("b"), _text("c"), _text("d")]
    assert [e.history for e in written] == [None, None, TextMessage("user", "d")]


def test_a_fresh_session_forgets_the_unconfirmed_items() -> None:
    box = Outbox().accept(_audio(1), 10).accept(_text("x"), 10)
    box, _ = _write(box, keep=100)
    assert box.audio == 1
    box = box.leave_connection().begin_connection(resumed=False)
    assert box.unconfirmed == ()
    assert box.audio == 0
    assert _write(box)[1] == []


def test_confirming_without_a_count_means_everything_written_so_far_on_this_connection() -> None:
    box = Outbox().accept(_text("a"), 10).accept(_text("b"), 10)
    box, _ = _write(box, keep=100)
    box = box.accept(_text("c"), 10)
    box = box.confirm(None)
    assert box.unconfirmed == ()
    assert [e.item for e in box.waiting] == [_text("c")]
    assert box.confirm(5) == box  # never beyond what was written


def test_unconfirmed_items_are_bounded_when_the_provider_never_confirms() -> None:
    box = Outbox()
    for s in "abcdef":
        box = box.accept(_text(s), 10)
    box, _ = _write(box, keep=3)
    assert [e.item for e in box.unconfirmed] == [_text("d"), _text("e"), _text("f")]
    assert box.confirmed == 3


@pytest.mark.parametrize("keep", [None, 100], ids=["never-confirms", "resumable"])
def test_a_report_for_an_item_not_held_changes_nothing(keep: int | None) -> None:
    # A report repeated, or late (the item was written and forgotten already), or for a number
    # never issued must not count anything as written: what is in flight was not written.
    box = Outbox()
    for s in "abcd":
        box = box.accept(_text(s), 10)
    box, _ = box.hand(2)
    box, _, _ = box.mark_written(0, None)
    box, _ = box.hand(2)
    assert [e.seq for e in box.in_flight] == [1, 2]
    assert [e.seq for e in box.waiting] == [3]
    for seq in (0, 99):
        assert box.mark_written(seq, keep) == (box, None, False)


def test_each_confirmation_counts_from_the_start_of_the_connection() -> None:
    # The provider's count covers everything it holds of this connection; confirming one item,
    # then two, leaves the third and fourth to be sent again to a resumed session.
    box = Outbox()
    for s in "abcd":
        box = box.accept(_text(s), 10)
    box, _ = _write(box, keep=100)
    box = box.confirm(1).confirm(2)
    assert [e.item for e in box.unconfirmed] == [_text("c"), _text("d")]
    box, written = _write(box.leave_connection().begin_connection(resumed=True), keep=100)
    assert [e.item for e in written] == [_text("c"), _text("d")]


def test_a_fresh_session_counts_its_confirmations_from_zero() -> None:
    # Resumption refused: the new session's confirmations are of its own writes; once it confirmed
    # them, a later resumed session gets nothing twice.
    box = Outbox().accept(_text("a"), 10).accept(_text("b"), 10)
    box, _ = _write(box, keep=100)
    box = box.confirm(None)
    box = box.leave_connection().begin_connection(resumed=False)
    box = box.accept(_text("c"), 10).accept(_text("d"), 10)
    box, _ = _write(box, keep=100)
    box = box.confirm(2)
    assert box.unconfirmed == ()
    assert _write(box.leave_connection().begin_connection(resumed=True), keep=100)[1] == []


def test_audio_forgotten_past_the_unconfirmed_bound_frees_its_place_under_the_cap() -> None:
    # A resumable provider that does not confirm: past the bound, the oldest unconfirmed item is
    # forgotten, and an audio block among them no longer counts against the cap: the next
    # blocks up to the cap are all kept.
    box = Outbox().accept(_audio(0), 2)
    box, _ = _write(box, keep=3)
    for s in "xyz":
        box = box.accept(_text(s), 2)
    box, _ = _write(box, keep=3)
    assert [e.item for e in box.unconfirmed] == [_text("x"), _text("y"), _text("z")]
    assert box.audio == 0
    box = box.accept(_audio(1), 2).accept(_audio(2), 2)
    assert [e.item for e in box.waiting] == [_audio(1), _audio(2)]
    assert box.dropped_audio == 0
    assert box.audio == 2


def test_audio_beyond_the_cap_drops_the_oldest_waiting_block_and_counts_it() -> None:
    box = Outbox()
    for i in range(5):
        box = box.accept(_audio(i), 3)
    assert [e.item for e in box.waiting] == [_audio(2), _audio(3), _audio(4)]
    assert box.dropped_audio == 2
    assert box.audio == 3


def test_audio_beyond_the_cap_drops_unconfirmed_audio_before_waiting_audio() -> None:
    box = Outbox().accept(_audio(0), 2).accept(_audio(1), 2)
    box, _ = _write(box, window=1, keep=100)
    box = box.accept(_audio(2), 2)
    assert [e.item for e in box.unconfirmed] == [_audio(1)]
    assert [e.item for e in box.waiting] == [_audio(2)]
    assert box.audio == 2


def test_audio_in_flight_is_never_dropped_the_newest_block_is_instead() -> None:
    box = Outbox().accept(_audio(0), 1)
    box, handed = box.hand(1)
    box = box.accept(_audio(1), 1)
    assert box.in_flight == handed
    assert box.waiting == ()
    assert box.dropped_audio == 1


def test_with_outbox_changes_the_outbox_and_nothing_else() -> None:
    # The per-block shortcut for attrs.evolve (bidi_core/state.py): every other field kept as it was.
    values = {}
    for field in attrs.fields(Conversation):
        default = getattr(Conversation(), field.name)
        values[field.name] = {
            "phase": Phase.TOOL_CALLING,
            "connection_id": "c1",
            "response_id": "r1",
            "audible_id": "r0",
            "received_ms": 12.5,
            "interrupted_ids": ("r-1",),
            "rotation_due": "age",
            "resume_handle": "h",
            "failures": 2,
        }.get(field.name, default if not isinstance(default, bool) else not default)
    conv = Conversation(**values)
    box = Outbox(next_seq=7)
    assert with_outbox(conv, box) == attrs.evolve(conv, outbox=box)


def test_text_is_never_dropped() -> None:
    box = Outbox()
    for i in range(50):
        box = box.accept(_text(str(i)), 1)
    assert len(box.waiting) == 50
    assert box.dropped_audio == 0


# ---------------------------------------------------------------- properties


def _mark_written_in_general(box: Outbox, seq: int) -> Outbox:
    """What writing the entry ``seq`` in flight does, spelled out (for a provider that never confirms)."""
    index = next(i for i, e in enumerate(box.in_flight) if e.seq == seq)
    entry = box.in_flight[index]
    in_flight = box.in_flight[:index] + box.in_flight[index + 1 :]
    return attrs.evolve(box, in_flight=in_flight, written=box.written + 1, audio=box.audio - entry.is_audio)


class OutboxAcrossConnections(RuleBasedStateMachine):
    """The core's use of the outbox with connections breaking anywhere.

    The model: items are accepted in order; each connection's writer writes
    a prefix of what it was handed; a resumable provider confirms a prefix of
    what was written; a broken connection loses what it did not confirm
    unless the next one resumes. What reached the provider's session must be
    every accepted item (less audio dropped for the cap), once, in order.
    """

    CAP = 4

    def __init__(self) -> None:
        super().__init__()
        self.box = Outbox()
        self.resumable = False
        self.accepted: list[object] = []
        self.session: list[object] = []  # what the provider's session holds
        self.unconfirmed_in_session = 0  # tail of self.session lost if the connection breaks
        self.open = True

    @rule(resumable=st.booleans())
    def provider_kind(self, resumable: bool) -> None:
        if not self.accepted:
            self.resumable = resumable

    @rule(text=st.booleans())
    def accept(self, text: bool) -> None:
        n = len(self.accepted)
        item = _text(str(n)) if text else _audio(n)
        self.accepted.append(item)
        at_once = self.open and self.box.can_hand_at_once(item, self.CAP, 3)
        fast = self.box.accept_in_flight(item) if at_once else None
        self.box = self.box.accept(item, self.CAP)
        if self.open:
            self.box, handed = self.box.hand(3)
            if fast is not None:  # the core's shortcut for user input gives what accept + hand give
                assert fast == (self.box, handed[0]) and len(handed) == 1

    @precondition(lambda self: self.open and bool(self.box.in_flight))
    @rule(count=st.integers(1, 3))
    def write(self, count: int) -> None:
        keep = 64 if self.resumable else None
        for entry in self.box.in_flight[:count]:
            if keep is None:  # the shortcut for the oldest in flight gives what the general path gives
                slow = _mark_written_in_general(self.box, entry.seq)
            self.box, done, _ = self.box.mark_written(entry.seq, keep)
            if keep is None:
                assert self.box == slow
            assert done == entry
            self.session.append(entry.item)
            if self.resumable:
                self.unconfirmed_in_session += 1
        self.box, _ = self.box.hand(3)

    @precondition(lambda self: self.open and self.resumable)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        count = data.draw(st.integers(0, self.unconfirmed_in_session))
        confirmed_before = self.box.written - self.unconfirmed_in_session
        self.box = self.box.confirm(confirmed_before + count)
        self.unconfirmed_in_session -= count

    @precondition(lambda self: self.open)
    @rule()
    def connection_lost(self) -> None:
        self.box = self.box.leave_connection()
        self.open = False
        if self.resumable and self.unconfirmed_in_session:
            # The provider's session keeps only what it confirmed.
            del self.session[-self.unconfirmed_in_session :]
        self.unconfirmed_in_session = 0

    @precondition(lambda self: not self.open)
    @rule()
    def reconnect(self) -> None:
        self.box = self.box.begin_connection(resumed=self.resumable)
        self.open = True
        self.box, _ = self.box.hand(3)

    @invariant()
    def audio_within_the_cap(self) -> None:
        held = self.box.waiting + self.box.in_flight + self.box.unconfirmed
        assert self.box.audio == sum(e.is_audio for e in held)
        assert self.box.audio <= self.CAP + len(self.box.in_flight)
        assert sum(e.is_audio for e in self.box.waiting + self.box.unconfirmed) <= self.CAP

    @invariant()
    def nothing_twice_nothing_out_of_order(self) -> None:
        seen = [
            int.from_bytes(i.audio, "little") if isinstance(i, BidiAudioInputEvent) else int(i.text)
            for i in self.session
        ]  # type: ignore[attr-defined]
        assert seen == sorted(set(seen))

    def teardown(self) -> None:
        # Let every connection write everything: all accepted text arrives; audio only
        # misses blocks the cap dropped (never more than counted: an unconfirmed block
        # dropped from tracking may still have reached the session).
        if not self.open:
            self.reconnect()
        box = self.box
        while box.in_flight or box.waiting:
            box, _ = box.hand(3)
            for entry in box.in_flight:
                box, _, _ = box.mark_written(entry.seq, None)
                self.session.append(entry.item)
        texts = [i for i in self.accepted if isinstance(i, BidiTextInputEvent)]
        assert [i for i in self.session if isinstance(i, BidiTextInputEvent)] == texts
        missing_audio = len(self.accepted) - len(self.session)
        assert 0 <= missing_audio <= box.dropped_audio


TestOutboxAcrossConnections = OutboxAcrossConnections.TestCase


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 5))
def test_accept_never_holds_more_audio_than_the_cap(kinds: list[bool], cap: int) -> None:
    box = Outbox()
    for n, audio in enumerate(kinds):
        box = box.accept(_audio(n) if audio else _text(str(n)), cap)
        assert box.audio <= cap
    assert box.audio + box.dropped_audio == sum(kinds)
    assert attrs.evolve(box) == box


# ---------------------------------------------------------------- the README's ceiling, through the agent


class _StalledModel:
    """A provider whose connection accepts the first write and then never
    completes another (a peer that stopped reading)."""

    model_id = "stalled"
    capabilities = ModelCapabilities()

    def __init__(self) -> None:
        self.writes = 0
        self.stalled = anyio.Event()

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[_StalledModel]:
        yield self

    connection_id = "stalled-1"

    async def send(self, item: ModelInput) -> None:
        self.writes += 1
        self.stalled.set()
        await anyio.sleep_forever()

    async def receive(self) -> ModelEvent:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover


async def test_the_agent_holds_no_more_user_audio_than_the_readme_promises() -> None:
    model = _StalledModel()
    cap = 50
    async with BidiAgent(model=model, max_buffered_audio=cap) as agent:
        await agent.send(_audio(0))
        with anyio.fail_after(5):
            await model.stalled.wait()
        for n in range(1, 400):
            await agent.send(_audio(n))
            outbox = agent.conversation.outbox
            in_flight = len(outbox.in_flight)
            assert in_flight <= agent.conversation.config.send_window
            held = outbox.waiting + outbox.in_flight + outbox.unconfirmed
            assert outbox.audio == len(held) <= cap
        assert agent.dropped_audio == 400 - cap
        assert model.writes == 1
        # The oldest blocks went; the newest are kept, in order.
        waiting = [int.from_bytes(e.item.audio, "little") for e in agent.conversation.outbox.waiting]  # type: ignore[union-attr]
        assert waiting == list(range(400 - len(waiting), 400))
    # The count is still there once the conversation is over (for the call's report).
    assert agent.dropped_audio == 400 - cap
