"""Hypothesis strategies for testing code built on bidi-core (the ``testing`` extra).

Three kinds:

* **events**: valid input events (text, audio in realistic formats, images)
  and output events of every type, for testing an input or an output on its
  own (:func:`input_events`, :func:`output_events`, :func:`audio_formats`);
* **provider behaviour** for :class:`~adapters.testing.ScriptedModel`: one
  response with audio and transcripts (:func:`responses`), a model turn
  (:func:`model_turns`: an answer, a barge-in, a tool call, usage, an in-band
  error), a connection's script (:func:`connection_scripts`, ending cleanly,
  by a fault or by the provider's time limit) and whole models
  (:func:`scripted_models`, with refused connections between);
* **tool arguments** drawn from a tool's JSON schema, valid
  (:func:`tool_arguments`) and invalid (:func:`invalid_tool_arguments`),
  and whole calls (:func:`tool_use_events`): fuzz a tool exactly as the model
  would call it. See :mod:`adapters.testing.json_schema`.

Tools are read by duck typing (``.spec.input_schema`` or ``.input_schema``,
``.name`` or ``.spec.name``, ``.ends_conversation``): the adapters never
import the core.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from adapters.testing.json_schema import input_schema_of, invalid_tool_arguments, schema_accepts, tool_arguments
from adapters.testing.scripted import Connection, End, Expect, ScriptedModel, Step
from ports.audio import AudioFormat
from ports.errors import BidiConnectionError, BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
    ModelEvent,
)
from ports.model import ModelCapabilities

__all__ = [
    "INPUT_RATES",
    "OUTPUT_RATES",
    "audio_formats",
    "audio_input_events",
    "audio_output_events",
    "connection_scripts",
    "error_events",
    "image_input_events",
    "input_events",
    "input_schema_of",
    "invalid_tool_arguments",
    "model_turns",
    "output_events",
    "pcm",
    "responses",
    "schema_accepts",
    "scripted_connections",
    "scripted_models",
    "text_input_events",
    "tool_arguments",
    "tool_name",
    "tool_use_events",
    "usage_events",
    "words",
]

INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
"""Microphone rates: telephony, what Gemini and Nova take, OpenAI's, and the devices' own."""
OUTPUT_RATES = (8000, 16000, 24000)
"""What the providers speak: Nova at 8, 16 or 24 kHz, OpenAI and Gemini at 24 kHz."""

MODEL_AUDIO = AudioFormat(24000)
"""The model's audio format unless told otherwise (what ``ModelCapabilities`` assumes)."""

SPEECH_WORDS = ("hello", "weather", "in", "paris", "please", "stop", "thanks", "what", "is", "the", "time")


def audio_formats(rates: Sequence[int] = INPUT_RATES, channels: Sequence[int] = (1,)) -> st.SearchStrategy[AudioFormat]:
    """PCM16 formats at realistic rates (mono by default: every provider takes and speaks mono)."""
    return st.builds(AudioFormat, sample_rate=st.sampled_from(rates), channels=st.sampled_from(channels))


