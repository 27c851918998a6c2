"""Configuration of the Gemini Live adapter, validated before connecting.

Every key of ``provider_config`` is checked here; a mistake raises
:class:`BidiUsageError` naming the key and the allowed ones (a voice agent
that quietly runs with a misspelled setting is worse than one that refuses to
start). Keys are snake_case, as the rest of bidi-core's configuration; the
wire uses camelCase (``wire.py`` does the renaming).

``provider_config`` shape (every key optional)::

    {
        "audio": {"input_rate": 16000, "output_rate": 24000, "voice": "Kore", "language": "en-US"},
        "response_modalities": ["AUDIO"],            # or ["TEXT"]
        "transcription": {"input": True, "output": True},
        "turn_detection": {"start_of_speech_sensitivity": "START_SENSITIVITY_LOW", "silence_duration_ms": 500, ...},
        "activity_handling": "START_OF_ACTIVITY_INTERRUPTS",   # or "NO_INTERRUPTION"
        "turn_coverage": "TURN_INCLUDES_ONLY_ACTIVITY",        # or "TURN_INCLUDES_ALL_INPUT"
        "inference": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_output_tokens": 1024, ...},
        "context_window_compression": {"trigger_tokens": 25600, "target_tokens": 12800},  # or None to disable
        "session_resumption": {"transparent": False},           # or None to disable resumption
    }

Audio input rate: Gemini takes 16-bit PCM at any rate when the MIME type says
which (``audio/pcm;rate=48000``) and resamples on its side (ai.google.dev
Live API capabilities: "Input audio is natively 16kHz, but the Live API will
resample if needed"). So the adapter sends every chunk at the rate it has,
named in the MIME type, and never resamples; ``input_rate`` only tells
:class:`BidiAudioIO` (through ``capabilities.input_audio``) at which rate to
open the microphone. Output is always 24 kHz.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from adapters._config_checks import check_keys, check_mono_pcm
from ports.errors import BidiUsageError

__all__ = ["DEFAULT_COMPRESSION", "GeminiConfig", "parse_provider_config"]

OUTPUT_RATE = 24000
DEFAULT_INPUT_RATE = 16000
MIN_INPUT_RATE, MAX_INPUT_RATE = 8000, 48000

DEFAULT_COMPRESSION: Mapping[str, Any] = {"slidingWindow": {}}
"""Sliding-window compression with the service's own thresholds: without it an
audio session ends after 15 minutes (docs/protocols/gemini.md#session-limits)."""

_TOP_KEYS = {
    "audio",
    "response_modalities",
    "transcription",
    "turn_detection",
    "activity_handling",
    "turn_coverage",
    "inference",
    "context_window_compression",
    "session_resumption",
}
_AUDIO_KEYS = {"input_rate", "output_rate", "voice", "language", "channels", "format"}
_TRANSCRIPTION_KEYS = {"input", "output"}
_VAD_KEYS = {
    "disabled",
    "start_of_speech_sensitivity",
    "end_of_speech_sensitivity",
    "prefix_padding_ms",
    "silence_duration_ms",
}
_START_SENSITIVITY = ("START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW")
_END_SENSITIVITY = ("END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW")
_ACTIVITY_HANDLING = ("ACTIVITY_HANDLING_UNSPECIFIED", "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION")
_TURN_COVERAGE = ("TURN_COVERAGE_UNSPECIFIED", "TURN_INCLUDES_ONLY_ACTIVITY", "TURN_INCLUDES_ALL_INPUT")
_INFERENCE: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    # snake_case key -> (wire name, type check, description for the error)
    "temperature": ("temperature", lambda v: _number(v) and 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": ("topP", lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "top_k": ("topK", lambda v: _integer(v) and v >= 1, "a positive integer"),
    "max_output_tokens": ("maxOutputTokens", lambda v: _integer(v) and v >= 1, "a positive integer"),
    "presence_penalty": ("presencePenalty", lambda v: _number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "frequency_penalty": ("frequencyPenalty", lambda v: _number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "seed": ("seed", lambda v: _integer(v), "an integer"),
}
_COMPRESSION_KEYS = {"trigger_tokens", "target_tokens"}
_RESUMPTION_KEYS = {"transparent"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.upper() not in allowed:
        raise BidiUsageError(f"{where}={value!r} is not one of {list(allowed)}")
    return value.upper()


@attrs.frozen
class GeminiConfig:
    """The effective settings: what ``setup`` carries, in wire (camelCase) form where it is a dict."""

    input_rate: int = DEFAULT_INPUT_RATE
    voice: str | None = None
    language: str | None = None
    response_modalities: tuple[str, ...] = ("AUDIO",)
    input_transcription: bool = True
    output_transcription: bool = True
    realtime_input_config: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    generation: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    compression: Mapping[str, Any] | None = attrs.field(factory=lambda: dict(DEFAULT_COMPRESSION), hash=False)
    resumption: bool = True
    transparent: bool = False

    @property
    def speech_interrupts(self) -> bool:
        """Whether the user's speech cuts the model short (``activity_handling``)."""
        ric = self.realtime_input_config or {}
        return ric.get("activityHandling") != "NO_INTERRUPTION"


def parse_provider_config(provider_config: Mapping[str, Any] | None, *, vertex: bool = False) -> GeminiConfig:
    """Validate ``provider_config`` and merge it over the defaults (never mutating either).

    ``vertex`` changes one default: transparent resumption (Vertex AI only;
    the Gemini API's v1beta schema has no such field) is on for Vertex.
    """
    if provider_config is not None and not isinstance(provider_config, Mapping):
        raise BidiUsageError(f"provider_config must be a dict, got {type(provider_config).__name__}")
    pc = copy.deepcopy(dict(provider_config or {}))
    check_keys("provider_config", pc, _TOP_KEYS)
    values: dict[str, Any] = {"transparent": vertex}

    audio = pc.get("audio") or {}
    check_keys("provider_config['audio']", audio, _AUDIO_KEYS)
    if "input_rate" in audio:
        rate = audio["input_rate"]
        if not _integer(rate) or not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
            raise BidiUsageError(
                f"provider_config['audio']['input_rate']={rate!r}: Gemini takes PCM16 input from "
                f"{MIN_INPUT_RATE} to {MAX_INPUT_RATE} Hz (16000 natively; other rates are resampled by the service)"
            )
        values["input_rate"] = rate
    if "output_rate" in audio and audio["output_rate"] != OUTPUT_RATE:
        raise BidiUsageError(
            f"provider_config['audio']['output_rate']={audio['output_rate']!r} is not supported: Gemini Live "
            f"speaks 24000 Hz PCM only (BidiAudioIO resamples for the speakers)"
        )
    check_mono_pcm(audio, "Gemini Live")
    for key in ("voice", "language"):
        if key in audio:
            if not isinstance(audio[key], str) or not audio[key]:
                raise BidiUsageError(f"provider_config['audio']['{key}'] must be a non-empty string")
            values[key] = audio[key]

    if "response_modalities" in pc:
        mods = pc["response_modalities"]
        if isinstance(mods, str) or not isinstance(mods, list | tuple):
            raise BidiUsageError("provider_config['response_modalities'] must be a list: ['AUDIO'] or ['TEXT']")
        norm = tuple(str(m).upper() for m in mods)
        if norm not in (("AUDIO",), ("TEXT",)):
            raise BidiUsageError(
                f"provider_config['response_modalities']={list(mods)!r}: Gemini Live answers in one modality, "
                "['AUDIO'] or ['TEXT'] (native-audio models take ['AUDIO'] only)"
            )
        values["response_modalities"] = norm

    if "transcription" in pc:
        tr = pc["transcription"]
        if tr is None:
            values["input_transcription"] = values["output_transcription"] = False
        else:
            check_keys("provider_config['transcription']", tr, _TRANSCRIPTION_KEYS)
            for key in _TRANSCRIPTION_KEYS:
                if key in tr:
                    if not isinstance(tr[key], bool):
                        raise BidiUsageError(f"provider_config['transcription']['{key}'] must be True or False")
                    values[f"{key}_transcription"] = tr[key]

    ric = _realtime_input_config(pc)
    if ric is not None:
        values["realtime_input_config"] = ric

    inference = pc.get("inference") or {}
    check_keys("provider_config['inference']", inference, set(_INFERENCE))
    generation: dict[str, Any] = {}
    for key, value in inference.items():
        wire_name, ok, what = _INFERENCE[key]
        if not ok(value):
            raise BidiUsageError(f"provider_config['inference']['{key}']={value!r} must be {what}")
        generation[wire_name] = value
    values["generation"] = generation

    if "context_window_compression" in pc:
        values["compression"] = _compression(pc["context_window_compression"])

    if "session_resumption" in pc:
        sr = pc["session_resumption"]
        if sr is None or sr is False:
            values["resumption"] = False
            values["transparent"] = False
        else:
            check_keys("provider_config['session_resumption']", sr, _RESUMPTION_KEYS)
            if "transparent" in sr:
                if not isinstance(sr["transparent"], bool):
                    raise BidiUsageError("provider_config['session_resumption']['transparent'] must be True or False")
                values["transparent"] = sr["transparent"]
    return GeminiConfig(**values)


def _realtime_input_config(pc: Mapping[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if "turn_detection" in pc:
        td = pc["turn_detection"]
        check_keys("provider_config['turn_detection']", td, _VAD_KEYS)
        if td.get("disabled"):
            raise BidiUsageError(
                "provider_config['turn_detection']['disabled']=True is not supported: without the service's "
                "voice activity detection the client must mark turns with activityStart/activityEnd, which "
                "bidi-core's inputs cannot express"
            )
        aad: dict[str, Any] = {}
        if "start_of_speech_sensitivity" in td:
            aad["startOfSpeechSensitivity"] = _enum(
                "turn_detection['start_of_speech_sensitivity']", td["start_of_speech_sensitivity"], _START_SENSITIVITY
            )
        if "end_of_speech_sensitivity" in td:
            aad["endOfSpeechSensitivity"] = _enum(
                "turn_detection['end_of_speech_sensitivity']", td["end_of_speech_sensitivity"], _END_SENSITIVITY
            )
        for key, wire_name in (("prefix_padding_ms", "prefixPaddingMs"), ("silence_duration_ms", "silenceDurationMs")):
            if key in td:
                if not _integer(td[key]) or td[key] < 0:
                    raise BidiUsageError(f"provider_config['turn_detection']['{key}'] must be a non-negative integer")
                aad[wire_name] = td[key]
        if aad:
            out["automaticActivityDetection"] = aad
    if "activity_handling" in pc:
        out["activityHandling"] = _enum(
            "provider_config['activity_handling']", pc["activity_handling"], _ACTIVITY_HANDLING
        )
    if "turn_coverage" in pc:
        out["turnCoverage"] = _enum("provider_config['turn_coverage']", pc["turn_coverage"], _TURN_COVERAGE)
    return out or None


def _compression(cwc: Any) -> dict[str, Any] | None:
    if cwc is None or cwc is False:
        return None
    if cwc is True:
        return dict(DEFAULT_COMPRESSION)
    check_keys("provider_config['context_window_compression']", cwc, _COMPRESSION_KEYS)
    out: dict[str, Any] = {"slidingWindow": {}}
    for key in _COMPRESSION_KEYS:
        if key in cwc and (not _integer(cwc[key]) or cwc[key] < 1):
            raise BidiUsageError(f"provider_config['context_window_compression']['{key}'] must be a positive integer")
    if "trigger_tokens" in cwc:
        out["triggerTokens"] = cwc["trigger_tokens"]
    if "target_tokens" in cwc:
        out["slidingWindow"]["targetTokens"] = cwc["target_tokens"]
    if "trigger_tokens" in cwc and "target_tokens" in cwc and cwc["target_tokens"] >= cwc["trigger_tokens"]:
        raise BidiUsageError(
            "provider_config['context_window_compression']: target_tokens must be below trigger_tokens "
            "(compression shrinks the context from the trigger down to the target)"
        )
    return out
