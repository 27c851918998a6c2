"""Whatever the server sends, the Nova Sonic session yields port events or a
typed error, and ends: never another exception, never a hang, nothing left
running.

The server is a tiny raw HTTP/2 server on 127.0.0.1 (``h2`` over TLS with a
``trustme`` CA) that answers the request and then sends what hypothesis
generates: event-stream messages carrying events of the right and the wrong
shape, modeled exceptions, unmodeled errors, garbage bytes, split across DATA
frames at any point; then it ends the stream, resets it, sends GOAWAY or
drops the socket. Other servers here refuse the request, go silent, or never
end the stream.
"""

from __future__ import annotations

import base64
import itertools
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from anyio.streams.tls import TLSStream
from botocore.credentials import Credentials
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.nova_sonic import BidiNovaSonicModel
from adapters.nova_sonic.eventstream import encode_message
from ports.errors import BidiConnectionError, BidiError, BidiProviderError
from ports.events import (
    BidiAudioStreamEvent,
    BidiEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.model import ConnectRequest
from tests.support import our_tasks, receive_until_end

_CA = trustme.CA()
_LEAF = _CA.issue_cert("127.0.0.1")


def server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _LEAF.configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    _CA.configure_trust(ctx)
    return ctx


def model_at(port: int, **kwargs: Any) -> BidiNovaSonicModel:
    return BidiNovaSonicModel(
        endpoint_url=f"https://127.0.0.1:{port}",
        region="us-east-1",
        credentials=Credentials("AKIDFUZZ", "fuzz-secret-key-000000"),
        ssl_context=client_context(),
        **{"close_timeout_s": 1.0, **kwargs},
    )


Script = Callable[[h2.connection.H2Connection, int, TLSStream], Awaitable[None]]


async def serve_once(listener: anyio.abc.SocketListener, script: Script, respond: bool = True) -> None:
    """Accept one connection, wait for the request, run ``script``, then read until the client leaves."""
    tcp = await listener.accept()
    try:
        stream = await TLSStream.wrap(tcp, server_side=True, ssl_context=server_context(), standard_compatible=False)
    except (anyio.BrokenResourceError, anyio.EndOfStream, OSError, ssl.SSLError):
        return
    async with stream:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        try:
            await stream.send(conn.data_to_send())
            stream_id = None
            while stream_id is None:
                for event in conn.receive_data(await stream.receive()):
                    if isinstance(event, h2.events.RequestReceived):
                        stream_id = event.stream_id
                await stream.send(conn.data_to_send())
            if not respond:
                await anyio.sleep_forever()
            await script(conn, stream_id, stream)
            await stream.send(conn.data_to_send())
            while True:  # read the client's events and goodbye, granting it window
                for event in conn.receive_data(await stream.receive()):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                await stream.send(conn.data_to_send())
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, h2.exceptions.ProtocolError):
            pass


async def read_setup(conn: h2.connection.H2Connection, stream: TLSStream) -> None:
    """Read the client's setup (session start, prompt start, the system prompt: five events)."""
    received = 0
    while received < 5:
        for h2_event in conn.receive_data(await stream.receive()):
            if isinstance(h2_event, h2.events.DataReceived):
                received += 1
                conn.acknowledge_received_data(h2_event.flow_controlled_length, h2_event.stream_id)
        await stream.send(conn.data_to_send())


async def run_client(model: BidiNovaSonicModel) -> tuple[list[BidiEvent], BaseException | None]:
    seen: list[BidiEvent] = []
    try:
        async with model.connect(ConnectRequest(system_prompt="fuzz")) as session:
            await receive_until_end(session, seen)
    except BidiError as exc:
        return seen, exc
    assert all(isinstance(event, BidiEvent) for event in seen)
    return seen, None


async def with_server(script: Script, client: Callable[[int], Awaitable[Any]], *, respond: bool = True) -> Any:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve_once, listener.listeners[0], script, respond)
        result = await client(port)
        tg.cancel_scope.cancel()
    return result


# ---------------------------------------------------------------- generated server output

