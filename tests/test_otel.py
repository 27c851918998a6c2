"""OpenTelemetry: a scripted conversation's spans and metrics, read back from the SDK's in-memory exporters.

One conversation over ScriptedModel: a text turn with a tool call, a spoken
answer, a story the user talks over (a barge-in) and a dropped connection
replaced by a new one. The span tree, their attributes and every metric are
checked; so is what must never be exported (tool arguments, transcripts
unless asked for, audio), and that without an SDK nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.otel import BidiTelemetry
from adapters.testing.scripted import End, Expect, ScriptedModel, Step
from bidi_core import BidiAgent, BidiConnectionError, BidiResponseCompleteEvent, ReconnectPolicy, tool
from ports.events import (
    BidiAudioStreamEvent,
    BidiErrorEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiUsageEvent,
    ModalityUsage,
)
from ports.io import PlaybackReport
from tests.support import audio, response, transcript


@tool
def get_weather(location: str) -> str:
    """Weather for a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


def script() -> ScriptedModel:
    first = [
        Step(
            expect=Expect(BidiTextInputEvent, text="Weather in Paris?"),
            emit=response(
                "r1",
                BidiToolUseEvent("t1", "get_weather", {"location": "Paris"}),
                BidiUsageEvent(100, 10, 110, (ModalityUsage("text", 100, 10, 40),), cache_read_input_tokens=40),
                stop="tool_use",
            ),
        ),
        Step(
            expect=Expect(BidiToolResultEvent),
            emit=response(
                "r2",
                *[audio("r2") for _ in range(3)],
                transcript("Sunny in Paris.", rid="r2"),
                BidiUsageEvent(50, 60, 110, (ModalityUsage("text", 50, 10), ModalityUsage("audio", 0, 50))),
            ),
        ),
        Step(  # the story's start: no end yet
            expect=Expect(BidiTextInputEvent, text="A story?"),
            emit=response("r3", *[audio("r3") for _ in range(5)])[:-1],
        ),
        Step(
            expect=Expect(BidiTextInputEvent, text="Hold on."),
            emit=[BidiSpeechStartedEvent(), BidiResponseCompleteEvent("r3", "interrupted"), BidiSpeechStoppedEvent()],
            end=End(BidiConnectionError("reset by peer")),
        ),
    ]
    second = [Step(emit=[BidiErrorEvent("slow down", code="rate_limited"), *response("r4", audio("r4"), audio("r4"))])]
    return ScriptedModel([first, second])


