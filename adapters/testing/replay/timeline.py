"""A recording as a readable timeline: who said what, when, tool calls, interruptions, latencies.

The provider's side is read by the provider's own adapter (``provider_events``:
the events an application saw); the client's side from its frames, which
each provider spells its own way (``_client_says``). Runs of microphone audio
are merged into one line each. The latency of a response is the time from the
user's last input before it (the end of a typed line, a tool result, or the
last block of audio sent) to its first audio.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from typing import Any

import attrs

from adapters.testing.replay.model import ReplayModel, provider_events
from adapters.testing.replay.recording_file import RecordingFile
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiToolCancelEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)

__all__ = ["Entry", "Timeline", "build_timeline", "format_timeline"]


@attrs.frozen
class Entry:
    """One line of the timeline. ``who``: ``user``, ``model``, ``tool``, ``conn``; ``kind`` names the fact;
    ``end`` is set for spans (audio)."""

    t: float
    connection: int
    who: str
    kind: str
    text: str
    end: float | None = None
    response_id: str | None = None


@attrs.frozen
class Timeline:
    header: Mapping[str, Any]
    entries: tuple[Entry, ...]
    latencies_ms: tuple[tuple[str, float], ...]  # (response id, time to first audio)
    duration_s: float


def _audio_bytes(value: Any) -> int:
    if isinstance(value, dict):
        return int(value.get("dropped_audio_bytes", 0))
    if isinstance(value, str):
        return len(value) * 3 // 4 - value.endswith("=") - value.endswith("==")
    return 0


def _quote(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[: limit - 3] + "...", ensure_ascii=False)


def _openai(message: Any) -> tuple[str, Any] | None:
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "input_audio_buffer.append":
        return "audio", _audio_bytes(message.get("audio"))
    if kind == "conversation.item.create":
        item = message.get("item") or {}
        if item.get("type") == "function_call_output":
            return "tool_result", f"{item.get('call_id')}: {item.get('output')}"
        texts = [c.get("text", "") for c in item.get("content") or [] if c.get("type") == "input_text"]
        if item.get("role") == "user" and texts:
            return "text", " ".join(texts)
    if kind == "response.cancel":
        return "cancel", message.get("response_id")
    if kind == "conversation.item.truncate":
        return "truncate", f"{message.get('item_id')} at {message.get('audio_end_ms')} ms"
    return None


def _gemini(message: Any) -> tuple[str, Any] | None:
    if not isinstance(message, dict):
        return None
    realtime = message.get("realtimeInput")
    if isinstance(realtime, dict):
        if isinstance(realtime.get("audio"), dict):
            return "audio", _audio_bytes(realtime["audio"].get("data"))
        if realtime.get("text"):
            return "text", realtime["text"]
    tool = message.get("toolResponse")
    if isinstance(tool, dict):
        return "tool_result", "; ".join(
            f"{r.get('id')}: {json.dumps(r.get('response'), ensure_ascii=False)}"
            for r in tool.get("functionResponses") or []
        )
    return None


def _nova(message: Any, state: dict[str, str]) -> tuple[str, Any] | None:
    event = message.get("event") if isinstance(message, dict) else None
    if not isinstance(event, dict):
        return None
    if "contentStart" in event:
        start = event["contentStart"]
        state[start.get("contentName", "")] = "user" if start.get("interactive") else "history"
    if "audioInput" in event:
        return "audio", _audio_bytes(event["audioInput"].get("content"))
    if "textInput" in event and state.get(event["textInput"].get("contentName", "")) == "user":
        return "text", event["textInput"].get("content", "")
    if "toolResult" in event:
        return "tool_result", event["toolResult"].get("content", "")
    return None


def _client_says(provider: str, message: Any, state: dict[str, str]) -> tuple[str, Any] | None:
    if provider == "openai":
        return _openai(message)
    if provider == "gemini":
        return _gemini(message)
    return _nova(message, state)


async def build_timeline(recording: RecordingFile) -> Timeline:
    """The timeline of a recording (the provider's frames read by its adapter: see the module docstring)."""
    header = recording.header
    rate = ReplayModel(recording).capabilities.input_audio.sample_rate
    entries: list[Entry] = []
    for c in recording.connections:
        entries.append(Entry(c.t_open, c.number, "conn", "open", f"connection {c.number} opens ({c.connection_id})"))
        if c.end is not None:
            entries.append(Entry(float(c.end["t"]), c.number, "conn", "end", _ending(c.end)))
        state: dict[str, str] = {}
        run: list[float] = []  # the current run of audio: start, last, ms
        for frame in c.client_frames:
            said = _client_says(recording.provider, frame.get("message"), state)
            t = float(frame["t"])
            if said is None:
                continue
            kind, detail = said
            if kind == "audio":
                ms = detail / 2 / rate * 1000
                if run and t - run[1] <= 0.5:
                    run[1], run[2] = t, run[2] + ms
                else:
                    if run:
                        entries.append(_audio_run(c.number, run))
                    run[:] = [t, t, ms]
                continue
            text = {
                "text": f"says {_quote(str(detail))}",
                "tool_result": f"tool result {_quote(str(detail), 90)}",
                "cancel": f"asks to cancel response {detail}",
                "truncate": f"truncates {detail}",
            }[kind]
            entries.append(Entry(t, c.number, "tool" if kind == "tool_result" else "user", kind, text))
        if run:
            entries.append(_audio_run(c.number, run))
    audio: dict[str, list[float]] = {}  # response id -> [first t, last t, ms]
    for number, t, event in await provider_events(recording):
        if isinstance(event, BidiAudioStreamEvent):
            span = audio.setdefault(event.response_id or "", [t, t, 0.0])
            span[1] = t
            span[2] += event.duration_ms
            if span[2] == event.duration_ms:
                entries.append(Entry(t, number, "model", "first_audio", "first audio", response_id=event.response_id))
            continue
        entry = _model_entry(number, t, event, audio)
        if entry is not None:
            entries.append(entry)
    entries.sort(key=lambda e: (e.t, e.connection))
    return Timeline(header, tuple(entries), tuple(_latencies(entries)), recording.duration_s)


def _audio_run(connection: int, run: list[float]) -> Entry:
    return Entry(run[0], connection, "user", "audio", f"audio, {run[2]:.0f} ms sent", end=run[1])


def _ending(end: Mapping[str, Any]) -> str:
    by = end.get("by")
    if by == "client":
        return "connection closed by the client"
    if by == "server":
        how = f"close {end['close_code']}" if "close_code" in end else "end of stream"
        return f"connection ended by the provider ({how})"
    error = end.get("error") or {}
    return f"connection failed: {error.get('type')}: {error.get('message', '')}"[:160]


def _model_entry(number: int, t: float, event: Any, audio: dict[str, list[float]]) -> Entry | None:
    if isinstance(event, BidiResponseStartEvent):
        return Entry(
            t, number, "model", "response_start", f"response {event.response_id} starts", None, event.response_id
        )
    if isinstance(event, BidiResponseCompleteEvent):
        span = audio.get(event.response_id)
        heard = f", {span[2]:.0f} ms of audio" if span else ""
        end = span[1] if span else None
        return Entry(
            t,
            number,
            "model",
            "response_end",
            f"response {event.response_id} ends: {event.stop_reason}{heard}",
            end,
            event.response_id,
        )
    if isinstance(event, BidiTranscriptStreamEvent) and event.is_final:
        if event.role == "assistant":
            return Entry(t, number, "model", "says", f"says {_quote(event.text)}", None, event.response_id)
        return Entry(t, number, "user", "heard", f"heard as {_quote(event.text)}")
    if isinstance(event, BidiToolUseEvent):
        arguments = json.dumps(dict(event.input), ensure_ascii=False)
        return Entry(t, number, "model", "tool_call", f"calls {event.name}({arguments}) [{event.tool_use_id}]")
    if isinstance(event, BidiToolCancelEvent):
        return Entry(t, number, "model", "tool_cancel", f"withdraws tool calls {', '.join(event.tool_use_ids)}")
    if isinstance(event, BidiSpeechStartedEvent):
        return Entry(t, number, "model", "speech_started", "hears the user start speaking (barge-in)")
    if isinstance(event, BidiUsageEvent):
        return Entry(t, number, "model", "usage", f"usage: {event.input_tokens} in, {event.output_tokens} out tokens")
    if isinstance(event, BidiErrorEvent):
        return Entry(t, number, "model", "error", f"error {event.code}: {event.message}"[:160])
    if isinstance(event, BidiConnectionExpiringEvent):
        return Entry(t, number, "model", "expiring", "announces the end of this connection")
    return None


def _latencies(entries: list[Entry]) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = []
    last_input: float | None = None
    for entry in entries:
        if entry.kind in ("text", "tool_result"):
            last_input = entry.t
        elif entry.kind == "audio" and entry.end is not None:
            last_input = entry.end
        elif entry.kind == "first_audio" and last_input is not None and entry.response_id:
            found.append((entry.response_id, (entry.t - last_input) * 1000))
            last_input = None
    return found


def format_timeline(timeline: Timeline) -> str:
    """The timeline as text: a heading, one line per entry, then the latencies."""
    h = timeline.header
    connections = len({e.connection for e in timeline.entries if e.kind == "open"})
    lines = [
        f"{h.get('provider')} {h.get('model_id')}: {connections} connection(s), {timeline.duration_s:.3f} s, "
        f"audio {h.get('audio')}, recorded {h.get('started')}",
        "",
    ]
    latency = dict(timeline.latencies_ms)
    for e in timeline.entries:
        text = e.text
        if e.kind == "first_audio" and e.response_id in latency:
            text += f" of {e.response_id} ({latency[e.response_id]:.0f} ms after the user's last input)"
        elif e.kind == "first_audio":
            text += f" of {e.response_id}"
        span = f"-{e.end:8.3f}" if e.end is not None and e.kind == "audio" else " " * 9
        lines.append(f"{e.t:8.3f}{span}  #{e.connection}  {e.who:<5}  {text}")
    if timeline.latencies_ms:
        values = [v for _, v in timeline.latencies_ms]
        lines += [
            "",
            f"time to first audio: {len(values)} response(s), median {statistics.median(values):.0f} ms, "
            f"max {max(values):.0f} ms",
        ]
    return "\n".join(lines) + "\n"
