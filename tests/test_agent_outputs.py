"""What outputs get, through the agent: a barge-in purges the audio queued for
an output that has not played it yet, an output's queue holds exactly
``output_queue_size`` events before the agent stops reading the provider,
the model's error and usage events reach the user, and the reason given to
``request_stop`` is the close event's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
)
from ports.events import BidiAudioStreamEvent, BidiSpeechStartedEvent, BidiUsageEvent, ModelEvent
from ports.io import PlaybackReport
from ports.model import CancelResponse, ConnectRequest, ModelCapabilities, ModelInput, TruncateResponse
from tests.support import RecordingOutput, ScriptedInput, audio, our_tasks, response, transcript


class BlockedOutput(RecordingOutput):
    """Takes its first event, then blocks until released, like a speaker stuck
    on a slow device: everything after waits in its queue."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.holding = anyio.Event()

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if not self.release.is_set():
            self.holding.set()
            await self.release.wait()


# ---------------------------------------------------------------- the purge on barge-in


async def test_a_barge_in_removes_every_audio_block_still_queued_for_an_output() -> None:
    """The speaker is stuck on its first event while two answers arrive: r0
    complete, r1 under way. The user barges in on r1: none of the queued audio
    (r0's included: it was not heard yet either) reaches the speaker; the
    other events do, in order; r1's late audio is dropped."""
    model = ScriptedModel(
        [
            Step(
                emit=[
                    *response("r0", audio("r0", fill=1), audio("r0", fill=2)),
                    BidiResponseStartEvent("r1"),
                    audio("r1", fill=3),
                    transcript("Well,", rid="r1", final=False),
                    audio("r1", fill=4),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="stop"),
                emit=[BidiSpeechStartedEvent(), audio("r1", fill=5), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
        ],
        capabilities=ModelCapabilities(cancels_on_speech=True),
    )
    speaker = BlockedOutput()
    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [ScriptedInput(["stop"])], [speaker])
        with anyio.fail_after(10):
            await model.consumed()  # every event above was dispatched while the speaker was stuck
            assert speaker.holding.is_set()
            speaker._until = lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r1"
            speaker.release.set()
            await speaker.seen.wait()
        agent.request_stop()
    assert speaker.events == [
        BidiConnectionStartEvent(connection_id="scripted-1", model="scripted"),
        BidiResponseStartEvent("r0"),
        BidiResponseCompleteEvent("r0", "complete"),
        BidiResponseStartEvent("r1"),
        transcript("Well,", rid="r1", final=False),
        BidiInterruptionEvent("user_speech", "r1"),
        BidiResponseCompleteEvent("r1", "interrupted"),
        BidiConnectionCloseEvent(reason="client_disconnect", connection_id="scripted-1"),
    ]
    assert our_tasks() == set()


async def test_a_barge_in_purges_the_receive_queue_the_application_has_not_read() -> None:
    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), audio("r1", fill=1), audio("r1", fill=2)]),
            Step(
                expect=Expect(BidiTextInputEvent, text="stop"),
                emit=[BidiSpeechStartedEvent(), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
        ],
        capabilities=ModelCapabilities(cancels_on_speech=True),
    )
    async with BidiAgent(model=model) as agent:
        await agent.send("stop")
        with anyio.fail_after(10):
            await model.consumed()  # nothing read yet: all of it waits in receive()'s queue
            seen = []
            async for event in agent.receive():
                seen.append(event)
                if isinstance(event, BidiResponseCompleteEvent):
                    break
    assert seen == [
        BidiConnectionStartEvent(connection_id="scripted-1", model="scripted"),
        BidiResponseStartEvent("r1"),
        BidiInterruptionEvent("user_speech", "r1"),
        BidiResponseCompleteEvent("r1", "interrupted"),
    ]


# ---------------------------------------------------------------- the queue's bound


class _CountingSession:
    """A provider connection that hands out ``events`` one by one, counting, then says nothing."""

    connection_id = "counting-1"
    capabilities = ModelCapabilities()

    def __init__(self, events: list[ModelEvent]) -> None:
        self._events = list(events)
        self.taken = 0

    async def send(self, item: ModelInput) -> None:
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> ModelEvent:
        await anyio.lowlevel.checkpoint()
        if self.taken == len(self._events):
            await anyio.sleep_forever()
        self.taken += 1
        return self._events[self.taken - 1]


class _CountingModel:
    model_id = "counting"
    capabilities = ModelCapabilities()

    def __init__(self, events: list[ModelEvent]) -> None:
        self.session = _CountingSession(events)

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[_CountingSession]:
        yield self.session