def pcm(fmt: AudioFormat, min_ms: int = 10, max_ms: int = 100) -> st.SearchStrategy[bytes]:
    """A block of PCM16 in ``fmt``, whole frames, ``min_ms`` to ``max_ms`` long: silence, a tone or a level."""

    @st.composite
    def block(draw: st.DrawFn) -> bytes:
        ms = draw(st.integers(min_ms, max_ms))
        frames = max(1, fmt.sample_rate * ms // 1000)
        kind = draw(st.sampled_from(["silence", "tone", "level"]))
        amplitude = draw(st.integers(1, 32767))
        if kind == "silence":
            samples = array.array("h", bytes(2 * frames))
        elif kind == "level":
            samples = array.array("h", [amplitude]) * frames
        else:
            hz = draw(st.sampled_from([220, 440, 1000]))
            samples = array.array(
                "h", (round(amplitude * math.sin(2 * math.pi * hz * i / fmt.sample_rate)) for i in range(frames))
            )
        if fmt.channels > 1:
            samples = array.array("h", (s for s in samples for _ in range(fmt.channels)))
        return samples.tobytes()

    return block()


def words(max_words: int = 6) -> st.SearchStrategy[str]:
    """Short, readable speech: a few lowercase words."""
    return st.lists(st.sampled_from(SPEECH_WORDS), min_size=1, max_size=max_words).map(" ".join)


# --------------------------------------------------------------------------- input events


def text_input_events(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[BidiTextInputEvent]:
    return st.builds(BidiTextInputEvent, text=text if text is not None else st.text(min_size=1, max_size=40))


def audio_input_events(
    formats: st.SearchStrategy[AudioFormat] | None = None, min_ms: int = 10, max_ms: int = 100
) -> st.SearchStrategy[BidiAudioInputEvent]:
    """Microphone blocks, each in a format drawn from ``formats`` (realistic rates, mono, by default)."""

    @st.composite
    def event(draw: st.DrawFn) -> BidiAudioInputEvent:
        fmt = draw(formats if formats is not None else audio_formats())
        audio = draw(pcm(fmt, min_ms, max_ms))
        return BidiAudioInputEvent(audio=audio, sample_rate=fmt.sample_rate, channels=fmt.channels)

    return event()


def image_input_events() -> st.SearchStrategy[BidiImageInputEvent]:
    return st.builds(
        BidiImageInputEvent,
        image=st.binary(min_size=1, max_size=256),
        mime_type=st.sampled_from(["image/jpeg", "image/png", "image/webp"]),
    )


def input_events(images: bool = True) -> st.SearchStrategy[BidiInputEvent]:
    """Any valid input event (images only if ``images``: not every model takes them)."""
    options: list[st.SearchStrategy[Any]] = [text_input_events(), audio_input_events()]
    if images:
        options.append(image_input_events())
    return st.one_of(options)


# --------------------------------------------------------------------------- output events

_IDS = st.text(alphabet="abcdef0123456789", min_size=4, max_size=8)


def audio_output_events(
    response_id: str | None = None, formats: st.SearchStrategy[AudioFormat] | None = None
) -> st.SearchStrategy[BidiAudioStreamEvent]:
    """The model's audio chunks (20 to 200 ms), of ``response_id`` (or a drawn one)."""

    @st.composite
    def event(draw: st.DrawFn) -> BidiAudioStreamEvent:
        fmt = draw(formats if formats is not None else audio_formats(OUTPUT_RATES))
        rid = response_id if response_id is not None else "resp_" + draw(_IDS)
        audio = draw(pcm(fmt, 20, 200))
        return BidiAudioStreamEvent(audio=audio, sample_rate=fmt.sample_rate, channels=fmt.channels, response_id=rid)

    return event()


def usage_events() -> st.SearchStrategy[BidiUsageEvent]:
    @st.composite
    def event(draw: st.DrawFn) -> BidiUsageEvent:
        details = draw(
            st.lists(
                st.builds(
                    ModalityUsage,
                    modality=st.sampled_from(["text", "audio"]),
                    input_tokens=st.integers(0, 5000),
                    output_tokens=st.integers(0, 5000),
                ),
                max_size=2,
                unique_by=lambda d: d.modality,
            )
        )
        given_in = sum(d.input_tokens for d in details) if details else draw(st.integers(0, 10000))
        given_out = sum(d.output_tokens for d in details) if details else draw(st.integers(0, 10000))
        return BidiUsageEvent(given_in, given_out, given_in + given_out, tuple(details))

    return event()


def error_events() -> st.SearchStrategy[BidiErrorEvent]:
    """In-band errors: the provider complains, the conversation goes on."""
    return st.builds(
        BidiErrorEvent,
        message=words(),
        code=st.sampled_from([None, "rate_limited", "invalid_request_error", "server_error"]),
        details=st.none() | words(),
    )


def output_events() -> st.SearchStrategy[BidiOutputEvent]:
    """Any valid output event, one at a time (no order implied): for an output's ``__call__``."""
    rid = _IDS.map(lambda s: "resp_" + s)
    return st.one_of(
        st.builds(BidiConnectionStartEvent, connection_id=_IDS, model=st.sampled_from(["gpt-realtime", "scripted"])),
        st.builds(
            BidiConnectionRestartEvent,
            reason=st.sampled_from(["connection_lost", "expiring", "resumption_rejected"]),
            details=st.none() | words(),
        ),
        st.builds(BidiResponseStartEvent, response_id=rid),
        audio_output_events(),
        st.builds(
            BidiTranscriptStreamEvent,
            delta=words(),
            text=words(),
            role=st.sampled_from(["user", "assistant"]),
            is_final=st.booleans(),
            response_id=st.none() | rid,
        ),
        st.builds(BidiInterruptionEvent, reason=st.sampled_from(["user_speech", "error"]), response_id=rid),
        st.builds(
            BidiResponseCompleteEvent,
            response_id=rid,
            stop_reason=st.sampled_from(["complete", "error", "interrupted", "tool_use"]),
        ),
        usage_events(),
        error_events(),
        st.builds(
            BidiConnectionCloseEvent,
            reason=st.sampled_from(
                ["client_disconnect", "timeout", "error", "complete", "user_request", "provider_closed"]
            ),
            connection_id=st.none() | _IDS,
        ),
        st.builds(BidiToolUseEvent, tool_use_id=_IDS, name=st.just("lookup"), input=st.just({"query": "x"})),
        st.builds(
            BidiToolResultEvent,
            tool_use_id=_IDS,
            name=st.just("lookup"),
            status=st.sampled_from(["success", "error", "cancelled"]),
            content=st.none() | words(),
        ),
    )


# --------------------------------------------------------------------------- tools


def tool_name(tool: Any) -> str:
    """A tool's name: ``tool.name`` or ``tool.spec.name``."""
    name = getattr(tool, "name", None) or getattr(getattr(tool, "spec", None), "name", None)
    if not isinstance(name, str):
        raise BidiUsageError(f"cannot tell the name of tool {tool!r} (no .name or .spec.name)")
    return name


def tool_use_events(
    tool: Any, *, valid: bool | None = True, ids: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[BidiToolUseEvent]:
    """Calls of ``tool`` as the model makes them: valid arguments (``valid=True``), invalid ones
    (``False``) or either (``None``)."""
    name = tool_name(tool)
    if valid is None:
        arguments = tool_arguments(tool) | invalid_tool_arguments(tool)
    else:
        arguments = tool_arguments(tool) if valid else invalid_tool_arguments(tool)
    return st.builds(
        BidiToolUseEvent,
        tool_use_id=ids if ids is not None else _IDS.map(lambda s: "call_" + s),
        name=st.just(name),
        input=arguments,
    )


# --------------------------------------------------------------------------- provider behaviour


def responses(
    response_id: str, fmt: AudioFormat = MODEL_AUDIO, max_chunks: int = 4, stop_reason: str = "complete"
) -> st.SearchStrategy[list[ModelEvent]]:
    """One response as a provider streams it: start, audio chunks with the assistant's
    transcript growing between them, the final transcript, maybe usage, the completion."""

    @st.composite
    def response(draw: st.DrawFn) -> list[ModelEvent]:
        chunks = draw(st.integers(0, max_chunks))
        said: list[str] = []
        events: list[ModelEvent] = [BidiResponseStartEvent(response_id)]
        for _ in range(chunks):
            events.append(draw(audio_output_events(response_id, st.just(fmt))))
            if draw(st.booleans()):
                word = draw(st.sampled_from(SPEECH_WORDS))
                said.append(word)
                text = " ".join(said)
                events.append(BidiTranscriptStreamEvent(word, text, "assistant", False, response_id))
        if said:
            text = " ".join(said)
            events.append(BidiTranscriptStreamEvent(text, text, "assistant", True, response_id))
        if draw(st.booleans()):
            events.append(draw(usage_events()))
        events.append(BidiResponseCompleteEvent(response_id, stop_reason))  # type: ignore[arg-type]
        return events

    return response()


def model_turns(
    number: int, tools: Sequence[Any] = (), fmt: AudioFormat = MODEL_AUDIO
) -> st.SearchStrategy[list[ModelEvent]]:
    """One thing the model does, numbered ``number`` (ids are ``r<number>`` and ``call_<number>``):
    an answer, a barge-in (the user talks over a response: its late audio, then its ``interrupted``
    completion), a tool call (in a response that ends with ``tool_use``), the user's transcript,
    usage, or an in-band error. Tools that end the conversation are never called."""
    rid = f"r{number}"
    callable_tools = [t for t in tools if not getattr(t, "ends_conversation", False)]

    @st.composite
    def barge_in(draw: st.DrawFn) -> list[ModelEvent]:
        before = draw(st.lists(audio_output_events(rid, st.just(fmt)), min_size=1, max_size=3))
        late = draw(st.lists(audio_output_events(rid, st.just(fmt)), max_size=2))
        return [
            BidiResponseStartEvent(rid),
            *before,
            BidiSpeechStartedEvent(),
            *late,
            BidiResponseCompleteEvent(rid, "interrupted"),
        ]

    @st.composite
    def tool_call(draw: st.DrawFn) -> list[ModelEvent]:
        tool = draw(st.sampled_from(callable_tools))
        call = draw(tool_use_events(tool, valid=None, ids=st.just(f"call_{number}")))
        return [BidiResponseStartEvent(rid), call, BidiResponseCompleteEvent(rid, "tool_use")]

    options: list[st.SearchStrategy[list[ModelEvent]]] = [
        responses(rid, fmt),
        barge_in(),
        words().map(lambda text: [BidiTranscriptStreamEvent(text, text, "user", True)]),
        usage_events().map(lambda e: [e]),
        error_events().map(lambda e: [e]),
    ]
    if callable_tools:
        options.append(tool_call())
    return st.one_of(options)


def connection_scripts(
    tools: Sequence[Any] = (), max_turns: int = 4, fmt: AudioFormat = MODEL_AUDIO, first: int = 1
) -> st.SearchStrategy[list[Step]]:
    """A connection's script for :class:`ScriptedModel`: turns (see :func:`model_turns`), each
    tool call followed by a step that waits for its result, then an ending: none (the connection
    stays open), a clean close (the service ended the session: the conversation ends), a network
    fault, or the provider's time limit (:class:`BidiConnectionExpiringEvent`, after which the core
    rotates to a new connection).

    Build the model with ``match=(BidiToolResultEvent,)`` so steps wait for tool results only.
    Turns are numbered from ``first``. A connection that ends says something first, so the core
    counts it as proven and reconnects at once.
    """

    @st.composite
    def script(draw: st.DrawFn) -> list[Step]:
        count = draw(st.integers(0, max_turns))
        steps: list[Step] = []
        for number in range(first, first + count):
            emit = draw(model_turns(number, tools, fmt))
            calls = [e for e in emit if isinstance(e, BidiToolUseEvent)]
            steps.append(Step(emit=emit))
            for call in calls:
                steps.append(Step(expect=Expect(BidiToolResultEvent, tool_use_id=call.tool_use_id)))
        ending = draw(st.sampled_from(["open", "closed", "fault", "limit"] if steps else ["open"]))
        if ending == "closed":
            steps.append(Step(end=End()))
        elif ending == "fault":
            steps.append(Step(end=End(BidiConnectionError("connection reset by peer"))))
        elif ending == "limit":
            steps.append(Step(emit=[BidiConnectionExpiringEvent(time_left_s=draw(st.sampled_from([30.0, 60.0])))]))
        return steps

    return script()


def scripted_connections(
    tools: Sequence[Any] = (), max_connections: int = 3, max_turns: int = 4, fmt: AudioFormat = MODEL_AUDIO
) -> st.SearchStrategy[list[Connection]]:
    """Connections for :class:`ScriptedModel`: scripts from :func:`connection_scripts`, sometimes a
    refused connection (a retryable :class:`BidiConnectionError` from ``connect()``) between them; the
    last one stays open or ends the session. Turn numbers (and so response and call ids) never repeat
    across connections."""

    @st.composite
    def connections(draw: st.DrawFn) -> list[Connection]:
        count = draw(st.integers(1, max_connections))
        result: list[Connection] = []
        number = 1
        for index in range(count):
            last = index == count - 1
            if not last and draw(st.booleans()) and draw(st.booleans()):
                result.append(BidiConnectionError("connection refused"))
            steps = draw(connection_scripts(tools, max_turns, fmt, first=number))
            if last:  # it stays open, or the provider ends the session (and so the conversation)
                steps = [s for s in steps if (s.end is None or s.end.error is None) and not _expires(s)]
            else:  # it ends, so that the next one opens: by a fault or the provider's time limit
                steps = [s for s in steps if s.end is None]
                if not steps or not _expires(steps[-1]):
                    steps.append(Step(emit=[draw(usage_events())], end=End(BidiConnectionError("connection lost"))))
            number += max_turns + 1
            result.append(steps)
        return result

    return connections()


def _expires(step: Step) -> bool:
    return any(isinstance(e, BidiConnectionExpiringEvent) for e in step.emit)


def scripted_models(
    tools: Sequence[Any] = (),
    max_connections: int = 3,
    max_turns: int = 4,
    capabilities: ModelCapabilities | None = None,
) -> st.SearchStrategy[ScriptedModel]:
    """A fresh :class:`ScriptedModel` playing :func:`scripted_connections` (matching tool results only).

    Wait for ``model.consumed()`` to know the whole script was played. Give the agent a fast
    ``ReconnectPolicy`` (refused connections back off by its delays)."""
    caps = capabilities or ModelCapabilities()
    fmt = caps.output_audio
    return scripted_connections(tools, max_connections, max_turns, fmt).map(
        lambda connections: ScriptedModel(connections, capabilities=caps, match=(BidiToolResultEvent,))
    )
