"""OpenAI Realtime (GA) wire messages: attrs classes and one cattrs converter.

Server events are structured by their ``type`` tag into the classes below;
a type we do not know becomes :class:`UnknownServerEvent` (logged, never a
crash), because the service adds events faster than we release. Fields the
service adds to known events are ignored. Client events are built as attrs
classes and unstructured to plain dicts with ``None`` fields left out, so
every message we send is exactly the GA shape (``docs/protocols/openai.md``;
checked in the tests against the ``openai`` package's ``*Param``
types with extra keys forbidden).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeAlias

import attrs
import cattrs

from adapters.openai.config import SAMPLE_RATE, OpenAIConfig
from ports.model import ConnectRequest, ToolSpec

__all__ = [
    "AUDIO_DELTA",
    "recorded_audio",
    "CLIENT_EVENT_TYPES",
    "ConversationItemCreate",
    "ErrorEvent",
    "InputAudioBufferAppend",
    "InputTranscriptionCompleted",
    "InputTranscriptionDelta",
    "InputTranscriptionFailed",
    "OutputAudioDelta",
    "OutputAudioDone",
    "OutputTextDelta",
    "OutputTextDone",
    "RateLimitsUpdated",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "ConversationItemTruncate",
    "FunctionCallArgumentsDone",
    "UnknownServerEvent",
    "audio_delta_fields",
    "build_setup",
    "converter",
    "decode_server_event",
    "event_from_dict",
    "loads_server_event",
    "encode_client_event",
    "warm_up",
]

converter = cattrs.Converter(omit_if_default=False)


# --------------------------------------------------------------------------- server events


@attrs.frozen
class SessionCreated:
    type: ClassVar[str] = "session.created"
    session: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class SessionUpdated:
    type: ClassVar[str] = "session.updated"
    session: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ResponseInfo:
    id: str
    status: str | None = None
    status_details: dict[str, Any] | None = None
    output: list[dict[str, Any]] = attrs.field(factory=list)
    usage: dict[str, Any] | None = None


@attrs.frozen
class ResponseCreated:
    type: ClassVar[str] = "response.created"
    response: ResponseInfo


@attrs.frozen
class ResponseDone:
    type: ClassVar[str] = "response.done"
    response: ResponseInfo


@attrs.frozen
class OutputAudioDelta:
    type: ClassVar[str] = "response.output_audio.delta"
    response_id: str
    item_id: str
    delta: str
    output_index: int = 0
    content_index: int = 0


@attrs.frozen
class OutputAudioDone:
    type: ClassVar[str] = "response.output_audio.done"
    response_id: str
    item_id: str


@attrs.frozen
class OutputTranscriptDelta:
    type: ClassVar[str] = "response.output_audio_transcript.delta"
    response_id: str
    item_id: str
    delta: str


@attrs.frozen
class OutputTranscriptDone:
    type: ClassVar[str] = "response.output_audio_transcript.done"
    response_id: str
    item_id: str
    transcript: str


@attrs.frozen
class OutputTextDelta:
    type: ClassVar[str] = "response.output_text.delta"
    response_id: str
    item_id: str
    delta: str


@attrs.frozen
class OutputTextDone:
    type: ClassVar[str] = "response.output_text.done"
    response_id: str
    item_id: str
    text: str


@attrs.frozen
class FunctionCallArgumentsDone:
    type: ClassVar[str] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class SpeechStarted:
    type: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int = 0
    item_id: str | None = None


@attrs.frozen
class SpeechStopped:
    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int = 0
    item_id: str | None = None


@attrs.frozen
class InputTranscriptionDelta:
    type: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    item_id: str
    delta: str = ""


@attrs.frozen
class InputTranscriptionCompleted:
    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str
    transcript: str


@attrs.frozen
class InputTranscriptionFailed:
    type: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str
    error: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ErrorDetail:
    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


@attrs.frozen
class ErrorEvent:
    type: ClassVar[str] = "error"
    error: ErrorDetail


@attrs.frozen
class RateLimit:
    name: str
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


@attrs.frozen
class RateLimitsUpdated:
    type: ClassVar[str] = "rate_limits.updated"
    rate_limits: list[RateLimit] = attrs.field(factory=list)


@attrs.frozen
class UnknownServerEvent:
    """A server event we have no class for (or one we only acknowledge)."""

    type: str
    raw: dict[str, Any] = attrs.field(repr=False)


ServerEvent: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | ResponseCreated
    | ResponseDone
    | OutputAudioDelta
    | OutputAudioDone
    | OutputTranscriptDelta
    | OutputTranscriptDone
    | OutputTextDelta
    | OutputTextDone
    | FunctionCallArgumentsDone
    | SpeechStarted
    | SpeechStopped
    | InputTranscriptionDelta
    | InputTranscriptionCompleted
    | InputTranscriptionFailed
    | ErrorEvent
    | RateLimitsUpdated
    | UnknownServerEvent
)

_SERVER_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        SessionCreated,
        SessionUpdated,
        ResponseCreated,
        ResponseDone,
        OutputAudioDelta,
        OutputAudioDone,
        OutputTranscriptDelta,
        OutputTranscriptDone,
        OutputTextDelta,
        OutputTextDone,
        FunctionCallArgumentsDone,
        SpeechStarted,
        SpeechStopped,
        InputTranscriptionDelta,
        InputTranscriptionCompleted,
        InputTranscriptionFailed,
        ErrorEvent,
        RateLimitsUpdated,
    )
}


class MalformedServerEvent(ValueError):
    """A server message that is not JSON, or a known event missing a field."""


AUDIO_DELTA = OutputAudioDelta.type
"""The most frequent server event by far (fifty a second while the model speaks)."""


def loads_server_event(text: str | bytes) -> dict[str, Any]:
    """The JSON object of one server frame, checked to have a string ``type``.

    The first half of :func:`decode_server_event`, for a reader that handles
    :data:`AUDIO_DELTA` from the dict (:func:`audio_delta_fields`) without
    building an event object per chunk.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedServerEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise MalformedServerEvent("not an object with a string 'type'")
    return data