@pytest.mark.parametrize("size", [1, 3])
async def test_the_agent_stops_reading_the_provider_when_an_output_holds_exactly_its_queue_size(size: int) -> None:
    """The speaker is stuck on its first event: its queue fills to exactly
    ``output_queue_size``, the reader holds the next event waiting for room,
    and nothing more is read from the provider until the speaker moves."""
    events: list[ModelEvent] = [BidiResponseStartEvent("r1"), *(audio("r1", fill=n) for n in range(1, 11))]
    model = _CountingModel(events)
    speaker = BlockedOutput()
    agent = BidiAgent(model=model, output_queue_size=size)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [speaker])
        with anyio.fail_after(10):
            await speaker.holding.wait()
            await anyio.wait_all_tasks_blocked()
        assert model.session.taken == size + 1
        assert speaker.events == [BidiConnectionStartEvent(connection_id="counting-1", model="counting")]
        speaker._until = lambda e: e == events[-1]
        speaker.release.set()
        with anyio.fail_after(10):
            await speaker.seen.wait()
        agent.request_stop()
    assert model.session.taken == len(events)
    assert speaker.events[1 : len(events) + 1] == events  # all of it, in order, once the speaker moved


# ---------------------------------------------------------------- what the user is told


async def test_the_models_error_and_usage_events_reach_the_user_in_every_phase() -> None:
    usage = BidiUsageEvent(input_tokens=12, output_tokens=34, total_tokens=46)
    limited = BidiErrorEvent(message="Rate limit reached", code="rate_limit_exceeded", details="retry in 2s")
    odd = BidiErrorEvent(message="Audio buffer too small", code="input_audio_buffer_commit_empty")
    model = ScriptedModel(
        [
            Step(emit=[limited, usage]),
            Step(
                expect=Expect(BidiTextInputEvent, text="hi"),
                emit=[BidiResponseStartEvent("r1"), odd, usage, BidiResponseCompleteEvent("r1", "complete")],
            ),
        ]
    )
    async with BidiAgent(model=model) as agent:
        seen = []
        with anyio.fail_after(10):
            async for event in agent.receive():
                seen.append(event)
                if event == usage and len(seen) == 3:
                    await agent.send("hi")
                if isinstance(event, BidiResponseCompleteEvent):
                    break
    assert seen == [
        BidiConnectionStartEvent(connection_id="scripted-1", model="scripted"),
        limited,
        usage,
        BidiResponseStartEvent("r1"),
        odd,
        usage,
        BidiResponseCompleteEvent("r1", "complete"),
    ]
    assert agent.phase.value == "closed"


@pytest.mark.parametrize("reason", ["timeout", "complete", "user_request"])
async def test_the_reason_given_to_request_stop_is_the_close_events(reason: str) -> None:
    async with BidiAgent(model=ScriptedModel([[]])) as agent:
        agent.request_stop(reason)
        with anyio.fail_after(10):
            seen = [e async for e in agent.receive()]
    assert seen[-1] == BidiConnectionCloseEvent(reason=reason, connection_id=seen[-1].connection_id)  # type: ignore[union-attr,arg-type]


async def test_request_stop_under_run_gives_its_reason_to_every_output() -> None:
    outputs = [RecordingOutput(), RecordingOutput()]
    agent = BidiAgent(model=ScriptedModel([[]]))
    connected = anyio.Event()

    async def watch(event: BidiOutputEvent) -> None:
        if isinstance(event, BidiConnectionStartEvent):
            connected.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [*outputs, watch])
        with anyio.fail_after(10):
            await connected.wait()
        agent.request_stop("timeout")
    for out in outputs:
        assert out.events[-1] == BidiConnectionCloseEvent(reason="timeout", connection_id="scripted-1")


# ---------------------------------------------------------------- playback reports


class LateReportingSpeaker(RecordingOutput):
    """Reports playback as a speaker whose reports overtake each other: after
    the third block it reports 300 ms, then a late 100 ms."""

    reports_playback = True

    def __init__(self) -> None:
        super().__init__()
        self.reported = anyio.Event()

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if len(self.of(BidiAudioStreamEvent)) == 3 and not self.reported.is_set():
            assert self.agent is not None
            self.agent.report_playback(PlaybackReport("r1", 300.0))
            self.agent.report_playback(PlaybackReport("r1", 100.0))
            self.reported.set()


async def test_a_late_playback_report_never_takes_back_what_was_heard() -> None:
    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), *(audio("r1", 100, fill=n) for n in (1, 2, 3, 4))]),
            Step(
                expect=Expect(BidiTextInputEvent, text="wait"),
                emit=[BidiSpeechStartedEvent(), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
            Step(expect=Expect(CancelResponse, response_id="r1")),
            Step(expect=Expect(TruncateResponse, response_id="r1", audio_end_ms=300)),
        ],
        capabilities=ModelCapabilities(can_truncate=True, cancels_on_speech=False),
    )
    speaker = LateReportingSpeaker()

    class User(ScriptedInput):
        async def __call__(self) -> str:
            await speaker.reported.wait()
            return str(await super().__call__())

    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [User(["wait"])], [speaker])
        with anyio.fail_after(10):
            await model.consumed()
        agent.request_stop()
    model.assert_done()
