"""Who may call and how a call ends: the webhook's signature, the stream's signature and per-call token, the
web app's capacity and drain applied to calls, the conversation's end hanging up, and what is left after a
hang-up. Over a real hypercorn with the carrier simulator and the OpenAI simulator, on asyncio and Trio."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from adapters.telephony import PhoneCall
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, ToolCall
from adapters.testing.twilio_simulator import TwilioCarrierSimulator, tone_8k
from adapters.web import WebLimits
from bidi_core import stop_conversation
from ports.events import BidiConnectionCloseEvent
from tests.support import our_tasks
from tests.telephony_support import AUTH_TOKEN, PUBLIC, Served, phone_server
from tests.web_support import SIM_KEY, server_process, wait_ready

SCENARIO = Scenario(
    rules=[
        Rule(
            spoken_turn=0,
            reply=Reply(say="Goodbye.", audio_ms=300, tool_calls=[ToolCall("stop_conversation", {})]),
        ),
    ],
    transcripts=["that is all, thanks"],
)


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=SCENARIO) as s:
        yield s
        assert not s.oracle_failures


def ours() -> set[str]:
    """Tasks of bidi-core still running: the agent's, the stream's, the app's watcher."""
    names = {t.name or "" for t in anyio.get_running_tasks()}
    return our_tasks() | {n for n in names if n.startswith(("bidi twilio", "bidi web"))}


async def test_an_unsigned_or_forged_webhook_is_refused_and_no_stream_opens(
    sim: OpenAIRealtimeSimulator, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with phone_server(sim, anyio_backend) as served:
        with anyio.fail_after(20):
            async with served.carrier.call(signed=False) as unsigned:
                pass
            async with served.carrier.call(signature="c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ==") as forged:
                pass
            # Signed with the right token, but for another URL (a replay against this server).
            other = served.carrier.voice_url
            served.carrier.voice_url = "https://elsewhere.example.test/twilio/voice"
            async with served.carrier.call() as replayed:
                pass
            served.carrier.voice_url = other
            async with served.carrier.call() as genuine:
                await sim.wait_until(lambda: bool(sim.connections))
    for call in (unsigned, forged, replayed):
        assert call.record.webhook_status == 403
        assert call.record.stream_url is None and call.record.handshake_status is None
    assert genuine.record.webhook_status == 200 and genuine.record.handshake_status == 101
    assert len(sim.connections) == 1  # only the genuine call reached a model
    assert 'bidi_web_conversations_refused_total{reason="twilio_signature"} 3.0' in served.app.metrics.render().decode()
    assert AUTH_TOKEN not in caplog.text


async def test_a_stream_without_twilios_signature_or_its_calls_token_never_reaches_a_model(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend) as served:
        with anyio.fail_after(20):
            async with served.carrier.call(stream_signature="Zm9yZ2Vk") as forged:
                pass
            async with served.carrier.call(stream_parameters={"bidi_call_token": "0" * 64}) as tokenless:
                await tokenless.wait_ended()
            await served.app.wait_idle()
    assert forged.record.webhook_status == 200 and forged.record.handshake_status == 403
    assert tokenless.record.handshake_status == 101 and tokenless.record.closed_by_server
    assert not sim.connections and not served.calls
    metrics = served.app.metrics.render().decode()
    assert 'bidi_web_conversations_refused_total{reason="twilio_signature"} 1.0' in metrics
    assert 'bidi_web_conversations_refused_total{reason="call_token"} 1.0' in metrics


async def test_without_the_upgrade_check_the_token_still_guards_the_stream(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend, check_stream_signature=False) as served:
        with anyio.fail_after(20):
            async with served.carrier.call(stream_signature="Zm9yZ2Vk") as unsigned:
                await sim.wait_until(lambda: bool(sim.connections))
            async with served.carrier.call(stream_parameters={}) as tokenless:
                await tokenless.wait_ended()
            await served.app.wait_idle()
    assert unsigned.record.handshake_status == 101 and len(served.calls) == 1
    assert tokenless.record.handshake_status == 101 and tokenless.record.closed_by_server
    assert len(sim.connections) == 1


async def test_stop_conversation_plays_the_goodbye_then_hangs_up(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend, tools=[stop_conversation]) as served:
        with anyio.fail_after(30):
            async with served.carrier.call(hang_up_on_exit=False) as call:
                call.say(tone_8k(400))
                await call.wait_ended()
            await served.app.wait_idle()
    record = call.record
    assert record.closed_by_server and record.close_code == 1000 and record.hung_up_at is None
    assert abs(record.heard_ms - 300) <= 1  # the whole goodbye, before the line went dead
    closes = [e for e in served.events if isinstance(e, BidiConnectionCloseEvent)]
    assert [c.reason for c in closes] == ["user_request"]
    assert 'bidi_web_conversations_ended_total{reason="complete"} 1.0' in served.app.metrics.render().decode()


async def test_a_full_server_rejects_the_call_as_busy_and_a_draining_one_hangs_up_its_calls(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend, limits=WebLimits(max_conversations=1)) as served:
        with anyio.fail_after(30):
            async with served.carrier.call(hang_up_on_exit=False) as first:
                await sim.wait_until(lambda: bool(sim.connections))
                async with served.carrier.call() as second:
                    pass
                await served.app.drain(0.2)
                await first.wait_ended()
                async with served.carrier.call() as third:
                    pass
    assert second.record.rejected == "busy" and second.record.stream_url is None
    assert third.record.rejected == "busy"
    assert first.record.closed_by_server and first.record.close_code == 1001
    metrics = served.app.metrics.render().decode()
    assert 'bidi_web_conversations_refused_total{reason="capacity"} 1.0' in metrics
    assert 'bidi_web_conversations_refused_total{reason="draining"} 1.0' in metrics
    assert 'bidi_web_conversations_ended_total{reason="drain"} 1.0' in metrics


@pytest.mark.parametrize("when", ["before_speaking", "mid_reply"])
async def test_a_hang_up_ends_the_conversation_and_leaves_nothing_running(anyio_backend: str, when: str) -> None:
    scenario = Scenario(rules=[Rule(reply=Reply(say="A long answer nobody hears out.", audio_ms=3000))])
    async with (
        OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=scenario) as sim,
        phone_server(sim, anyio_backend) as served,
    ):
        with anyio.fail_after(30):
            async with served.carrier.call() as call:
                await sim.wait_until(lambda: bool(sim.connections))
                if when == "mid_reply":
                    call.say(tone_8k(400))
                    await call.wait_heard(200)
                await call.hang_up()
            await served.app.wait_idle()
            await sim.wait_until(lambda: sim.connections[0].closed)
        assert ours() == set()
    closes = [e for e in served.events if isinstance(e, BidiConnectionCloseEvent)]
    assert [c.reason for c in closes] == ["client_disconnect"]
    assert served.app.active == 0
    assert 'bidi_web_conversations_ended_total{reason="caller_hung_up"} 1.0' in served.app.metrics.render().decode()


