"""Record a real session against each simulator, then replay it through an unchanged agent.

The recorded conversation has a typed line answered by a tool call, the
spoken answer to the tool's result, and a story the user interrupts by
speaking (a barge-in). Its replay, on asyncio and Trio, must make the agent
emit the same events and the client send the same frames; a client that says
something else is told where; and no credential reaches the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from adapters.connection import ConnectionOptions
from adapters.testing.replay import ReplayMismatch, ReplayModel, load_recording
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.events import BidiOutputEvent
from tests.support import RecordingOutput, Texts, finals, run_until
from tests.test_providers_common import FAST_RETRY, PROVIDERS, Mic, Provider, _at, get_weather, simulator


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


class Speaker(RecordingOutput):
    """Keeps every event; sets ``story_flowing`` once 400 ms of the story's audio arrived."""

    def __init__(self, texts: Texts) -> None:
        super().__init__()
        self.texts = texts
        self.story: str | None = None
        self.story_flowing = anyio.Event()

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if isinstance(event, BidiResponseStartEvent) and not self.texts.lines and self.story is None:
            self.story = event.response_id  # the first response after the last line was typed
        story_ms = sum(a.duration_ms for a in self.of(BidiAudioStreamEvent) if a.response_id == self.story)
        if self.story is not None and story_ms >= 400:
            self.story_flowing.set()


def _interrupted(events: list[BidiOutputEvent]) -> bool:
    interrupted = [e for e in events if isinstance(e, BidiResponseCompleteEvent) and e.stop_reason == "interrupted"]
    return any(isinstance(e, BidiInterruptionEvent) for e in events) and bool(interrupted)


async def _converse(provider: Provider, model: Any) -> list[BidiOutputEvent]:
    """The scripted user: asks for the weather, then a story, and interrupts it by speaking.

    Returns the events up to the one that completed the interruption (what comes after depends on when
    the stop lands)."""
    s = provider.sim
    texts = AfterAnswer(["weather in Paris please", "tell me a story"])
    speaker = Speaker(texts)
    mic = Mic(
        s.loud(400, **_at(provider)) + s.silence(700, **_at(provider)), speaker.story_flowing, provider.input_rate
    )
    agent = BidiAgent(model=model, tools=[get_weather], reconnect=FAST_RETRY)
    await run_until(agent, [texts, mic], [speaker, texts.observe], lambda: _interrupted(speaker.events), limit_s=30)
    events = speaker.events
    end = next(n for n in range(len(events) + 1) if _interrupted(events[:n]))
    return events[:end]


def _scenario(provider: Provider) -> Any:
    s = provider.sim
    return s.Scenario(
        rules=[
            s.Rule(
                text_contains="weather",
                reply=s.Reply(tool_calls=[s.ToolCall("get_weather", {"location": "Paris"}, "call-1")]),
            ),
            s.Rule(tool_result_for="get_weather", reply=s.Reply(say="It is {result}.")),
            s.Rule(text_contains="story", reply=s.Reply(say="Once upon a time", audio_ms=8000)),
        ]
    )


async def _record(provider: Provider, path: Path, **options: Any) -> list[BidiOutputEvent]:
    async with simulator(provider, scenario=_scenario(provider), speedup=4.0) as sim:
        model = provider.model(sim, connection=ConnectionOptions(record_to=path, **options))
        return await _converse(provider, model)


