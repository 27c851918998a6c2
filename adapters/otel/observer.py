"""A conversation as OpenTelemetry traces and metrics.

:class:`BidiTelemetry` holds the tracer and the instruments (create one per
process, or per pair of providers); :meth:`BidiTelemetry.observer` makes the
:class:`~ports.observer.ConversationObserver` for one conversation. Only
``opentelemetry-api`` is imported: with no SDK configured every call is the
API's no-op, and nothing is recorded or sent.

Spans (each a child of the one above it)::

    bidi.conversation                 provider, model, close reason, token totals
    ├─ bidi.connection                connection id, the reason it ended
    │   ├─ bidi.response              time to first audio, interrupted, played ms, usage
    │   └─ execute_tool {name}        tool name, call id, status
    └─ bidi.reconnect                 reason, gap until a connection is open again

Metrics: ``bidi.response.time_to_first_audio`` (seconds from the end of the
user's turn, attribute ``bidi.user_turn`` = ``speech`` or ``text``),
``bidi.tool.duration``, ``bidi.reconnect.gap``, counters ``bidi.interruptions``,
``bidi.errors`` (by ``error.type``) and ``bidi.tokens`` (by
``gen_ai.token.type``, ``bidi.modality``, ``bidi.cached``), and the GenAI
conventions' ``gen_ai.client.token.usage`` histogram per usage report.

Attributes follow OpenTelemetry's GenAI semantic conventions where one applies
(``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.operation.name``,
``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.input_tokens``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
``gen_ai.token.type``, ``error.type``); what they do not cover is ``bidi.*``.
Never exported: audio, tool arguments and results, error messages (they may
quote either), resumption handles; transcripts only with
``record_transcripts=True``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ports.events import (
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.io import PlaybackReport
from ports.observer import ConversationInfo

__all__ = ["BidiTelemetry", "OpenTelemetryObserver"]

_SCOPE = "bidi_core"

# Buckets for latencies a person notices (seconds), and the conventions' token buckets.
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


class BidiTelemetry:
    """The tracer and instruments conversations report to.

    ``tracer_provider``/``meter_provider``: the SDK's providers; by default the
    global ones (``opentelemetry.trace.set_tracer_provider``, ...), which are
    no-ops until an application configures an SDK. ``record_transcripts``:
    add final transcripts to the spans as events (off: they are what people
    said).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        record_transcripts: bool = False,
    ) -> None:
        self.tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self.record_transcripts = record_transcripts
        self.first_audio = meter.create_histogram(
            "bidi.response.time_to_first_audio",
            unit="s",
            description="From the end of the user's turn (speech stopped, or text sent) to the answer's first audio",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.tool_duration = meter.create_histogram(
            "bidi.tool.duration",
            unit="s",
            description="From the model's tool call to its result",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.reconnect_gap = meter.create_histogram(
            "bidi.reconnect.gap",
            unit="s",
            description="From losing a connection to the next one being open",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self.interruptions = meter.create_counter(
            "bidi.interruptions", unit="{interruption}", description="Responses the user talked over"
        )
        self.errors = meter.create_counter("bidi.errors", unit="{error}", description="Errors, by error.type")
        self.tokens = meter.create_counter(
            "bidi.tokens", unit="{token}", description="Tokens the provider reported, by kind"
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Input and output tokens per usage report",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )

    def observer(self) -> OpenTelemetryObserver:
        """An observer for one conversation (pass it in ``BidiAgent(observers=[...])``)."""
        return OpenTelemetryObserver(self)


class OpenTelemetryObserver:
    """One conversation's spans and measurements. Made by :meth:`BidiTelemetry.observer`."""

    observes_audio = False  # the completion's timing carries what audio tells; chunks are spared

    def __init__(self, telemetry: BidiTelemetry) -> None:
        self._t = telemetry
        self._base: dict[str, Any] = {}
        self._conversation: Span | None = None
        self._connection: Span | None = None
        self._reconnect: tuple[Span, float, str] | None = None
        self._responses: dict[str, Span] = {}
        self._current_response: str | None = None
        self._tools: dict[str, tuple[Span, float]] = {}
        self._input_tokens = 0
        self._output_tokens = 0

    # ------------------------------------------------------------------ ConversationObserver

    def on_start(self, info: ConversationInfo) -> None:
        self._base = {"gen_ai.provider.name": info.provider, "gen_ai.request.model": info.model}
        attributes = {**self._base, "gen_ai.conversation.id": uuid.uuid4().hex}
        if info.tools:
            attributes["bidi.tools"] = list(info.tools)
        self._conversation = self._t.tracer.start_span("bidi.conversation", attributes=attributes)

    def on_event(self, event: BidiEvent) -> None:
        handler = _HANDLERS.get(type(event))  # audio has none: it is timed by the agent, never exported
        if handler is not None:
            handler(self, event)

    def on_playback(self, report: PlaybackReport) -> None:
        return None  # the completion's timing carries what was played

    def on_end(self) -> None:
        for rid in list(self._responses):
            self._end_response(rid, {"bidi.response.interrupted": True})
        for tool_use_id in list(self._tools):
            span, _ = self._tools.pop(tool_use_id)
            span.set_attribute("bidi.tool.status", "abandoned")
            span.end()
        self._end_connection(None)
        if self._reconnect is not None:
            self._reconnect[0].end()
            self._reconnect = None
        if self._conversation is not None:
            self._conversation.set_attribute("gen_ai.usage.input_tokens", self._input_tokens)
            self._conversation.set_attribute("gen_ai.usage.output_tokens", self._output_tokens)
            self._conversation.end()
            self._conversation = None

    # ------------------------------------------------------------------ the events

    def _child(self, name: str, parent: Span | None, attributes: dict[str, Any], kind: SpanKind) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._t.tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def _connection_started(self, event: BidiConnectionStartEvent) -> None:
        self._end_connection("replaced")
        attributes = {**self._base, "bidi.connection.id": event.connection_id}
        self._connection = self._child("bidi.connection", self._conversation, attributes, SpanKind.CLIENT)
        if self._reconnect is not None:
            span, began, reason = self._reconnect
            gap = time.monotonic() - began
            span.set_attribute("bidi.reconnect.gap_s", gap)
            span.end()
            self._reconnect = None
            self._t.reconnect_gap.record(gap, {**self._base, "bidi.reconnect.reason": reason})

    def _restarted(self, event: BidiConnectionRestartEvent) -> None:
        self._end_connection(event.reason)
        if self._reconnect is None:
            attributes = {**self._base, "bidi.reconnect.reason": event.reason}
            span = self._child("bidi.reconnect", self._conversation, attributes, SpanKind.INTERNAL)
            self._reconnect = (span, time.monotonic(), event.reason)

    def _closed(self, event: BidiConnectionCloseEvent) -> None:
        self._end_connection(event.reason)
        if self._conversation is not None:
            self._conversation.set_attribute("bidi.close.reason", event.reason)
            if event.reason == "error":
                self._conversation.set_status(Status(StatusCode.ERROR))
                self._t.errors.add(1, {**self._base, "error.type": "conversation_error"})

    def _end_connection(self, reason: str | None) -> None:
        if self._connection is None:
            return
        for rid in list(self._responses):
            self._end_response(rid, {"bidi.response.interrupted": True})
        if reason is not None:
            self._connection.set_attribute("bidi.connection.end_reason", reason)
        self._connection.end()
        self._connection = None

    def _response_started(self, event: BidiResponseStartEvent) -> None:
        attributes = {**self._base, "gen_ai.operation.name": "chat", "gen_ai.response.id": event.response_id}
        parent = self._connection or self._conversation
        self._responses[event.response_id] = self._child("bidi.response", parent, attributes, SpanKind.CLIENT)
        self._current_response = event.response_id

    def _response_completed(self, event: BidiResponseCompleteEvent) -> None:
        attributes: dict[str, Any] = {"gen_ai.response.finish_reasons": [event.stop_reason]}
        timing = event.timing
        if timing is not None:
            attributes["bidi.response.interrupted"] = timing.interrupted
            if timing.first_audio_s is not None:
                attributes["bidi.response.time_to_first_audio_s"] = timing.first_audio_s
            if timing.since_user_s is not None:
                attributes["bidi.response.since_user_s"] = timing.since_user_s
                attributes["bidi.user_turn"] = timing.user_turn
                self._t.first_audio.record(timing.since_user_s, {**self._base, "bidi.user_turn": timing.user_turn})
            if timing.played_ms is not None:
                attributes["bidi.response.played_ms"] = timing.played_ms
        self._end_response(event.response_id, attributes)

    def _end_response(self, rid: str, attributes: dict[str, Any]) -> None:
        span = self._responses.pop(rid, None)
        if span is None:
            return
        span.set_attributes(attributes)
        span.end()
        if self._current_response == rid:
            self._current_response = None

    def _interrupted(self, event: BidiInterruptionEvent) -> None:
        self._t.interruptions.add(1, self._base)
        span = self._responses.get(event.response_id) if event.response_id is not None else None
        if span is not None:
            span.add_event("bidi.interruption", {"bidi.interruption.reason": event.reason})

    def _tool_called(self, event: BidiToolUseEvent) -> None:
        attributes = {
            **self._base,
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": event.name,
            "gen_ai.tool.call.id": event.tool_use_id,
        }
        span = self._child(
            f"execute_tool {event.name}", self._connection or self._conversation, attributes, SpanKind.INTERNAL
        )
        self._tools[event.tool_use_id] = (span, time.monotonic())

    def _tool_answered(self, event: BidiToolResultEvent) -> None:
        found = self._tools.pop(event.tool_use_id, None)
        if found is None:
            return
        span, began = found
        duration = time.monotonic() - began
        span.set_attribute("bidi.tool.status", event.status)
        if event.status == "error":
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        self._t.tool_duration.record(
            duration, {**self._base, "gen_ai.tool.name": event.name, "bidi.tool.status": event.status}
        )

    def _error(self, event: BidiErrorEvent) -> None:
        self._t.errors.add(1, {**self._base, "error.type": event.code or "unknown"})

    def _usage(self, event: BidiUsageEvent) -> None:
        self._input_tokens += event.input_tokens
        self._output_tokens += event.output_tokens
        for direction, count in (("input", event.input_tokens), ("output", event.output_tokens)):
            self._t.token_usage.record(count, {**self._base, "gen_ai.token.type": direction})
        for kind, count in _token_kinds(event):
            if count:
                self._t.tokens.add(count, {**self._base, **kind})
        rid = self._current_response
        span = self._responses.get(rid) if rid is not None else None
        if span is not None:
            span.set_attribute("gen_ai.usage.input_tokens", event.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.output_tokens)

    def _transcript(self, event: BidiTranscriptStreamEvent) -> None:
        if not (self._t.record_transcripts and event.is_final and event.text):
            return
        rid = event.response_id
        span = self._responses.get(rid) if rid is not None else None
        target = span or self._connection or self._conversation
        if target is not None:
            target.add_event("bidi.transcript", {"bidi.role": event.role, "bidi.text": event.text})


def _token_kinds(event: BidiUsageEvent) -> list[tuple[dict[str, Any], int]]:
    """One usage report as (attributes, count) pairs, each token counted once: each
    modality's uncached input, cached input and output, and what the report did not
    attribute to a modality (cached input without a modality is taken as text)."""
    counts: dict[tuple[str, str, bool], int] = {}

    def add(direction: str, modality: str, cached: bool, count: int) -> None:
        key = (direction, modality, cached)
        counts[key] = counts.get(key, 0) + count

    for detail in event.modality_details:
        modality = detail.modality.lower()
        cached = min(detail.cached_input_tokens, detail.input_tokens)
        add("input", modality, False, detail.input_tokens - cached)
        add("input", modality, True, cached)
        add("output", modality, False, detail.output_tokens)
    seen_in = sum(d.input_tokens for d in event.modality_details)
    seen_cached = sum(v for (direction, _, cached), v in counts.items() if direction == "input" and cached)
    seen_out = sum(d.output_tokens for d in event.modality_details)
    add("input", "unattributed", False, max(0, event.input_tokens - seen_in))
    add("output", "unattributed", False, max(0, event.output_tokens - seen_out))
    rest_cached = max(0, (event.cache_read_input_tokens or 0) - seen_cached)
    for modality in ("unattributed", "text"):  # move it from the uncached input it was counted in
        moved = min(rest_cached, counts.get(("input", modality, False), 0))
        if moved:
            add("input", modality, False, -moved)
            add("input", modality, True, moved)
            rest_cached -= moved
    return [(_kind(*key), count) for key, count in counts.items()]


def _kind(direction: str, modality: str, cached: bool) -> dict[str, Any]:
    return {"gen_ai.token.type": direction, "bidi.modality": modality, "bidi.cached": cached}


_HANDLERS: dict[type, Any] = {
    BidiConnectionStartEvent: OpenTelemetryObserver._connection_started,
    BidiConnectionRestartEvent: OpenTelemetryObserver._restarted,
    BidiConnectionCloseEvent: OpenTelemetryObserver._closed,
    BidiResponseStartEvent: OpenTelemetryObserver._response_started,
    BidiResponseCompleteEvent: OpenTelemetryObserver._response_completed,
    BidiInterruptionEvent: OpenTelemetryObserver._interrupted,
    BidiToolUseEvent: OpenTelemetryObserver._tool_called,
    BidiToolResultEvent: OpenTelemetryObserver._tool_answered,
    BidiErrorEvent: OpenTelemetryObserver._error,
    BidiUsageEvent: OpenTelemetryObserver._usage,
    BidiTranscriptStreamEvent: OpenTelemetryObserver._transcript,
}
