"""BidiAgent end to end over the ScriptedModel: the manual API, run(), tools,
failures, reconnects and barge-in."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from adapters.testing import End, Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionError,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiProviderError,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageError,
    ReconnectPolicy,
    stop_conversation,
    tool,
)
from ports.events import BidiAudioInputEvent, BidiAudioStreamEvent, BidiSpeechStartedEvent
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.support import PlayingOutput, RecordingOutput, ScriptedInput, audio, our_tasks, response, transcript

FAST_RETRY = ReconnectPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001)


def python_script() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="What is Python?"),
                emit=response("r1", transcript("A language.")),
            )
        ]
    )


# ---------------------------------------------------------------- the manual style


async def test_manual_start_send_receive_stop() -> None:
    model = python_script()
    agent = BidiAgent(model=model, system_prompt="Be brief.")
    await agent.start()
    try:
        await agent.send("What is Python?")
        seen = []
        async for event in agent.receive():
            seen.append(event)
            if isinstance(event, BidiResponseCompleteEvent):
                break
    finally:
        await agent.stop()
    assert [type(e) for e in seen] == [
        BidiConnectionStartEvent,
        BidiResponseStartEvent,
        BidiTranscriptStreamEvent,
        BidiResponseCompleteEvent,
    ]
    assert model.requests[0].system_prompt == "Be brief."
    assert agent.messages == [TextMessage("user", "What is Python?"), TextMessage("assistant", "A language.")]
    assert model.open_connections == 0
    assert our_tasks() == set()
    model.assert_done()


async def test_send_accepts_event_and_dict_forms() -> None:
    model = ScriptedModel(
        [
            Step(expect=Expect(BidiTextInputEvent, text="one")),
            Step(expect=Expect(BidiTextInputEvent, text="two")),
            Step(expect=Expect(BidiTextInputEvent, text="three")),
        ]
    )
    async with BidiAgent(model=model) as agent:
        await agent.send("one")
        await agent.send(BidiTextInputEvent("two"))
        await agent.send({"type": "bidi_audio_input", "audio": "AAA=", "sample_rate": 16000})
        await agent.send({"type": "bidi_text_input", "text": "three"})
        with anyio.fail_after(5):
            await model.consumed()
    model.assert_done()
    # Sends reach the connection in the order they were made.
    assert isinstance(model.sent[2], BidiAudioInputEvent)
    assert model.sent[2].audio == b"\x00\x00"


@pytest.mark.parametrize("bad", [42, None, {"type": "bidi_audio_stream", "audio": ""}, {"text": "no type"}])
async def test_send_rejects_wrong_types(bad: object) -> None:
    async with BidiAgent(model=ScriptedModel([])) as agent:
        with pytest.raises(BidiUsageError):
            await agent.send(bad)  # type: ignore[arg-type]


async def test_send_and_receive_before_start_are_usage_errors() -> None:
    agent = BidiAgent(model=ScriptedModel([]))
    with pytest.raises(BidiUsageError, match="start"):
        await agent.send("hi")
    with pytest.raises(BidiUsageError, match="start"):
        async for _ in agent.receive():
            pass
    await agent.stop()  # before start: nothing to do


async def test_stop_twice_is_safe_and_start_twice_is_not() -> None:
    agent = BidiAgent(model=ScriptedModel([]))
    await agent.start()
    with pytest.raises(BidiUsageError, match="already started"):
        await agent.start()
    await agent.stop()
    await agent.stop()
    with pytest.raises(BidiUsageError, match="closed"):
        await agent.send("late")
    assert our_tasks() == set()


async def test_stop_wakes_a_pending_receive() -> None:
    agent = BidiAgent(model=ScriptedModel([[]]))
    received: list[object] = []
    ended = anyio.Event()

    async def consume() -> None:
        async for event in agent.receive():
            received.append(event)
        ended.set()

    async with anyio.create_task_group() as tg:
        await agent.start()
        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        await agent.stop()
        with anyio.fail_after(5):
            await ended.wait()
    assert isinstance(received[-1], BidiConnectionCloseEvent)
    assert received[-1].reason == "client_disconnect"


async def test_stop_inside_the_receive_loop() -> None:
    model = python_script()
    agent = BidiAgent(model=model)
    await agent.start()
    await agent.send("What is Python?")
    seen = []
    async for event in agent.receive():
        seen.append(event)
        if isinstance(event, BidiResponseStartEvent):
            await agent.stop()
    assert isinstance(seen[-1], BidiConnectionCloseEvent)
    assert model.open_connections == 0
    assert our_tasks() == set()


async def test_stop_from_another_task_ends_everything_of_ours_before_it_returns() -> None:
    """A watchdog task stops a manual-style conversation while the starting task sits in its
    receive() loop and a tool is running: when the watchdog's stop() returns, the conversation
    has closed and no task, connection or timer of ours is left; the starter's own stop() then
    finds nothing left to do."""
    tool_started = anyio.Event()
    tool_cancelled = anyio.Event()

    @tool
    async def slow_lookup(query: str) -> str:
        """Look something up, slowly.

        Args:
            query: What to look up.
        """
        tool_started.set()
        try:
            await anyio.sleep_forever()
        finally:
            tool_cancelled.set()
        return query  # pragma: no cover

    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="look it up"),
                emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "slow_lookup", {"query": "x"})],
            )
        ]
    )
    agent = BidiAgent(model=model, tools=[slow_lookup])
    left_after_stop: set[str] = set()
    seen: list[BidiOutputEvent] = []

    async def watchdog() -> None:
        await tool_started.wait()
        await agent.stop()
        left_after_stop.update(our_tasks())
        assert tool_cancelled.is_set()
        assert model.open_connections == 0

    with anyio.fail_after(10):
        await agent.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog)
            await agent.send("look it up")
            seen.extend([e async for e in agent.receive()])
        await agent.stop()
    assert left_after_stop == set()
    assert isinstance(seen[-1], BidiConnectionCloseEvent)
    assert seen[-1].reason == "client_disconnect"
    assert our_tasks() == set()


async def test_stop_from_another_task_under_run_returns_once_run_has_stopped_its_io() -> None:
    model = ScriptedModel([[]])
    agent = BidiAgent(model=model)
    out = RecordingOutput(until=lambda e: isinstance(e, BidiConnectionStartEvent))
    inp = ScriptedInput([])
    stopped_io: list[bool] = []

    async def stop_when_connected() -> None:
        await out.seen.wait()
        await agent.stop()
        stopped_io.extend([out.stopped, inp.stopped])
        assert our_tasks() == set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_connected)
            await agent.run(inputs=[inp], outputs=[out])
    assert stopped_io == [True, True]
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)


async def test_fatal_provider_error_ends_receive_with_that_error() -> None:
    refusal = BidiProviderError("invalid api key", code="invalid_api_key")
    model = ScriptedModel([[Step(end=End(refusal))]])
    agent = BidiAgent(model=model)
    await agent.start()
    seen = []
    with pytest.raises(BidiProviderError) as caught:
        async for event in agent.receive():
            seen.append(event)
    await agent.stop()
    assert caught.value is refusal
    assert isinstance(seen[-1], BidiConnectionCloseEvent)
    assert seen[-1].reason == "error"


async def test_auth_failure_on_connect_is_not_retried() -> None:
    refusal = BidiProviderError("bad key", code="invalid_api_key")
    model = ScriptedModel([refusal, []])
    with pytest.raises(BidiProviderError):
        await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])
    assert len(model.requests) == 1


async def test_connect_retries_then_gives_up() -> None:
    down = BidiConnectionError("connection refused")
    model = ScriptedModel([down, down, down, []])
    out = RecordingOutput()
    with pytest.raises(BidiConnectionError, match="refused"):
        await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[out])
    assert len(model.requests) == 3
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)


# ---------------------------------------------------------------- run()


@tool
def get_weather(location: str) -> str:
    """Get the current weather for a location.

    Args:
        location: City name or location
    """
    return f"The weather in {location} is sunny"


async def test_run_text_conversation_with_tool_and_stop_conversation() -> None:
    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Weather in Paris?"),
                emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "get_weather", {"location": "Paris"})],
            ),
            Step(
                expect=Expect(BidiToolResultEvent, tool_use_id="t1", status="success"),
                emit=[
                    BidiResponseCompleteEvent("r1", "tool_use"),
                    *response("r2", transcript("Sunny in Paris.", rid="r2")),
                ],
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="bye"),
                emit=[BidiToolUseEvent("t2", "stop_conversation", {})],
            ),
        ]
    )
    answered = anyio.Event()
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
    out.seen = answered

    class User(ScriptedInput):
        async def __call__(self) -> str:
            if self._items == ["bye"]:
                await answered.wait()  # say goodbye once the answer is in
            return str(await super().__call__())

    inp = User(["Weather in Paris?", "bye"])
    agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt="Use tools.")
    with anyio.fail_after(10):
        await agent.run(inputs=[inp], outputs=[out])
    close = out.events[-1]
    assert isinstance(close, BidiConnectionCloseEvent)
    assert close.reason == "user_request"
    results = out.of(BidiToolResultEvent)
    assert [(r.name, r.status) for r in results] == [("get_weather", "success"), ("stop_conversation", "success")]
    assert results[0].content == "The weather in Paris is sunny"
    # stop_conversation's result is not sent to the model; the weather result is.
    assert [i.tool_use_id for i in model.sent if isinstance(i, BidiToolResultEvent)] == ["t1"]
    assert ToolCallMessage("t1", "get_weather", {"location": "Paris"}) in agent.messages
    assert any(isinstance(m, ToolResultMessage) and m.tool_use_id == "t1" for m in agent.messages)
    assert out.stopped and inp.stopped
    assert model.open_connections == 0
    assert our_tasks() == set()


async def test_raising_tool_gives_model_an_error_result_and_user_an_error_event() -> None:
    @tool
    def explode() -> str:
        """Always fails."""
        raise ValueError("kaboom")

    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "explode", {})]),
            Step(
                expect=Expect(BidiToolResultEvent, tool_use_id="t1", status="error"),
                emit=[BidiResponseCompleteEvent("r1", "tool_use")],
            ),
        ]
    )
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    agent = BidiAgent(model=model, tools=[explode])
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [out])
        with anyio.fail_after(5):
            await out.seen.wait()
        agent.request_stop()
    errors = out.of(BidiErrorEvent)
    assert len(errors) == 1
    assert errors[0].code == "tool_error"
    assert "kaboom" in errors[0].message
    result = next(i for i in model.sent if isinstance(i, BidiToolResultEvent))
    assert "ValueError" in str(result.content)
    assert "kaboom" in str(result.content)


async def test_bad_tool_arguments_do_not_crash_the_conversation() -> None:
    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "get_weather", {"city": "Paris"})]),
            Step(
                expect=Expect(BidiToolResultEvent, tool_use_id="t1", status="error"),
                emit=response("r2", transcript("Sorry.", rid="r2")),
            ),
        ]
    )
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
    agent = BidiAgent(model=model, tools=[get_weather])
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [out])
        with anyio.fail_after(5):
            await out.seen.wait()
        agent.request_stop()
    result = next(i for i in model.sent if isinstance(i, BidiToolResultEvent))
    assert "location" in str(result.content)
    assert out.of(BidiErrorEvent)[0].code == "tool_error"


class Boom(Exception):
    pass


class FailingOutput(RecordingOutput):
    async def __call__(self, event: object) -> None:
        raise Boom("output broke")


async def test_failing_output_cancels_everything_and_raises_that_error() -> None:
    model = ScriptedModel([[]])
    other = RecordingOutput()
    inp = ScriptedInput([])
    with pytest.raises(Boom, match="output broke"):
        await BidiAgent(model=model).run(inputs=[inp], outputs=[other, FailingOutput()])
    assert inp.stopped and other.stopped
    assert model.open_connections == 0
    assert our_tasks() == set()


async def test_failing_input_cancels_everything_and_raises_that_error() -> None:
    class FailingInput(ScriptedInput):
        async def __call__(self) -> str:
            raise Boom("mic unplugged")

    model = ScriptedModel([[]])
    out = RecordingOutput()
    with pytest.raises(Boom, match="mic unplugged"):
        await BidiAgent(model=model).run(inputs=[FailingInput([])], outputs=[out])
    assert out.stopped
    assert model.open_connections == 0
    assert our_tasks() == set()


async def test_two_failures_at_once_raise_an_exception_group() -> None:
    both_ready = anyio.Event()
    arrived = 0

    class Failing(ScriptedInput):
        async def __call__(self) -> str:
            nonlocal arrived
            arrived += 1
            if arrived == 2:
                both_ready.set()
            with anyio.CancelScope(shield=True):
                await both_ready.wait()
            raise Boom("input broke")

    with pytest.raises(ExceptionGroup) as caught:
        await BidiAgent(model=ScriptedModel([[]])).run(inputs=[Failing([]), Failing([])])
    assert len(caught.value.exceptions) == 2


async def test_an_input_that_ends_does_not_end_the_conversation() -> None:
    model = ScriptedModel([Step(expect=Expect(BidiTextInputEvent, text="hello"), emit=response("r1"))])
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [ScriptedInput(["hello"], eof=True)], [out])
        with anyio.fail_after(5):
            await out.seen.wait()
        assert agent.phase.value == "listening"
        agent.request_stop()
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)


async def test_invalid_input_item_becomes_an_error_event() -> None:
    model = ScriptedModel([Step(expect=Expect(BidiTextInputEvent, text="fine"), emit=response("r1"))])
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    agent = BidiAgent(model=model)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [ScriptedInput([{"type": "nonsense"}, "fine"])], [out])
        with anyio.fail_after(5):
            await out.seen.wait()
        agent.request_stop()
    assert out.of(BidiErrorEvent)[0].code == "invalid_input"


async def test_plain_callables_work_as_inputs_and_outputs() -> None:
    model = ScriptedModel([Step(expect=Expect(BidiTextInputEvent, text="hi"), emit=response("r1"))])
    got: list[object] = []
    sent = False
    agent = BidiAgent(model=model)

    async def receive_json() -> dict[str, str]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "bidi_text_input", "text": "hi"}
        await anyio.sleep_forever()
        raise AssertionError

    async def send_json(event: object) -> None:
        got.append(event)
        if isinstance(event, BidiResponseCompleteEvent):
            agent.request_stop()

    with anyio.fail_after(5):
        await agent.run(inputs=[receive_json], outputs=[send_json])
    assert isinstance(got[-1], BidiConnectionCloseEvent)


async def test_slow_output_does_not_stall_the_others() -> None:
    stuck = anyio.Event()

    class StuckOutput(RecordingOutput):
        async def __call__(self, event: object) -> None:
            self.events.append(event)  # type: ignore[arg-type]
            await stuck.wait()  # never set: this output is hopelessly slow

    model = ScriptedModel([Step(emit=response("r1", *[audio("r1") for _ in range(50)], transcript("done")))])
    fast = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    slow = StuckOutput()
    agent = BidiAgent(model=model, drain_timeout_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [slow, fast])
        with anyio.fail_after(5):
            await fast.seen.wait()
        agent.request_stop()
    assert len(fast.of(BidiAudioStreamEvent)) == 50
    assert len(slow.events) == 1
    assert our_tasks() == set()


# ---------------------------------------------------------------- reconnects


async def test_connection_loss_reconnects_with_history_and_buffered_input() -> None:
    lost = BidiConnectionError("connection reset")
    model = ScriptedModel(
        [
            [
                Step(expect=Expect(BidiTextInputEvent, text="first"), emit=response("r1", transcript("One."))),
                Step(expect=Expect(BidiTextInputEvent, text="second"), end=End(lost)),
            ],
            [
                Step(
                    expect=Expect(BidiTextInputEvent, text="third"), emit=response("r2", transcript("Three.", rid="r2"))
                )
            ],
        ],
        match=(BidiTextInputEvent,),
    )
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
    agent = BidiAgent(model=model, reconnect=FAST_RETRY)
    restarted = anyio.Event()

    class Texts(ScriptedInput):
        async def __call__(self) -> str:
            if not self._items:
                await anyio.sleep_forever()
            item = self._items[0]
            if item == "second":
                await first_done.wait()
            if item == "third":
                await restarted.wait()
            return str(self._items.pop(0))

    first_done = anyio.Event()

    class Watcher(RecordingOutput):
        async def __call__(self, event: object) -> None:
            if isinstance(event, BidiResponseCompleteEvent) and event.response_id == "r1":
                first_done.set()
            if isinstance(event, BidiConnectionRestartEvent):
                restarted.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [Texts(["first", "second", "third"])], [out, Watcher()])
        with anyio.fail_after(5):
            await out.seen.wait()
        agent.request_stop()
    restart = out.of(BidiConnectionRestartEvent)
    assert len(restart) == 1
    assert restart[0].reason == "connection_lost"
    assert len(out.of(BidiConnectionStartEvent)) == 2
    # The second connection was seeded with what the first one had heard and said.
    history = model.requests[1].history
    assert TextMessage("user", "first") in history
    assert TextMessage("assistant", "One.") in history
    texts = [i.text for i in model.sent if isinstance(i, BidiTextInputEvent)]
    assert texts.count("third") == 1


async def test_a_provider_that_accepts_and_drops_at_once_ends_the_conversation_after_max_attempts() -> None:
    """Opened, then dropped before saying anything, again and again: not a
    tight reconnect loop forever, but a failure after ``max_attempts``."""
    dropped = [Step(end=End(BidiConnectionError("reset by peer")))]
    model = ScriptedModel([dropped, dropped, dropped, dropped])
    out = RecordingOutput()
    with anyio.fail_after(5), pytest.raises(BidiConnectionError, match="failed 3 times in a row"):
        await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[out])
    assert len(model.requests) == 3
    assert out.of(BidiConnectionCloseEvent)[-1].reason == "error"


async def test_input_sent_while_connecting_is_delivered_once_in_order() -> None:
    gate = anyio.Event()
    model = ScriptedModel(
        [
            Step(expect=Expect(BidiTextInputEvent, text="a")),
            Step(expect=Expect(BidiTextInputEvent, text="b")),
            Step(expect=Expect(BidiTextInputEvent, text="c"), emit=response("r1")),
        ]
    )
    original = model.connect

    def slow_connect(request):  # type: ignore[no-untyped-def]
        class Slow:
            async def __aenter__(self):  # type: ignore[no-untyped-def]
                await gate.wait()
                self.cm = original(request)
                return await self.cm.__aenter__()

            async def __aexit__(self, *exc):  # type: ignore[no-untyped-def]
                return await self.cm.__aexit__(*exc)

        return Slow()

    model.connect = slow_connect  # type: ignore[method-assign]
    async with BidiAgent(model=model) as agent:
        for text in "abc":
            await agent.send(text)
        assert agent.phase.value == "connecting"
        gate.set()
        async for event in agent.receive():
            if isinstance(event, BidiResponseCompleteEvent):
                break
    assert [i.text for i in model.sent if isinstance(i, BidiTextInputEvent)] == ["a", "b", "c"]
    model.assert_done()


# ---------------------------------------------------------------- barge-in


async def test_barge_in_clears_playback_cancels_and_truncates_to_what_was_played() -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=False)
    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="talk"),
                emit=[BidiResponseStartEvent("r1"), audio("r1", 100), audio("r1", 100)],
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="wait"),
                emit=[BidiSpeechStartedEvent(), audio("r1", 100), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
            Step(expect=Expect(CancelResponse, response_id="r1")),
            Step(expect=Expect(TruncateResponse, response_id="r1")),
        ],
        capabilities=caps,
    )
    speaker = PlayingOutput()
    played_two = anyio.Event()
    agent = BidiAgent(model=model)

    class Mic(ScriptedInput):
        async def __call__(self) -> str:
            if self._items == ["wait"]:
                await played_two.wait()
            if not self._items:
                await anyio.sleep_forever()
            return str(self._items.pop(0))

    speaker._until = lambda e: len(speaker.of(BidiAudioStreamEvent)) == 2
    speaker.seen = played_two
    done = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [Mic(["talk", "wait"])], [speaker, done])
        with anyio.fail_after(5):
            await done.seen.wait()
            await model.consumed()
        agent.request_stop()
    # The late third block of r1 was never played; the model was told what the user heard.
    assert len(speaker.played) == 2
    interruption = speaker.of(BidiInterruptionEvent)
    assert interruption == [BidiInterruptionEvent("user_speech", "r1")]
    truncate = next(i for i in model.sent if isinstance(i, TruncateResponse))
    assert truncate.audio_end_ms == 200
    assert done.of(BidiResponseCompleteEvent)[0].stop_reason == "interrupted"
    model.assert_done()


async def test_debug_logging_shows_lifecycle_tools_and_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bidi_core")
    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "get_weather", {"location": "Oslo"})]),
            Step(expect=Expect(BidiToolResultEvent), emit=[BidiResponseCompleteEvent("r1", "tool_use")]),
        ]
    )
    out = RecordingOutput(until=lambda e: isinstance(e, BidiResponseCompleteEvent))
    agent = BidiAgent(model=model, tools=[get_weather])
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [out])
        with anyio.fail_after(5):
            await out.seen.wait()
        agent.request_stop()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("bidi_core"))
    assert "connected: scripted-1" in text
    assert "running tool get_weather" in text
    assert "event " in text
    assert "conversation closed" in text