EVENT_NAMES = [
    "completionStart",
    "contentStart",
    "textOutput",
    "audioOutput",
    "toolUse",
    "contentEnd",
    "usageEvent",
    "completionEnd",
    "somethingNew",
]
FIELDS = [
    "contentId",
    "type",
    "role",
    "content",
    "stopReason",
    "toolName",
    "toolUseId",
    "additionalModelFields",
    "totalInputTokens",
    "totalOutputTokens",
    "totalTokens",
    "details",
]
WORDS = st.sampled_from(
    [
        "c1",
        "c2",
        "TEXT",
        "AUDIO",
        "TOOL",
        "USER",
        "ASSISTANT",
        "END_TURN",
        "PARTIAL_TURN",
        "INTERRUPTED",
        "TOOL_USE",
        '{"generationStage":"FINAL"}',
        '{"generationStage":"SPECULATIVE"}',
        '{ "interrupted" : true }',
        '{"city": "Paris"}',
        base64.b64encode(b"\x01\x00" * 40).decode(),
        "not base64!",
    ]
)
VALUES = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=10) | WORDS | st.lists(WORDS, max_size=2)
EVENT_HEADERS = {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}


def chunk(event: Any) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    return encode_message(EVENT_HEADERS, payload)


events = st.builds(
    lambda name, body: {"event": {name: body}},
    st.sampled_from(EVENT_NAMES),
    st.dictionaries(st.sampled_from(FIELDS), VALUES | st.dictionaries(st.sampled_from(FIELDS), VALUES), max_size=6),
)
survivable = st.one_of(
    events.map(chunk),
    st.builds(chunk, VALUES),  # JSON that is not an event
    st.binary(max_size=40).map(lambda b: encode_message(EVENT_HEADERS, b)),  # a payload that is not JSON
    st.builds(lambda name: encode_message({":message-type": "event", ":event-type": name}, b"{}"), st.text(max_size=8)),
)
"""Messages after which the stream goes on (the session reports or skips them)."""
fatal = st.one_of(
    st.builds(
        lambda kind, text: encode_message(
            {":message-type": "exception", ":exception-type": kind, ":content-type": "application/json"},
            json.dumps({"message": text}).encode(),
        ),
        st.sampled_from(["validationException", "modelTimeoutException", "throttlingException", "weirdException"]),
        st.text(max_size=30),
    ),
    st.builds(
        lambda code, text: encode_message({":message-type": "error", ":error-code": code, ":error-message": text}, b""),
        st.text(max_size=10),
        st.text(max_size=30),
    ),
    st.builds(lambda kind: encode_message({":message-type": kind}, b"{}"), st.text(max_size=8)),
    st.binary(min_size=1, max_size=40),  # framing garbage
)
"""Messages that end the stream with a typed error."""
bodies = st.builds(
    lambda head, tail: [*head, *tail],
    st.lists(st.one_of(events.map(chunk), events.map(chunk), events.map(chunk), survivable), max_size=12),
    st.lists(fatal, max_size=1),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    to_send=bodies,
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=6),
    ending=st.sampled_from(["end", "rst", "goaway", "drop"]),
)
async def test_any_server_output_ends_in_events_or_a_typed_error(
    to_send: list[bytes], cuts: list[int], ending: str
) -> None:
    body = b"".join(to_send)

    async def script(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")])
        await read_setup(conn, stream)
        points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
        for start, end in itertools.pairwise(points):
            for offset in range(start, end, 16384):
                conn.send_data(sid, body[offset : min(end, offset + 16384)])
        if ending == "end":
            conn.end_stream(sid)
        elif ending == "rst":
            conn.reset_stream(sid, error_code=2)
        elif ending == "goaway":
            conn.close_connection(error_code=0)
        await stream.send(conn.data_to_send())
        if ending in ("goaway", "drop"):
            await stream.aclose()

    with anyio.fail_after(15):
        seen, error = await with_server(script, lambda port: run_client(model_at(port)))
    assert all(isinstance(e, BidiEvent) for e in seen)
    event(f"{'events' if seen else 'no events'}, {type(error).__name__}")
    if ending != "end":
        assert error is not None  # a reset, GOAWAY or dropped socket is never a normal end
    assert our_tasks() == set()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([400, 403, 404, 429, 500, 503]), body=st.binary(max_size=100) | st.just(b""))
