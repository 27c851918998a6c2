"""The strict schema of Nova Sonic input events (docs/protocols/nova_sonic.md#input-events).

No machine-readable schema exists (the SDK models only ``chunk.bytes``), so this
one is hand-written from AWS's user-guide pages "Input events" (Nova and Nova 2)
and the AWS samples that docs/protocols/nova_sonic.md cites. It is strict on purpose: unknown event
names (``connectionEnd``, which strands sends), unknown keys, wrong types
(``"16000"`` for ``16000``, ``1`` for ``true``) and documented enumerations are
all rejected. What the documents leave open is noted where it is decided.

The *order* of events is not a schema matter: :mod:`.session` checks it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.v import format_exception

__all__ = [
    "EVENT_TYPES",
    "AudioInput",
    "ContentEnd",
    "ContentStart",
    "PromptEnd",
    "PromptStart",
    "SchemaError",
    "SessionEnd",
    "SessionStart",
    "TextInput",
    "ToolResult",
    "parse_event",
]

T = TypeVar("T")


class SchemaError(ValueError):
    """An input event the service would refuse with a ValidationException."""


def _non_empty(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


def _between(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low} and {high}, got {value}")

    return check


def _json_text(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        json.loads(value)
    except ValueError:
        raise ValueError(f"{attribute.name} must be a JSON document in a string") from None


# ---------------------------------------------------------------------------- building blocks


@attrs.frozen(kw_only=True)
class InferenceConfiguration:
    """``topP`` and ``temperature`` are 0..1 (AWS docs); the ``maxTokens`` ceiling is a sanity bound of ours."""

    maxTokens: int | None = attrs.field(default=None, validator=_between(1, 65_536))
    topP: float | None = attrs.field(default=None, validator=_between(0.0, 1.0))
    temperature: float | None = attrs.field(default=None, validator=_between(0.0, 1.0))


@attrs.frozen(kw_only=True)
class TurnDetectionConfiguration:
    """Nova 2 only (nova2-userguide/sonic-input-events.html)."""

    endpointingSensitivity: Literal["HIGH", "MEDIUM", "LOW"]


@attrs.frozen(kw_only=True)
class TextMedia:
    mediaType: Literal["text/plain"]


@attrs.frozen(kw_only=True)
class JsonMedia:
    mediaType: Literal["application/json"]


@attrs.frozen(kw_only=True)
class AudioOutputConfiguration:
    mediaType: Literal["audio/lpcm"]
    sampleRateHertz: Literal[8000, 16000, 24000]
    sampleSizeBits: Literal[16]
    channelCount: Literal[1]
    voiceId: str = attrs.field(validator=_non_empty)
    encoding: Literal["base64"]
    audioType: Literal["SPEECH"]


@attrs.frozen(kw_only=True)
class InputSchema:
    json: str = attrs.field(validator=_json_text)


@attrs.frozen(kw_only=True)
class ToolSpec:
    name: str = attrs.field(validator=_non_empty)
    description: str
    inputSchema: InputSchema


@attrs.frozen(kw_only=True)
class Tool:
    toolSpec: ToolSpec


@attrs.frozen(kw_only=True)
class ToolConfiguration:
    tools: list[Tool]


@attrs.frozen(kw_only=True)
class AudioInputConfiguration:
    """Input audio: 16 kHz PCM16 mono, base64 (the documented input format)."""

    mediaType: Literal["audio/lpcm"]
    sampleRateHertz: Literal[16000]
    sampleSizeBits: Literal[16]
    channelCount: Literal[1]
    audioType: Literal["SPEECH"]
    encoding: Literal["base64"]


@attrs.frozen(kw_only=True)
class ToolResultInputConfiguration:
    toolUseId: str = attrs.field(validator=_non_empty)
    type: Literal["TEXT"]
    textInputConfiguration: TextMedia


# ---------------------------------------------------------------------------- events


@attrs.frozen(kw_only=True)
class SessionStart:
    inferenceConfiguration: InferenceConfiguration
    turnDetectionConfiguration: TurnDetectionConfiguration | None = None


@attrs.frozen(kw_only=True)
class PromptStart:
    promptName: str = attrs.field(validator=_non_empty)
    textOutputConfiguration: TextMedia
    audioOutputConfiguration: AudioOutputConfiguration
    toolUseOutputConfiguration: JsonMedia | None = None
    toolConfiguration: ToolConfiguration | None = None


_CONTENT_RULES: dict[str, tuple[frozenset[str], str]] = {
    "TEXT": (frozenset({"SYSTEM", "USER", "ASSISTANT"}), "textInputConfiguration"),
    "AUDIO": (frozenset({"USER"}), "audioInputConfiguration"),
    "TOOL": (frozenset({"TOOL"}), "toolResultInputConfiguration"),
}


@attrs.frozen(kw_only=True)
class ContentStart:
    """One input content. Which ``*InputConfiguration`` is required, and which roles are allowed, follow the type.

    AUDIO is interactive (streamed live); TOOL and SYSTEM/history TEXT are not;
    USER TEXT may be either (interactive: typed input, Nova 2 cross-modal; not interactive: history).
    """

    promptName: str = attrs.field(validator=_non_empty)
    contentName: str = attrs.field(validator=_non_empty)
    type: Literal["TEXT", "AUDIO", "TOOL"]
    interactive: bool
    role: Literal["SYSTEM", "USER", "ASSISTANT", "TOOL"]
    textInputConfiguration: TextMedia | None = None
    audioInputConfiguration: AudioInputConfiguration | None = None
    toolResultInputConfiguration: ToolResultInputConfiguration | None = None

    def __attrs_post_init__(self) -> None:
        roles, config = _CONTENT_RULES[self.type]
        if self.role not in roles:
            raise ValueError(f"role {self.role} is not allowed for {self.type} content")
        for other in ("textInputConfiguration", "audioInputConfiguration", "toolResultInputConfiguration"):
            present = getattr(self, other) is not None
            if other == config and not present:
                raise ValueError(f"{self.type} content requires {other}")
            if other != config and present:
                raise ValueError(f"{other} is not allowed for {self.type} content")
        if self.type == "AUDIO" and not self.interactive:
            raise ValueError("AUDIO content must be interactive")
        if self.type == "TOOL" and self.interactive:
            raise ValueError("TOOL content must not be interactive")
        if self.role in ("SYSTEM", "ASSISTANT") and self.interactive:
            raise ValueError(f"{self.role} content must not be interactive")


@attrs.frozen(kw_only=True)
class TextInput:
    promptName: str = attrs.field(validator=_non_empty)
    contentName: str = attrs.field(validator=_non_empty)
    content: str


def _pcm_base64(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        pcm = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{attribute.name} must be base64") from None
    if not pcm or len(pcm) % 2:
        raise ValueError(f"{attribute.name} must hold whole 16-bit samples")


@attrs.frozen(kw_only=True)
class AudioInput:
    promptName: str = attrs.field(validator=_non_empty)
    contentName: str = attrs.field(validator=_non_empty)
    content: str = attrs.field(validator=_pcm_base64)


@attrs.frozen(kw_only=True)
class ToolResult:
    promptName: str = attrs.field(validator=_non_empty)
    contentName: str = attrs.field(validator=_non_empty)
    content: str


@attrs.frozen(kw_only=True)
class ContentEnd:
    promptName: str = attrs.field(validator=_non_empty)
    contentName: str = attrs.field(validator=_non_empty)


@attrs.frozen(kw_only=True)
class PromptEnd:
    promptName: str = attrs.field(validator=_non_empty)


@attrs.frozen(kw_only=True)
class SessionEnd:
    pass


InputEvent = (
    SessionStart
    | PromptStart
    | ContentStart
    | TextInput
    | AudioInput
    | ToolResult
    | ContentEnd
    | PromptEnd
    | SessionEnd
)

EVENT_TYPES: dict[str, type[Any]] = {
    "sessionStart": SessionStart,
    "promptStart": PromptStart,
    "contentStart": ContentStart,
    "textInput": TextInput,
    "audioInput": AudioInput,
    "toolResult": ToolResult,
    "contentEnd": ContentEnd,
    "promptEnd": PromptEnd,
    "sessionEnd": SessionEnd,
}
"""Every documented input event. Anything else (``connectionEnd``, ``audioOutput`` sent back...) is refused."""


# ---------------------------------------------------------------------------- the converter


def _strict(kind: type[T], accept: tuple[type, ...]) -> Callable[[Any, type[T]], T]:
    def structure(value: Any, _type: type[T]) -> T:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got a boolean")
        if not isinstance(value, accept):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return cast(T, value)

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict(str, (str,)))
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _strict(float, (int, float)))
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    return converter


CONVERTER = _make_converter()


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ValueError | TypeError) and not isinstance(exc, KeyError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClassValidationError | ForbiddenExtraKeysError):
        return "; ".join(cattrs.transform_error(exc, format_exception=_format))
    return str(exc)


def parse_event(payload: bytes) -> tuple[str, Any, dict[str, Any]]:
    """``(event name, typed event, raw dict)`` from an event's JSON.

    Raises :class:`SchemaError` when the service would refuse the event.
    """
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise SchemaError("The event is not valid JSON.") from None
    if not isinstance(document, dict) or set(document) != {"event"} or not isinstance(document["event"], dict):
        raise SchemaError('An input event must be {"event": {<name>: {...}}}.')
    body = document["event"]
    if len(body) != 1:
        raise SchemaError(f"An input event must name exactly one event, got {sorted(body)}.")
    ((name, fields),) = body.items()
    event_type = EVENT_TYPES.get(name)
    if event_type is None:
        raise SchemaError(f"Unknown input event {name!r}; expected one of {sorted(EVENT_TYPES)}.")
    if not isinstance(fields, dict):
        raise SchemaError(f"{name} must be an object.")
    try:
        event = CONVERTER.structure(fields, event_type)
    except (ClassValidationError, ForbiddenExtraKeysError, ValueError, TypeError) as exc:
        raise SchemaError(f"Invalid {name}: {describe(exc)}") from None
    return name, event, document
