"""The shell's queues (bidi_core/queues.py)."""

from __future__ import annotations

import anyio

from bidi_core.queues import OutputQueue
from tests.support import audio


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
    assert len(queue) == 1  # what was queued stays for the consumer
