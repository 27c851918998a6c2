"""Bugs the fault matrix found in the adapters, each pinned down by a test of its own, deterministic.

The matrix met them as races (they showed on one backend and not the other);
each test here provokes the same situation on purpose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from adapters.gemini import BidiGeminiLiveModel
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import gemini_simulator as gm
from adapters.testing import openai_simulator as oa
from adapters.websocket import open_websocket
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionError,
    BidiConnectionRestartEvent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiTextInputEvent,
    BidiTranscriptStreamEvent,
    ReconnectPolicy,
)
from ports.model import ConnectRequest, ModelCapabilities
from tests.support import RecordingOutput, ScriptedInput, finals, run_until

OPENAI_KEY = "sk-found-bugs-not-a-real-key-0123456789"
GEMINI_KEY = "AIza-found-bugs-not-a-real-key-0123456789"


async def test_openai_two_texts_sent_before_the_first_response_starts_are_both_answered() -> None:
    """Before: the second text's response.create went out while the first one's was not yet answered by
    response.created; the service refused it (conversation_already_has_active_response) and the second
    text was never answered. (The matrix met it after reconnects, which send queued inputs back to back.)"""
    async with oa.OpenAIRealtimeSimulator(api_key=OPENAI_KEY) as sim:
        model = BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url)
        async with model.connect(ConnectRequest()) as session:
            await session.send(BidiTextInputEvent("one"))
            await session.send(BidiTextInputEvent("two"))  # nothing read in between: no response.created yet
            events = []
            with anyio.fail_after(10):
                while sum(isinstance(e, BidiResponseCompleteEvent) for e in events) < 2:
                    events.append(await session.receive())
                    assert not isinstance(events[-1], BidiErrorEvent), events[-1]
    finals = [e.text for e in events if isinstance(e, BidiTranscriptStreamEvent) and e.is_final]
    assert finals == ["You said: one", "You said: two"]
    assert sim.client_errors == []


# ---------------------------------------------------------------- a normal end that the writer meets first


class _EndedSession:
    """A session whose service has ended the session: the write fails first, then the reader sees the end."""

    connection_id = "ended-1"
    capabilities = ModelCapabilities()

    def __init__(self) -> None:
        self.write_failed = anyio.Event()

    async def send(self, item: object) -> None:
        self.write_failed.set()
        raise anyio.EndOfStream  # the service ended the session (the port's contract for send)

    async def receive(self) -> Any:
        await self.write_failed.wait()  # the writer meets the end first: the race, made certain
        raise anyio.EndOfStream


class _EndedModel:
    model_id = "ended"
    capabilities = ModelCapabilities()

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[_EndedSession]:
        yield _EndedSession()


async def test_a_normal_end_the_writer_meets_first_ends_the_conversation() -> None:
    """Before: the writer reported the closed socket as a lost connection, so a service that ended the
    session (close 1000) while a write was due was reconnected instead of ending the conversation."""
    out = RecordingOutput()
    agent = BidiAgent(model=_EndedModel())  # type: ignore[arg-type]
    with anyio.fail_after(10):
        await agent.run([ScriptedInput(["hello"])], [out])
    assert [c.reason for c in out.of(BidiConnectionCloseEvent)] == ["provider_closed"]
    assert out.of(BidiConnectionRestartEvent) == []


async def test_openai_a_write_after_the_services_normal_close_says_end_of_stream() -> None:
    scenario = oa.Scenario(rules=[oa.Rule(text_contains="bye", reply=oa.Reply(close=(1000, "")))])
    async with oa.OpenAIRealtimeSimulator(api_key=OPENAI_KEY, scenario=scenario) as sim:
        model = BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url)
        async with model.connect(ConnectRequest()) as session:
            await session.send(BidiTextInputEvent("bye"))
            with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
                while True:
                    await session.receive()
            with pytest.raises(anyio.EndOfStream):
                await session.send(BidiTextInputEvent("still there?"))


async def test_gemini_a_write_after_the_services_normal_close_says_end_of_stream() -> None:
    scenario = gm.Scenario(rules=[gm.Rule(text_contains="bye", reply=gm.Reply(close=(1000, "")))])
    async with gm.GeminiLiveSimulator(api_key=GEMINI_KEY, tls=False, scenario=scenario) as sim:
        model = BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=sim.ws_base_url)
        async with model.connect(ConnectRequest()) as session:
            await session.send(BidiTextInputEvent("bye"))
            with anyio.fail_after(10), pytest.raises(anyio.EndOfStream):
                while True:
                    await session.receive()
            with pytest.raises(anyio.EndOfStream):
                await session.send(BidiTextInputEvent("still there?"))


async def test_a_websocket_certificate_the_client_does_not_trust_is_fatal_and_named() -> None:
    """Before: a retryable 'cannot reach ...: SSLCertVerificationError', retried to the end of the policy
    although every attempt meets the same certificate."""
    async with oa.OpenAIRealtimeSimulator(api_key=OPENAI_KEY, tls=True) as sim:
        with anyio.fail_after(10), pytest.raises(BidiConnectionError) as refused:
            async with open_websocket(sim.url, {"Authorization": f"Bearer {OPENAI_KEY}"}):
                pass
    assert refused.value.retryable is False
    assert f"the TLS certificate of 127.0.0.1:{sim.port} is not trusted" in str(refused.value)
    assert "certificate verify failed" in str(refused.value) or "issuer" in str(refused.value)
    assert sim.connections == []


@pytest.mark.parametrize(("status", "says"), [(401, "was not accepted"), (403, "may not do this")])
def test_a_refused_upgrade_names_the_credential_even_without_a_body(status: int, says: str) -> None:
    """Before: 'the server refused the WebSocket upgrade (HTTP 401)' and nothing more when the refusal had no
    body (a gateway's): nothing said it was about the API key."""
    from adapters.gemini.errors import error_for_response as gemini_refusal
    from adapters.openai.errors import error_for_response as openai_refusal

    assert f"(HTTP {status}: the API key {says})" in str(openai_refusal(status, {}, b""))
    assert f"(HTTP {status}: the API key or access token {says})" in str(gemini_refusal(status, {}, b""))


async def test_nova_a_stream_the_service_ends_at_its_limit_is_continued() -> None:
    """Before: the simulator ended a stream at its limit with a ValidationException of a text we made up,
    which the adapter rightly reads as fatal: the conversation ended with an error at the limit. Users
    report a ModelTimeoutException there (docs/protocols/nova_sonic.md#limits), retryable: the
    conversation goes on in a new stream, seeded with the history, and what the user says next is answered."""
    from botocore.credentials import Credentials

    from adapters.nova_sonic import BidiNovaSonicModel
    from adapters.testing import nova_sonic_simulator as nv

    restarted = anyio.Event()
    said: list[str] = []

    async def user() -> str:
        if said:  # "second" once the limit has passed and the stream was replaced
            await restarted.wait()
        if len(said) == 2:
            await anyio.sleep_forever()
        said.append(["first", "second"][len(said)])
        return said[-1]

    async def watch(event: object) -> None:
        if isinstance(event, BidiConnectionRestartEvent):
            restarted.set()

    async with nv.NovaSonicSimulator(credentials={"AKIDLIMIT": "limit-secret"}, stream_lifetime_s=1.0) as sim:
        model = BidiNovaSonicModel(
            endpoint_url=sim.endpoint_url,
            region="us-east-1",
            verify=sim.ca_cert_pem_path,
            credentials=Credentials("AKIDLIMIT", "limit-secret"),
        )  # its max_stream_s is the real 8 minutes: the core does not rotate before this service's limit
        agent = BidiAgent(model=model, reconnect=ReconnectPolicy(initial_backoff_s=0.01, max_backoff_s=0.05))
        out = RecordingOutput()
        await run_until(agent, [user], [out, watch], lambda: any("second" in f for f in finals(out, "assistant")))
    assert out.of(BidiConnectionRestartEvent)[0].reason == "connection_lost"
    assert [i[1] for i in sim.user_inputs if i[0] == "text"] == ["first", "second"]


async def test_openai_a_service_that_never_opens_the_session_is_retried_and_nothing_said_is_lost() -> None:
    """Before: the connection counted as open once the upgrade was accepted; the user's line was written to a
    service that never said session.created, and after the read timeout the new session got it only as
    history: the question was never answered. Now the session is open at session.created (within the
    connect timeout); until then nothing is written, and the line is asked on the next connection."""
    from adapters.connection import ConnectionOptions

    async with oa.OpenAIRealtimeSimulator(api_key=OPENAI_KEY, silent_connections=[0]) as sim:
        model = BidiOpenAIRealtimeModel(
            api_key=OPENAI_KEY,
            base_url=sim.base_url,
            connection=ConnectionOptions(connect_timeout_s=0.5, close_timeout_s=0.5),
        )
        agent = BidiAgent(model=model, reconnect=ReconnectPolicy(initial_backoff_s=0.01, max_backoff_s=0.05))
        out = RecordingOutput()
        await run_until(agent, [ScriptedInput(["hello"])], [out], lambda: "You said: hello" in finals(out, "assistant"))
    assert len(sim.connections) == 2
    assert [m["type"] for m in sim.connections[1].received] == [
        "session.update",
        "conversation.item.create",
        "response.create",  # asked, not only remembered
    ]