class Exported:
    def __init__(self, spans: list[ReadableSpan], metrics: dict[str, list[Any]]) -> None:
        self.spans = spans
        self.metrics = metrics

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Data points by their attributes (minus provider and model)."""
        out = {}
        for point in self.metrics.get(metric, []):
            attributes = {k: v for k, v in point.attributes.items() if not k.startswith("gen_ai.re")}
            attributes.pop("gen_ai.provider.name", None)
            out[tuple(sorted(attributes.items()))] = point
        return out


async def converse(telemetry: BidiTelemetry) -> list[BidiResponseCompleteEvent]:
    """The scripted conversation, the user answering as the events come; the completions it saw."""
    model = script()
    completions: list[BidiResponseCompleteEvent] = []
    played: dict[str, float] = {}
    agent = BidiAgent(
        model=model,
        tools=[get_weather],
        observers=[telemetry.observer()],
        reconnect=ReconnectPolicy(initial_backoff_s=0.001, max_backoff_s=0.001),
    )
    with anyio.fail_after(10):
        async with agent:
            await agent.send("Weather in Paris?")
            async for event in agent.receive():
                if isinstance(event, BidiAudioStreamEvent) and event.response_id is not None:
                    played[event.response_id] = played.get(event.response_id, 0.0) + event.duration_ms
                    agent.report_playback(PlaybackReport(event.response_id, played[event.response_id]))
                    if event.response_id == "r3" and played["r3"] == 100:
                        await agent.send("Hold on.")  # after all of r3 that came was heard
                if isinstance(event, BidiResponseCompleteEvent):
                    completions.append(event)
                    if event.response_id == "r2":
                        await agent.send("A story?")
                    if event.response_id == "r4":
                        break
    model.assert_done()
    return completions


@pytest.fixture
def sdk() -> Iterator[tuple[BidiTelemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield BidiTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider), spans, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def exported(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> Exported:
    metrics: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                metrics[metric.name] = list(metric.data.data_points)
    return Exported(list(spans.get_finished_spans()), metrics)


async def test_the_span_tree_and_its_attributes(sdk: Any) -> None:
    telemetry, spans, reader = sdk
    completions = await converse(telemetry)
    out = exported(spans, reader)

    conversation = out.one("bidi.conversation")
    assert conversation.parent is None
    assert conversation.attributes is not None
    assert conversation.attributes["gen_ai.provider.name"] == "scripted"
    assert conversation.attributes["gen_ai.request.model"] == "scripted"
    assert conversation.attributes["bidi.close.reason"] == "client_disconnect"
    assert conversation.attributes["gen_ai.usage.input_tokens"] == 150
    assert conversation.attributes["gen_ai.usage.output_tokens"] == 70

    first, second = sorted(out.named("bidi.connection"), key=lambda s: s.start_time or 0)
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == conversation.context.span_id
    assert first.attributes == {
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "bidi.connection.id": "scripted-1",
        "bidi.connection.end_reason": "connection_lost",
    }
    assert second.attributes is not None and second.attributes["bidi.connection.end_reason"] == "client_disconnect"

    responses = {s.attributes["gen_ai.response.id"]: s for s in out.named("bidi.response") if s.attributes}
    assert sorted(responses) == ["r1", "r2", "r3", "r4"]
    for rid, parent in (("r1", first), ("r2", first), ("r3", first), ("r4", second)):
        span_parent = responses[rid].parent
        assert span_parent is not None and span_parent.span_id == parent.context.span_id
    r1, r2, r3, r4 = (responses[r].attributes or {} for r in ("r1", "r2", "r3", "r4"))
    assert r1["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert "bidi.response.time_to_first_audio_s" not in r1  # it said nothing
    assert (r1["gen_ai.usage.input_tokens"], r1["gen_ai.usage.output_tokens"]) == (100, 10)
    assert r2["bidi.user_turn"] == "text"  # the question, answered after the silent tool call
    assert r2["bidi.response.interrupted"] is False
    # It completed before the user heard any of it (generation outruns playback), before any report.
    assert "bidi.response.played_ms" not in r2
    assert r3["bidi.response.interrupted"] is True
    assert r3["bidi.response.played_ms"] == 100  # what was heard when the user cut in
    assert r3["gen_ai.response.finish_reasons"] == ("interrupted",)
    assert [e.name for e in responses["r3"].events] == ["bidi.interruption"]
    assert r4["bidi.user_turn"] == "speech"  # the provider heard the user stop speaking
    for attributes in (r2, r3, r4):
        assert attributes["bidi.response.time_to_first_audio_s"] >= 0
        assert attributes["bidi.response.since_user_s"] >= 0

    execute = out.one("execute_tool get_weather")
    assert execute.parent is not None and execute.parent.span_id == first.context.span_id
    assert execute.attributes == {
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "t1",
        "bidi.tool.status": "success",
    }

    reconnect = out.one("bidi.reconnect")
    assert reconnect.parent is not None and reconnect.parent.span_id == conversation.context.span_id
    assert reconnect.attributes is not None and reconnect.attributes["bidi.reconnect.reason"] == "connection_lost"
    assert reconnect.attributes["bidi.reconnect.gap_s"] >= 0
    assert first.end_time is not None and reconnect.start_time is not None and reconnect.end_time is not None
    assert second.start_time is not None and reconnect.start_time >= first.end_time - 1
    assert reconnect.end_time <= second.start_time + 10**6  # the gap ends as the next connection opens

    # The same figures reached the application on the completion events.
    timing = {c.response_id: c.timing for c in completions}
    assert timing["r3"] is not None and timing["r3"].played_ms == 100 and timing["r3"].interrupted
    assert timing["r1"] is not None and timing["r1"].first_audio_s is None


async def test_the_metrics(sdk: Any) -> None:
    telemetry, spans, reader = sdk
    await converse(telemetry)
    out = exported(spans, reader)

    first_audio = out.points("bidi.response.time_to_first_audio")
    assert {k: p.count for k, p in first_audio.items()} == {
        (("bidi.user_turn", "speech"),): 1,  # r4
        (("bidi.user_turn", "text"),): 2,  # r2 (after the tool call) and r3
    }
    assert all(p.min >= 0 for p in first_audio.values())
    (tool_duration,) = out.points("bidi.tool.duration").items()
    assert tool_duration[0] == (("bidi.tool.status", "success"), ("gen_ai.tool.name", "get_weather"))
    assert tool_duration[1].count == 1
    (gap,) = out.points("bidi.reconnect.gap").items()
    assert gap[0] == (("bidi.reconnect.reason", "connection_lost"),) and gap[1].count == 1
    assert [p.value for p in out.points("bidi.interruptions").values()] == [1]
    assert {k: p.value for k, p in out.points("bidi.errors").items()} == {(("error.type", "rate_limited"),): 1}
    tokens = {
        (dict(k)["gen_ai.token.type"], dict(k)["bidi.modality"], dict(k)["bidi.cached"]): p.value
        for k, p in out.points("bidi.tokens").items()
    }
    assert tokens == {
        ("input", "text", False): 60 + 50,
        ("input", "text", True): 40,
        ("output", "text", False): 20,
        ("output", "audio", False): 50,
    }
    usage = {dict(k)["gen_ai.token.type"]: (p.count, p.sum) for k, p in out.points("gen_ai.client.token.usage").items()}
    assert usage == {"input": (2, 150), "output": (2, 70)}


async def test_nothing_private_is_exported_and_transcripts_only_when_asked(sdk: Any) -> None:
    telemetry, spans, _ = sdk
    await converse(telemetry)
    values = [
        str(v)
        for span in spans.get_finished_spans()
        for attributes in (span.attributes or {}, *(e.attributes or {} for e in span.events))
        for v in attributes.values()
    ]
    for private in ("Paris", "sunny", "Sunny", "slow down", "Hold on", "story"):
        assert not [v for v in values if private in v], private
    assert not [v for v in values if "\\x" in v or "b'" in v]  # no bytes

    spans.clear()
    telemetry.record_transcripts = True
    await converse(telemetry)
    r2 = next(s for s in spans.get_finished_spans() if (s.attributes or {}).get("gen_ai.response.id") == "r2")
    assert [(e.name, dict(e.attributes or {})) for e in r2.events] == [
        ("bidi.transcript", {"bidi.role": "assistant", "bidi.text": "Sunny in Paris."})
    ]


async def test_without_an_sdk_nothing_is_recorded_and_the_conversation_is_the_same() -> None:
    """The API's default providers are no-ops: the observer runs, exports nothing, changes nothing."""
    completions = await converse(BidiTelemetry())
    assert [c.response_id for c in completions] == ["r1", "r2", "r3", "r4"]
    assert [c.stop_reason for c in completions] == ["tool_use", "complete", "interrupted", "complete"]
