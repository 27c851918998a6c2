"""The outbox: every item the user (or a tool) gave the conversation, until
the provider has it.

One place, in the core, answers the three questions a reconnect raises: what
was accepted but not yet written (it goes to the next connection, first, in
order), what was written but not confirmed by a provider that resumes
sessions (a resumed session gets it again), and what joins the history when
(at its first write, so a history seeded into a fresh session never repeats
an item still waiting: it is recorded when handed to a connection, and
retracted if that connection ends before writing it). Items are numbered: the shell writes an item and
reports its number back (:class:`~bidi_core.shell_events.Written`).

Every item moves one way through three stages::

    waiting  --hand-->  in flight  --written-->  unconfirmed  --confirmed-->  (gone)
        ^                  |                      (resumable providers only;
        +-- connection lost+                       others drop it once written)

The outbox bounds the audio it holds, in all three stages together, to the
configured cap: beyond it the oldest audio block that may still be dropped
(unconfirmed, then waiting; never one the writer already holds) goes, and is
counted. Text, images and tool results are never dropped.

Like the state machine, this module is pure: frozen values, no I/O, no clock.
"""

from __future__ import annotations

import attrs

from ports.events import BidiAudioInputEvent
from ports.messages import Message
from ports.model import ModelInput

__all__ = ["Entry", "Outbox"]


@attrs.frozen
class Entry:
    """One item of the outbox. ``history`` joins the history when the item is
    first written (``None``: nothing to record, or recorded already).
    ``issued_on`` is, for a tool result, the connection that issued the call."""

    seq: int
    item: ModelInput
    history: Message | None = None
    issued_on: str | None = None

    @property
    def is_audio(self) -> bool:
        return isinstance(self.item, BidiAudioInputEvent)


def _without(entries: tuple[Entry, ...], index: int) -> tuple[Entry, ...]:
    return entries[:index] + entries[index + 1 :]


def _first_audio(entries: tuple[Entry, ...]) -> int | None:
    return next((i for i, e in enumerate(entries) if e.is_audio), None)


