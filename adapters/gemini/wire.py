"""Gemini Live (``BidiGenerateContent``) wire messages: attrs classes and one cattrs converter.

Proto3 JSON lets a peer spell every field in lowerCamelCase or snake_case
(docs/protocols/gemini.md#field-names; the official SDK sends a mix), so the converter's
one structure hook factory reads each attrs field under either name, and the
unstructure hook writes camelCase and leaves ``None`` out. Free-form values
(function arguments, tool responses, JSON schemas) are plain dicts and are
never renamed.

A server message is a oneof of ``setupComplete | serverContent | toolCall |
toolCallCancellation | goAway | sessionResumptionUpdate`` with
``usageMetadata`` beside it; :class:`ServerMessage` holds whichever arrived,
and names any top-level key we do not know (logged and skipped by the
session: the service adds fields faster than we release).

Speed: a voice session receives about fifty messages a second, nearly all of
them one audio chunk in ``serverContent.modelTurn``. Those are recognised and
built directly (:func:`decode_server_message`'s fast path), without the
converter; everything else goes through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar, get_type_hints

import attrs
import cattrs

from adapters.gemini.config import GeminiConfig
from ports.model import ConnectRequest, ToolSpec

__all__ = [
    "recorded_audio",
    "AudioChunks",
    "Blob",
    "ClientContent",
    "Content",
    "FunctionCall",
    "FunctionResponse",
    "GoAway",
    "MalformedServerMessage",
    "ModalityTokenCount",
    "Part",
    "RealtimeInput",
    "ServerContent",
    "ServerMessage",
    "SessionResumptionUpdate",
    "Setup",
    "SetupComplete",
    "ToolCall",
    "ToolCallCancellation",
    "ToolResponse",
    "Transcription",
    "UsageMetadata",
    "audio_input",
    "build_setup",
    "camel",
    "converter",
    "decode_server_message",
    "describe_setup",
    "encode_client_message",
    "parse_duration",
    "tool_response_body",
]

converter = cattrs.Converter()
_T = TypeVar("_T")


def camel(name: str) -> str:
    """``snake_case`` -> ``lowerCamelCase``."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


# --------------------------------------------------------------------------- server messages


@attrs.frozen
class SetupComplete:
    session_id: str | None = None


@attrs.frozen
class Blob:
    mime_type: str = ""
    data: str = ""  # base64


@attrs.frozen
class Part:
    text: str | None = None
    inline_data: Blob | None = None
    thought: bool | None = None


@attrs.frozen
class Content:
    parts: list[Part] = attrs.field(factory=list)
    role: str | None = None


@attrs.frozen
class Transcription:
    text: str = ""


@attrs.frozen
class ServerContent:
    model_turn: Content | None = None
    generation_complete: bool = False
    turn_complete: bool = False
    interrupted: bool = False
    input_transcription: Transcription | None = None
    output_transcription: Transcription | None = None
    waiting_for_input: bool = False


@attrs.frozen
class FunctionCall:
    name: str
    id: str | None = None
    args: dict[str, Any] | None = None


@attrs.frozen
class ToolCall:
    function_calls: list[FunctionCall] = attrs.field(factory=list)


@attrs.frozen
class ToolCallCancellation:
    ids: list[str] = attrs.field(factory=list)


@attrs.frozen
class GoAway:
    time_left: Any = None  # a protobuf Duration in JSON form ("50s", "1.5s"): see parse_duration


@attrs.frozen
class SessionResumptionUpdate:
    new_handle: str = attrs.field(default="", repr=False)
    resumable: bool = False
    # Vertex AI transparent resumption only; proto3 JSON may carry an int64 as a string.
    last_consumed_client_message_index: int | None = None


@attrs.frozen
class ModalityTokenCount:
    modality: str = "MODALITY_UNSPECIFIED"
    token_count: int = 0


