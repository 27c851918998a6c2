"""Whatever the server sends, the Gemini session yields port events or raises a typed error, and ends:
never another exception, never a hang. And each way a connection can end maps to the error the core
needs to decide (retry, resume, give up).

The frames go through the real session over a real WebSocket: a tiny wsproto server on 127.0.0.1 reads
the client's setup, sends a script of frames (binary, as the service does), then ends the connection
the way the test says (a close frame with a code, or a TCP drop).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import anyio.abc
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Request

from adapters.gemini import BidiGeminiLiveModel
from ports.errors import (
    BidiConnectionError,
    BidiError,
    BidiProviderError,
    BidiResumptionRejectedError,
)
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
)
from ports.messages import TextMessage
from ports.model import CancelResponse, ConnectRequest
from tests.support import receive_until_end

KEY = "AIza-fuzz-key-0123456789abcdef"
SETUP_COMPLETE = b'{"setupComplete": {}}'


@attrs.frozen
class Close:
    code: int
    reason: str = ""


DROP = "drop"


@attrs.frozen
class Await:
    """Wait until the client has sent this many messages (the setup included)."""

    messages: int


class RawServer:
    """One connection: accept, read the setup, play ``script`` (frames to send, :class:`Await`, then a
    :class:`Close` or :data:`DROP`), keep every message the client sent, parsed."""

    def __init__(self, script: Sequence[Any]) -> None:
        self.script = list(script)
        self.received: list[Any] = []
        self._changed = anyio.Event()
        self.closed = anyio.Event()  # the client's side ended (close frame or EOF)

    async def wait_received(self, n: int) -> None:
        while len(self.received) < n:
            await self._changed.wait()

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        stream = await listener.accept()
        async with stream:
            ws = WSConnection(ConnectionType.SERVER)

            async def read_some() -> None:
                ws.receive_data(await stream.receive())
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send(ws.send(AcceptConnection()))
                    elif isinstance(event, Message):
                        self.received.append(json.loads(event.data))
                        self._changed.set()
                        self._changed = anyio.Event()

            try:
                while not self.received:
                    await read_some()  # the handshake and the setup
                for action in self.script:
                    if action == DROP:
                        return  # leaving the block closes TCP without a close frame
                    if isinstance(action, Close):
                        await stream.send(ws.send(CloseConnection(code=action.code, reason=action.reason)))
                        break
                    if isinstance(action, Await):
                        while len(self.received) < action.messages:
                            await read_some()
                        continue
                    data = action if isinstance(action, bytes) else action.encode()
                    await stream.send(ws.send(BytesMessage(data=data)))
                while True:  # drain the client's messages and its close reply
                    await read_some()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            finally:
                self.closed.set()


@asynccontextmanager
async def serving(script: Sequence[Any]) -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer(script)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(server.serve, cast(anyio.abc.SocketListener, listener.listeners[0]))
        yield server, f"ws://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def collect(
    script: Sequence[Any], request: ConnectRequest | None = None, into: list[Any] | None = None, **model_kwargs: Any
) -> list[BidiEvent]:
    """Connect, read every event until the session ends (into ``into`` if given); raises what the
    session raises (never wrapped in the server's task group)."""
    seen: list[BidiEvent] = [] if into is None else into
    error: BaseException | None = None
    with anyio.fail_after(10):
        async with serving(script) as (_server, url):
            model = BidiGeminiLiveModel(api_key=KEY, base_url=url, **model_kwargs)
            try:
                async with model.connect(request or ConnectRequest()) as session:
                    await receive_until_end(session, seen)
            except Exception as exc:
                error = exc
    assert all(isinstance(event, BidiEvent) for event in seen)
    if error is not None:
        raise error
    return seen


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def audio(pcm: bytes) -> bytes:
    data = base64.b64encode(pcm).decode()
    return frame(
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}
            }
        }
    )


# ---------------------------------------------------------------- fuzz