async def test_refusals_are_typed_errors(status: int, body: bytes) -> None:
    async def script(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", str(status)), ("x-amzn-requestid", "req-fuzz")])
        conn.send_data(sid, body, end_stream=True)

    with anyio.fail_after(15):
        seen, error = await with_server(script, lambda port: run_client(model_at(port)))
    assert seen == []
    assert isinstance(error, BidiProviderError)
    assert error.retryable == (status in (429, 500, 503))
    assert "req-fuzz" in str(error)


async def test_an_exception_quoting_a_secret_in_a_raw_body_is_redacted_before_it_is_cut() -> None:
    """A modeled exception whose payload is not JSON is quoted only in part; a secret
    straddling the cut must not leave its first half in the error."""
    secret = "fuzz-secret-key-000000"  # model_at's secret key, standing in for any secret the service echoes

    async def script(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])
        await read_setup(conn, stream)
        headers = {":message-type": "exception", ":exception-type": "validationException"}
        conn.send_data(sid, encode_message(headers, ("z" * 290 + secret).encode()), end_stream=True)

    with anyio.fail_after(15):
        _seen, error = await with_server(script, lambda port: run_client(model_at(port)))
    assert isinstance(error, BidiProviderError) and error.code == "ValidationException"
    assert "fuzz-sec" not in str(error)


# ---------------------------------------------------------------- silence and stubbornness


async def test_a_silent_server_is_a_connection_error_not_a_hang() -> None:
    async def nothing(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        pass

    async def client(port: int) -> Any:
        model_here = model_at(port, read_timeout_s=0.6, response_timeout_s=0.2)
        return await run_client(model_here)

    with anyio.fail_after(10):
        seen, error = await with_server(nothing, client, respond=False)
    assert seen == []
    assert isinstance(error, BidiConnectionError) and error.retryable
    assert "sent nothing" in str(error)
    assert our_tasks() == set()


async def test_a_quiet_server_that_answers_pings_stays_connected() -> None:
    async def quiet_then_speak(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])
        await stream.send(conn.data_to_send())
        pings = 0
        with anyio.move_on_after(3.0):  # three read timeouts of silence, but for the pings' answers
            while True:
                for h2_event in conn.receive_data(await stream.receive()):
                    if isinstance(h2_event, h2.events.PingReceived):
                        pings += 1
                    elif isinstance(h2_event, h2.events.DataReceived):
                        conn.acknowledge_received_data(h2_event.flow_controlled_length, h2_event.stream_id)
                await stream.send(conn.data_to_send())  # h2 answers pings by itself
        assert pings >= 2
        conn.send_data(sid, chunk(usage(1, 2)), end_stream=True)

    async def client(port: int) -> Any:
        # 1 s: the ping goes after 2/3 of it, so a pong has a third of a second, which a machine busy
        # with other work still allows (0.5 s left 0.17 s, and a loaded run missed it).
        return await run_client(model_at(port, read_timeout_s=1.0))

    with anyio.fail_after(15):
        seen, error = await with_server(quiet_then_speak, client)
    assert error is None
    assert summary(seen) == ["usage 1/2"]


async def test_a_server_that_answers_pings_but_grants_no_window_fails_the_setup() -> None:
    """The setup waits for flow-control credit without a bound of its own; a server
    that answers pings (so the watchdog is content) but never opens its window must
    fail the connection, not hang ``connect()`` forever."""

    async def starve(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])
        await stream.send(conn.data_to_send())
        while True:  # h2 answers the pings; no DATA is ever acknowledged
            conn.receive_data(await stream.receive())
            await stream.send(conn.data_to_send())

    async def client(port: int) -> BaseException | None:
        try:
            async with model_at(port, read_timeout_s=0.6).connect(ConnectRequest(system_prompt="s" * 100_000)):
                pass
        except BidiConnectionError as exc:
            return exc
        return None

    with anyio.fail_after(10):
        error = await with_server(starve, client)
    assert isinstance(error, BidiConnectionError) and error.retryable
    assert "no flow-control credit" in str(error)
    assert our_tasks() == set()


async def test_closing_is_bounded_when_the_server_never_ends_the_stream() -> None:
    async def accept_forever(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])

    async def client(port: int) -> float:
        model = model_at(port)
        async with model.connect(ConnectRequest()):
            started = anyio.current_time()
        return anyio.current_time() - started

    with anyio.fail_after(10):
        closing_s = await with_server(accept_forever, client)
    assert closing_s < 5  # close_timeout_s is 1 s: the polite goodbye gave up instead of waiting forever
    assert our_tasks() == set()


@pytest.mark.parametrize("where", ["setup", "receiving"])
async def test_cancellation_leaves_nothing_running(where: str) -> None:
    async def accept(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])

    async def client(port: int) -> None:
        model = model_at(port)
        with anyio.CancelScope() as scope:
            async with model.connect(ConnectRequest()) as session:
                if where == "setup":
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
                await receive_until_end(session)
                scope.cancel()  # pragma: no cover - receive() only ends when the connection does
        assert scope.cancelled_caught or where == "receiving"

    async def cancel_soon(port: int) -> None:
        with anyio.move_on_after(0.3):
            await client(port)

    with anyio.fail_after(10):
        await with_server(accept, cancel_soon if where == "receiving" else client)
    assert our_tasks() == set()


