"""Fuzzing each adapter's receive path with mutated provider messages.

Each example builds one real session (OpenAI, Gemini, Nova Sonic) over an
in-memory transport (not a socket: 10,000 messages per adapter over TCP would
take too long; the transport hands ``receive()`` exactly the frames a socket
would, so the session's whole decode and translate path runs), feeds it a few
valid server messages of a conversation (a response, audio, a transcript, a
tool call, usage: enough state for the mutated one to hit), with one of them
mutated: a field dropped, a value of the wrong type or huge, bad base64, an
unknown type, truncated, garbage bytes, binary where text is expected (and the
reverse), then drains ``receive()``. Every call must end within a bound (no
hang) with an event or a typed ``BidiError`` (never another exception), and a
frame that is not even JSON must come out as a ``protocol_error`` event or a
``BidiProtocolError``.

The default suite runs ``BIDI_FUZZ_EXAMPLES`` (50) examples per adapter and backend (one mutated message
and some ten valid ones each); ``nox
-s fuzz`` sets it to 10,000: 10,000 mutated messages per adapter and backend.
"""

from __future__ import annotations

import base64
import json
import os
from collections import deque
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.gemini.config import GeminiConfig
from adapters.gemini.session import GeminiLiveSession
from adapters.nova_sonic import wire as nova_wire
from adapters.nova_sonic.config import NovaSonicConfig
from adapters.nova_sonic.session import NovaSonicSession
from adapters.openai.config import OpenAIConfig
from adapters.openai.session import OpenAIRealtimeSession
from adapters.websocket import WebSocketClosed
from ports.errors import BidiError, BidiProtocolError
from ports.events import BidiErrorEvent
from ports.model import ModelCapabilities

EXAMPLES = int(os.environ.get("BIDI_FUZZ_EXAMPLES", "50"))
PCM = base64.b64encode(b"\x01\x00" * 480).decode()

OPENAI_MESSAGES: list[dict[str, Any]] = [
    {"type": "session.created", "event_id": "e0", "session": {"id": "s1"}},
    {"type": "response.created", "event_id": "e1", "response": {"id": "r1", "status": "in_progress", "output": []}},
    {"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "output_index": 0,
     "content_index": 0, "delta": PCM},
    {"type": "response.output_audio_transcript.delta", "response_id": "r1", "item_id": "i1", "delta": "Hel"},
    {"type": "response.output_audio_transcript.done", "response_id": "r1", "item_id": "i1", "transcript": "Hello"},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "item_id": "i2", "call_id": "c1",
     "name": "get_weather", "arguments": '{"location": "Paris"}'},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 10, "item_id": "i3"},
    {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i3", "transcript": "hi"},
    {"type": "rate_limits.updated", "rate_limits": [{"name": "tokens", "limit": 10, "remaining": 5}]},
    {"type": "error", "error": {"type": "invalid_request_error", "code": "bad", "message": "no"}},
    {"type": "response.done", "response": {"id": "r1", "status": "completed", "output": [],
     "usage": {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2}}},
]  # fmt: skip

GEMINI_MESSAGES: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": PCM}}]}}},
    {"serverContent": {"outputTranscription": {"text": "Hello"}}},
    {"serverContent": {"inputTranscription": {"text": "hi"}}},
    {"toolCall": {"functionCalls": [{"id": "c1", "name": "get_weather", "args": {"location": "Paris"}}]}},
    {"toolCallCancellation": {"ids": ["c1"]}},
    {"serverContent": {"interrupted": True}},
    {"serverContent": {"generationComplete": True, "turnComplete": True}},
    {"usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 2, "totalTokenCount": 3}},
    {"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}},
    {"goAway": {"timeLeft": "10s"}},
]

_NOVA_EVENTS: list[dict[str, Any]] = [
    {"completionStart": {"sessionId": "s1", "promptName": "p1", "completionId": "k1"}},
    {"contentStart": {"contentId": "t1", "type": "TEXT", "role": "ASSISTANT",
     "additionalModelFields": '{"generationStage": "SPECULATIVE"}'}},
    {"textOutput": {"content": "Hello", "contentId": "t1", "role": "ASSISTANT"}},
    {"contentEnd": {"contentId": "t1", "type": "TEXT", "stopReason": "PARTIAL_TURN", "role": "ASSISTANT"}},
    {"contentStart": {"contentId": "a1", "type": "AUDIO", "role": "ASSISTANT"}},
    {"audioOutput": {"content": PCM, "contentId": "a1"}},
    {"contentEnd": {"contentId": "a1", "type": "AUDIO", "stopReason": "END_TURN"}},
    {"contentStart": {"contentId": "u1", "type": "TOOL", "role": "TOOL"}},
    {"toolUse": {"toolName": "get_weather", "toolUseId": "c1", "content": '{"location": "Paris"}',
     "contentId": "u1"}},
    {"contentEnd": {"contentId": "u1", "type": "TOOL", "stopReason": "TOOL_USE"}},
    {"usageEvent": {"totalInputTokens": 1, "totalOutputTokens": 2, "totalTokens": 3, "details": {}}},
    {"completionEnd": {"stopReason": "END_TURN", "completionId": "k1"}},
]  # fmt: skip
NOVA_MESSAGES = [{"event": event} for event in _NOVA_EVENTS]

# ---------------------------------------------------------------- mutations

_WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.just("x" * 200_000),  # larger than any real text field
    st.just("!!not base64!!"),
    st.just(PCM[:-3]),  # truncated base64
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*prefix, index))
    return out


