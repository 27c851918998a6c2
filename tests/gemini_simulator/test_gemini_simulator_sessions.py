"""The Gemini Live simulator's sessions: resumption handles, goAway, closes and drops.

Over real sockets, on asyncio and Trio, driven by the raw client of ``client.py``.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import pytest

from adapters.testing.gemini_simulator import (
    GeminiLiveSimulator,
    Reply,
    Rule,
    Scenario,
    loud,
    silence,
)
from tests.gemini_simulator.client import (
    BOUND,
    MODEL,
    SCENARIO,
    Closed,
    RawClient,
    assert_oracle_clean,
    connect,
    kinds,
)

# ---------------------------------------------------------------------- resumption
# docs/protocols/gemini.md#session-resumption


def handle_of(message: dict[str, Any]) -> str | None:
    update = message.get("sessionResumptionUpdate")
    return update.get("newHandle") if update is not None and update.get("resumable") else None


async def test_resumption_continues_the_session_as_of_the_handle(
    sim: GeminiLiveSimulator, clients: list[RawClient]
) -> None:
    """Handles come at resumable points only (after setup, after turnComplete); while generating the update is
    empty (not resumable). Resuming from a handle restores the state as of that handle: what came after is gone."""
    client = await connect(sim, clients)
    await client.setup(sessionResumption={})
    h0 = handle_of(await client.recv())
    assert h0
    await client.send({"realtimeInput": {"text": "one"}})
    turn_one = await client.until(handle_of)
    assert turn_one[0] == {"sessionResumptionUpdate": {}}  # consumed while the model starts generating
    assert kinds(turn_one)[-3:] == [
        "serverContent.generationComplete",
        "serverContent.turnComplete",
        "sessionResumptionUpdate",
    ]
    h1 = handle_of(turn_one[-1])
    await client.send({"realtimeInput": {"text": "two"}})
    await client.until(handle_of)
    await client.send({"realtimeInput": {"text": "lost"}})  # consumed, but no handle covers it
    await client.until(lambda m: m.get("sessionResumptionUpdate") == {})
    assert sim.user_inputs == [("text", "one"), ("text", "two"), ("text", "lost")]
    await sim.drop_all()

    again = await connect(sim, clients)
    await again.setup(sessionResumption={"handle": h1})
    assert handle_of(await again.recv())
    assert sim.connections[1].resumed_handle == h1
    assert sim.connections[1].session_id == sim.connections[0].session_id
    assert sim.user_inputs == [("text", "one")]
    await again.send({"realtimeInput": {"text": "three"}})
    await again.until(handle_of)
    assert sim.user_inputs == [("text", "one"), ("text", "three")]


async def test_unknown_or_stale_handle_is_1007(clients: list[RawClient]) -> None:
    async with GeminiLiveSimulator(tls=False, handle_ttl_s=0.05) as sim:
        client = await connect(sim, clients)
        await client.send({"setup": {"model": MODEL, "sessionResumption": {"handle": "never-issued"}}})
        closed = await client.expect_closed()
        assert closed.code == 1007 and "handle" in closed.reason
        fresh = await connect(sim, clients)
        await fresh.setup(sessionResumption={})
        handle = handle_of(await fresh.recv())
        await anyio.sleep(0.1)  # the handle ages past its time to live
        stale = await connect(sim, clients)
        await stale.send({"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}})
        assert (await stale.expect_closed()).code == 1007
        assert len(sim.sessions) == 1
        assert_oracle_clean(sim)


async def test_resuming_with_another_model_is_1007(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(sessionResumption={})
    handle = handle_of(await client.recv())
    other = await connect(sim, clients)
    await other.send({"setup": {"model": "models/another", "sessionResumption": {"handle": handle}}})
    assert (await other.expect_closed()).code == 1007


async def test_idle_audio_gets_handles_and_speech_does_not(clients: list[RawClient]) -> None:
    """Audio consumed while idle is covered by a handle every ``audio_handle_every_ms``; a turn in progress is
    not resumable, so the state resumed after a drop mid-speech lacks that speech."""
    async with GeminiLiveSimulator(tls=False, audio_handle_every_ms=200) as sim:
        client = await connect(sim, clients)
        await client.setup(sessionResumption={})
        await client.recv()
        quiet = silence(400)
        await client.audio(quiet)
        handles = [handle_of(m) for m in await client.until(handle_of)]
        await client.audio(loud(300))  # speech starts: no handle covers it
        await sim.wait_until(lambda: sum(1 for k, _ in sim.user_inputs if k == "audio") == 7)
        await sim.drop_all()
        again = await connect(sim, clients)
        await again.setup(sessionResumption={"handle": handles[-1]})
        audio = b"".join(v for k, v in sim.user_inputs if k == "audio")
        assert audio == quiet[: len(audio)] and len(audio) >= 200 * 32
        assert_oracle_clean(sim)


async def test_transparent_resumption_reports_the_last_consumed_index(clients: list[RawClient]) -> None:
    """Vertex AI's ``transparent`` is not in the v1beta proto: refused (1007) unless the simulator accepts it,
    and then updates carry lastConsumedClientMessageIndex (setup = 0)."""
    async with GeminiLiveSimulator(tls=False, transparent_resumption=True) as sim:
        client = await connect(sim, clients)
        await client.setup(sessionResumption={"transparent": True})
        assert (await client.recv())["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"] == "0"
        await client.send({"realtimeInput": {"text": "one"}})
        last = (await client.until(handle_of))[-1]
        assert last["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"] == "1"
        assert sim.oracle_failures == []
    async with GeminiLiveSimulator(tls=False) as strict:
        client = await connect(strict, clients)
        await client.send({"setup": {"model": MODEL, "sessionResumption": {"transparent": True}}})
        assert (await client.expect_closed()).code == 1007


# ---------------------------------------------------------------------- goAway and faults
# docs/protocols/gemini.md#session-limits


async def test_go_away_then_the_lifetime_close(clients: list[RawClient]) -> None:
    """``goAway`` with timeLeft = the lead, then the close at the end of the connection's lifetime."""
    async with GeminiLiveSimulator(tls=False, connection_lifetime_s=0.3, go_away_lead_s=0.2) as sim:
        client = await connect(sim, clients)
        await client.setup()
        assert await client.recv() == {"goAway": {"timeLeft": "0.200s"}}
        closed = await client.expect_closed()
        assert (closed.code, closed.reason) == (1011, "Deadline expired before operation could complete.")
        assert sim.connections[0].closed_by == "server"
        assert_oracle_clean(sim)


