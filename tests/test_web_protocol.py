"""The web protocol over a real hypercorn (docs/web-protocol.md): the opening, audio both ways, playback
reports and barge-in truncation, and bad client input answered with an error that ends nothing.

Every conversation talks through the real OpenAI adapter to the OpenAI simulator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, loud, silence
from adapters.web import WebLimits
from tests.web_support import SIM_KEY, Closed, WsClient, _close_clients, serve, web_app

__all__ = ["_close_clients"]

SCENARIO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hi there.", audio_ms=400)),
        Rule(spoken_turn=0, reply=Reply(say="A long answer to talk over.", audio_ms=4000)),
    ]
)


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=SCENARIO) as s:
        yield s
        assert not s.oracle_failures


async def reply_to(client: WsClient) -> list[Any]:
    """Messages (JSON as dicts, audio as bytes) up to the response's completion."""
    seen: list[Any] = []
    while True:
        message = await client.receive()
        assert not isinstance(message, Closed), seen
        seen.append(json.loads(message) if isinstance(message, str) else message)
        if isinstance(seen[-1], dict) and seen[-1]["type"] == "bidi_response_complete":
            return seen


async def test_the_opening_then_text_in_and_audio_out_as_binary_frames(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(20):
            session = await client.start()
            assert session["protocol"] == 1
            assert session["input_audio"] == {"encoding": "pcm_s16le", "sample_rate": 24000, "channels": 1}
            assert session["output_audio"] == {"encoding": "pcm_s16le", "sample_rate": 24000, "channels": 1}
            assert session["limits"]["max_frame_bytes"] == WebLimits().max_frame_bytes
            await client.send_json({"type": "bidi_text_input", "text": "hello"})
            seen = await reply_to(client)
        kinds = [m["type"] if isinstance(m, dict) else "binary" for m in seen]
        assert "bidi_response_start" in kinds
        first_binary = kinds.index("binary")
        header = seen[first_binary - 1]
        assert header["type"] == "audio" and header["sample_rate"] == 24000
        rid = header["response_id"]
        assert rid == next(m["response_id"] for m in seen if isinstance(m, dict) and m["type"] == "bidi_response_start")
        audio = b"".join(m for m in seen if isinstance(m, bytes))
        assert len(audio) == 400 * 48  # 400 ms of PCM16 at 24 kHz, all of it, as sent by the model
        finals = [m["text"] for m in seen if isinstance(m, dict) and m["type"] == "bidi_transcript_stream"]
        assert finals[-1] == "Hi there."
        await client.close()


async def test_barge_in_truncates_at_the_position_the_client_reported(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(30):
            await client.start()
            for block in _blocks(loud(400) + silence(800)):
                await client.send_bytes(block)
            rid = (await client.until(lambda m: m["type"] == "bidi_response_complete"))["response_id"]
            # All 4000 ms were sent; the page has played 1234.5 ms of them when the user talks over it.
            await client.send_json({"type": "playback", "response_id": rid, "played_ms": 1234.5, "finished": False})
            for block in _blocks(loud(400)):
                await client.send_bytes(block)
            interruption = await client.until(lambda m: m["type"] == "bidi_interruption")
            assert interruption["response_id"] == rid
            await sim.wait_until(lambda: bool(sim.truncations))
        assert sim.truncations[0].audio_end_ms == 1234  # what the listener heard, not what was sent
        await client.close()


async def test_a_report_beyond_what_was_sent_is_clamped(sim: OpenAIRealtimeSimulator, anyio_backend: str) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(30):
            await client.start()
            for block in _blocks(loud(400) + silence(800)):
                await client.send_bytes(block)
            rid = (await client.until(lambda m: m["type"] == "bidi_response_complete"))["response_id"]
            await client.send_json({"type": "playback", "response_id": rid, "played_ms": 99999, "finished": False})
            await client.send_json({"type": "playback", "response_id": "nope", "played_ms": 5})
            error = await client.until(lambda m: m["type"] == "error")
            assert error["code"] == "bad_message"
            for block in _blocks(loud(400)):
                await client.send_bytes(block)
            await sim.wait_until(lambda: bool(sim.truncations))
        assert sim.truncations[0].audio_end_ms <= 4000
        await client.close()


def _blocks(audio: bytes, ms: int = 20) -> list[bytes]:
    size = ms * 48
    return [audio[i : i + size] for i in range(0, len(audio), size)]


BAD_INPUT = [
    pytest.param({"type": "dance"}, "unknown_message", id="unknown-message"),
    pytest.param("not json", "bad_json", id="not-json"),
    pytest.param([1, 2], "bad_json", id="json-not-an-object"),
    pytest.param({"kind": "x"}, "bad_message", id="no-type"),
    pytest.param({"type": "bidi_audio_input", "audio": "AAAA"}, "audio_must_be_binary", id="audio-as-text"),
    pytest.param({"type": "bidi_text_input", "text": 5}, "invalid_input", id="bad-event"),
    pytest.param({"type": "start"}, "already_started", id="second-start"),
    pytest.param({"type": "playback", "response_id": "r", "played_ms": "x"}, "bad_message", id="bad-report"),
    pytest.param(b"\x01\x02\x03", "odd_length", id="odd-audio"),
    pytest.param(b"\x00" * (64 * 1024 + 2), "frame_too_large", id="oversized-frame"),
    pytest.param("x" * (64 * 1024 + 1), "frame_too_large", id="oversized-text"),
]


@pytest.mark.parametrize(("bad", "code"), BAD_INPUT)
async def test_bad_input_gets_an_error_and_the_conversation_goes_on(
    sim: OpenAIRealtimeSimulator, anyio_backend: str, bad: Any, code: str
) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(20):
            await client.start()
            if isinstance(bad, bytes):
                await client.send_bytes(bad)
            elif isinstance(bad, str):
                await client.send_text(bad)
            else:
                await client.send_json(bad)
            error = await client.until(lambda m: m["type"] == "error")
            assert error["code"] == code
            assert error["message"]
            await client.send_json({"type": "bidi_text_input", "text": "hello"})
            seen = await reply_to(client)
        assert any(isinstance(m, bytes) for m in seen)
        await client.close()


async def test_before_start_audio_and_text_are_refused_and_a_wrong_rate_is_refused(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(20):
            assert (await client.receive_json())["type"] == "session"
            await client.send_bytes(silence(20))
            assert (await client.receive_json())["code"] == "not_started"
            await client.send_json({"type": "bidi_text_input", "text": "hello"})
            assert (await client.receive_json())["code"] == "not_started"
            await client.send_json({"type": "start", "input_audio": {"sample_rate": 48000, "channels": 1}})
            error = await client.receive_json()
            assert error["code"] == "wrong_rate" and "24000" in error["message"]
            await client.send_json({"type": "start", "input_audio": {"sample_rate": 24000, "channels": 1}})
            await client.send_json({"type": "bidi_text_input", "text": "hello"})
            seen = await reply_to(client)
        assert any(isinstance(m, bytes) for m in seen)
        assert not sim.client_errors
        await client.close()


async def test_a_flood_is_answered_by_rate_limit_errors_and_another_conversation_is_untouched(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    limits = WebLimits(max_messages_per_s=50, message_burst=50)
    async with serve(web_app(sim, limits=limits), anyio_backend) as port:
        flooder, calm = await WsClient.connect(port), await WsClient.connect(port)
        assert isinstance(flooder, WsClient) and isinstance(calm, WsClient)
        with anyio.fail_after(30):
            await flooder.start()
            await calm.start()
            for _ in range(500):
                await flooder.send_json({"type": "playback", "response_id": "x", "played_ms": 0})
            error = await flooder.until(lambda m: m["type"] == "error" and m["code"] == "rate_limited")
            assert "rate" in error["message"] or error["message"]
            await calm.send_json({"type": "bidi_text_input", "text": "hello"})
            seen = await reply_to(calm)
        assert any(isinstance(m, bytes) for m in seen)
        await flooder.close()
        await calm.close()


async def test_a_client_that_keeps_flooding_is_disconnected_with_1008(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    limits = WebLimits(max_messages_per_s=5, message_burst=5, flood_close_s=0.2)
    async with serve(web_app(sim, limits=limits), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(30):
            await client.start()
            seen: list[Any] = []
            message = await client.flood_until_closed({"type": "stop_it"}, seen)
        assert {"type": "closing", "reason": "flood"} in seen
        assert message.code == 1008


async def test_a_vanished_client_ends_its_conversation_and_the_provider_connection(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    app = web_app(sim)
    async with serve(app, anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(20):
            await client.start()
            await sim.wait_until(lambda: len(sim.connections) == 1)
            await client.drop()
            await sim.wait_until(lambda: sim.connections[0].closed)
            await app.wait_idle()
        assert sim.connections[0].close_reason == "client"  # closed politely by the adapter, not dropped
        metrics = app.metrics.render().decode()
        assert 'bidi_web_conversations_ended_total{reason="client_gone"} 1.0' in metrics
        assert "bidi_web_conversations_active 0.0" in metrics


async def test_a_client_stop_ends_the_conversation_with_its_close_event(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with serve(web_app(sim), anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        with anyio.fail_after(20):
            await client.start()
            await client.send_json({"type": "stop"})
            seen: list[Any] = []
            closed = await client.until_closed(seen)
        assert closed.code == 1000
        assert seen[-1] == {"type": "bidi_connection_close", "reason": "client_disconnect", "connection_id": None} or (
            seen[-1]["type"] == "bidi_connection_close"
        )