async def test_a_cancelled_conversation_does_not_wait_for_the_polite_goodbye() -> None:
    """Cancelled while connected: the reader is cancelled too, so the server's end of the stream
    could never be read; waiting for it would hold the cancellation for the whole close timeout
    (60 s here, far beyond this test's bound)."""

    async def accept(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])

    async def client(port: int) -> None:
        model = model_at(port, close_timeout_s=60.0)
        with anyio.CancelScope() as scope:
            async with model.connect(ConnectRequest()):
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught

    with anyio.fail_after(20):
        await with_server(accept, client)
    assert our_tasks() == set()


async def test_cancelled_in_the_tls_handshake_or_waiting_for_the_response_leaves_nothing_running() -> None:
    """The two waits before ``connect()`` yields: a server that takes the TCP connection
    but never answers TLS, and one that reads the setup but never sends its headers."""

    async def mute_tls(listener: anyio.abc.SocketListener) -> None:
        async with await listener.accept() as tcp:
            await tcp.receive()  # the ClientHello, never answered
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(mute_tls, listener.listeners[0])
        with anyio.fail_after(5), anyio.move_on_after(0.3) as scope:
            async with model_at(port).connect(ConnectRequest()):
                pass  # pragma: no cover - the handshake never completes
        assert scope.cancelled_caught
        tg.cancel_scope.cancel()

    async def never_answer(port: int) -> tuple[bool, float]:
        with anyio.fail_after(5), anyio.move_on_after(0.3) as scope:
            async with model_at(port, response_timeout_s=30, close_timeout_s=0.2).connect(ConnectRequest()):
                pass  # pragma: no cover - the response never comes
        return scope.cancelled_caught, anyio.current_time() - scope.deadline

    cancelled, closing_s = await with_server(lambda conn, sid, stream: anyio.sleep_forever(), never_answer)
    assert cancelled
    # The polite close gives up after close_timeout_s; the socket then closes at once, not after
    # waiting (2 s) for a TLS close_notify this server never sends.
    assert closing_s < 1.5
    assert our_tasks() == set()


# ---------------------------------------------------------------- orders the simulator does not produce

PCM = base64.b64encode(b"\x01\x00" * 240).decode()  # 10 ms at 24 kHz
SPECULATIVE = '{"generationStage":"SPECULATIVE"}'
FINAL = '{"generationStage":"FINAL"}'


def start(cid: str, kind: str, role: str, stage: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"contentId": cid, "type": kind, "role": role}
    if stage:
        body["additionalModelFields"] = stage
    return {"event": {"contentStart": body}}


def text(cid: str, content: str) -> dict[str, Any]:
    return {"event": {"textOutput": {"contentId": cid, "content": content}}}


def audio(cid: str) -> dict[str, Any]:
    return {"event": {"audioOutput": {"contentId": cid, "content": PCM}}}


def end(cid: str, stop: str) -> dict[str, Any]:
    return {"event": {"contentEnd": {"contentId": cid, "stopReason": stop}}}


def usage(i: int, o: int) -> dict[str, Any]:
    return {"event": {"usageEvent": {"totalInputTokens": i, "totalOutputTokens": o, "totalTokens": i + o}}}


COMPLETION_END = {"event": {"completionEnd": {"stopReason": "END_TURN"}}}


def summary(events: list[BidiEvent]) -> list[str]:
    """Events in a short form: ``start r1``, ``audio r1``, ``partial Hi`` / ``final assistant Hi r1``, ..."""
    out = []
    for e in events:
        rid = getattr(e, "response_id", None)
        short = rid.rsplit("-", 1)[-1] if rid else "-"
        if isinstance(e, BidiResponseStartEvent):
            out.append(f"start {short}")
        elif isinstance(e, BidiResponseCompleteEvent):
            out.append(f"complete {short} {e.stop_reason}")
        elif isinstance(e, BidiAudioStreamEvent):
            out.append(f"audio {short}")
        elif isinstance(e, BidiTranscriptStreamEvent):
            out.append(f"{'final' if e.is_final else 'partial'} {e.role} {e.text} {short}")
        elif isinstance(e, BidiUsageEvent):
            out.append(f"usage {e.input_tokens}/{e.output_tokens}")
        elif isinstance(e, BidiToolUseEvent):
            out.append(f"tool {e.name} {dict(e.input)}")
        else:
            out.append(type(e).__name__)
    return out


