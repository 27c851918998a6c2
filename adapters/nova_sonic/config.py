"""Configuration of the Nova Sonic adapter, validated before connecting.

Every key of ``provider_config`` is checked here; a mistake raises
:class:`BidiUsageError` naming the key and the allowed ones, before any
connection is opened (a voice agent that quietly runs with the wrong voice
or rate is worse than one that refuses to start). The reference's
snake_case spellings (``max_tokens``, ``top_p``, ``endpointing_sensitivity``)
are accepted next to the wire's camelCase.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from adapters._config_checks import check_keys, check_mono_pcm
from ports.errors import BidiUsageError

__all__ = ["MODELS", "NOVA_2_SONIC", "NOVA_SONIC", "NovaSonicConfig", "parse_provider_config"]

NOVA_2_SONIC = "amazon.nova-2-sonic-v1:0"
NOVA_SONIC = "amazon.nova-sonic-v1:0"
MODELS = (NOVA_2_SONIC, NOVA_SONIC)

SUPPORTED_RATES = (8000, 16000, 24000)
"""LPCM rates Nova takes and produces (AWS Nova user guide, input and output events)."""
SENSITIVITIES = ("HIGH", "MEDIUM", "LOW")

_TOP_KEYS = {"audio", "inference", "turn_detection"}
_AUDIO_KEYS = {"input_rate", "output_rate", "voice", "channels", "format"}
_INFERENCE_ALIASES = {"max_tokens": "maxTokens", "top_p": "topP"}
_INFERENCE_KEYS = {"maxTokens", "topP", "temperature", *_INFERENCE_ALIASES}
_TURN_ALIASES = {"endpointing_sensitivity": "endpointingSensitivity"}
_TURN_KEYS = {"endpointingSensitivity", *_TURN_ALIASES}


def _number(where: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise BidiUsageError(f"{where} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


@attrs.frozen
class NovaSonicConfig:
    """The effective settings of a Nova Sonic session."""

    input_rate: int = 16000
    output_rate: int = 24000
    voice: str = "matthew"
    max_tokens: int = 1024
    top_p: float = 0.9
    temperature: float = 0.7
    endpointing_sensitivity: str | None = None

    def inference_configuration(self) -> dict[str, Any]:
        return {"maxTokens": self.max_tokens, "topP": self.top_p, "temperature": self.temperature}


def parse_provider_config(provider_config: Mapping[str, Any] | None, model_id: str) -> NovaSonicConfig:
    """Validate ``provider_config`` and merge it over the defaults (never mutating either)."""
    if provider_config is not None and not isinstance(provider_config, Mapping):
        raise BidiUsageError(f"provider_config must be a dict, got {type(provider_config).__name__}")
    pc = copy.deepcopy(dict(provider_config or {}))
    check_keys("provider_config", pc, _TOP_KEYS)
    values: dict[str, Any] = {}

    audio = pc.get("audio") or {}
    check_keys("provider_config['audio']", audio, _AUDIO_KEYS)
    for key in ("input_rate", "output_rate"):
        if key in audio:
            rate = audio[key]
            if rate not in SUPPORTED_RATES or isinstance(rate, bool):
                raise BidiUsageError(
                    f"provider_config['audio']['{key}']={rate!r} is not supported: Nova Sonic takes "
                    f"{', '.join(map(str, SUPPORTED_RATES))} Hz LPCM (BidiAudioIO resamples the devices)"
                )
            values[key] = int(rate)
    check_mono_pcm(audio, "Nova Sonic")
    if "voice" in audio:
        voice = audio["voice"]
        if not isinstance(voice, str) or not voice.strip():
            raise BidiUsageError("provider_config['audio']['voice'] must be a non-empty string, e.g. 'matthew'")
        values["voice"] = voice

    inference = pc.get("inference") or {}
    check_keys("provider_config['inference']", inference, _INFERENCE_KEYS)
    inference = {_INFERENCE_ALIASES.get(k, k): v for k, v in inference.items()}
    if "maxTokens" in inference:
        mt = inference["maxTokens"]
        if not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= 10000:
            raise BidiUsageError(
                f"provider_config['inference']['maxTokens'] must be an integer from 1 to 10000, got {mt!r}"
            )
        values["max_tokens"] = mt
    if "topP" in inference:
        values["top_p"] = _number("provider_config['inference']['topP']", inference["topP"], 0.0, 1.0)
    if "temperature" in inference:
        values["temperature"] = _number(
            "provider_config['inference']['temperature']", inference["temperature"], 0.0, 1.0
        )

    if "turn_detection" in pc and pc["turn_detection"] is not None:
        td = pc["turn_detection"]
        check_keys("provider_config['turn_detection']", td, _TURN_KEYS)
        td = {_TURN_ALIASES.get(k, k): v for k, v in td.items()}
        if "endpointingSensitivity" in td:
            sensitivity = td["endpointingSensitivity"]
            if sensitivity not in SENSITIVITIES:
                raise BidiUsageError(
                    f"provider_config['turn_detection']['endpointingSensitivity'] must be one of "
                    f"{list(SENSITIVITIES)}, got {sensitivity!r}"
                )
            if model_id == NOVA_SONIC:
                raise BidiUsageError(
                    f"turn_detection (endpointingSensitivity) needs Nova 2 Sonic ({NOVA_2_SONIC}); "
                    f"{NOVA_SONIC} does not take it"
                )
            values["endpointing_sensitivity"] = sensitivity
    return NovaSonicConfig(**values)
