"""The OpenAI Realtime simulator's faults: the session limit, drops, and faults scripted by rules.

Over real sockets, on asyncio and Trio, driven by the raw client of
``client.py``.
"""

from __future__ import annotations

from adapters.testing.openai_simulator import (
    ErrorOn,
    OpenAIRealtimeSimulator,
    Reply,
    Rule,
    Scenario,
    ServiceError,
)
from tests.openai_simulator.client import (
    RawClient,
    assert_oracle_clean,
    connect,
    types,
    user_text,
)

# ---------------------------------------------------------------------- faults (docs/protocols/openai.md#errors)


async def test_session_limit_expires_with_the_service_error_and_a_close(client_factory: list[RawClient]) -> None:
    """The limit (scaled down here) ends with ``error`` "Your session hit the maximum duration …" and a close
    (docs/protocols/openai.md#session-limits)."""
    async with OpenAIRealtimeSimulator(session_limit_s=0.3) as sim:
        client = await connect(sim, client_factory)
        error = await client.recv()
        assert error["type"] == "error"
        assert error["error"]["code"] == "session_expired"
        assert error["error"]["message"] == "Your session hit the maximum duration of 60 minutes."
        closed = await client.expect_closed()
        assert closed.code == 1000
        await sim.wait_until(lambda: sim.connections[0].closed)
        assert sim.connections[0].close_reason == "session_limit"
        assert_oracle_clean(sim)


async def test_drop_all_closes_without_a_close_frame(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    first = await connect(sim, client_factory)
    second = await connect(sim, client_factory)
    await sim.drop_all()
    assert (await first.expect_closed()).code is None
    assert (await second.expect_closed()).code is None
    assert [c.close_reason for c in sim.connections] == ["dropped", "dropped"]
    third = await connect(sim, client_factory)  # the server still accepts
    await third.send(user_text("hi"))
    assert (await third.recv())["type"] == "conversation.item.added"


async def test_drop_after_messages_per_connection(client_factory: list[RawClient]) -> None:
    async with OpenAIRealtimeSimulator(drop_after_messages=[2, None]) as sim:
        first = await connect(sim, client_factory)
        await first.send(user_text("one"))
        await first.send(user_text("two"))
        assert (await first.expect_closed()).code is None
        assert types(first.seen) == ["session.created"] + ["conversation.item.added", "conversation.item.done"] * 2
        second = await connect(sim, client_factory)
        for n in range(3):
            await second.send(user_text(f"m{n}"))
            await second.until("conversation.item.done")
        assert sim.connections[1].closed is False
        assert [(m.connection, m.message["item"]["content"][0]["text"]) for m in sim.received] == [
            (0, "one"),
            (0, "two"),
            (1, "m0"),
            (1, "m1"),
            (1, "m2"),
        ]


FAULTS = Scenario(
    rules=[
        Rule(text_equals="boom", times=1, reply=Reply(error=ServiceError("Boom.", "server_error", "server_error"))),
        Rule(text_equals="fail", reply=Reply(fail=ServiceError("Upstream failed.", "server_error", "server_error"))),
        Rule(text_equals="crash", reply=Reply(drop=True)),
        Rule(text_equals="crash later", reply=Reply(say="One two three four five six seven.", drop_after_deltas=2)),
        Rule(text_equals="time", reply=Reply(session_limit=True)),
    ],
    error_on=[ErrorOn(event_type="session.update", nth=1, error=ServiceError("Not now.", "invalid_value"))],
)


async def test_rule_faults(client_factory: list[RawClient]) -> None:
    """Scenario faults as data: an ``error`` once, a failed response, an abrupt drop (before or mid-response),
    a session-limit reply, and an ``ErrorOn`` for the first ``session.update``."""
    async with OpenAIRealtimeSimulator(scenario=FAULTS) as sim:
        client = await connect(sim, client_factory)
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.recv())["error"]["message"] == "Not now."
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.recv())["type"] == "session.updated"

        await client.send(user_text("boom"))
        await client.send({"type": "response.create"})
        error = (await client.until("error"))[-1]["error"]
        assert (error["type"], error["code"], error["message"]) == ("server_error", "server_error", "Boom.")
        await client.send(user_text("boom"))  # times=1: now the default echo
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"] == (
            "You said: boom"
        )

        await client.send(user_text("fail"))
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]["response"]
        assert done["status"] == "failed"
        assert done["status_details"]["error"]["code"] == "server_error"

        await client.send(user_text("crash"))
        await client.send({"type": "response.create"})
        assert (await client.expect_closed()).code is None

        client = await connect(sim, client_factory)
        await client.send(user_text("crash later"))
        await client.send({"type": "response.create"})
        assert (await client.expect_closed()).code is None
        assert types(client.seen).count("response.output_audio.delta") == 2

        client = await connect(sim, client_factory)
        await client.send(user_text("time"))
        await client.send({"type": "response.create"})
        events = await client.until("error")
        assert events[-1]["error"]["code"] == "session_expired"
        assert (await client.expect_closed()).code == 1000
        assert_oracle_clean(sim)
