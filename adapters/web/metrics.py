"""Prometheus metrics of a web server (``/metrics``), one registry per app.

Names (all prefixed ``bidi_web_``): ``conversations_active`` (gauge),
``conversations_started_total``, ``conversations_ended_total{reason}``,
``conversations_refused_total{reason}``, ``errors_total{type}`` (client
protocol errors by code, conversation error events by code, failures by
exception type), ``audio_in_seconds_total``, ``audio_out_seconds_total``;
histograms ``time_to_first_audio_seconds`` (a response's start to its first
audio frame written to the client), ``tool_latency_seconds`` (a tool call to
its result) and ``reconnect_gap_seconds`` (a provider connection lost to the
next one open). Each worker process has its own registry; Prometheus adds the
workers (and replicas) up.
"""

from __future__ import annotations

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
)

__all__ = ["CONTENT_TYPE", "ConversationMetrics", "WebMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class WebMetrics:
    """The app's counters, gauges and histograms, in their own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active = Gauge("bidi_web_conversations_active", "Conversations open now", registry=r)
        self.started = Counter("bidi_web_conversations_started", "Conversations accepted", registry=r)
        self.ended = Counter("bidi_web_conversations_ended", "Conversations ended, by reason", ["reason"], registry=r)
        self.refused = Counter(
            "bidi_web_conversations_refused", "Handshakes refused, by reason", ["reason"], registry=r
        )
        self.errors = Counter("bidi_web_errors", "Errors, by type", ["type"], registry=r)
        self.audio_in = Counter("bidi_web_audio_in_seconds", "Seconds of audio received from clients", registry=r)
        self.audio_out = Counter("bidi_web_audio_out_seconds", "Seconds of audio sent to clients", registry=r)
        self.first_audio = Histogram(
            "bidi_web_time_to_first_audio_seconds",
            "From a response's start to its first audio frame sent to the client",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_latency = Histogram(
            "bidi_web_tool_latency_seconds", "From a tool call to its result", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.reconnect_gap = Histogram(
            "bidi_web_reconnect_gap_seconds",
            "From a lost provider connection to the next one open",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    def conversation(self) -> ConversationMetrics:
        """An observer for one conversation's I/O."""
        return ConversationMetrics(self)


class ConversationMetrics:
    """Watches one conversation's traffic (a :class:`~adapters.web.io.WebObserver`)."""

    def __init__(self, metrics: WebMetrics) -> None:
        self._m = metrics
        self._response_started: dict[str, float] = {}
        self._tool_started: dict[str, float] = {}
        self._lost_at: float | None = None

    def client_error(self, code: str) -> None:
        self._m.errors.labels(type=f"client_{code}").inc()

    def audio_in(self, ms: float) -> None:
        self._m.audio_in.inc(ms / 1000.0)

    def failure(self, exc: BaseException) -> None:
        self._m.errors.labels(type=type(exc).__name__).inc()

    def event_sent(self, event: BidiOutputEvent) -> None:
        now = anyio.current_time()
        m = self._m
        if isinstance(event, BidiAudioStreamEvent):
            m.audio_out.inc(event.duration_ms / 1000.0)
            rid = event.response_id
            if rid is not None and rid in self._response_started:
                m.first_audio.observe(now - self._response_started.pop(rid))
        elif isinstance(event, BidiResponseStartEvent):
            if len(self._response_started) > 64:
                self._response_started.clear()
            self._response_started[event.response_id] = now
        elif isinstance(event, BidiToolUseEvent):
            self._tool_started[event.tool_use_id] = now
        elif isinstance(event, BidiToolResultEvent):
            started = self._tool_started.pop(event.tool_use_id, None)
            if started is not None:
                m.tool_latency.observe(now - started)
        elif isinstance(event, BidiConnectionRestartEvent):
            if self._lost_at is None:
                self._lost_at = now
        elif isinstance(event, BidiConnectionStartEvent):
            if self._lost_at is not None:
                m.reconnect_gap.observe(now - self._lost_at)
                self._lost_at = None
        elif isinstance(event, BidiErrorEvent):
            m.errors.labels(type=f"event_{event.code or 'unknown'}").inc()