async def test_the_runner_sees_the_call(sim: OpenAIRealtimeSimulator, anyio_backend: str) -> None:
    seen: list[tuple[str | None, dict[str, str]]] = []

    async def runner(served: Served, call: PhoneCall) -> None:
        seen.append((call.call_sid, dict(call.custom_parameters)))

    async with phone_server(sim, anyio_backend, runner=runner) as served:
        with anyio.fail_after(20):
            async with served.carrier.call(hang_up_on_exit=False) as call:
                await call.wait_ended()  # the runner returned at once: the bridge closes the stream
    assert seen == [(call.record.call_sid, {})]  # the bridge's own token is not the app's business
    assert call.record.closed_by_server
    assert call.record.stream_url == PUBLIC.replace("https", "wss") + "/twilio/stream"


@pytest.mark.timeout(120)
async def test_the_server_command_answers_calls_and_drains_them_on_sigterm(anyio_backend: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {"TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    args = ["--worker-class", anyio_backend, "--twilio-public-url", PUBLIC, "--drain", "0.5"]
    with server_process(*args, env=env, log=log) as (proc, port):
        with anyio.fail_after(60):
            await wait_ready(port)
            carrier = TwilioCarrierSimulator(
                auth_token=AUTH_TOKEN, voice_url=f"{PUBLIC}/twilio/voice", connect=("127.0.0.1", port)
            )
            async with carrier.call(hang_up_on_exit=False) as call:
                call.say(tone_8k(400))
                await call.wait_heard(200)  # the bundled simulator's long answer, at the caller's pace
                proc.send_signal(signal.SIGTERM)
                await call.wait_ended()
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
    text = log.read_text()
    assert code == 0, text
    assert call.record.closed_by_server and call.record.close_code == 1001
    assert call.record.max_buffered_ms <= 100 + 20
    assert "Traceback" not in text and AUTH_TOKEN not in text, text