def _set(message: Any, path: tuple[Any, ...], new: Any, *, drop: bool = False) -> Any:
    copy = json.loads(json.dumps(message))
    target = copy
    for step in path[:-1]:
        target = target[step]
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return copy


@st.composite
def mutated(draw: st.DrawFn, messages: list[dict[str, Any]]) -> tuple[list[Any], bool]:
    """A conversation's frames (JSON text) with one message mutated; and whether that one is not JSON at all."""
    frames: list[Any] = [json.dumps(m) for m in messages]
    index = draw(st.integers(0, len(messages) - 1))
    message = messages[index]
    paths = _paths(message)
    how = draw(st.sampled_from(["drop", "retype", "unknown", "truncate", "garbage", "binary", "extra"]))
    not_json = False
    if how == "drop":
        frames[index] = json.dumps(_set(message, draw(st.sampled_from(paths)), None, drop=True))
    elif how == "retype":
        frames[index] = json.dumps(_set(message, draw(st.sampled_from(paths)), draw(_WRONG)))
    elif how == "unknown":
        frames[index] = json.dumps({draw(st.text(min_size=1, max_size=10)): draw(_WRONG), "type": draw(st.text())})
    elif how == "truncate":
        text = frames[index]
        frames[index] = text[: draw(st.integers(1, len(text) - 1))]  # an empty HTTP/2 DATA frame is no message
        not_json = True
    elif how == "garbage":
        frames[index] = draw(st.binary(min_size=1, max_size=64)).decode("latin-1")
        not_json = not _is_json(frames[index])
    elif how == "binary":
        frames[index] = frames[index].encode()
    else:
        frames[index] = json.dumps(draw(st.one_of(_WRONG, st.lists(_WRONG, max_size=2))))
    if draw(st.booleans()):
        frames = frames[: index + 1]
    return frames, not_json and not _is_json(frames[index])


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- transports


class FrameSocket:
    """A WebSocket that returns the given frames, then the service's normal close."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames = deque(frames)

    async def receive(self) -> Any:
        await anyio.lowlevel.checkpoint()
        if not self.frames:
            raise WebSocketClosed(1000, "")
        return self.frames.popleft()


class ByteStream:
    """An HTTP/2 stream that returns the given data, then its end (``None``)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = deque(chunks)

    async def receive(self) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        return self.chunks.popleft() if self.chunks else None


CAPS = ModelCapabilities()


def _openai(frames: list[Any]) -> Any:
    return OpenAIRealtimeSession(FrameSocket(frames), "fuzz", CAPS, OpenAIConfig())  # type: ignore[arg-type]


def _gemini(frames: list[Any]) -> Any:
    return GeminiLiveSession(FrameSocket(frames), "fuzz", CAPS, GeminiConfig())  # type: ignore[arg-type]


def _nova(frames: list[Any]) -> Any:
    chunks = []
    for frame in frames:
        payload = frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")
        if not _is_json(payload):  # the outer message itself is cut or garbage
            chunks.append(payload)
        else:
            chunks.append(nova_wire.encode_chunk(payload))
    session = NovaSonicSession(
        ByteStream(chunks),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # never sends
        connection_id="fuzz",
        capabilities=CAPS,
        config=NovaSonicConfig(),
    )
    return session


ADAPTERS = {
    "openai": (_openai, OPENAI_MESSAGES),
    "gemini": (_gemini, GEMINI_MESSAGES),
    "nova_sonic": (_nova, NOVA_MESSAGES),
}


async def _drain(session: Any) -> tuple[list[Any], BaseException | None]:
    events: list[Any] = []
    while True:
        with anyio.fail_after(5):  # a bound per message: far above what decoding one takes
            try:
                events.append(await session.receive())
            except anyio.EndOfStream:
                return events, None
            except BidiError as exc:
                return events, exc


@pytest.mark.parametrize("adapter", list(ADAPTERS))
@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data())
async def test_a_mutated_message_is_an_event_or_a_typed_error(adapter: str, data: st.DataObject) -> None:
    make, messages = ADAPTERS[adapter]
    frames, not_json = data.draw(mutated(messages))
    events, error = await _drain(make(frames))
    if not_json:
        flagged = any(isinstance(e, BidiErrorEvent) and e.code == "protocol_error" for e in events)
        assert flagged or isinstance(error, BidiProtocolError), f"{len(events)} events, then {error!r}"


@pytest.mark.parametrize("adapter", list(ADAPTERS))
async def test_the_valid_conversation_decodes_without_an_error(adapter: str) -> None:
    """The base the mutations start from is valid: without a mutation, no error comes out."""
    make, messages = ADAPTERS[adapter]
    events, error = await _drain(make([json.dumps(m) for m in messages]))
    assert error is None or adapter == "gemini"  # Gemini's goAway then the close: a connection error
    assert not [e for e in events if isinstance(e, BidiErrorEvent) and e.code == "protocol_error"]
