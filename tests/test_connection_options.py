"""What every provider adapter shares: ConnectionOptions, the liveness watchdog, URLs, response ids.

The watchdog is tested over real sockets: a TCP relay between our client and
a simulator stops passing the simulator's bytes on (what a dead NAT mapping
looks like: both sockets open, nothing arriving), and the connection must fail
with a retryable error after ``read_timeout_s``, given as an option of the
model, on all three providers; and the agent must reconnect.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from botocore.credentials import Credentials

from adapters._exceptions import leaves, sole_exception, unwrapped
from adapters.connection import ConnectionOptions, merge_options
from adapters.gemini import BidiGeminiLiveModel
from adapters.nova_sonic import BidiNovaSonicModel
from adapters.nova_sonic.model import DEFAULT_SYSTEM_PROMPT
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.responses import ResponseTracker
from adapters.testing.gemini_simulator import GeminiLiveSimulator
from adapters.testing.nova_sonic_simulator import NovaSonicSimulator
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from adapters.urls import redacted_url, websocket_url
from bidi_core import BidiAgent, BidiConnectionRestartEvent, BidiConnectionStartEvent, ReconnectPolicy
from ports.errors import BidiConnectionError, BidiUsageError
from ports.events import BidiResponseCompleteEvent, BidiResponseStartEvent
from ports.model import BidiModel, ConnectRequest
from tests.support import RecordingOutput, run_until

OPENAI_KEY = "sk-options-test-key-0123456789"
GEMINI_KEY = "gemini-options-test-key-0123456789"
AKID, SECRET = "AKIDOPTIONSTEST", "nova-options-secret-0123456789abcdef"
QUICK = 0.5
"""The read timeout the silence tests give (pings go out after two thirds of it)."""


# ---------------------------------------------------------------- ConnectionOptions


def test_defaults_are_the_documented_ones() -> None:
    options = ConnectionOptions()
    assert (options.connect_timeout_s, options.read_timeout_s, options.close_timeout_s) == (10.0, 15.0, 3.0)
    assert options.ssl_context is None and options.proxy is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connect_timeout_s": 0},
        {"read_timeout_s": -1},
        {"close_timeout_s": float("inf")},
        {"read_timeout_s": True},
        {"ssl_context": "/etc/ssl/ca.pem"},
        {"proxy": "ftp://proxy.example"},
    ],
)
def test_bad_options_are_usage_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BidiUsageError, match=next(iter(kwargs))):
        ConnectionOptions(**kwargs)


def test_the_repr_hides_proxy_credentials() -> None:
    options = ConnectionOptions(proxy="http://user:hunter22@proxy.example:3128")
    assert "hunter22" not in repr(options)


def test_keywords_fill_the_options_and_may_repeat_them_but_not_contradict_them() -> None:
    assert merge_options(None, read_timeout_s=2.0, connect_timeout_s=None) == ConnectionOptions(read_timeout_s=2.0)
    given = ConnectionOptions(read_timeout_s=2.0)
    assert merge_options(given, read_timeout_s=2.0) is given
    with pytest.raises(BidiUsageError, match=r"read_timeout_s= and connection\.read_timeout_s disagree"):
        merge_options(given, read_timeout_s=3.0)
    with pytest.raises(BidiUsageError, match="ConnectionOptions"):
        merge_options({"read_timeout_s": 2.0})  # type: ignore[arg-type]


def test_every_model_takes_connection_options_and_its_older_keywords() -> None:
    context = ssl.create_default_context()
    options = ConnectionOptions(connect_timeout_s=4.0, read_timeout_s=6.0, ssl_context=context)

    openai = BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, connection=options)
    assert openai.connection is options
    assert BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, verify=context).connection.ssl_context is context

    gemini = BidiGeminiLiveModel(api_key=GEMINI_KEY, connect_timeout_s=4.0, ssl_context=context)
    assert (gemini.connection.connect_timeout_s, gemini.connection.ssl_context) == (4.0, context)
    assert BidiGeminiLiveModel(api_key=GEMINI_KEY, connection=options, connect_timeout_s=4.0).connection is options

    nova = BidiNovaSonicModel(
        credentials=Credentials(AKID, SECRET), read_timeout_s=6.0, close_timeout_s=1.0, connect_timeout_s=4.0
    )
    assert nova.connection == ConnectionOptions(connect_timeout_s=4.0, read_timeout_s=6.0, close_timeout_s=1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda o: BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, connection=o, verify=ssl.create_default_context()),
        lambda o: BidiGeminiLiveModel(api_key=GEMINI_KEY, connection=o, connect_timeout_s=1.0),
        lambda o: BidiNovaSonicModel(credentials=Credentials(AKID, SECRET), connection=o, read_timeout_s=1.0),
    ],
    ids=["openai", "gemini", "nova"],
)
def test_a_keyword_that_contradicts_connection_is_a_usage_error(make: Callable[[ConnectionOptions], Any]) -> None:
    with pytest.raises(BidiUsageError, match="disagree"):
        make(ConnectionOptions(connect_timeout_s=2.0, read_timeout_s=2.0, ssl_context=ssl.create_default_context()))


def test_nova_takes_no_proxy() -> None:
    with pytest.raises(BidiUsageError, match="proxy"):
        BidiNovaSonicModel(
            credentials=Credentials(AKID, SECRET), connection=ConnectionOptions(proxy="http://proxy.example:3128")
        )


# ---------------------------------------------------------------- the watchdog, over real sockets


class Relay:
    """A TCP relay to a simulator that can stop passing the simulator's bytes on.

    :meth:`freeze` silences the connections open now (ours still reach the
    simulator, pings included; its answers are dropped); later connections pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._open: list[list[bool]] = []

    def freeze(self) -> None:
        for frozen in self._open:
            frozen[0] = True

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        frozen = [False]
        self._open.append(frozen)
        self.connections += 1
        async with client, await anyio.connect_tcp("127.0.0.1", self.target_port) as upstream:

            async def pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream, drop: list[bool]) -> None:
                try:
                    while True:
                        data = await source.receive()
                        if not drop[0]:
                            await sink.send(data)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                tg.cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, upstream, [False])
                tg.start_soon(pump, upstream, client, frozen)
        self._open.remove(frozen)