def audio_delta_fields(data: dict[str, Any]) -> tuple[str, str, str]:
    """``(response_id, item_id, delta)`` of an :data:`AUDIO_DELTA` object."""
    rid, item, delta = data.get("response_id"), data.get("item_id"), data.get("delta")
    if isinstance(rid, str) and isinstance(item, str) and isinstance(delta, str):
        return rid, item, delta
    raise MalformedServerEvent("response.output_audio.delta: response_id, item_id and delta must be strings")


def event_from_dict(data: dict[str, Any]) -> ServerEvent:
    """The event of an object from :func:`loads_server_event`."""
    if data["type"] == AUDIO_DELTA:
        # Built directly, without the converter.
        return OutputAudioDelta(*audio_delta_fields(data))
    cls = _SERVER_TYPES.get(data["type"])
    if cls is None:
        return UnknownServerEvent(type=data["type"], raw=data)
    try:
        event: ServerEvent = converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise MalformedServerEvent(f"{data['type']}: {_describe(exc)}") from None
    return event


def decode_server_event(text: str | bytes) -> ServerEvent:
    """Parse one server frame. Raises :class:`MalformedServerEvent` when it
    is not a JSON object with a ``type``, or a known type with the wrong shape."""
    return event_from_dict(loads_server_event(text))


_warm = False


def warm_up() -> None:
    """Have cattrs generate the structure code of every server event now.

    It does so lazily, at the first message of each type; for the first
    function call of a process that cost shows in the middle of a tool round
    trip (``benchmarks/README.md``). A session calls this when it opens (once per process).
    """
    global _warm
    if not _warm:
        for cls in _SERVER_TYPES.values():
            converter.get_structure_hook(cls)
        _warm = True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes) if notes else str(exc)
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- client events


