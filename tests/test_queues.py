"""The shell's queues (bidi_core/queues.py): an output's queue (order, its exact
bound, waiting for room, the audio purge of a barge-in, closing) and a
connection's send FIFO (order, its bound, closing)."""

from __future__ import annotations

import anyio
import pytest

from bidi_core.queues import OutputQueue, SendFifo
from ports.events import (
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
)
from tests.support import audio, transcript


async def drain(queue: OutputQueue) -> list[BidiOutputEvent]:
    """Everything the queue still holds (it must be closed), in order."""
    out = []
    while (event := await queue.get()) is not None:
        out.append(event)
    return out


# ---------------------------------------------------------------- OutputQueue


async def test_events_come_out_in_the_order_they_went_in_then_the_end() -> None:
    queue = OutputQueue(10, "speaker")
    events = [BidiResponseStartEvent("r1"), audio("r1"), transcript("hi")]
    for event in events:
        queue.put(event)
    assert len(queue) == 3
    queue.close()
    assert queue.closed
    assert await drain(queue) == events
    assert len(queue) == 0
    assert await queue.get() is None  # and again: the end stays the end


async def test_nothing_is_added_after_the_close() -> None:
    queue = OutputQueue(10, "speaker")
    queue.put(audio("r1"))
    queue.close()
    queue.put(audio("r2"))
    assert await drain(queue) == [audio("r1")]


@pytest.mark.parametrize("maxsize", [1, 2, 5])
def test_the_bound_is_exact(maxsize: int) -> None:
    queue = OutputQueue(maxsize, "speaker")
    for _ in range(maxsize - 1):
        queue.put(audio("r1"))
    assert not queue.full
    queue.put(audio("r1"))
    assert queue.full
    queue.put(audio("r1"))  # put never waits nor drops: the bound is for producers that can wait
    assert len(queue) == maxsize + 1
    assert queue.full


async def test_a_waiting_consumer_wakes_for_the_first_event() -> None:
    queue = OutputQueue(10, "speaker")
    got: list[BidiOutputEvent | None] = []

    async def consume() -> None:
        got.append(await queue.get())
        got.append(await queue.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        queue.put(audio("r1"))
        await anyio.wait_all_tasks_blocked()
        assert got == [audio("r1")]
        queue.close()
    assert got == [audio("r1"), None]


async def test_wait_for_room_returns_at_once_below_the_bound() -> None:
    queue = OutputQueue(2, "speaker")
    queue.put(audio("r1"))
    with anyio.fail_after(5):
        await queue.wait_for_room()
    assert len(queue) == 1


async def test_wait_for_room_waits_while_full_and_wakes_when_one_is_taken() -> None:
    queue = OutputQueue(2, "speaker")
    queue.put(audio("r1", fill=1))
    queue.put(audio("r1", fill=2))
    roomy: list[int] = []

    async def producer() -> None:
        await queue.wait_for_room()
        roomy.append(len(queue))

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert roomy == []  # full: the producer waits
        assert await queue.get() == audio("r1", fill=1)
        await anyio.wait_all_tasks_blocked()
        assert roomy == [1]


async def test_every_producer_waiting_for_room_wakes() -> None:
    queue = OutputQueue(1, "speaker")
    queue.put(audio("r1"))
    woke: list[str] = []

    async def producer(name: str) -> None:
        await queue.wait_for_room()
        woke.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer, "a")
        tg.start_soon(producer, "b")
        await anyio.wait_all_tasks_blocked()
        await queue.get()
    assert sorted(woke) == ["a", "b"]


async def test_taking_from_a_queue_still_over_its_bound_does_not_wake_a_producer() -> None:
    queue = OutputQueue(2, "speaker")
    for fill in (1, 2, 3, 4):
        queue.put(audio("r1", fill=fill))  # over the bound (one dispatch may emit several events)
    roomy: list[int] = []

    async def producer() -> None:
        await queue.wait_for_room()
        roomy.append(len(queue))

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        await queue.get()  # 3 left: still full
        await anyio.wait_all_tasks_blocked()
        assert roomy == []
        await queue.get()  # 2 left: still full
        await anyio.wait_all_tasks_blocked()
        assert roomy == []
        await queue.get()  # 1 left: room
        await anyio.wait_all_tasks_blocked()
        assert roomy == [1]


async def test_a_full_output_holding_up_the_reader_is_logged_once_by_name(caplog: pytest.LogCaptureFixture) -> None:
    """The reader waits for a full output before it reads the provider again: a stalled conversation
    is explained in the debug log by which output is full and how much it holds, once per stall."""
    queue = OutputQueue(2, "PhoneLine")
    queue.put(audio("r1"))
    queue.put(audio("r1"))
    caplog.set_level("DEBUG", logger="bidi_core.queues")

    async def producer() -> None:
        await queue.wait_for_room()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        queue.put(audio("r1"))  # still over the bound after the next get: the producer waits on
        await queue.get()
        await anyio.wait_all_tasks_blocked()
        await queue.get()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("bidi_core.queues", "DEBUG", "output PhoneLine is full (2 events); waiting")
    ]