@asynccontextmanager
async def relay_to(target_port: int) -> AsyncIterator[Relay]:
    relay = Relay(target_port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    relay.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    with unwrapped():
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, relay.handle)
            try:
                yield relay
            finally:
                tg.cancel_scope.cancel()


ModelAt = Callable[[int, ConnectionOptions], BidiModel]


@asynccontextmanager
async def provider(name: str) -> AsyncIterator[tuple[int, ModelAt]]:
    """A simulator of ``name`` and how to make a model that connects to it at another port (the relay's)."""
    if name == "openai":
        async with OpenAIRealtimeSimulator(api_key=OPENAI_KEY) as openai_sim:

            def openai(port: int, options: ConnectionOptions) -> BidiModel:
                url = f"ws://127.0.0.1:{port}/v1"
                return BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=url, connection=options)

            yield openai_sim.port, openai
    elif name == "gemini":
        async with GeminiLiveSimulator(api_key=GEMINI_KEY, tls=False) as gemini_sim:

            def gemini(port: int, options: ConnectionOptions) -> BidiModel:
                url = f"ws://127.0.0.1:{port}"
                return BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=url, connection=options)

            yield gemini_sim.port, gemini
    else:
        async with NovaSonicSimulator(credentials={AKID: SECRET}) as nova_sim:

            def nova(port: int, options: ConnectionOptions) -> BidiModel:
                return BidiNovaSonicModel(
                    endpoint_url=f"https://127.0.0.1:{port}",
                    region="us-east-1",
                    credentials=Credentials(AKID, SECRET),
                    verify=nova_sim.ca_cert_pem_path,
                    connection=options,
                )

            yield nova_sim.port, nova


@pytest.mark.parametrize("name", ["openai", "gemini", "nova"])
async def test_a_connection_gone_silent_fails_after_the_read_timeout(name: str) -> None:
    async with provider(name) as (port, model_at), relay_to(port) as relay:
        model = model_at(relay.port, ConnectionOptions(read_timeout_s=QUICK))
        with anyio.fail_after(10):
            async with model.connect(ConnectRequest(system_prompt="Be brief.")) as session:
                relay.freeze()
                started = anyio.current_time()
                with pytest.raises(BidiConnectionError, match=f"sent nothing for {QUICK:g} s") as caught:
                    while True:
                        await session.receive()
                waited = anyio.current_time() - started
    assert caught.value.retryable
    assert QUICK * 0.9 <= waited < QUICK * 6