@attrs.frozen
class UsageMetadata:
    prompt_token_count: int = 0
    cached_content_token_count: int = 0
    response_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int = 0
    prompt_tokens_details: list[ModalityTokenCount] = attrs.field(factory=list)
    cache_tokens_details: list[ModalityTokenCount] = attrs.field(factory=list)
    response_tokens_details: list[ModalityTokenCount] = attrs.field(factory=list)
    tool_use_prompt_tokens_details: list[ModalityTokenCount] = attrs.field(factory=list)


@attrs.frozen
class ServerMessage:
    """One server frame. ``unknown`` names top-level keys we have no field for."""

    setup_complete: SetupComplete | None = None
    server_content: ServerContent | None = None
    tool_call: ToolCall | None = None
    tool_call_cancellation: ToolCallCancellation | None = None
    go_away: GoAway | None = None
    session_resumption_update: SessionResumptionUpdate | None = None
    usage_metadata: UsageMetadata | None = None
    unknown: tuple[str, ...] = ()


@attrs.frozen
class AudioChunks:
    """The fast path's result: a ``serverContent`` holding only inline data parts."""

    chunks: tuple[Blob, ...]


class MalformedServerMessage(ValueError):
    """A known field of the wrong shape (the frame itself was a JSON object)."""


class NotJSON(ValueError):
    """A frame that is not a JSON object at all."""


def _strict_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected true or false, got {type(value).__name__}")