TOP = [
    "setupComplete",
    "serverContent",
    "toolCall",
    "toolCallCancellation",
    "goAway",
    "sessionResumptionUpdate",
    "usageMetadata",
]
FIELDS = [
    "modelTurn", "parts", "inlineData", "mimeType", "data", "text", "turnComplete", "generationComplete",
    "interrupted", "inputTranscription", "outputTranscription", "functionCalls", "id", "name", "args", "ids",
    "timeLeft", "newHandle", "resumable", "lastConsumedClientMessageIndex", "promptTokenCount",
    "responseTokensDetails", "modality", "tokenCount",
]  # fmt: skip
NAMES = st.sampled_from(FIELDS).flatmap(lambda f: st.sampled_from([f, _snake(f)]))
LEAVES = st.none() | st.booleans() | st.integers(-5, 10**12) | st.text(max_size=12) | st.just("AAAA") | st.just("50s")
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4), max_leaves=10
)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


frames = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=48),
    st.dictionaries(st.sampled_from(TOP), VALUES, min_size=1, max_size=2).map(frame),
    st.binary(max_size=64).map(audio),
    st.text(min_size=1, max_size=12).map(lambda t: frame({"x" + t: {"anything": [1, 2]}})),
)
endings = st.sampled_from(
    [Close(1000), Close(1007, "bad"), Close(1008), Close(1011, "Internal error"), DROP, Close(4000)]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(frames, max_size=8), ending=endings, before_setup=st.booleans())
async def test_any_server_frames_end_in_events_or_a_typed_error(
    script: list[Any], ending: Any, before_setup: bool
) -> None:
    full = [*script, SETUP_COMPLETE] if before_setup else [SETUP_COMPLETE, *script]
    try:
        events = await collect([*full, ending])
    except BidiError:
        return  # a typed error is an acceptable ending
    assert all(isinstance(e, BidiEvent) for e in events)
    # Every response started was ended, or the connection ended mid-response.
    starts = [e.response_id for e in events if isinstance(e, BidiResponseStartEvent)]
    assert len(starts) == len(set(starts))


# ---------------------------------------------------------------- how connections end


@pytest.mark.parametrize(
    ("ending", "error", "code", "retryable"),
    [
        (Close(1007, "Request contains an invalid argument."), BidiProviderError, "invalid_argument", False),
        (
            Close(1008, "Operation is not implemented, or supported, or enabled."),
            BidiProviderError,
            "policy_violation",
            False,
        ),
        (Close(1011, "Internal error occurred."), BidiProviderError, "internal_error", True),
        (Close(4003, "custom"), BidiConnectionError, None, True),
        (DROP, BidiConnectionError, None, True),
    ],
    ids=["1007", "1008", "1011", "other", "abrupt"],
)
async def test_close_codes_mid_session(ending: Any, error: type[BidiError], code: str | None, retryable: bool) -> None:
    with pytest.raises(error) as caught:
        await collect([SETUP_COMPLETE, audio(b"\x01\x00" * 240), ending])
    assert type(caught.value) is error
    assert getattr(caught.value, "retryable", None) is retryable
    if code is not None:
        assert caught.value.code == code  # type: ignore[attr-defined]
        assert isinstance(ending, Close) and ending.reason in str(caught.value)


async def test_a_normal_close_ends_receive_but_after_go_away_it_is_the_announced_limit() -> None:
    """docs/protocols/gemini.md#ending-a-session: 1000 alone ends the session; 1000 after
    ``goAway`` is the connection limit it announced, which a new connection continues."""
    assert await collect([SETUP_COMPLETE, Close(1000)]) == []
    seen: list[object] = []
    with pytest.raises(BidiConnectionError, match="goAway") as caught:
        await collect([SETUP_COMPLETE, frame({"goAway": {"timeLeft": "1.5s"}}), Close(1000)], into=seen)
    assert caught.value.retryable
    assert seen == [BidiConnectionExpiringEvent(time_left_s=1.5)]


