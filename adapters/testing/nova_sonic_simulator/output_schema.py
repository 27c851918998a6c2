"""The strict schema of Nova Sonic output events: the simulator checks itself with it.

Written from AWS's "Output events" page and the samples docs/protocols/nova_sonic.md#output-events cites. Every event
the simulator is about to send passes :func:`check_output_event`; a failure is a
:class:`~.errors.SimulatorBug`, because a simulator that speaks a wrong dialect
would make client tests lie. Shares the strict converter of :mod:`.schema`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import attrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from adapters.testing.nova_sonic_simulator.schema import CONVERTER, JsonMedia, TextMedia, describe

__all__ = ["OUTPUT_EVENT_TYPES", "check_output_event"]


def _json_text(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        json.loads(value)
    except ValueError:
        raise ValueError(f"{attribute.name} must be a JSON document in a string") from None


@attrs.frozen(kw_only=True)
class _Ids:
    sessionId: str
    promptName: str
    completionId: str


@attrs.frozen(kw_only=True)
class CompletionStart(_Ids):
    pass


@attrs.frozen(kw_only=True)
class AudioOutputConfiguration:
    mediaType: Literal["audio/lpcm"]
    sampleRateHertz: Literal[8000, 16000, 24000]
    sampleSizeBits: Literal[16]
    channelCount: Literal[1]
    encoding: Literal["base64"]
    audioType: Literal["SPEECH"]
    voiceId: str


def _stage(_instance: object, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    fields = json.loads(value)
    if fields.get("generationStage") not in ("FINAL", "SPECULATIVE"):
        raise ValueError("additionalModelFields.generationStage must be FINAL or SPECULATIVE")


@attrs.frozen(kw_only=True)
class ContentStart(_Ids):
    contentId: str
    type: Literal["TEXT", "AUDIO", "TOOL"]
    role: Literal["USER", "ASSISTANT", "TOOL"]
    additionalModelFields: str | None = attrs.field(default=None, validator=_stage)
    textOutputConfiguration: TextMedia | None = None
    audioOutputConfiguration: AudioOutputConfiguration | None = None
    toolUseOutputConfiguration: JsonMedia | None = None

    def __attrs_post_init__(self) -> None:
        config = {
            "TEXT": "textOutputConfiguration",
            "AUDIO": "audioOutputConfiguration",
            "TOOL": "toolUseOutputConfiguration",
        }
        for kind, name in config.items():
            present = getattr(self, name) is not None
            if (kind == self.type) != present:
                raise ValueError(f"{self.type} content {'needs' if not present else 'must not have'} {name}")
        if (self.type == "TEXT") != (self.additionalModelFields is not None):
            raise ValueError("additionalModelFields (generationStage) comes with TEXT contents only")


@attrs.frozen(kw_only=True)
class TextOutput(_Ids):
    contentId: str
    role: Literal["USER", "ASSISTANT"]
    content: str


def _base64(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{attribute.name} must be base64") from None


@attrs.frozen(kw_only=True)
class AudioOutput(_Ids):
    contentId: str
    content: str = attrs.field(validator=_base64)


@attrs.frozen(kw_only=True)
class ToolUse(_Ids):
    contentId: str
    toolName: str
    toolUseId: str
    content: str = attrs.field(validator=_json_text)


@attrs.frozen(kw_only=True)
class ContentEnd(_Ids):
    contentId: str
    type: Literal["TEXT", "AUDIO", "TOOL"]
    stopReason: Literal["PARTIAL_TURN", "END_TURN", "INTERRUPTED", "TOOL_USE"]


@attrs.frozen(kw_only=True)
class Tokens:
    speechTokens: int
    textTokens: int


@attrs.frozen(kw_only=True)
class TokenSides:
    input: Tokens
    output: Tokens


@attrs.frozen(kw_only=True)
class UsageDetails:
    delta: TokenSides
    total: TokenSides


@attrs.frozen(kw_only=True)
class UsageEvent(_Ids):
    details: UsageDetails
    totalInputTokens: int
    totalOutputTokens: int
    totalTokens: int


@attrs.frozen(kw_only=True)
class CompletionEnd(_Ids):
    stopReason: Literal["END_TURN", "INTERRUPTED", "PARTIAL_TURN", "TOOL_USE"]


OUTPUT_EVENT_TYPES: dict[str, type[Any]] = {
    "completionStart": CompletionStart,
    "contentStart": ContentStart,
    "textOutput": TextOutput,
    "audioOutput": AudioOutput,
    "toolUse": ToolUse,
    "contentEnd": ContentEnd,
    "usageEvent": UsageEvent,
    "completionEnd": CompletionEnd,
}


def check_output_event(event: dict[str, Any]) -> str | None:
    """None if ``{"event": {name: body}}`` is a valid output event, else what is wrong with it."""
    body = event.get("event")
    if set(event) != {"event"} or not isinstance(body, dict) or len(body) != 1:
        return 'an output event must be {"event": {<name>: {...}}}'
    ((name, fields),) = body.items()
    event_type = OUTPUT_EVENT_TYPES.get(name)
    if event_type is None:
        return f"unknown output event {name!r}"
    try:
        CONVERTER.structure(fields, event_type)
    except (ClassValidationError, ForbiddenExtraKeysError, ValueError, TypeError) as exc:
        return f"invalid {name}: {describe(exc)}"
    return None
