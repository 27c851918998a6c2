"""The event vocabulary that crosses the boundary of a conversation.

Three families, all frozen and slotted attrs classes:

* **input events** travel from the user (microphone, keyboard, a browser
  socket) to the model: :class:`BidiTextInputEvent`, :class:`BidiAudioInputEvent`,
  :class:`BidiImageInputEvent`;
* **output events** travel from the conversation to the user's outputs and to
  :meth:`BidiAgent.receive`: connection lifecycle, responses, audio,
  transcripts, interruptions, tools, usage, errors;
* **model signals** (:class:`BidiSpeechStartedEvent`, :class:`BidiSpeechStoppedEvent`,
  :class:`BidiToolCancelEvent`, :class:`BidiConnectionExpiringEvent`,
  :class:`BidiResumptionUpdateEvent`) travel from a model session to the core
  only: they say what the provider noticed, and the core decides what it means.

Audio is raw PCM ``bytes`` everywhere inside the library. Base64 exists only on
the wire (in adapters) and in :meth:`to_dict`, whose result is JSON-safe so a
WebSocket bridge can forward events as they are. :func:`event_from_dict`
rebuilds any event from that form; ``type`` strings follow the reference
(``bidi_audio_stream``, ...).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, Union

import attrs

from ports.errors import BidiUsageError

__all__ = [
    "BidiAudioInputEvent",
    "BidiAudioStreamEvent",
    "BidiConnectionCloseEvent",
    "BidiConnectionExpiringEvent",
    "BidiConnectionRestartEvent",
    "BidiConnectionStartEvent",
    "BidiErrorEvent",
    "BidiEvent",
    "BidiImageInputEvent",
    "BidiInputEvent",
    "BidiInterruptionEvent",
    "BidiOutputEvent",
    "BidiResponseCompleteEvent",
    "BidiResponseStartEvent",
    "BidiResumptionUpdateEvent",
    "BidiSpeechStartedEvent",
    "BidiSpeechStoppedEvent",
    "BidiTextInputEvent",
    "BidiToolCancelEvent",
    "BidiToolResultEvent",
    "BidiToolUseEvent",
    "BidiTranscriptStreamEvent",
    "BidiUsageEvent",
    "CloseReason",
    "ModalityUsage",
    "ModelEvent",
    "ResponseTiming",
    "StopReason",
    "ToolResultStatus",
    "event_from_dict",
    "pcm_duration_ms",
]


def pcm_duration_ms(audio: bytes, sample_rate: int, channels: int = 1, sample_width: int = 2) -> float:
    """Duration of a block of 16-bit (by default) PCM, in milliseconds."""
    frame = channels * sample_width
    return (len(audio) // frame) * 1000.0 / sample_rate


_REGISTRY: dict[str, type[BidiEvent]] = {}
_E = TypeVar("_E", bound="BidiEvent")
_T = TypeVar("_T")


class BidiEvent:
    """Base of every event: a ``type`` tag and a JSON-safe dict form."""

    __slots__ = ()
    type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("type")
        if isinstance(tag, str):
            if tag in _REGISTRY and _REGISTRY[tag].__qualname__ != cls.__qualname__:
                raise TypeError(f"event type {tag!r} is already taken by {_REGISTRY[tag].__qualname__}")
            _REGISTRY[tag] = cls

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: bytes as base64 strings, nested values as dicts and lists."""
        out: dict[str, Any] = {"type": self.type}
        for field in _fields(self.__class__):
            out[field.name] = _to_json(getattr(self, field.name))
        return out

    @classmethod
    def from_dict(cls: builtins.type[_E], data: Mapping[str, Any]) -> _E:
        """Rebuild an event of this class from :meth:`to_dict`'s form.

        Raises :class:`BidiUsageError` when a field is missing, unknown or of
        the wrong shape, or when ``data["type"]`` names another event.
        """
        tag = data.get("type", cls.type)
        if tag != cls.type:
            raise BidiUsageError(f"{cls.__name__}.from_dict got type {tag!r}, expected {cls.type!r}")
        return _build(cls, data)


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if attrs.has(type(value)):
        return {f.name: _to_json(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _from_json(hint: Any, value: Any, where: str) -> Any:
    """Convert one JSON value back according to a field's type hint."""
    origin = typing.get_origin(hint)
    if hint is bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BidiUsageError(f"{where}: not valid base64") from exc
        raise BidiUsageError(f"{where}: expected bytes or a base64 string, got {type(value).__name__}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _from_json(arg, value, where)
            except BidiUsageError:
                continue
        raise BidiUsageError(f"{where}: {value!r} does not fit {hint}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise BidiUsageError(f"{where}: expected a list, got {type(value).__name__}")
        (item_hint, *_rest) = typing.get_args(hint) or (Any,)
        return tuple(_from_json(item_hint, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise BidiUsageError(f"{where}: {value!r} is not one of {typing.get_args(hint)}")
        return value
    if isinstance(hint, type) and attrs.has(hint):
        if not isinstance(value, Mapping):
            raise BidiUsageError(f"{where}: expected an object, got {type(value).__name__}")
        return _build(hint, value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, bool) and not isinstance(value, hint):
        raise BidiUsageError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    if hint is int and isinstance(value, bool):
        raise BidiUsageError(f"{where}: expected int, got bool")
    return value


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(cls)
    return fields


def _build(cls: type[_T], data: Mapping[str, Any]) -> _T:
    hints = _hints(cls)
    names = {f.name for f in _fields(cls)}
    unknown = set(data) - names - {"type"}
    if unknown:
        raise BidiUsageError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {name: _from_json(hints[name], data[name], f"{cls.__name__}.{name}") for name in names if name in data}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BidiUsageError(f"{cls.__name__}: {exc}") from exc


def event_from_dict(data: Mapping[str, Any]) -> BidiEvent:
    """Rebuild any event from its dict form, dispatching on ``data["type"]``."""
    if not isinstance(data, Mapping):
        raise BidiUsageError(f"expected a dict with a 'type' key, got {type(data).__name__}")
    tag = data.get("type")
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise BidiUsageError(f"unknown event type {tag!r}; known types: {sorted(_REGISTRY)}")
    return _build(cls, data)


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _short_bytes(value: bytes) -> str:
    return f"<{len(value)} bytes>"


# --------------------------------------------------------------------------- input


@attrs.frozen
class BidiTextInputEvent(BidiEvent):
    """Text the user typed (or any text to say to the model as the user)."""

    type: ClassVar[str] = "bidi_text_input"
    text: str = attrs.field(validator=attrs.validators.instance_of(str))
    role: Literal["user"] = "user"


@attrs.frozen
class BidiAudioInputEvent(BidiEvent):
    """A block of the user's audio, raw PCM (16-bit little-endian for ``pcm``)."""

    type: ClassVar[str] = "bidi_audio_input"
    audio: bytes = attrs.field(validator=attrs.validators.instance_of(bytes), repr=_short_bytes)
    format: str = "pcm"
    sample_rate: int = attrs.field(default=16000, validator=_positive)
    channels: int = attrs.field(default=1, validator=_positive)


@attrs.frozen
class BidiImageInputEvent(BidiEvent):
    """An image for the model to look at (encoded bytes, e.g. PNG or JPEG)."""

    type: ClassVar[str] = "bidi_image_input"
    image: bytes = attrs.field(validator=attrs.validators.instance_of(bytes), repr=_short_bytes)
    mime_type: str = "image/jpeg"


BidiInputEvent: TypeAlias = BidiTextInputEvent | BidiAudioInputEvent | BidiImageInputEvent


# --------------------------------------------------------------------------- output


@attrs.frozen
class BidiConnectionStartEvent(BidiEvent):
    """A connection to the model is open (the first, or a new one after a restart)."""

    type: ClassVar[str] = "bidi_connection_start"
    connection_id: str
    model: str


@attrs.frozen
class BidiConnectionRestartEvent(BidiEvent):
    """The connection is being replaced; input is buffered until the new one opens.

    ``reason`` is ``"connection_lost"`` (a fault, or an ending the provider
    lets a new connection continue), ``"expiring"`` (the provider warned, or its connection limit is
    near) or ``"resumption_rejected"`` (the provider refused the resumption
    handle; a fresh session seeded with the history follows).
    ``details`` says more for logs; it never holds credentials.
    """

    type: ClassVar[str] = "bidi_connection_restart"
    reason: str
    details: str | None = None


@attrs.frozen
class BidiResponseStartEvent(BidiEvent):
    """The model started a response (one assistant turn)."""

    type: ClassVar[str] = "bidi_response_start"
    response_id: str


@attrs.frozen
class BidiAudioStreamEvent(BidiEvent):
    """A block of the model's audio, raw PCM."""

    type: ClassVar[str] = "bidi_audio_stream"
    audio: bytes = attrs.field(validator=attrs.validators.instance_of(bytes), repr=_short_bytes)
    format: str = "pcm"
    sample_rate: int = attrs.field(default=24000, validator=_positive)
    channels: int = attrs.field(default=1, validator=_positive)
    response_id: str | None = None

    @property
    def duration_ms(self) -> float:
        return pcm_duration_ms(self.audio, self.sample_rate, self.channels)


@attrs.frozen
class BidiTranscriptStreamEvent(BidiEvent):
    """Part of a transcript of what the user or the model said.

    ``delta`` is the new text, ``text`` the transcript so far (or, when
    ``is_final``, the whole of it).
    """

    type: ClassVar[str] = "bidi_transcript_stream"
    delta: str
    text: str
    role: Literal["user", "assistant"]
    is_final: bool
    response_id: str | None = None


@attrs.frozen
class BidiInterruptionEvent(BidiEvent):
    """The user barged in; everything queued of ``response_id`` is discarded."""

    type: ClassVar[str] = "bidi_interruption"
    reason: Literal["user_speech", "error"]
    response_id: str | None = None


StopReason: TypeAlias = Literal["complete", "error", "interrupted", "tool_use"]


@attrs.frozen
class ResponseTiming:
    """How one response went, as the agent measured it (its own clock, seconds).

    ``first_audio_s``: from the response's start to its first audio (``None``:
    it had none). ``since_user_s``: from the end of the user's turn to that
    first audio, the latency a person feels; the end of the turn is when the
    provider reported that the user stopped speaking (``user_turn="speech"``)
    or when the user's text was sent (``"text"``); ``None`` when neither
    preceded the response (a reply to a tool result, say). ``duration_s``: from
    start to completion. ``played_ms``: how much of its audio the outputs
    reported played by the time it completed, or by the interruption that cut
    it short (``None``: no output reports playback). ``interrupted``: the user
    barged in.
    """

    duration_s: float
    first_audio_s: float | None = None
    since_user_s: float | None = None
    user_turn: Literal["speech", "text"] | None = None
    played_ms: float | None = None
    interrupted: bool = False


@attrs.frozen
class BidiResponseCompleteEvent(BidiEvent):
    """The model finished a response, or it was cut short.

    ``timing`` is filled in by the agent as it delivers the event (the
    provider's adapter leaves it ``None``); it takes no part in equality.
    """

    type: ClassVar[str] = "bidi_response_complete"
    response_id: str
    stop_reason: StopReason
    timing: ResponseTiming | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ModalityUsage:
    """Tokens of one modality (``"text"``, ``"audio"``, ``"image"``) in one usage report.

    ``cached_input_tokens`` is the part of ``input_tokens`` the provider read
    from its cache (billed at a lower rate), as OpenAI and Gemini report it.
    """

    modality: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


@attrs.frozen
class BidiUsageEvent(BidiEvent):
    """Token counts the provider reported: what this report adds (the sum of a
    conversation's reports is its total, whatever the provider's own habit).

    ``cache_read_input_tokens`` is the part of ``input_tokens`` read from the
    provider's cache; ``modality_details`` splits the counts by modality.
    """

    type: ClassVar[str] = "bidi_usage"
    input_tokens: int
    output_tokens: int
    total_tokens: int
    modality_details: tuple[ModalityUsage, ...] = ()
    cache_read_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None


CloseReason: TypeAlias = Literal["client_disconnect", "timeout", "error", "complete", "user_request", "provider_closed"]
"""Why the conversation ended. bidi-core itself emits ``"client_disconnect"``
(``stop()``, or ``request_stop()`` with its default), ``"user_request"`` (the
``stop_conversation`` tool), ``"provider_closed"`` (the service ended the
session for good, e.g. OpenAI's close 1000) and ``"error"`` (a failure that
ended it);
``"complete"`` and ``"timeout"`` come only from an app's ``request_stop(reason)``."""


@attrs.frozen
class BidiConnectionCloseEvent(BidiEvent):
    """The conversation is over. It is the last event anyone receives."""

    type: ClassVar[str] = "bidi_connection_close"
    reason: CloseReason
    connection_id: str | None = None


@attrs.frozen
class BidiErrorEvent(BidiEvent):
    """Something went wrong that did not end the conversation.

    ``code`` is machine-readable (a provider's code, or ours such as
    ``tool_error``, ``protocol_error``); ``message`` is for people.
    """

    type: ClassVar[str] = "bidi_error"
    message: str
    code: str | None = None
    details: str | None = None


@attrs.frozen
class BidiToolUseEvent(BidiEvent):
    """The model asked to call a tool. ``input`` is the parsed JSON arguments."""

    type: ClassVar[str] = "tool_use_stream"
    tool_use_id: str
    name: str
    input: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


ToolResultStatus: TypeAlias = Literal["success", "error", "cancelled"]


@attrs.frozen
class BidiToolResultEvent(BidiEvent):
    """The outcome of one tool call; also what the model is sent.

    ``content`` is JSON-safe: a string, or any JSON value the tool returned.
    """

    type: ClassVar[str] = "tool_result"
    tool_use_id: str
    name: str
    status: ToolResultStatus
    content: Any = attrs.field(default=None, hash=False)


BidiOutputEvent: TypeAlias = (
    BidiConnectionStartEvent
    | BidiConnectionRestartEvent
    | BidiResponseStartEvent
    | BidiAudioStreamEvent
    | BidiTranscriptStreamEvent
    | BidiInterruptionEvent
    | BidiResponseCompleteEvent
    | BidiUsageEvent
    | BidiConnectionCloseEvent
    | BidiErrorEvent
    | BidiToolUseEvent
    | BidiToolResultEvent
)


# --------------------------------------------------------------------------- model signals


@attrs.frozen
class BidiSpeechStartedEvent(BidiEvent):
    """The provider heard the user start speaking.

    Whether that interrupts anything is the core's decision: it does only while
    a response is being generated or its audio is still being played.
    """

    type: ClassVar[str] = "bidi_speech_started"


@attrs.frozen
class BidiSpeechStoppedEvent(BidiEvent):
    """The provider heard the user stop speaking (its voice activity detection).

    It changes nothing in the conversation; it marks the end of the user's
    turn for measuring how long the answer took (:class:`ResponseTiming`).
    """

    type: ClassVar[str] = "bidi_speech_stopped"


@attrs.frozen
class BidiToolCancelEvent(BidiEvent):
    """The provider withdrew tool calls; no result may be sent for them."""

    type: ClassVar[str] = "bidi_tool_cancel"
    tool_use_ids: tuple[str, ...]


@attrs.frozen
class BidiConnectionExpiringEvent(BidiEvent):
    """The provider will close this connection in about ``time_left_s`` seconds."""

    type: ClassVar[str] = "bidi_connection_expiring"
    time_left_s: float


@attrs.frozen
class BidiResumptionUpdateEvent(BidiEvent):
    """The provider issued a handle that resumes this session on a new connection.

    ``inputs_included`` says how many of the items passed to
    :meth:`~ports.model.BidiModelSession.send` on this connection the session
    state behind ``handle`` holds; the core sends the rest again when it
    resumes with the handle. ``None`` when the provider does not say: then
    everything sent before this event arrived counts as held (what Gemini's
    documentation prescribes: keep what was sent since the last update).
    """

    type: ClassVar[str] = "bidi_resumption_update"
    handle: str = attrs.field(repr=False)
    inputs_included: int | None = None


ModelEvent: TypeAlias = (
    BidiResponseStartEvent
    | BidiAudioStreamEvent
    | BidiTranscriptStreamEvent
    | BidiResponseCompleteEvent
    | BidiUsageEvent
    | BidiErrorEvent
    | BidiToolUseEvent
    | BidiSpeechStartedEvent
    | BidiSpeechStoppedEvent
    | BidiToolCancelEvent
    | BidiConnectionExpiringEvent
    | BidiResumptionUpdateEvent
)
"""What :meth:`BidiModelSession.receive` may yield."""
