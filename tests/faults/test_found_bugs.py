"""Bugs the fault matrix found in the adapters, each pinned down by a test of its own, deterministic.

The matrix met them as races (they showed on one backend and not the other);
each test here provokes the same situation on purpose.
"""

from __future__ import annotations

import anyio

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import openai_simulator as oa
from bidi_core import BidiErrorEvent, BidiResponseCompleteEvent, BidiTextInputEvent, BidiTranscriptStreamEvent
from ports.model import ConnectRequest

OPENAI_KEY = "sk-found-bugs-not-a-real-key-0123456789"


async def test_openai_two_texts_sent_before_the_first_response_starts_are_both_answered() -> None:
    """Before: the second text's response.create went out while the first one's was not yet answered by
    response.created; the service refused it (conversation_already_has_active_response) and the second
    text was never answered. (The matrix met it after reconnects, which send queued inputs back to back.)"""
    async with oa.OpenAIRealtimeSimulator(api_key=OPENAI_KEY) as sim:
        model = BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url)
        async with model.connect(ConnectRequest()) as session:
            await session.send(BidiTextInputEvent("one"))
            await session.send(BidiTextInputEvent("two"))  # nothing read in between: no response.created yet
            events = []
            with anyio.fail_after(10):
                while sum(isinstance(e, BidiResponseCompleteEvent) for e in events) < 2:
                    events.append(await session.receive())
                    assert not isinstance(events[-1], BidiErrorEvent), events[-1]
    finals = [e.text for e in events if isinstance(e, BidiTranscriptStreamEvent) and e.is_final]
    assert finals == ["You said: one", "You said: two"]
    assert sim.client_errors == []
