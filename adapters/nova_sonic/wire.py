"""Nova Sonic's events, both ways: attrs classes and one cattrs converter.

Input events (ours) are attrs classes unstructured to the exact JSON shapes of
docs/protocols/nova_sonic.md#input-events: camelCase keys, optional fields left out when unset,
each wrapped as ``{"event": {name: body}}``. Output events (the model's,
docs/protocols/nova_sonic.md#output-events) are structured by their single key; a name we do not know
becomes :class:`UnknownOutputEvent` (AWS adds events; we must not crash),
and a known event with the wrong shape raises :class:`MalformedOutputEvent`.
Fields the service adds to known events are ignored.

On the wire each event JSON travels base64-encoded inside an inner
event-stream message (``:event-type chunk``) whose payload is
``{"bytes": "<base64>"}``; :func:`encode_chunk` and :func:`decode_chunk`
do that layer.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any, ClassVar, TypeAlias

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from adapters._exceptions import leaves
from adapters.nova_sonic.config import NovaSonicConfig
from adapters.nova_sonic.eventstream import encode_message
from ports.errors import BidiUsageError
from ports.events import BidiToolResultEvent
from ports.model import ConnectRequest, ToolSpec

__all__ = [
    "INTERRUPTED_MARKER",
    "AudioInput",
    "AudioOutput",
    "CompletionEnd",
    "CompletionStart",
    "ContentEnd",
    "ContentStart",
    "InputEvent",
    "MalformedOutputEvent",
    "OutputContentEnd",
    "OutputContentStart",
    "OutputEvent",
    "PromptEnd",
    "PromptStart",
    "SessionEnd",
    "SessionStart",
    "TextInput",
    "TextOutput",
    "ToolResult",
    "ToolUse",
    "UnknownOutputEvent",
    "UsageEvent",
    "audio_input_json",
    "build_setup",
    "converter",
    "decode_chunk",
    "encode_chunk",
    "encode_event",
    "is_interruption",
    "parse_output_event",
    "recorded_audio",
    "text_content",
    "tool_configuration",
    "tool_result_content",
]

converter = cattrs.Converter()

_CAMEL = re.compile(r"_([a-z])")


def _camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


# --------------------------------------------------------------------------- input events


@attrs.frozen
class SessionStart:
    name: ClassVar[str] = "sessionStart"
    inference_configuration: dict[str, Any]
    turn_detection_configuration: dict[str, Any] | None = None


@attrs.frozen
class PromptStart:
    name: ClassVar[str] = "promptStart"
    prompt_name: str
    text_output_configuration: dict[str, Any]
    audio_output_configuration: dict[str, Any]
    tool_use_output_configuration: dict[str, Any] | None = None
    tool_configuration: dict[str, Any] | None = None


@attrs.frozen
class ContentStart:
    name: ClassVar[str] = "contentStart"
    prompt_name: str
    content_name: str
    type: str
    interactive: bool
    role: str
    text_input_configuration: dict[str, Any] | None = None
    audio_input_configuration: dict[str, Any] | None = None
    tool_result_input_configuration: dict[str, Any] | None = None


@attrs.frozen
class TextInput:
    name: ClassVar[str] = "textInput"
    prompt_name: str
    content_name: str
    content: str


@attrs.frozen
class AudioInput:
    name: ClassVar[str] = "audioInput"
    prompt_name: str
    content_name: str
    content: str


@attrs.frozen
class ToolResult:
    name: ClassVar[str] = "toolResult"
    prompt_name: str
    content_name: str
    content: str


@attrs.frozen
class ContentEnd:
    name: ClassVar[str] = "contentEnd"
    prompt_name: str
    content_name: str


@attrs.frozen
class PromptEnd:
    name: ClassVar[str] = "promptEnd"
    prompt_name: str


@attrs.frozen
class SessionEnd:
    name: ClassVar[str] = "sessionEnd"


InputEvent: TypeAlias = (
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

for _cls in (
    SessionStart,
    PromptStart,
    ContentStart,
    TextInput,
    AudioInput,
    ToolResult,
    ContentEnd,
    PromptEnd,
    SessionEnd,
):
    converter.register_unstructure_hook(
        _cls,
        make_dict_unstructure_fn(
            _cls,
            converter,
            **{  # type: ignore[arg-type]
                a.name: override(rename=_camel(a.name), omit_if_default=a.default is None) for a in attrs.fields(_cls)
            },
        ),
    )


def encode_event(event: InputEvent) -> bytes:
    """The event's JSON, ``{"event": {name: body}}``, as UTF-8."""
    body = converter.unstructure(event)
    return json.dumps({"event": {event.name: body}}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def audio_input_json(prompt_name: str, content_name: str, pcm: bytes) -> bytes:
    """The ``audioInput`` event for a block of PCM, without cattrs (about 31 of these a second).

    The names are ours (UUIDs), so they need no JSON escaping.
    """
    b64 = base64.b64encode(pcm).decode("ascii")
    return (
        f'{{"event":{{"audioInput":{{"promptName":"{prompt_name}","contentName":"{content_name}",'
        f'"content":"{b64}"}}}}}}'
    ).encode("ascii")


def text_content(prompt_name: str, role: str, pieces: Iterable[str], *, interactive: bool) -> list[InputEvent]:
    """One TEXT content: ``contentStart``, a ``textInput`` per piece, ``contentEnd`` (a fresh content name)."""
    name = str(uuid.uuid4())
    events: list[InputEvent] = [
        ContentStart(
            prompt_name=prompt_name,
            content_name=name,
            type="TEXT",
            interactive=interactive,
            role=role,
            text_input_configuration={"mediaType": "text/plain"},
        )
    ]
    events += [TextInput(prompt_name=prompt_name, content_name=name, content=piece) for piece in pieces]
    events.append(ContentEnd(prompt_name=prompt_name, content_name=name))
    return events


def build_setup(config: NovaSonicConfig, request: ConnectRequest, prompt_name: str) -> list[InputEvent]:
    """The events that open a stream (docs/protocols/nova_sonic.md#input-events): ``sessionStart`` (inference and
    turn-taking settings), ``promptStart`` (output formats, voice, tools), and the SYSTEM text content.

    Nova wants the SYSTEM content first in every prompt, so ``request.system_prompt`` must
    be set (``BidiNovaSonicModel`` fills in its ``default_system_prompt``)."""
    if not request.system_prompt:
        raise BidiUsageError("Nova Sonic needs a system prompt (BidiNovaSonicModel's default_system_prompt)")
    turn = {"endpointingSensitivity": config.endpointing_sensitivity} if config.endpointing_sensitivity else None
    return [
        SessionStart(inference_configuration=config.inference_configuration(), turn_detection_configuration=turn),
        PromptStart(
            prompt_name=prompt_name,
            text_output_configuration={"mediaType": "text/plain"},
            audio_output_configuration={
                "mediaType": "audio/lpcm",
                "sampleRateHertz": config.output_rate,
                "sampleSizeBits": 16,
                "channelCount": 1,
                "voiceId": config.voice,
                "encoding": "base64",
                "audioType": "SPEECH",
            },
            tool_use_output_configuration={"mediaType": "application/json"} if request.tools else None,
            tool_configuration=tool_configuration(request.tools) if request.tools else None,
        ),
        *text_content(prompt_name, "SYSTEM", [request.system_prompt], interactive=False),
    ]


def tool_configuration(tools: tuple[ToolSpec, ...]) -> dict[str, Any]:
    """``toolConfiguration``; Nova wants each input schema as a JSON *string*."""
    return {
        "tools": [
            {
                "toolSpec": {
                    "name": spec.name,
                    "description": spec.description or spec.name,
                    "inputSchema": {"json": json.dumps(dict(spec.input_schema), ensure_ascii=False)},
                }
            }
            for spec in tools
        ]
    }


def tool_result_content(result: BidiToolResultEvent) -> str:
    """A tool's outcome as the JSON object string ``toolResult`` carries."""
    content = result.content
    if result.status == "error":
        return json.dumps({"error": content if isinstance(content, str) else json.dumps(content)})
    if result.status == "cancelled":
        return json.dumps({"cancelled": True, "message": content if isinstance(content, str) else "cancelled"})
    if isinstance(content, dict):
        return json.dumps(content, ensure_ascii=False)
    return json.dumps({"result": content}, ensure_ascii=False)


_CHUNK_HEADERS = {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}


def recorded_audio(message: Any) -> list[tuple[dict[str, Any], str]]:
    """Where a decoded event (either way) carries base64 audio, for recordings without audio."""
    event = message.get("event") if isinstance(message, dict) else None
    if not isinstance(event, dict):
        return []
    return [(event[name], "content") for name in ("audioInput", "audioOutput") if isinstance(event.get(name), dict)]


def encode_chunk(event_json: bytes) -> bytes:
    """The inner event-stream message carrying one event (before signing)."""
    payload = b'{"bytes":"' + base64.b64encode(event_json) + b'"}'
    return encode_message(_CHUNK_HEADERS, payload)


def decode_chunk(payload: bytes) -> dict[str, Any]:
    """The event JSON inside a ``chunk`` message's payload. Raises ``ValueError``."""
    outer = json.loads(payload)
    if not isinstance(outer, dict) or not isinstance(outer.get("bytes"), str):
        raise ValueError("a chunk payload must be {'bytes': '<base64>'}")  # noqa: TRY004 (as bad JSON)
    try:
        inner = json.loads(base64.b64decode(outer["bytes"], validate=True))
    except binascii.Error as exc:
        raise ValueError(f"chunk bytes are not base64: {exc}") from None
    if not isinstance(inner, dict):
        raise ValueError("an event must be a JSON object")  # noqa: TRY004
    return inner


# --------------------------------------------------------------------------- output events


@attrs.frozen
class CompletionStart:
    name: ClassVar[str] = "completionStart"
    session_id: str | None = None
    prompt_name: str | None = None
    completion_id: str | None = None


@attrs.frozen
class OutputContentStart:
    name: ClassVar[str] = "contentStart"
    content_id: str
    type: str
    role: str
    additional_model_fields: str | None = None
    completion_id: str | None = None

    @property
    def generation_stage(self) -> str | None:
        """``FINAL`` or ``SPECULATIVE`` for text (a JSON string inside the event)."""
        if not self.additional_model_fields:
            return None
        try:
            fields = json.loads(self.additional_model_fields)
        except ValueError:
            return None
        stage = fields.get("generationStage") if isinstance(fields, dict) else None
        return stage if isinstance(stage, str) else None


@attrs.frozen
class TextOutput:
    name: ClassVar[str] = "textOutput"
    content: str
    content_id: str | None = None
    role: str | None = None


@attrs.frozen
class AudioOutput:
    name: ClassVar[str] = "audioOutput"
    content: str
    content_id: str | None = None


@attrs.frozen
class ToolUse:
    name: ClassVar[str] = "toolUse"
    tool_name: str
    tool_use_id: str
    content: str = ""
    content_id: str | None = None


@attrs.frozen
class OutputContentEnd:
    name: ClassVar[str] = "contentEnd"
    content_id: str
    type: str | None = None
    stop_reason: str | None = None
    role: str | None = None


@attrs.frozen
class UsageEvent:
    name: ClassVar[str] = "usageEvent"
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_tokens: int = 0
    details: dict[str, Any] | None = None


@attrs.frozen
class CompletionEnd:
    name: ClassVar[str] = "completionEnd"
    stop_reason: str | None = None
    completion_id: str | None = None


@attrs.frozen
class UnknownOutputEvent:
    event_name: str
    body: Any = None


OutputEvent: TypeAlias = (
    CompletionStart
    | OutputContentStart
    | TextOutput
    | AudioOutput
    | ToolUse
    | OutputContentEnd
    | UsageEvent
    | CompletionEnd
    | UnknownOutputEvent
)

_OUTPUT_TYPES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        CompletionStart,
        OutputContentStart,
        TextOutput,
        AudioOutput,
        ToolUse,
        OutputContentEnd,
        UsageEvent,
        CompletionEnd,
    )
}


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _type: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