@attrs.frozen
class Outbox:
    """``audio`` counts the audio entries of all three stages; ``written`` and
    ``confirmed`` count this connection's writes and the provider's
    confirmations (the provider's ``inputs_included`` counts the same way)."""

    waiting: tuple[Entry, ...] = ()
    in_flight: tuple[Entry, ...] = ()
    unconfirmed: tuple[Entry, ...] = ()
    next_seq: int = 0
    audio: int = 0
    written: int = 0
    confirmed: int = 0
    dropped_audio: int = 0

    def accept(
        self, item: ModelInput, max_audio: int, history: Message | None = None, issued_on: str | None = None
    ) -> Outbox:
        """Number ``item`` and put it last in the waiting line."""
        entry = Entry(self.next_seq, item, history, issued_on)
        box = attrs.evolve(self, waiting=(*self.waiting, entry), next_seq=self.next_seq + 1)
        if not entry.is_audio:
            return box
        if box.audio < max_audio:
            return attrs.evolve(box, audio=box.audio + 1)
        return box._drop_oldest_audio()

    def can_hand_at_once(self, item: ModelInput, max_audio: int, window: int) -> bool:
        """Whether ``item`` would go straight in flight: nothing waits, the
        window has room, and the audio cap does not bind."""
        if self.waiting or len(self.in_flight) >= window:
            return False
        return self.audio < max_audio or not isinstance(item, BidiAudioInputEvent)

    def accept_in_flight(self, item: ModelInput, history: Message | None = None) -> tuple[Outbox, Entry]:
        """:meth:`accept` then :meth:`hand` in one copy, when :meth:`can_hand_at_once`
        (every microphone block of a live connection); the entry handed. User
        input only: a tool result (the one item issued on a connection) takes
        the general path."""
        entry = Entry(self.next_seq, item, history)
        box = Outbox(
            (),
            (*self.in_flight, entry),
            self.unconfirmed,
            self.next_seq + 1,
            self.audio + entry.is_audio,
            self.written,
            self.confirmed,
            self.dropped_audio,
        )
        return box, entry

    def _drop_oldest_audio(self) -> Outbox:
        """Make room for the audio entry just added (last in ``waiting``)."""
        index = _first_audio(self.unconfirmed)
        if index is not None:
            # Written already: no longer tracked for a resumed session, as if confirmed.
            return attrs.evolve(
                self,
                unconfirmed=_without(self.unconfirmed, index),
                confirmed=self.confirmed + 1,
                dropped_audio=self.dropped_audio + 1,
            )
        index = _first_audio(self.waiting)
        assert index is not None  # the new entry itself is there
        return attrs.evolve(self, waiting=_without(self.waiting, index), dropped_audio=self.dropped_audio + 1)

    def hand(self, window: int) -> tuple[Outbox, tuple[Entry, ...]]:
        """Move waiting entries in flight, at most ``window`` in flight at once."""
        room = window - len(self.in_flight)
        if room <= 0 or not self.waiting:
            return self, ()
        handed, rest = self.waiting[:room], self.waiting[room:]
        return attrs.evolve(self, waiting=rest, in_flight=self.in_flight + handed), handed

    def mark_written(self, seq: int, max_unconfirmed: int | None) -> tuple[Outbox, Entry | None, bool]:
        """Entry ``seq`` was written. Usually it is the first in flight; it may
        be waiting again when its connection ended while it was being written
        (it did reach that connection). Unknown numbers change nothing.

        ``max_unconfirmed``: keep it until the provider confirms it, holding at
        most that many (``None``: the provider never confirms; forget it).
        Returns the entry, and whether it had been waiting again."""
        if max_unconfirmed is None and self.in_flight and self.in_flight[0].seq == seq:
            entry = self.in_flight[0]  # the usual case, in one copy: the oldest in flight, forgotten once written
            box = Outbox(
                self.waiting,
                self.in_flight[1:],
                self.unconfirmed,
                self.next_seq,
                self.audio - entry.is_audio,
                self.written + 1,
                self.confirmed,
                self.dropped_audio,
            )
            return box, entry, False
        index = next((i for i, e in enumerate(self.in_flight) if e.seq == seq), None)
        if index is not None:
            entry = self.in_flight[index]
            box = attrs.evolve(self, in_flight=_without(self.in_flight, index), written=self.written + 1)
        else:
            index = next((i for i, e in enumerate(self.waiting) if e.seq == seq), None)
            if index is None:
                return self, None, False
            entry = self.waiting[index]
            box = attrs.evolve(self, waiting=_without(self.waiting, index), written=self.written + 1)
        returned = index is not None and entry not in self.in_flight
        if max_unconfirmed is None:
            return (attrs.evolve(box, audio=box.audio - 1) if entry.is_audio else box), entry, returned
        kept = attrs.evolve(entry, history=None)
        box = attrs.evolve(box, unconfirmed=(*box.unconfirmed, kept))
        if len(box.unconfirmed) > max_unconfirmed:
            oldest = box.unconfirmed[0]
            box = attrs.evolve(
                box,
                unconfirmed=box.unconfirmed[1:],
                confirmed=box.confirmed + 1,
                audio=box.audio - oldest.is_audio,
            )
        return box, entry, returned

    def withdraw(self, seq: int) -> Outbox:
        """Entry ``seq``, just handed, will not be sent after all (the core
        decided it needs no sending): it leaves without counting as written."""
        index = next((i for i, e in enumerate(self.in_flight) if e.seq == seq), None)
        if index is None:
            return self
        entry = self.in_flight[index]
        return attrs.evolve(self, in_flight=_without(self.in_flight, index), audio=self.audio - entry.is_audio)

    def confirm(self, inputs_included: int | None) -> Outbox:
        """The provider's session holds the first ``inputs_included`` items
        written on this connection (``None``: all written so far)."""
        target = self.written if inputs_included is None else min(inputs_included, self.written)
        count = min(max(target - self.confirmed, 0), len(self.unconfirmed))
        if count == 0:
            return self
        gone = self.unconfirmed[:count]
        return attrs.evolve(
            self,
            unconfirmed=self.unconfirmed[count:],
            confirmed=self.confirmed + count,
            audio=self.audio - sum(e.is_audio for e in gone),
        )

    def leave_connection(self) -> Outbox:
        """The connection is gone: what was in flight was not written and waits
        again, first. The unconfirmed wait for the next connection's kind."""
        if not self.in_flight:
            return self
        return attrs.evolve(self, waiting=self.in_flight + self.waiting, in_flight=())

    def begin_connection(self, resumed: bool) -> Outbox:
        """A new connection opened. A resumed session gets the unconfirmed
        again, first (they are in the history already); a fresh session was
        seeded with the history, so they are forgotten."""
        if resumed:
            return attrs.evolve(self, waiting=self.unconfirmed + self.waiting, unconfirmed=(), written=0, confirmed=0)
        gone = sum(e.is_audio for e in self.unconfirmed)
        return attrs.evolve(self, unconfirmed=(), audio=self.audio - gone, written=0, confirmed=0)

    def clear(self) -> Outbox:
        """The conversation ended: nothing more will be sent."""
        return Outbox(next_seq=self.next_seq, dropped_audio=self.dropped_audio)