def _strict_str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _strict_int(value: Any, _: Any) -> int:
    # proto3 JSON writes int64 as a decimal string; int32 as a number.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value):
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _any_dict(value: Any, _: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


def _list_of(item: type[_T]) -> Callable[[Any, Any], list[_T]]:
    def structure(value: Any, _: Any) -> list[_T]:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [converter.structure(v, item) for v in value]

    return structure


converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook_func(lambda t: t == dict[str, Any], _any_dict)


def _is_list_of(item: type[Any]) -> Callable[[Any], bool]:
    target = list[item]  # type: ignore[valid-type]
    return lambda t: bool(t == target)


for _item in (Part, FunctionCall, ModalityTokenCount, str):
    converter.register_structure_hook_func(_is_list_of(_item), _list_of(_item))


def _structure_either_case(cls: type[Any]) -> Callable[[Any, Any], Any]:
    """The one hook factory: every attrs field read as camelCase, else snake_case."""
    hints = get_type_hints(cls)
    spec = [(f.name, camel(f.name), hints[f.name]) for f in attrs.fields(cls) if f.name != "unknown"]

    def structure(data: Any, _: Any) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for name, camel_name, hint in spec:
            if camel_name in data:
                value = data[camel_name]
            elif name in data:
                value = data[name]
            else:
                continue
            if value is None:
                continue  # proto3 JSON: null means the default
            try:
                kwargs[name] = converter.structure(value, hint)
            except (TypeError, ValueError, cattrs.BaseValidationError) as exc:
                raise MalformedServerMessage(f"{cls.__name__}.{camel_name}: {_describe(exc)}") from None
        return cls(**kwargs)

    return structure


converter.register_structure_hook_factory(attrs.has, _structure_either_case)

_TOP_KEYS = {camel(f.name) for f in attrs.fields(ServerMessage)} | {f.name for f in attrs.fields(ServerMessage)}
_TOP_KEYS.discard("unknown")


def decode_server_message(frame: str | bytes) -> ServerMessage | AudioChunks:
    """Parse one server frame (the service sends UTF-8 JSON in binary frames).

    Raises :class:`NotJSON` when the frame is not a JSON object and
    :class:`MalformedServerMessage` when a known field has the wrong shape.
    """
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJSON(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotJSON(f"not a JSON object but {type(data).__name__}")
    fast = _audio_fast_path(data)
    if fast is not None:
        return fast
    try:
        message: ServerMessage = converter.structure(data, ServerMessage)
    except MalformedServerMessage:
        raise
    except (TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise MalformedServerMessage(_describe(exc)) from None
    unknown = tuple(k for k in data if k not in _TOP_KEYS)
    return attrs.evolve(message, unknown=unknown) if unknown else message


def _audio_fast_path(data: dict[str, Any]) -> AudioChunks | None:
    """``{"serverContent": {"modelTurn": {"parts": [{"inlineData": {...}}, ...]}}}`` and nothing else."""
    if len(data) != 1:
        return None
    content = data.get("serverContent")
    if content is None:
        content = data.get("server_content")
    if not isinstance(content, dict) or len(content) != 1:
        return None
    turn = content.get("modelTurn")
    if turn is None:
        turn = content.get("model_turn")
    if not isinstance(turn, dict):
        return None
    parts = turn.get("parts")
    if not isinstance(parts, list) or not parts or len(turn) > (2 if "role" in turn else 1):
        return None
    chunks = []
    for part in parts:
        if not isinstance(part, dict) or len(part) != 1:
            return None
        blob = part.get("inlineData")
        if blob is None:
            blob = part.get("inline_data")
        if not isinstance(blob, dict):
            return None
        mime = blob.get("mimeType", blob.get("mime_type", ""))
        b64 = blob.get("data", "")
        if not isinstance(mime, str) or not isinstance(b64, str):
            return None
        chunks.append(Blob(mime, b64))
    return AudioChunks(tuple(chunks))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        notes = cattrs.transform_error(exc)
        return "; ".join(notes) if notes else str(exc)
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, MalformedServerMessage) else str(exc)


_DURATION = re.compile(r"^\s*(-?)(\d{1,12})(?:\.(\d{1,9}))?s\s*$")


def parse_duration(value: Any) -> float | None:
    """A protobuf ``Duration`` in its JSON form (``"50s"``, ``"1.5s"``) in seconds; None if it is not one.

    Also takes a bare number of seconds and the ``{"seconds", "nanos"}`` object some encoders emit.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            return None
        sign, whole, frac = match.groups()
        seconds = int(whole) + (int(frac.ljust(9, "0")) / 1e9 if frac else 0.0)
        return -seconds if sign else seconds
    if isinstance(value, Mapping):
        try:
            return float(int(value.get("seconds", 0))) + int(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    return None


# --------------------------------------------------------------------------- client messages


@attrs.frozen
class Setup:
    """``setup``: the first message of a connection. Nested values are already in wire form."""

    model: str
    generation_config: dict[str, Any] | None = None
    system_instruction: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    realtime_input_config: dict[str, Any] | None = None
    session_resumption: dict[str, Any] | None = None
    context_window_compression: dict[str, Any] | None = None
    input_audio_transcription: dict[str, Any] | None = None
    output_audio_transcription: dict[str, Any] | None = None


@attrs.frozen
class ClientContent:
    """``clientContent``: turns appended to the history (we use it only to seed a new session)."""

    turns: list[dict[str, Any]]
    turn_complete: bool | None = None


@attrs.frozen
class RealtimeInput:
    """``realtimeInput``: live input (audio by the fast path :func:`audio_input`)."""

    audio: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    text: str | None = None
    audio_stream_end: bool | None = None


@attrs.frozen
class FunctionResponse:
    id: str | None
    name: str
    response: dict[str, Any]


@attrs.frozen
class ToolResponse:
    function_responses: list[FunctionResponse]


ClientMessage: TypeAlias = Setup | ClientContent | RealtimeInput | ToolResponse

_CLIENT_KEYS: dict[type[Any], str] = {
    Setup: "setup",
    ClientContent: "clientContent",
    RealtimeInput: "realtimeInput",
    ToolResponse: "toolResponse",
}


def _unstructure_camel(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if value is not None:
            out[camel(field.name)] = converter.unstructure(value)
    return out


for _cls in (Setup, ClientContent, RealtimeInput, FunctionResponse, ToolResponse):
    converter.register_unstructure_hook(_cls, _unstructure_camel)


def encode_client_message(message: ClientMessage) -> str:
    """The JSON text of one client message: ``{"<oneof key>": {...}}``, camelCase."""
    body = converter.unstructure(message)
    return json.dumps({_CLIENT_KEYS[type(message)]: body}, separators=(",", ":"))


def recorded_audio(message: Any) -> list[tuple[dict[str, Any], str]]:
    """Where a decoded message (either way) carries base64 audio, for recordings without audio."""
    found: list[tuple[dict[str, Any], str]] = []
    if not isinstance(message, dict):
        return found
    realtime = message.get("realtimeInput")
    if isinstance(realtime, dict):
        blobs = [realtime.get("audio"), *(realtime.get("mediaChunks") or [])]
        found += [(b, "data") for b in blobs if isinstance(b, dict) and str(b.get("mimeType", "")).startswith("audio/")]
    content = message.get("serverContent")
    turn = content.get("modelTurn") if isinstance(content, dict) else None
    parts = turn.get("parts") if isinstance(turn, dict) else None
    for part in parts if isinstance(parts, list) else []:
        blob = part.get("inlineData") if isinstance(part, dict) else None
        if isinstance(blob, dict) and str(blob.get("mimeType", "")).startswith("audio/"):
            found.append((blob, "data"))
    return found


def audio_input(b64_audio: str, sample_rate: int) -> str:
    """Fast path for the most frequent message: one microphone block (never ``mediaChunks``)."""
    return (
        '{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=' + str(sample_rate) + '","data":"' + b64_audio + '"}}}'
    )


def warm_up() -> None:
    """Have cattrs build the structure code of every server message now, not at the first tool call."""
    converter.get_structure_hook(ServerMessage)


# --------------------------------------------------------------------------- the setup


def build_setup(model: str, config: GeminiConfig, request: ConnectRequest, resume_handle: str | None) -> Setup:
    """The ``setup`` message (docs/protocols/gemini.md#setup) that opens a connection for this agent."""
    generation: dict[str, Any] = {"responseModalities": list(config.response_modalities), **config.generation}
    speech: dict[str, Any] = {}
    if config.voice:
        speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": config.voice}}
    if config.language:
        speech["languageCode"] = config.language
    if speech:
        generation["speechConfig"] = speech
    resumption: dict[str, Any] | None = None
    if config.resumption:
        resumption = {}
        if resume_handle:
            resumption["handle"] = resume_handle
        if config.transparent:
            resumption["transparent"] = True
    audio_out = config.response_modalities == ("AUDIO",)
    return Setup(
        model=model,
        generation_config=generation,
        system_instruction={"parts": [{"text": request.system_prompt}]} if request.system_prompt else None,
        tools=[{"functionDeclarations": [_declaration(spec) for spec in request.tools]}] if request.tools else None,
        realtime_input_config=dict(config.realtime_input_config) if config.realtime_input_config else None,
        session_resumption=resumption,
        context_window_compression=_deep_dict(config.compression) if config.compression is not None else None,
        input_audio_transcription={} if config.input_transcription else None,
        output_audio_transcription={} if config.output_transcription and audio_out else None,
    )


def _deep_dict(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_dict(v) for k, v in value.items()}
    return value


def _declaration(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "parametersJsonSchema": dict(spec.input_schema)}


def describe_setup(setup: Setup) -> str:
    """A one-line summary of ``setup`` for debug logs (never the handle)."""
    data = json.loads(encode_client_message(setup))["setup"]
    if "sessionResumption" in data and "handle" in data["sessionResumption"]:
        data["sessionResumption"]["handle"] = "***"
    return json.dumps({k: data[k] for k in data if k not in ("systemInstruction", "tools")})[:500]


def tool_response_body(status: str, content: Any) -> dict[str, Any]:
    """``FunctionResponse.response`` is a JSON object: the proto documents ``output`` for the
    result and ``error`` for a failure."""
    if status == "success":
        return {"output": content}
    if status == "cancelled":
        return {"error": f"the call was cancelled{': ' + content if isinstance(content, str) and content else ''}"}
    return {"error": content}