async def test_reply_go_away_and_go_away_all(clients: list[RawClient]) -> None:
    scenario = Scenario(rules=[Rule(text_equals="bye", reply=Reply(say="Bye.", go_away=True))])
    async with GeminiLiveSimulator(tls=False, scenario=scenario, go_away_lead_s=0.2, lifetime_close=(1000, "")) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "bye"}})
        messages = await client.until_turn_complete()
        assert messages[0] == {"goAway": {"timeLeft": "0.200s"}}
        assert (await client.expect_closed()).code == 1000
        other = await connect(sim, clients)
        await other.setup()
        await sim.go_away_all()
        assert "goAway" in await other.recv()
        assert_oracle_clean(sim)


async def test_reply_close_1011_and_close_all(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup()
    await client.send({"realtimeInput": {"text": "crash"}})
    closed = await client.expect_closed()
    assert (closed.code, closed.reason) == (1011, "Internal error occurred.")
    other = await connect(sim, clients)
    await other.setup()
    await sim.close_all(1011, "Deadline expired before operation could complete.")
    assert (await other.expect_closed()).code == 1011
    await sim.wait_until(lambda: all(c.closed for c in sim.connections))
    assert [(c.close_code, c.closed_by) for c in sim.connections] == [(1011, "server"), (1011, "server")]


async def test_abrupt_drops(clients: list[RawClient]) -> None:
    """``Reply(drop=True)`` and ``drop_all`` end the TCP connection without a close frame, mid-reply too."""
    async with GeminiLiveSimulator(tls=True, scenario=SCENARIO, speedup=1.0) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "vanish"}})
        assert (await client.expect_closed()).code is None
        other = await connect(sim, clients)
        await other.setup()
        await other.send({"realtimeInput": {"text": "long"}})
        await other.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await sim.drop_all()
        assert (await other.expect_closed()).code is None
        assert [c.closed_by for c in sim.connections] == ["dropped", "dropped"]
        assert [c.close_code for c in sim.connections] == [None, None]
        assert_oracle_clean(sim)


async def test_leaving_the_context_closes_everything() -> None:
    async with GeminiLiveSimulator(tls=True) as sim:
        client = await RawClient.connect(sim)
        await client.setup()
        path = sim.ca_cert_pem_path
    assert sim.connections[0].closed
    assert not await anyio.Path(path).exists()
    with pytest.raises(Closed):
        with anyio.fail_after(BOUND):
            await client.recv()
    await client.aclose()


@pytest.mark.parametrize(
    ("close", "code"), [((1011, "Internal error occurred."), 1011), (None, None)], ids=["1011", "drop"]
)
async def test_fault_in_the_middle_of_a_reply(
    close: tuple[int, str] | None, code: int | None, clients: list[RawClient]
) -> None:
    """docs/protocols/gemini.md#errors: 1011 or an abrupt drop after some audio of a turn, before its turnComplete."""
    reply = Reply(say="A reply that breaks.", audio_ms=1000, close=close, drop=close is None, after_chunks=2)
    async with GeminiLiveSimulator(tls=False, scenario=Scenario(rules=[Rule(reply=reply)])) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "go"}})
        closed = await client.expect_closed()
        assert closed.code == code
        assert kinds(client.seen[1:]) == ["serverContent.modelTurn"]
        assert len([m for m in client.seen if "serverContent" in m]) == 2
        assert_oracle_clean(sim)
