"""The app's gates and limits over a real hypercorn: Origin, auth, capacity (503 + Retry-After), time limit,
idle timeout, drain, readiness and metrics; and no token in any log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, ToolCall
from adapters.testing.scripted import ScriptedModel
from adapters.web import Accept, Handshake, Refuse, WebApp, WebConversation, WebLimits, token_auth
from bidi_core import BidiAgent, tool
from tests.web_support import (
    SIM_KEY,
    Closed,
    Rejected,
    WsClient,
    _close_clients,
    http_get,
    serve,
    web_app,
)

__all__ = ["_close_clients"]

TOKEN = "tok-9f8e7d6c5b4a"

SCENARIO = Scenario(
    rules=[
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"location": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.", audio_ms=300)),
        Rule(text_contains="hello", reply=Reply(say="Hi there.", audio_ms=300)),
    ]
)


@tool
def get_weather(location: str) -> str:
    """Get the weather.

    Args:
        location: a city
    """
    return f"sunny in {location}"


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=SCENARIO) as s:
        yield s


async def talk(client: WsClient, text: str = "hello") -> list[dict[str, Any]]:
    """Start if needed, say ``text``, return the JSON messages up to the response's completion."""
    await client.send_json({"type": "bidi_text_input", "text": text})
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != "bidi_response_complete" or seen[-1]["stop_reason"] == "tool_use":
        seen.append(await client.receive_json())
    return seen


async def opened(port: int, **kw: Any) -> WsClient:
    client = await WsClient.connect(port, **kw)
    assert isinstance(client, WsClient), client
    await client.start()
    return client


# ------------------------------------------------------------------------------------------ who may connect