def _shape(events: list[BidiOutputEvent]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events in order, but the agent's own tool results apart: the tool runs beside the provider's
    traffic, so where its result falls among the provider's events is the scheduler's choice."""
    results = [e.to_dict() for e in events if isinstance(e, BidiToolResultEvent)]
    return [_untimed(e.to_dict()) for e in events if not isinstance(e, BidiToolResultEvent)], results


def _untimed(event: dict[str, Any]) -> dict[str, Any]:
    """A response's ``timing`` with its measured seconds reduced to whether there were any: the replay
    runs at its own pace (the recorded pace is ``speed=1.0``); the rest of it must be the same."""
    timing = event.get("timing")
    if isinstance(timing, dict):
        event["timing"] = {k: (v is not None) if isinstance(v, float) else v for k, v in timing.items()}
    return event


async def test_a_recorded_session_replays_with_the_same_events_and_frames(provider: Provider, tmp_path: Path) -> None:
    path = tmp_path / "call.jsonl"
    recorded = await _record(provider, path)
    assert [e.name for e in recorded if isinstance(e, BidiToolUseEvent)] == ["get_weather"]
    assert any("sunny in Paris" in f for f in finals(RecordingOutput_of(recorded), "assistant"))

    replay = ReplayModel(path)
    replayed = await _converse(provider, replay)

    assert _shape(replayed) == _shape(recorded)
    replay.check()  # every client frame matched, in order, on the one recorded connection
    assert len(replay.connections) == 1
    assert replay.connections[0].sent == len(load_recording(path).connections[0].client_frames)


def RecordingOutput_of(events: list[BidiOutputEvent]) -> RecordingOutput:
    out = RecordingOutput()
    out.events = list(events)
    return out


async def test_a_replay_without_audio_plays_silence_of_the_same_length(provider: Provider, tmp_path: Path) -> None:
    path = tmp_path / "call.jsonl"
    recorded = await _record(provider, path, record_audio=False)
    text = path.read_text()
    assert "dropped_audio_bytes" in text
    replay = ReplayModel(path)
    replayed = await _converse(provider, replay)
    replay.check()  # the client's audio compared by length
    audio = [e for e in replayed if isinstance(e, BidiAudioStreamEvent)]
    assert [len(a.audio) for a in audio] == [len(a.audio) for a in recorded if isinstance(a, BidiAudioStreamEvent)]
    assert all(not any(a.audio) for a in audio)
    other = _shape([e for e in replayed if not isinstance(e, BidiAudioStreamEvent)])
    assert other == _shape([e for e in recorded if not isinstance(e, BidiAudioStreamEvent)])


# ---------------------------------------------------------------- a client that deviates


async def _typed(provider: Provider, model: Any, lines: list[str]) -> RecordingOutput:
    out = RecordingOutput()
    texts = Texts(lines)
    agent = BidiAgent(model=model)
    await run_until(agent, [texts], [out, texts.observe], lambda: len(finals(out, "assistant")) >= 1)
    return out


async def test_a_client_that_says_something_else_is_told_where(provider: Provider, tmp_path: Path) -> None:
    s = provider.sim
    path = tmp_path / "call.jsonl"
    scenario = s.Scenario(rules=[s.Rule(text_contains="", reply=s.Reply(say="Hello there"))])
    async with simulator(provider, scenario=scenario) as sim:
        await _typed(provider, provider.model(sim, connection=ConnectionOptions(record_to=path)), ["good morning"])
    replay = ReplayModel(path)
    texts = Texts(["good evening"])
    with pytest.raises(ReplayMismatch) as caught, anyio.fail_after(15):
        await BidiAgent(model=replay).run([texts], [RecordingOutput(), texts.observe])
    mismatch = caught.value
    assert mismatch.connection == 1
    assert mismatch.where is not None and mismatch.frame is not None
    assert "good morning" in json.dumps(mismatch.expected) and "good evening" in json.dumps(mismatch.actual)
    assert "good morning" in str(mismatch) and "good evening" in str(mismatch)
    assert replay.mismatches == [mismatch]
    # The frames before it matched: the setup (and the history), byte for byte in content.
    assert mismatch.frame == next(
        n for n, f in enumerate(load_recording(path).connections[0].client_frames, 1) if "good morning" in json.dumps(f)
    )


async def test_a_client_that_sends_nothing_is_told_what_the_provider_waits_for(
    provider: Provider, tmp_path: Path
) -> None:
    s = provider.sim
    path = tmp_path / "call.jsonl"
    scenario = s.Scenario(rules=[s.Rule(text_contains="", reply=s.Reply(say="Hello there"))])
    async with simulator(provider, scenario=scenario) as sim:
        await _typed(provider, provider.model(sim, connection=ConnectionOptions(record_to=path)), ["good morning"])
    replay = ReplayModel(path, wait_timeout_s=0.5)
    with pytest.raises(ReplayMismatch, match="has not sent this frame") as caught, anyio.fail_after(15):
        await BidiAgent(model=replay).run(outputs=[RecordingOutput()])
    mismatch = caught.value
    frames = load_recording(path).connections[0].client_frames
    typed = next(n for n, f in enumerate(frames, 1) if "good morning" in json.dumps(f))
    # The first frame of the user's line (Nova opens a content for it first), after the setup the replay got.
    assert mismatch.frame is not None and typed - 1 <= mismatch.frame <= typed
    assert mismatch.expected == frames[mismatch.frame - 1]
    assert mismatch.actual is None


# ---------------------------------------------------------------- secrets


class AfterAnswer(Texts):
    """Types each line once the previous answer is complete *and* its final transcript came (Nova's comes
    after the completion): typing between the two makes the history's order a race, so a reconnect's seed,
    and the frames a replay compares, could differ from the call's."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.complete: set[str] = set()
        self.final: set[str] = set()

    async def observe(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "complete":
            self.complete.add(event.response_id)
        elif isinstance(event, BidiTranscriptStreamEvent) and event.is_final and event.role == "assistant":
            self.final.add(event.response_id or "")
        else:
            return
        if self.complete & self.final:
            self.complete.clear()
            self.final.clear()
            self.ready.set()


async def test_no_credential_reaches_a_recording(provider: Provider, tmp_path: Path) -> None:
    """Two connections (the service drops the first): the file holds no secret of the model's, no header,
    no signature."""
    s = provider.sim
    path = tmp_path / "call.jsonl"
    scenario = s.Scenario(rules=[s.Rule(text_contains="drop", times=1, reply=s.Reply(drop=True))])
    async with simulator(provider, scenario=scenario) as sim:
        out = RecordingOutput()
        texts = AfterAnswer(["hello", "now drop", "hello again"])

        async def release_after_restart(event: BidiOutputEvent) -> None:
            if type(event).__name__ == "BidiConnectionRestartEvent":
                texts.ready.set()

        agent = BidiAgent(model=provider.model(sim, connection=ConnectionOptions(record_to=path)), reconnect=FAST_RETRY)
        await run_until(
            agent,
            [texts],
            [out, texts.observe, release_after_restart],
            lambda: any("hello again" in f for f in finals(out, "assistant")),
        )
    raw = path.read_bytes()
    assert len(load_recording(path).connections) == 2
    for secret in provider.secrets:
        assert secret.encode() not in raw
    lowered = raw.lower()
    for word in (b"bearer", b"authorization", b"x-goog-api-key", b"chunk-signature", b"signature=", b"x-amz-"):
        assert word not in lowered
    # Replaying the drop: the agent reconnects as it did, onto the second recorded connection.
    replay = ReplayModel(path)
    out = RecordingOutput()
    texts = AfterAnswer(["hello", "now drop", "hello again"])

    async def release(event: BidiOutputEvent) -> None:
        if type(event).__name__ == "BidiConnectionRestartEvent":
            texts.ready.set()

    await run_until(
        BidiAgent(model=replay, reconnect=FAST_RETRY),
        [texts],
        [out, texts.observe, release],
        lambda: any("hello again" in f for f in finals(out, "assistant")),
    )
    replay.check()