async def test_a_stale_handle_is_a_resumption_rejection() -> None:
    request = ConnectRequest(resume_handle="stale-handle")
    with pytest.raises(BidiResumptionRejectedError) as caught:
        await collect([Close(1007, "Session resumption handle is invalid or expired.")], request)
    assert caught.value.retryable is True
    assert caught.value.code == "resumption_rejected"
    # Without a handle the same close is a plain invalid argument.
    with pytest.raises(BidiProviderError) as plain:
        await collect([Close(1007, "Request contains an invalid argument.")])
    assert not isinstance(plain.value, BidiResumptionRejectedError)
    assert plain.value.code == "invalid_argument"


async def test_close_before_setup_complete_and_no_setup_complete() -> None:
    with pytest.raises(BidiConnectionError, match="before completing the setup"):
        await collect([Close(1000)])
    with pytest.raises(BidiConnectionError, match="did not complete the setup"):
        await collect([frame({"x": 1})], setup_timeout_s=0.2)


async def test_a_frame_that_is_not_json_is_an_error_event_not_the_end() -> None:
    """One bad frame in an intact stream costs that frame, not the connection (and the answer in progress),
    as with OpenAI and Nova Sonic. Before: a retryable BidiProtocolError, so a reconnect."""
    events: list[object] = []
    with pytest.raises(BidiConnectionError, match="goAway"):  # the announced end, after the marker
        await collect([SETUP_COMPLETE, b"{not json", b"\xff\xfe", frame({"goAway": {}}), Close(1000)], into=events)
    assert [(type(e), getattr(e, "code", None)) for e in events[:2]] == [(BidiErrorEvent, "protocol_error")] * 2
    assert "not JSON" in events[0].message  # type: ignore[attr-defined]


async def test_unknown_messages_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bidi_core.adapters.gemini")
    events: list[object] = []
    with pytest.raises(BidiConnectionError, match="goAway"):  # the announced end, after the marker
        await collect(
            [SETUP_COMPLETE, frame({"sessionStats": {"n": 1}}), frame({"goAway": {"timeLeft": "50s"}}), Close(1000)],
            into=events,
        )
    assert events == [BidiConnectionExpiringEvent(time_left_s=50.0)]
    assert any("sessionStats" in r.getMessage() for r in caplog.records)


async def test_a_known_field_of_the_wrong_shape_is_an_error_event_not_the_end() -> None:
    events: list[object] = []
    with pytest.raises(BidiConnectionError, match="goAway"):  # the announced end, after the marker
        await collect(
            [SETUP_COMPLETE, frame({"serverContent": {"turnComplete": "yes"}}), frame({"goAway": {}}), Close(1000)],
            into=events,
        )
    assert isinstance(events[0], BidiErrorEvent) and events[0].code == "protocol_error"
    assert events[1] == BidiConnectionExpiringEvent(time_left_s=0.0)


# ---------------------------------------------------------------- translation


def turn(*messages: dict[str, Any]) -> list[bytes]:
    return [frame(m) for m in messages]