async def test_a_foreign_origin_is_refused_with_403_and_the_pages_own_is_not(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    app = web_app(sim, allowed_origins=["https://app.example"])
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(20):
            refused = await WsClient.connect(port, headers=[("Origin", "https://evil.example")])
            assert isinstance(refused, Rejected) and refused.status == 403
            same = await opened(port, headers=[("Origin", f"http://127.0.0.1:{port}")])
            listed = await opened(port, headers=[("Origin", "https://app.example")])
            await talk(same)
            await talk(listed)
    assert 'bidi_web_conversations_refused_total{reason="origin"} 1.0' in app.metrics.render().decode()


async def test_a_missing_or_wrong_token_is_refused_with_401_and_the_right_one_gets_in_three_ways(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    app = web_app(sim, auth=token_auth(TOKEN))
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(20):
            for attempt in [
                {},
                {"headers": [("Authorization", "Bearer tok-wrong-000000")]},
                {"subprotocols": ["bidi-token.tok-wrong-000000"]},
                {"path": "/ws?token=tok-wrong-000000"},
            ]:
                refused = await WsClient.connect(port, **attempt)  # type: ignore[arg-type]
                assert isinstance(refused, Rejected) and refused.status == 401, attempt
            by_header = await opened(port, headers=[("Authorization", f"Bearer {TOKEN}")])
            by_subprotocol = await opened(port, subprotocols=[f"bidi-token.{TOKEN}"])
            by_query = await opened(port, path=f"/ws?token={TOKEN}")
            assert by_subprotocol.subprotocol == f"bidi-token.{TOKEN}"  # a browser needs it echoed
            for client in (by_header, by_subprotocol, by_query):
                await talk(client)
    assert 'bidi_web_conversations_refused_total{reason="bad_token"} 4.0' in app.metrics.render().decode()


async def test_the_auth_hook_sees_headers_query_and_subprotocols_and_its_identity_reaches_the_runner(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    seen: list[Handshake] = []
    identities: list[str | None] = []

    async def hook(handshake: Handshake) -> Accept | Refuse:
        seen.append(handshake)
        await anyio.lowlevel.checkpoint()
        if handshake.query.get("user") != "alice":
            return Refuse(403, "not_alice")
        return Accept(identity="alice", subprotocol="bidi.v1")

    app = web_app(sim, auth=hook)
    runner = app.run_conversation

    async def run(conversation: Any) -> None:
        identities.append(conversation.identity)
        await runner(conversation)

    app.run_conversation = run
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(20):
            bob = await WsClient.connect(port, path="/ws?user=bob")
            assert isinstance(bob, Rejected) and bob.status == 403
            alice = await opened(
                port, path="/ws?user=alice", headers=[("X-Team", "blue")], subprotocols=["bidi.v1", "other"]
            )
            assert alice.subprotocol == "bidi.v1"
            await talk(alice)
    assert seen[1].headers["x-team"] == "blue"
    assert seen[1].subprotocols == ("bidi.v1", "other")
    assert identities == ["alice"]
    assert "blue" not in repr(seen[1]) and "alice" not in repr(seen[1])  # headers and query stay out of reprs


# ------------------------------------------------------------------------------------------ admission and limits


async def test_at_capacity_the_handshake_is_refused_with_503_and_retry_after_and_the_others_go_on(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    app = web_app(sim, limits=WebLimits(max_conversations=2, retry_after_s=7))
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(30):
            first, second = await opened(port), await opened(port)
            status, _, _ = await http_get(port, "/readyz")
            assert status == 503  # full: a load balancer should send new users elsewhere
            refused = await WsClient.connect(port)
            assert isinstance(refused, Rejected)
            assert refused.status == 503
            assert refused.headers["retry-after"] == "7"
            await talk(first)
            await talk(second)
            await first.send_json({"type": "stop"})
            assert (await first.until_closed()).code == 1000
            third = await WsClient.connect(port)
            while isinstance(third, Rejected):  # the slot frees once the first conversation has fully ended
                assert third.status == 503
                await anyio.sleep(0.05)
                third = await WsClient.connect(port)
            await third.start()
            await talk(third)
    refused_line = 'bidi_web_conversations_refused_total{reason="capacity"} '
    text = app.metrics.render().decode()
    assert float(text.split(refused_line, 1)[1].split()[0]) >= 1


async def test_the_time_limit_and_the_idle_timeout_close_politely(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    for limits, reason in [
        (WebLimits(max_duration_s=0.5, idle_timeout_s=None), "time_limit"),
        (WebLimits(max_duration_s=None, idle_timeout_s=0.3), "idle"),
    ]:
        app = web_app(sim, limits=limits)
        async with serve(app, anyio_backend) as port:
            with anyio.fail_after(20):
                client = await opened(port)
                seen: list[Any] = []
                closed = await client.until_closed(seen)
        messages = [m for m in seen if isinstance(m, dict)]
        assert {"type": "closing", "reason": reason} in messages
        assert messages[-1]["type"] == "bidi_connection_close"  # the agent stopped before the socket closed
        assert closed == Closed(1000, reason)
        assert f'bidi_web_conversations_ended_total{{reason="{reason}"}} 1.0' in app.metrics.render().decode()


@pytest.mark.parametrize(
    ("reason", "code", "limits"),
    [
        ("flood", 1008, WebLimits(max_messages_per_s=5, message_burst=5, flood_close_s=0.2)),
        ("no_start", 1000, WebLimits(start_timeout_s=0.2)),
    ],
)
async def test_an_agent_that_stops_at_once_does_not_cut_off_closing(
    reason: str, code: int, limits: WebLimits, anyio_backend: str
) -> None:
    # When the I/O itself ends the conversation (a flood, no start), it asks the agent to stop before the
    # watcher has told the client; an agent on an in-memory model stops before the watcher runs, and its end
    # cancels the watcher. The client must hear ``closing`` before the close all the same.
    async def run(conversation: WebConversation) -> None:
        agent = BidiAgent(model=ScriptedModel(open_ended=True))
        await agent.run(inputs=[conversation.input()], outputs=[conversation.output()])

    app = WebApp(run, limits=limits)
    async with serve(app, anyio_backend) as port:
        client = await WsClient.connect(port)
        assert isinstance(client, WsClient)
        seen: list[Any] = []
        with anyio.fail_after(20):
            if reason == "no_start":
                closed = await client.until_closed(seen)
            else:
                await client.start()
                closed = await client.flood_until_closed({"type": "dance"}, seen)
    assert closed == Closed(code, reason)
    assert [m for m in seen if isinstance(m, dict) and m["type"] == "closing"] == [
        {"type": "closing", "reason": reason}
    ]
    assert f'bidi_web_conversations_ended_total{{reason="{reason}"}} 1.0' in app.metrics.render().decode()


async def test_drain_tells_each_client_refuses_new_ones_then_closes_with_1001(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    app = web_app(sim)
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(30):
            clients = [await opened(port) for _ in range(3)]
            assert (await http_get(port, "/readyz"))[0] == 200
            async with anyio.create_task_group() as tg:
                tg.start_soon(app.drain, 0.5)
                draining = [await c.until(lambda m: m["type"] == "draining") for c in clients]
                assert (await http_get(port, "/readyz"))[0] == 503
                refused = await WsClient.connect(port)
                assert isinstance(refused, Rejected) and refused.status == 503
                await talk(clients[0])  # a running conversation goes on until the deadline
                ends = []
                for client in clients:
                    seen: list[Any] = []
                    ends.append((await client.until_closed(seen), seen))
    assert all(0 < d["deadline_s"] <= 0.5 for d in draining)
    for closed, seen in ends:
        assert closed.code == 1001
        assert {"type": "closing", "reason": "drain"} in seen
    assert app.active == 0
    assert 'bidi_web_conversations_ended_total{reason="drain"} 3.0' in app.metrics.render().decode()


# ------------------------------------------------------------------------------------------ operations


async def test_health_readiness_metrics_and_the_demo_page(sim: OpenAIRealtimeSimulator, anyio_backend: str) -> None:
    app = web_app(sim, tools=[get_weather])
    async with serve(app, anyio_backend) as port:
        with anyio.fail_after(30):
            assert (await http_get(port, "/healthz"))[:1] == (200,)
            assert (await http_get(port, "/readyz"))[0] == 200
            page = await http_get(port, "/")
            assert page[0] == 200 and b"bidi-web.js" in page[2]
            script = await http_get(port, "/static/bidi-web.js")
            assert script[0] == 200 and b"export class BidiWebClient" in script[2]
            client = await opened(port)
            seen = await talk(client, "what's the weather?")
            assert any(m["type"] == "tool_result" for m in seen)
            await client.send_json({"type": "dance"})
            await client.until(lambda m: m["type"] == "error")
            status, headers, body = await http_get(port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "bidi_web_conversations_active 1.0" in text
    assert "bidi_web_conversations_started_total 1.0" in text
    assert 'bidi_web_errors_total{type="client_unknown_message"} 1.0' in text
    assert "bidi_web_tool_latency_seconds_count 1.0" in text
    assert "bidi_web_time_to_first_audio_seconds_count 1.0" in text
    assert "bidi_web_reconnect_gap_seconds_count 0.0" in text
    out = next(line for line in text.splitlines() if line.startswith("bidi_web_audio_out_seconds_total"))
    assert float(out.split()[1]) == pytest.approx(0.3)


async def test_no_token_in_any_log_line(
    sim: OpenAIRealtimeSimulator, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "tok-wrong-secret-123"
    async with serve(web_app(sim, auth=token_auth(TOKEN)), anyio_backend) as port:
        with anyio.fail_after(20):
            for attempt in [
                {"headers": [("Authorization", f"Bearer {wrong}")]},
                {"subprotocols": [f"bidi-token.{wrong}"]},
                {"path": f"/ws?token={wrong}"},
            ]:
                assert isinstance(await WsClient.connect(port, **attempt), Rejected)  # type: ignore[arg-type]
            for attempt in [
                {"headers": [("Authorization", f"Bearer {TOKEN}")]},
                {"subprotocols": [f"bidi-token.{TOKEN}"]},
                {"path": f"/ws?token={TOKEN}"},
            ]:
                client = await opened(port, **attempt)  # type: ignore[arg-type]
                await talk(client)
                await client.send_json({"type": "bidi_text_input", "text": 1})
                await client.until(lambda m: m["type"] == "error")
    assert caplog.records
    for record in caplog.records:
        line = record.getMessage()
        assert TOKEN not in line and wrong not in line and SIM_KEY not in line, line
