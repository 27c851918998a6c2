"""Outputs that take events on the spot (``ports.io.BidiInlineOutput``).

The agent hands an event to such an output's ``offer`` in the task that
produced it while nothing is queued for that output, saving the event loop a
task switch per event; what ``offer`` declines goes through the queue and
``__call__`` as for any output. These tests pin the guarantees that must not
change with it: order, the barge-in purge, errors ending ``run()``, a stop
asked for from inside ``offer``, nothing left running.
"""

from __future__ import annotations

import anyio
import pytest

from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
)
from bidi_core.queues import OutputQueue
from ports.events import BidiAudioStreamEvent, BidiSpeechStartedEvent
from ports.model import ModelCapabilities
from tests.support import RecordingOutput, ScriptedInput, audio, our_tasks, response, transcript


class InlineOutput(RecordingOutput):
    """Records how each event came: ``offered`` (on the spot) or ``called``
    (from its task). Declines audio while ``full``; ``__call__`` of a declined
    event blocks until ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.offered: list[BidiOutputEvent] = []
        self.called: list[BidiOutputEvent] = []
        self.full = False
        self.release = anyio.Event()
        self.holding = anyio.Event()

    def offer(self, event: BidiOutputEvent) -> bool:
        if self.full and isinstance(event, BidiAudioStreamEvent):
            return False
        self.offered.append(event)
        self.events.append(event)
        if self._until is not None and self._until(event):
            self.seen.set()
        return True

    async def __call__(self, event: BidiOutputEvent) -> None:
        self.called.append(event)
        await super().__call__(event)
        if not self.release.is_set():
            self.holding.set()
            await self.release.wait()


# ---------------------------------------------------------------- the queue


def test_offer_takes_events_while_nothing_is_queued() -> None:
    taken: list[BidiOutputEvent] = []
    queue = OutputQueue(10, "speaker", offer=lambda e: taken.append(e) is None)
    events = [BidiResponseStartEvent("r1"), audio("r1"), transcript("hi")]
    for event in events:
        queue.put(event)
    assert taken == events
    assert len(queue) == 0


async def test_once_an_event_is_declined_the_rest_queue_behind_it_until_the_consumer_caught_up() -> None:
    taken: list[BidiOutputEvent] = []
    decline = {"a2"}

    def offer(event: BidiOutputEvent) -> bool:
        assert isinstance(event, BidiResponseStartEvent)
        if event.response_id in decline:
            return False
        taken.append(event)
        return True

    queue = OutputQueue(10, "speaker", offer=offer)
    a1, a2, a3, a4, a5 = (BidiResponseStartEvent(f"a{n}") for n in range(1, 6))
    queue.put(a1)
    queue.put(a2)  # declined: queued
    queue.put(a3)  # offer would take it, but a2 is ahead of it
    assert taken == [a1] and len(queue) == 2
    assert await queue.get() == a2
    queue.put(a4)  # a3 still queued
    assert await queue.get() == a3
    queue.put(a5)  # nothing queued but a4, and the consumer is still on a3
    assert await queue.get() == a4
    assert await queue.get() == a5
    queue.put(BidiResponseStartEvent("a6"))  # the consumer has not said it finished a5
    assert len(queue) == 1
    assert await queue.get() == BidiResponseStartEvent("a6")
    queue.task_done()
    queue.put(BidiResponseStartEvent("a7"))  # caught up: on the spot again
    assert taken == [a1, BidiResponseStartEvent("a7")]


async def test_an_exception_from_offer_ends_the_queue_and_reaches_the_consumer() -> None:
    def offer(event: BidiOutputEvent) -> bool:
        raise ValueError("speaker unplugged")

    queue = OutputQueue(10, "speaker", offer=offer)
    queue.put(audio("r1"))
    queue.put(audio("r1"))  # after the failure: ignored
    assert queue.closed
    with pytest.raises(ValueError, match="speaker unplugged"):
        await queue.get()


# ---------------------------------------------------------------- through the agent


async def test_an_inline_output_gets_what_a_queued_one_gets_in_the_same_order() -> None:
    model = ScriptedModel(
        [
            Step(emit=response("r1", audio("r1", fill=1), transcript("Hello"), audio("r1", fill=2))),
            Step(expect=Expect(BidiTextInputEvent, text="again"), emit=response("r2", audio("r2", fill=3))),
        ]
    )
    inline = InlineOutput()
    inline.release.set()
    queued = RecordingOutput(until=lambda e: e == BidiResponseCompleteEvent("r2", "complete"))
    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [ScriptedInput(["again"])], [inline, queued])
        with anyio.fail_after(10):
            await queued.seen.wait()
        agent.request_stop()
    assert inline.events == queued.events
    assert inline.called == []  # every event was taken on the spot
    assert isinstance(inline.events[-1], BidiConnectionCloseEvent)
    assert our_tasks() == set()


async def test_a_stop_asked_for_inside_offer_is_carried_out_after_the_step_that_offered() -> None:
    """The output asks for the end while the agent is applying a step's
    effects: the request is stepped after them, so the completion it reacted
    to is followed by the close, and run() returns normally."""

    class StopsAtTheEnd(InlineOutput):
        def offer(self, event: BidiOutputEvent) -> bool:
            taken = super().offer(event)
            if isinstance(event, BidiResponseCompleteEvent):
                assert self.agent is not None
                self.agent.request_stop("complete")
            return taken

    model = ScriptedModel([Step(emit=[*response("r1", audio("r1")), BidiResponseStartEvent("r2")])])
    out = StopsAtTheEnd()
    with anyio.fail_after(10):
        await BidiAgent(model=model).run([], [out])
    assert out.events == [
        BidiConnectionStartEvent(connection_id="scripted-1", model="scripted"),
        BidiResponseStartEvent("r1"),
        audio("r1"),
        BidiResponseCompleteEvent("r1", "complete"),
        BidiConnectionCloseEvent(reason="complete", connection_id="scripted-1"),
    ]
    assert our_tasks() == set()


async def test_an_exception_from_offer_ends_run_with_it() -> None:
    class Unplugged(RecordingOutput):
        def offer(self, event: BidiOutputEvent) -> bool:
            if isinstance(event, BidiAudioStreamEvent):
                raise OSError("speaker unplugged")
            return True

    model = ScriptedModel([Step(emit=response("r1", audio("r1")))])
    with anyio.fail_after(10), pytest.raises(OSError, match="speaker unplugged"):
        await BidiAgent(model=model).run([], [Unplugged()])
    assert our_tasks() == set()


async def test_a_barge_in_purges_audio_an_inline_output_declined_and_order_holds_when_it_catches_up() -> None:
    """The speaker's buffer is full: it declines r1's first block, which is
    queued, and __call__ is stuck on it. Everything after queues behind it.
    The user barges in: the queued audio goes, the other events stay in
    order; once the speaker moves and catches up, it takes events on the spot
    again."""
    model = ScriptedModel(
        [
            Step(
                emit=[
                    BidiResponseStartEvent("r1"),
                    audio("r1", fill=1),
                    transcript("Well,", rid="r1", final=False),
                    audio("r1", fill=2),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="stop"),
                emit=[BidiSpeechStartedEvent(), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
            Step(expect=Expect(BidiTextInputEvent, text="more"), emit=response("r2")),
        ],
        capabilities=ModelCapabilities(cancels_on_speech=True),
    )
    speaker = InlineOutput()
    speaker.full = True
    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [speaker])
        with anyio.fail_after(10):
            await speaker.holding.wait()  # stuck on r1's first block; the rest of r1 queues behind it
            await agent.send("stop")
            await anyio.wait_all_tasks_blocked()  # the barge-in dispatched: the queued audio purged
        assert speaker.events[-1] == audio("r1", fill=1)
        speaker.full = False
        speaker._until = lambda e: e == BidiResponseCompleteEvent("r2", "complete")
        speaker.release.set()
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()  # the speaker played what was queued and caught up
            await agent.send("more")
            await speaker.seen.wait()
        agent.request_stop()
    assert speaker.events == [
        BidiConnectionStartEvent(connection_id="scripted-1", model="scripted"),
        BidiResponseStartEvent("r1"),
        audio("r1", fill=1),  # declined, then played by __call__
        transcript("Well,", rid="r1", final=False),
        BidiInterruptionEvent("user_speech", "r1"),
        BidiResponseCompleteEvent("r1", "interrupted"),
        *response("r2"),
        BidiConnectionCloseEvent(reason="client_disconnect", connection_id="scripted-1"),
    ]
    assert speaker.called[0] == audio("r1", fill=1)
    assert speaker.offered[-3:] == [*response("r2"), speaker.events[-1]]  # on the spot again
    assert our_tasks() == set()