def to_snake(value: Any) -> Any:
    """The same message in snake_case keys (proto3 JSON allows both); free-form values untouched."""
    if isinstance(value, dict):
        return {(_snake(k) if k != "args" else k): (v if k == "args" else to_snake(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [to_snake(v) for v in value]
    return value


MIME = "audio/pcm;rate=24000"
USAGE = {
    "promptTokenCount": 10,
    "responseTokenCount": 5,
    "totalTokenCount": 15,
    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}],
}
TURN: list[dict[str, Any]] = [
    {"setupComplete": {}},
    {"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": True}},
    {"serverContent": {"inputTranscription": {"text": "what's "}}},
    {"serverContent": {"inputTranscription": {"text": "up"}}},
    {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": MIME, "data": "AQABAA=="}}]}}},
    {"serverContent": {"outputTranscription": {"text": "Not "}}},
    {"serverContent": {"outputTranscription": {"text": "much."}}},
    {"serverContent": {"generationComplete": True}},
    {"serverContent": {"turnComplete": True}, "usageMetadata": USAGE},
    {"sessionResumptionUpdate": {}},
    {"sessionResumptionUpdate": {"newHandle": "h-2", "resumable": True}},
]  # fmt: skip


@pytest.mark.parametrize("case", ["camelCase", "snake_case"])
async def test_a_spoken_turn_in_either_case(case: str) -> None:
    messages = TURN if case == "camelCase" else [to_snake(m) for m in TURN]
    events = await collect([*[frame(m) for m in messages], Close(1000)])
    rid = "gemini-"
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "BidiResumptionUpdateEvent",
        "BidiTranscriptStreamEvent",  # user delta
        "BidiTranscriptStreamEvent",  # user delta
        "BidiTranscriptStreamEvent",  # user final: the answer starts
        "BidiResponseStartEvent",
        "BidiAudioStreamEvent",
        "BidiTranscriptStreamEvent",
        "BidiTranscriptStreamEvent",
        "BidiTranscriptStreamEvent",  # assistant final at generationComplete
        "BidiUsageEvent",
        "BidiResponseCompleteEvent",
        "BidiResumptionUpdateEvent",  # the empty update is no event
    ]
    transcripts = [e for e in events if isinstance(e, BidiTranscriptStreamEvent)]
    assert [(t.role, t.text, t.is_final) for t in transcripts] == [
        ("user", "what's ", False),
        ("user", "what's up", False),
        ("user", "what's up", True),
        ("assistant", "Not ", False),
        ("assistant", "Not much.", False),
        ("assistant", "Not much.", True),
    ]
    start = events[4]
    assert isinstance(start, BidiResponseStartEvent) and start.response_id.startswith(rid)
    assert isinstance(events[5], BidiAudioStreamEvent) and events[5].audio == b"\x01\x00\x01\x00"
    assert events[9] == BidiUsageEvent(10, 5, 15, modality_details=(ModalityUsage("audio", 0, 5),))
    assert events[10] == BidiResponseCompleteEvent(start.response_id, "complete")
    updates = [e for e in events if isinstance(e, BidiResumptionUpdateEvent)]
    assert [(u.handle, u.inputs_included) for u in updates] == [("h-1", None), ("h-2", None)]