SEQUENCES = {
    "final text ends the turn": (
        [
            start("c1", "TEXT", "USER", FINAL),
            text("c1", "Hello?"),
            end("c1", "END_TURN"),
            start("c2", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c2", "Hi there."),
            end("c2", "PARTIAL_TURN"),
            start("c3", "AUDIO", "ASSISTANT"),
            audio("c3"),
            audio("c3"),
            end("c3", "PARTIAL_TURN"),
            start("c4", "TEXT", "ASSISTANT", FINAL),
            text("c4", "Hi there."),
            end("c4", "END_TURN"),
            usage(10, 20),
            usage(15, 25),
            COMPLETION_END,
        ],
        [
            "final user Hello? -",
            "start r1",
            "partial assistant Hi there. r1",
            "audio r1",
            "audio r1",
            "final assistant Hi there. r1",
            "complete r1 complete",
            "usage 10/20",
            "usage 5/5",
        ],
    ),
    "two sentences, finals after the turn": (
        [
            start("c1", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c1", "One."),
            end("c1", "PARTIAL_TURN"),
            start("c2", "AUDIO", "ASSISTANT"),
            audio("c2"),
            end("c2", "PARTIAL_TURN"),
            start("c3", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c3", " Two."),
            end("c3", "PARTIAL_TURN"),
            start("c4", "AUDIO", "ASSISTANT"),
            audio("c4"),
            end("c4", "END_TURN"),
            start("c5", "TEXT", "ASSISTANT", FINAL),
            text("c5", "One."),
            end("c5", "PARTIAL_TURN"),
            start("c6", "TEXT", "ASSISTANT", FINAL),
            text("c6", "Two."),
            end("c6", "END_TURN"),
        ],
        [
            "start r1",
            "partial assistant One. r1",
            "audio r1",
            "partial assistant One. Two. r1",
            "audio r1",
            "complete r1 complete",
            "final assistant One. r1",
            "final assistant Two. r1",
        ],
    ),
    "barge-in marker inside the turn": (
        [
            start("c1", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c1", "Once upon"),
            end("c1", "PARTIAL_TURN"),
            start("c2", "AUDIO", "ASSISTANT"),
            audio("c2"),
            start("c3", "TEXT", "ASSISTANT", FINAL),
            text("c3", '{ "interrupted" : true }'),
            end("c3", "INTERRUPTED"),
            end("c2", "INTERRUPTED"),
            start("c4", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c4", "Yes?"),
            end("c4", "END_TURN"),
        ],
        [
            "start r1",
            "partial assistant Once upon r1",
            "audio r1",
            "BidiSpeechStartedEvent",
            "complete r1 interrupted",
            "start r2",
            "partial assistant Yes? r2",
            "complete r2 complete",
        ],
    ),
    "a tool without words, then one after words": (
        [
            start("t1", "TOOL", "TOOL"),
            {"event": {"toolUse": {"contentId": "t1", "toolName": "f", "toolUseId": "u1", "content": '{"a": 1}'}}},
            end("t1", "TOOL_USE"),
            start("c1", "TEXT", "ASSISTANT", SPECULATIVE),
            text("c1", "Let me check."),
            end("c1", "PARTIAL_TURN"),
            start("t2", "TOOL", "TOOL"),
            {"event": {"toolUse": {"contentId": "t2", "toolName": "g", "toolUseId": "u2", "content": "[1]"}}},
            end("t2", "TOOL_USE"),
        ],
        [
            # A call without words is still a response, as OpenAI reports a function-call-only turn.
            "start r1",
            "tool f {'a': 1}",
            "complete r1 tool_use",
            "start r2",
            "partial assistant Let me check. r2",
            "BidiErrorEvent",  # g's arguments are not an object
            "tool g {}",
            "complete r2 tool_use",
        ],
    ),
}


@pytest.mark.parametrize("name", list(SEQUENCES))
async def test_one_response_per_assistant_turn(name: str) -> None:
    sent, expected = SEQUENCES[name]
    body = b"".join(chunk(e) for e in sent)

    async def script(conn: h2.connection.H2Connection, sid: int, stream: TLSStream) -> None:
        conn.send_headers(sid, [(":status", "200")])
        await read_setup(conn, stream)
        conn.send_data(sid, body, end_stream=True)

    with anyio.fail_after(15):
        seen, error = await with_server(script, lambda port: run_client(model_at(port)))
    assert error is None
    assert summary(seen) == expected
