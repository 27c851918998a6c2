"""Configuration of the OpenAI Realtime adapter, validated before connecting.

The reference silently ignores misspelled keys; a voice agent that quietly
runs with the wrong turn detection is worse than one that refuses to start.
So every key of ``provider_config`` is checked here and a mistake raises
:class:`BidiUsageError` naming the key and the allowed ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from adapters._config_checks import check_keys, check_mono_pcm
from ports.errors import BidiUsageError

__all__ = ["DEFAULT_TURN_DETECTION", "SAMPLE_RATE", "OpenAIConfig", "parse_provider_config"]

SAMPLE_RATE = 24000
SUPPORTED_RATES = (SAMPLE_RATE,)
"""GA ``audio/pcm`` takes 24 kHz only (docs/protocols/openai.md#audio-formats)."""

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
DEFAULT_TRANSCRIPTION: dict[str, Any] = {"model": "gpt-4o-mini-transcribe"}

_TOP_KEYS = {
    "audio",
    "turn_detection",
    "transcription",
    "noise_reduction",
    "output_modalities",
    "max_output_tokens",
    "tool_choice",
    "inference",
}
_AUDIO_KEYS = {"input_rate", "output_rate", "voice", "channels", "format", "speed"}
_INFERENCE_KEYS = {"max_output_tokens", "output_modalities", "tool_choice"}
_VAD_KEYS = {
    "server_vad": {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
        "idle_timeout_ms",
    },
    "semantic_vad": {"type", "eagerness", "create_response", "interrupt_response"},
}
_TRANSCRIPTION_KEYS = {"model", "language", "prompt"}


@attrs.frozen
class OpenAIConfig:
    """The effective session settings (what ``session.update`` carries)."""

    voice: str = "marin"
    speed: float | None = None
    turn_detection: Mapping[str, Any] | None = attrs.field(factory=lambda: dict(DEFAULT_TURN_DETECTION), hash=False)
    transcription: Mapping[str, Any] | None = attrs.field(factory=lambda: dict(DEFAULT_TRANSCRIPTION), hash=False)
    noise_reduction: str | None = None
    output_modalities: tuple[str, ...] = ("audio",)
    max_output_tokens: int | str | None = None
    tool_choice: Any = attrs.field(default=None, hash=False)

    @property
    def server_interrupts(self) -> bool:
        """Whether the service cancels a response by itself when the user speaks."""
        td = self.turn_detection
        return td is not None and bool(td.get("interrupt_response", True))


def parse_provider_config(provider_config: Mapping[str, Any] | None) -> OpenAIConfig:
    """Validate ``provider_config`` and merge it over the defaults (never mutating either)."""
    pc = copy.deepcopy(dict(provider_config or {}))
    check_keys("provider_config", pc, _TOP_KEYS)
    values: dict[str, Any] = {}

    audio = pc.get("audio") or {}
    check_keys("provider_config['audio']", audio, _AUDIO_KEYS)
    for key in ("input_rate", "output_rate"):
        if key in audio and audio[key] not in SUPPORTED_RATES:
            raise BidiUsageError(
                f"provider_config['audio']['{key}']={audio[key]!r} is not supported: OpenAI Realtime audio/pcm "
                f"runs at {', '.join(map(str, SUPPORTED_RATES))} Hz only (BidiAudioIO resamples the devices)"
            )
    check_mono_pcm(audio, "OpenAI Realtime")
    if "voice" in audio:
        if not isinstance(audio["voice"], str) or not audio["voice"]:
            raise BidiUsageError("provider_config['audio']['voice'] must be a non-empty string")
        values["voice"] = audio["voice"]
    if "speed" in audio:
        speed = audio["speed"]
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 1.5:
            raise BidiUsageError("provider_config['audio']['speed'] must be a number from 0.25 to 1.5")
        values["speed"] = float(speed)

    if "turn_detection" in pc:
        td = pc["turn_detection"]
        if td is not None:
            if not isinstance(td, Mapping):
                raise BidiUsageError("provider_config['turn_detection'] must be a dict or None")
            kind = td.get("type", "server_vad")
            if kind not in _VAD_KEYS:
                raise BidiUsageError(f"turn_detection type {kind!r} is not one of {sorted(_VAD_KEYS)}")
            check_keys(f"turn_detection ({kind})", td, _VAD_KEYS[kind])
            base = dict(DEFAULT_TURN_DETECTION) if kind == "server_vad" else {"type": "semantic_vad"}
            td = {**base, **td, "type": kind}
        values["turn_detection"] = td

    if "transcription" in pc:
        tr = pc["transcription"]
        if tr is not None:
            check_keys("provider_config['transcription']", tr, _TRANSCRIPTION_KEYS)
            tr = {**DEFAULT_TRANSCRIPTION, **tr}
        values["transcription"] = tr

    if "noise_reduction" in pc:
        nr = pc["noise_reduction"]
        if nr not in (None, "near_field", "far_field"):
            raise BidiUsageError("provider_config['noise_reduction'] must be 'near_field', 'far_field' or None")
        values["noise_reduction"] = nr

    inference = dict(pc.get("inference") or {})
    check_keys("provider_config['inference']", inference, _INFERENCE_KEYS)
    for key in _INFERENCE_KEYS:
        if key in pc:
            inference[key] = pc[key]
    if "output_modalities" in inference:
        mods = tuple(inference["output_modalities"])
        if mods not in (("audio",), ("text",)):
            raise BidiUsageError("output_modalities must be ['audio'] or ['text'] (the API takes one, not both)")
        values["output_modalities"] = mods
    if "max_output_tokens" in inference:
        mot = inference["max_output_tokens"]
        if not (mot == "inf" or (isinstance(mot, int) and not isinstance(mot, bool) and 1 <= mot <= 4096)):
            raise BidiUsageError("max_output_tokens must be an integer from 1 to 4096 or 'inf'")
        values["max_output_tokens"] = mot
    if "tool_choice" in inference:
        tc = inference["tool_choice"]
        if tc not in ("auto", "none", "required") and not (isinstance(tc, Mapping) and tc.get("type") == "function"):
            raise BidiUsageError("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}")
        values["tool_choice"] = tc
    return OpenAIConfig(**values)