async def test_a_late_piece_of_the_last_user_turn_is_not_taken_for_new_speech() -> None:
    """Input transcriptions come in no guaranteed order: a piece of the user's
    last words arriving after the answer completed must not be reported as the
    user talking again (the core would silence the answer still playing). With
    nothing loud from the microphone since the answer began, it is not."""
    events = await collect(
        [
            SETUP_COMPLETE,
            *turn(
                {"serverContent": {"inputTranscription": {"text": "what's"}}},
                {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": MIME, "data": "AQABAA=="}}]}}},
                {"serverContent": {"generationComplete": True}},
                {"serverContent": {"turnComplete": True}},
                {"serverContent": {"inputTranscription": {"text": " the time"}}},
            ),
            Close(1000),
        ]
    )
    assert not [e for e in events if isinstance(e, BidiSpeechStartedEvent)]
    assert isinstance(events[-1], BidiTranscriptStreamEvent) and events[-1].text == " the time"


async def test_interrupted_ends_the_response_and_cancels_tools() -> None:
    events = await collect(
        [
            SETUP_COMPLETE,
            *turn(
                {"serverContent": {"outputTranscription": {"text": "Once upon"}}},
                {"serverContent": {"interrupted": True}},
                {"toolCallCancellation": {"ids": ["c1", "c2"]}},
                {"serverContent": {"turnComplete": True}, "usageMetadata": {"promptTokenCount": 3}},
            ),
            Close(1000),
        ]
    )
    rid = events[0].response_id  # type: ignore[attr-defined]
    assert events[1:] == [
        BidiTranscriptStreamEvent("Once upon", "Once upon", "assistant", False, rid),
        BidiSpeechStartedEvent(),
        BidiTranscriptStreamEvent("", "Once upon", "assistant", True, rid),
        BidiResponseCompleteEvent(rid, "interrupted"),
        BidiToolCancelEvent(("c1", "c2")),
        BidiUsageEvent(3, 0, 3),
    ]


async def test_tool_calls_end_the_response_and_results_carry_id_and_name() -> None:
    script = [
        SETUP_COMPLETE,
        *turn(
            {"toolCall": {"functionCalls": [{"id": "c1", "name": "a", "args": {"x_y": 1}}, {"name": "b"}]}},
        ),
    ]
    with anyio.fail_after(10):
        async with serving(script) as (server, url):
            model = BidiGeminiLiveModel(api_key=KEY, base_url=url)
            async with model.connect(ConnectRequest()) as session:
                events = [await session.receive()]
                while not isinstance(events[-1], BidiResponseCompleteEvent):
                    events.append(await session.receive())
                uses = [e for e in events if isinstance(e, BidiToolUseEvent)]
                assert [(u.name, dict(u.input)) for u in uses] == [("a", {"x_y": 1}), ("b", {})]
                assert uses[0].tool_use_id == "c1"
                assert isinstance(events[-1], BidiResponseCompleteEvent) and events[-1].stop_reason == "tool_use"
                for use in uses:
                    await session.send(BidiToolResultEvent(use.tool_use_id, use.name, "success", "ok"))
                await server.wait_received(3)
    responses = [m["toolResponse"]["functionResponses"][0] for m in server.received[1:3]]
    # The call without an id gets one of ours for the core, and the service gets its response without it.
    assert responses == [
        {"id": "c1", "name": "a", "response": {"output": "ok"}},
        {"name": "b", "response": {"output": "ok"}},
    ]


async def test_transparent_updates_count_the_items_the_handle_holds() -> None:
    """Client messages: setup 0, history 1, then one per item (2, 3, 4; the cancel in between has none).
    The service consumed up to message 3: the handle holds the first three items (the cancel included)."""
    update = {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True, "lastConsumedClientMessageIndex": "3"}}
    script = [SETUP_COMPLETE, Await(5), frame(update), Close(1000)]
    request = ConnectRequest(history=(TextMessage("user", "earlier"),))
    with anyio.fail_after(10):
        async with serving(script) as (server, url):
            config = {"session_resumption": {"transparent": True}}
            model = BidiGeminiLiveModel(api_key=KEY, base_url=url, provider_config=config)
            async with model.connect(request) as session:
                await session.send(BidiTextInputEvent("a"))
                await session.send(CancelResponse("r"))
                await session.send(BidiTextInputEvent("b"))
                await session.send(BidiTextInputEvent("c"))
                events = await receive_until_end(session)
    assert events == [BidiResumptionUpdateEvent("h", inputs_included=3)]
    assert [next(iter(m)) for m in server.received] == ["setup", "clientContent", *["realtimeInput"] * 3]
    assert server.received[0]["setup"]["sessionResumption"] == {"transparent": True}


async def test_cancelled_mid_setup_leaves_nothing_running_and_closes_the_socket() -> None:
    """The caller gives up while the service has the setup but has not answered: connect() ends at once,
    with the socket closed and no task of ours left behind."""
    before = {t.id for t in anyio.get_running_tasks()}
    with anyio.fail_after(10):
        async with serving([Await(1)]) as (server, url):
            model = BidiGeminiLiveModel(api_key=KEY, base_url=url, setup_timeout_s=600)
            entered = False
            async with anyio.create_task_group() as tg:

                async def connect() -> None:
                    nonlocal entered
                    async with model.connect(ConnectRequest()):
                        entered = True

                tg.start_soon(connect)
                await server.wait_received(1)  # the setup arrived; setupComplete never will
                tg.cancel_scope.cancel()
            assert not entered
            leftover = [t.name for t in anyio.get_running_tasks() if t.id not in before]
            assert [n for n in leftover if "serve" not in n] == []
            await server.closed.wait()  # the server saw the client go