_out = cattrs.Converter()
_out.register_structure_hook(str, _strict_str)
_out.register_structure_hook(int, _strict_int)
for _cls in _OUTPUT_TYPES.values():
    _out.register_structure_hook(
        _cls,
        make_dict_structure_fn(
            _cls,
            _out,
            **{a.name: override(rename=_camel(a.name)) for a in attrs.fields(_cls)},  # type: ignore[arg-type]
        ),
    )


class MalformedOutputEvent(ValueError):
    """A known output event whose fields have the wrong shape."""


def parse_output_event(data: dict[str, Any]) -> OutputEvent:
    """Structure ``{"event": {name: body}}``. Raises :class:`MalformedOutputEvent`."""
    event = data.get("event")
    if not isinstance(event, dict) or len(event) != 1:
        raise MalformedOutputEvent(f"expected {{'event': {{name: body}}}}, got keys {sorted(data)[:5]}")
    ((name, body),) = event.items()
    cls = _OUTPUT_TYPES.get(name)
    if cls is None:
        return UnknownOutputEvent(event_name=str(name), body=body)
    if not isinstance(body, dict):
        raise MalformedOutputEvent(f"{name}: the body must be an object")
    if cls is AudioOutput:  # the hot path: skip cattrs
        content = body.get("content")
        if not isinstance(content, str):
            raise MalformedOutputEvent("audioOutput: 'content' must be a base64 string")
        content_id = body.get("contentId")
        return AudioOutput(content=content, content_id=content_id if isinstance(content_id, str) else None)
    try:
        return _out.structure(body, cls)  # type: ignore[no-any-return]
    except Exception as exc:  # cattrs' ClassValidationError and friends
        detail = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves(exc)) or str(exc)
        raise MalformedOutputEvent(f"{name}: {detail}"[:300]) from None


INTERRUPTED_MARKER = '{ "interrupted" : true }'
"""What Nova's ``textOutput`` says on barge-in (docs/protocols/nova_sonic.md#barge-in)."""


def is_interruption(text: str) -> bool:
    """Whether a ``textOutput`` content is the barge-in marker (whatever its spacing)."""
    stripped = text.strip()
    if not (stripped.startswith("{") and "interrupted" in stripped):
        return False
    try:
        value = json.loads(stripped)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("interrupted") is True