async def test_the_agent_reconnects_when_the_provider_goes_silent() -> None:
    async with provider("openai") as (port, model_at), relay_to(port) as relay:
        model = model_at(relay.port, ConnectionOptions(read_timeout_s=QUICK))
        agent = BidiAgent(model=model, reconnect=ReconnectPolicy(max_attempts=3, initial_backoff_s=0.01))
        out = RecordingOutput()

        async def freeze_the_first(event: Any) -> None:
            if isinstance(event, BidiConnectionStartEvent) and relay.connections == 1:
                relay.freeze()

        await run_until(agent, [], [out, freeze_the_first], lambda: len(out.of(BidiConnectionStartEvent)) == 2)
    assert relay.connections == 2
    assert [e.reason for e in out.of(BidiConnectionRestartEvent)] == ["connection_lost"]


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.example.com/v1/", "wss://api.example.com/v1/realtime?model=gpt%2Frealtime"),
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/realtime?model=gpt%2Frealtime"),
        (
            "wss://proxy.example/openai?api-version=1",
            "wss://proxy.example/openai/realtime?api-version=1&model=gpt%2Frealtime",
        ),
    ],
)
def test_websocket_urls_keep_the_base_path_and_query(base: str, expected: str) -> None:
    assert websocket_url(base, path="/realtime", query={"model": "gpt/realtime"}) == expected


def test_a_bad_base_url_is_a_usage_error_without_its_secret() -> None:
    with pytest.raises(BidiUsageError, match="base_url") as caught:
        websocket_url("ftp://example.com/?key=secret-value-123")
    assert "secret-value-123" not in str(caught.value)
    assert redacted_url("wss://h/p?key=abcdef&x=1", with_query=False) == "wss://h/p"
    assert redacted_url("wss://h/p?key=abcdef&x=1") == "wss://h/p?key=***&x=1"


# ---------------------------------------------------------------- response ids, exception groups


def test_response_ids_are_numbered_per_connection_and_complete_once() -> None:
    responses = ResponseTracker("c7")
    assert responses.complete("complete") is None
    assert responses.start() == BidiResponseStartEvent("c7-r1")
    with pytest.raises(RuntimeError):
        responses.start()
    assert responses.complete("tool_use") == BidiResponseCompleteEvent("c7-r1", "tool_use")
    assert (responses.current, responses.last) == (None, "c7-r1")
    assert responses.start().response_id == "c7-r2"
    assert ResponseTracker("c8").start().response_id == "c8-r1"


def test_exception_groups_of_one_are_unwrapped() -> None:
    error = ValueError("x")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [error])])
    assert sole_exception(nested) is error
    assert sole_exception(ExceptionGroup("two", [error, KeyError("k")])) is None
    assert leaves(ExceptionGroup("two", [ExceptionGroup("inner", [error]), KeyError("k")]))[0] is error
    with pytest.raises(ValueError, match="x"), unwrapped():
        raise nested
    with pytest.raises(ExceptionGroup), unwrapped():
        raise ExceptionGroup("two", [error, KeyError("k")])


# ---------------------------------------------------------------- Nova's system prompt


@pytest.mark.parametrize(("given", "sent"), [(None, DEFAULT_SYSTEM_PROMPT), ("Be terse.", "Be terse.")])
async def test_nova_sends_its_default_system_prompt_only_when_the_agent_has_none(given: str | None, sent: str) -> None:
    # A system prompt of the agent's wins over any default; without one, the documented default goes.
    kwargs: dict[str, Any] = {} if given is None else {"default_system_prompt": "never sent"}
    async with NovaSonicSimulator(credentials={AKID: SECRET}) as sim:
        model = BidiNovaSonicModel(
            endpoint_url=sim.endpoint_url,
            region="us-east-1",
            credentials=Credentials(AKID, SECRET),
            verify=sim.ca_cert_pem_path,
            **kwargs,
        )
        with anyio.fail_after(10):
            async with model.connect(ConnectRequest(system_prompt=given)):
                pass
    assert sim.streams[0].system_prompt == sent
    with pytest.raises(BidiUsageError, match="default_system_prompt"):
        BidiNovaSonicModel(credentials=Credentials(AKID, SECRET), default_system_prompt=" ")


def test_record_to_is_a_path_and_record_audio_a_bool() -> None:
    from adapters.connection import ConnectionOptions

    options = ConnectionOptions(record_to="call.jsonl", record_audio=False)
    assert "record_to='call.jsonl'" in repr(options) and "record_audio=False" in repr(options)
    for bad in ({"record_to": 5}, {"record_to": ""}, {"record_audio": "no"}):
        with pytest.raises(BidiUsageError):
            ConnectionOptions(**bad)  # type: ignore[arg-type]