async def test_closing_releases_a_producer_waiting_for_room() -> None:
    queue = OutputQueue(1, "speaker")
    queue.put(audio("r1"))
    released = anyio.Event()

    async def producer() -> None:
        await queue.wait_for_room()
        released.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()
        assert not released.is_set()
        queue.close()
        await anyio.wait_all_tasks_blocked()
        assert released.is_set()
    assert len(queue) == 1  # what was queued stays for the consumer, which still gets it, then the end
    assert await drain(queue) == [audio("r1")]


async def test_a_full_closed_queue_has_room_for_nobody_to_wait_on() -> None:
    queue = OutputQueue(1, "speaker")
    queue.put(audio("r1"))
    queue.close()
    with anyio.fail_after(5):
        await queue.wait_for_room()


async def test_discard_audio_removes_every_audio_block_and_keeps_the_rest_in_order() -> None:
    queue = OutputQueue(100, "speaker")
    kept_before = [BidiResponseStartEvent("r1"), transcript("one", rid="r1")]
    queue.put(kept_before[0])
    queue.put(audio("r0", fill=1))  # an earlier response's audio, still queued: silenced too
    queue.put(audio("r1", fill=2))
    queue.put(kept_before[1])
    queue.put(audio("r1", fill=3))
    interruption = BidiInterruptionEvent("user_speech", "r1")
    queue.put(interruption)
    assert queue.discard_audio() == 3
    assert len(queue) == 3
    queue.close()
    assert await drain(queue) == [*kept_before, interruption]


async def test_discard_audio_of_a_queue_without_audio_changes_nothing() -> None:
    queue = OutputQueue(100, "speaker")
    events: list[BidiOutputEvent] = [BidiResponseStartEvent("r1"), transcript("one")]
    for event in events:
        queue.put(event)
    assert queue.discard_audio() == 0
    assert OutputQueue(3, "empty").discard_audio() == 0
    queue.close()
    assert await drain(queue) == events


async def test_discarding_makes_room_for_a_waiting_producer_once_an_event_is_taken() -> None:
    queue = OutputQueue(2, "speaker")
    queue.put(audio("r1"))
    queue.put(audio("r1"))
    queue.put(transcript("after"))
    assert queue.discard_audio() == 2
    assert not queue.full
    with anyio.fail_after(5):
        await queue.wait_for_room()
    queue.close()
    assert await drain(queue) == [transcript("after")]


# ---------------------------------------------------------------- SendFifo


async def test_the_send_fifo_gives_pairs_in_order_and_nothing_once_closed() -> None:
    fifo = SendFifo(3)
    pairs = [(BidiTextInputEvent("a"), 0), (BidiTextInputEvent("b"), None), (BidiTextInputEvent("c"), 7)]
    for item, seq in pairs:
        fifo.put(item, seq)
    assert len(fifo) == 3
    assert [await fifo.get() for _ in pairs] == pairs
    fifo.close()
    assert await fifo.get() is None


def test_the_send_fifo_refuses_more_than_its_bound() -> None:
    fifo = SendFifo(2)
    fifo.put(BidiTextInputEvent("a"), 0)
    fifo.put(BidiTextInputEvent("b"), 1)
    with pytest.raises(RuntimeError, match="over its bound of 2"):
        fifo.put(BidiTextInputEvent("c"), 2)
    assert len(fifo) == 2


async def test_a_closed_send_fifo_forgets_what_it_held_and_takes_nothing_more() -> None:
    """Its connection is gone: what it held was not written, and the core's
    outbox sends it again on the next connection. Writing it to the old one as
    well would deliver it twice."""
    fifo = SendFifo(2)
    fifo.put(BidiTextInputEvent("a"), 0)
    fifo.close()
    fifo.put(BidiTextInputEvent("b"), 1)
    assert len(fifo) == 0
    assert await fifo.get() is None


async def test_a_writer_waiting_on_the_send_fifo_wakes_for_an_item_and_for_the_close() -> None:
    fifo = SendFifo(4)
    got: list[object] = []

    async def writer() -> None:
        while (pair := await fifo.get()) is not None:
            got.append(pair)
        got.append("end")

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        fifo.put(BidiTextInputEvent("a"), 0)
        await anyio.wait_all_tasks_blocked()
        assert got == [(BidiTextInputEvent("a"), 0)]
        fifo.close()
    assert got == [(BidiTextInputEvent("a"), 0), "end"]
