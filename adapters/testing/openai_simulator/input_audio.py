"""The input audio buffer and turn detection: appends, commits, clears, and ``server_vad`` on energy.

Audio appended with ``input_audio_buffer.append`` (base64 PCM16 24 kHz, no ack;
docs/protocols/openai.md#input-audio) goes into the buffer and through the energy VAD
(:mod:`.audio`). A spoken turn is committed into a user item, transcribed from
the scenario when transcription is configured, and answered when
``create_response`` is on; speech while a response runs cancels it when
``interrupt_response`` is on. Its own module because it is the one job that
watches audio, and the only one that starts responses on its own.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from adapters.testing._simulator_kit.audio import VadEvent
from adapters.testing.openai_simulator.audio import EnergyVAD, pcm_ms, split_words
from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.state import MAX_APPEND_BYTES, MIN_COMMIT_MS, SessionState, tokens

__all__ = ["InputAudio"]


class InputAudio(SessionState):
    """``input_audio_buffer.*`` and the spoken turns the VAD finds."""

    def _configure_vad(self) -> None:
        td = self._turn_detection() or {}
        clock = self.vad.clock_ms
        self.vad = EnergyVAD(
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
            # semantic_vad has no silence setting; 500 ms stands in for its "auto" eagerness.
            silence_duration_ms=int(td.get("silence_duration_ms") or 500),
        )
        self.vad.clock_ms = clock
        self.vad.reset()

    async def _on_input_audio_buffer_append(self, message: dict[str, Any], event_id: str | None) -> None:
        """Base64 PCM16 24 kHz in; no ack (docs/protocols/openai.md#input-audio). VAD turns run here."""
        try:
            pcm = base64.b64decode(message["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self.client_error(
                message,
                ServiceError(
                    "Invalid value for 'audio': expected base64-encoded audio.", "invalid_value", param="audio"
                ),
            )
            return
        if len(pcm) > MAX_APPEND_BYTES:
            await self.client_error(
                message,
                ServiceError("Audio chunk too large: at most 15 MiB per event.", "invalid_value", param="audio"),
            )
            return
        self.buffer.extend(pcm)
        for boundary in list(self.vad.feed(pcm)):
            if self._turn_detection() is not None and not self.closing:
                await self._on_vad(boundary)

    async def _on_vad(self, boundary: VadEvent) -> None:
        if boundary.kind == "started":
            self.speech_item_id = self.ctx.ids.new("item")
            td = self._turn_detection() or {}
            active = self.active if td.get("interrupt_response", True) else None

            def interrupt() -> None:
                if active is not None:
                    active.cancel("turn_detected")

            # Cancelled right after speech_started is written: no delta of the response can follow it.
            await self.link.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": boundary.at_ms,
                    "item_id": self.speech_item_id,
                },
                then=interrupt,
            )
            return
        item_id = self.speech_item_id or self.ctx.ids.new("item")
        self.speech_item_id = None
        await self.link.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": boundary.at_ms, "item_id": item_id}
        )
        await self._commit(item_id)
        td = self._turn_detection() or {}
        if td.get("create_response", True) and self.active is None:
            # With a response still running the service "may fail to create a response": we skip it.
            await self._start_response({})

    async def _on_input_audio_buffer_commit(self, message: dict[str, Any], event_id: str | None) -> None:
        buffered = pcm_ms(len(self.buffer))
        if buffered < MIN_COMMIT_MS:
            await self.client_error(message, ServiceError.commit_empty(buffered))
            return
        item_id = self.speech_item_id or self.ctx.ids.new("item")
        self.speech_item_id = None
        self.vad.reset()
        await self._commit(item_id)

    async def _on_input_audio_buffer_clear(self, message: dict[str, Any], event_id: str | None) -> None:
        self.buffer.clear()
        self.vad.reset()
        self.speech_item_id = None
        await self.link.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        """The buffer becomes a user audio item: committed, added/done, transcription if configured."""
        audio_ms = pcm_ms(len(self.buffer))
        self.buffer.clear()
        self.vad.floor_ms = self.vad.clock_ms
        await self.link.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self.last_item_id}
        )
        spoken_turn = self.ctx.state.next_spoken_turn()
        transcript = self.scenario.transcript(spoken_turn)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(item)
        self.context_audio_ms += audio_ms
        transcription = self.session["audio"]["input"].get("transcription")
        if isinstance(transcription, dict):
            if transcription.get("model") != "whisper-1":
                for piece in split_words(transcript, 3):
                    if piece:
                        await self.link.send(
                            {
                                "type": "conversation.item.input_audio_transcription.delta",
                                "item_id": item_id,
                                "content_index": 0,
                                "delta": piece,
                            }
                        )
            audio_tokens = math.ceil(audio_ms / 100)
            text_tokens = tokens(len(transcript))
            await self.link.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": text_tokens,
                        "total_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    },
                }
            )
            self.items[item_id]["content"][0]["transcript"] = transcript
        self.pending_texts.append(transcript)
        self.pending_spoken = spoken_turn