@attrs.frozen
class SessionUpdate:
    type: ClassVar[str] = "session.update"
    session: dict[str, Any]


@attrs.frozen
class InputAudioBufferAppend:
    type: ClassVar[str] = "input_audio_buffer.append"
    audio: str


@attrs.frozen
class ConversationItemCreate:
    type: ClassVar[str] = "conversation.item.create"
    item: dict[str, Any]


@attrs.frozen
class ResponseCreate:
    type: ClassVar[str] = "response.create"


@attrs.frozen
class ResponseCancel:
    type: ClassVar[str] = "response.cancel"
    response_id: str | None = None


@attrs.frozen
class ConversationItemTruncate:
    type: ClassVar[str] = "conversation.item.truncate"
    item_id: str
    audio_end_ms: int
    content_index: int = 0


ClientEvent: TypeAlias = (
    SessionUpdate
    | InputAudioBufferAppend
    | ConversationItemCreate
    | ResponseCreate
    | ResponseCancel
    | ConversationItemTruncate
)

CLIENT_EVENT_TYPES = frozenset(
    c.type
    for c in (
        SessionUpdate,
        InputAudioBufferAppend,
        ConversationItemCreate,
        ResponseCreate,
        ResponseCancel,
        ConversationItemTruncate,
    )
)


def _unstructure_client(event: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.type}
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        if value is not None:
            out[field.name] = converter.unstructure(value)
    return out


for _cls in (
    SessionUpdate,
    InputAudioBufferAppend,
    ConversationItemCreate,
    ResponseCreate,
    ResponseCancel,
    ConversationItemTruncate,
):
    converter.register_unstructure_hook(_cls, _unstructure_client)


def encode_client_event(event: ClientEvent) -> str:
    """The JSON text of one client event."""
    return json.dumps(converter.unstructure(event), separators=(",", ":"))


def recorded_audio(message: Any) -> list[tuple[dict[str, Any], str]]:
    """Where a decoded message (either way) carries base64 audio, for recordings without audio."""
    if isinstance(message, dict):
        kind = message.get("type")
        if kind == "input_audio_buffer.append":
            return [(message, "audio")]
        if kind in (AUDIO_DELTA, "response.audio.delta"):
            return [(message, "delta")]
    return []


def audio_append(b64_audio: str) -> str:
    """Fast path for the most frequent message (one per microphone block)."""
    return '{"type":"input_audio_buffer.append","audio":"' + b64_audio + '"}'


# --------------------------------------------------------------------------- the setup


def build_setup(model_id: str, config: OpenAIConfig, request: ConnectRequest) -> SessionUpdate:
    """The GA ``session.update`` that opens a connection for this agent
    (docs/protocols/openai.md#session-configuration)."""
    audio_input: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
        # null turns server VAD off (the client commits); transcription is off when omitted.
        "turn_detection": dict(config.turn_detection) if config.turn_detection is not None else None,
    }
    if config.transcription is not None:
        audio_input["transcription"] = dict(config.transcription)
    if config.noise_reduction is not None:
        audio_input["noise_reduction"] = {"type": config.noise_reduction}
    audio_output: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": config.voice}
    if config.speed is not None:
        audio_output["speed"] = config.speed
    session: dict[str, Any] = {
        "type": "realtime",
        "model": model_id,
        "output_modalities": list(config.output_modalities),
        "audio": {"input": audio_input, "output": audio_output},
    }
    if request.system_prompt:
        session["instructions"] = request.system_prompt
    if request.tools:
        session["tools"] = [_tool(spec) for spec in request.tools]
    if config.tool_choice is not None:
        session["tool_choice"] = config.tool_choice
    if config.max_output_tokens is not None:
        session["max_output_tokens"] = config.max_output_tokens
    return SessionUpdate(session=session)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "name": spec.name,
        "description": spec.description,
        "parameters": dict(spec.input_schema),
    }
