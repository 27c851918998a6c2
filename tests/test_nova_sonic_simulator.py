"""The Nova Sonic simulator over real TLS/HTTP/2 sockets, driven by a tiny client written here.

The client below (h2 + botocore's SigV4Auth + a 30-line encoder and chunk signer)
is written from docs/protocols/nova_sonic.md for these tests only, independently of both the
simulator and our adapter, so the simulator is checked against the protocol and
not against itself. Each behaviour test names the source it follows.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import ssl
import struct
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, cast

import anyio
import anyio.abc
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes, Settings
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.testing.nova_sonic_simulator import (
    Fault,
    NovaSonicSimulator,
    Reply,
    Rule,
    Scenario,
    SchemaError,
    ToolUse,
    check_output_event,
    loud,
    parse_event,
    silence,
)
from adapters.testing.nova_sonic_simulator.eventstream import MessageDecoder
from adapters.testing.nova_sonic_simulator.sigv4 import ChunkChain, RequestAuth

AKID = "AKIDTEST"
SECRET = "secret-key"
MODEL = "amazon.nova-2-sonic-v1:0"
PROMPT = "prompt-1"
TIMEOUT = 15


# ---------------------------------------------------------------------------- a minimal independent client


def _header(name: str, type_code: int, value: bytes) -> bytes:
    raw = name.encode()
    return struct.pack("!B", len(raw)) + raw + struct.pack("!B", type_code) + value


def _str_header(name: str, value: str) -> bytes:
    raw = value.encode()
    return _header(name, 7, struct.pack("!H", len(raw)) + raw)


def _frame(headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack("!II", 16 + len(headers) + len(payload), len(headers))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack("!I", binascii.crc32(body))


def _key(secret: str, date: str, region: str) -> bytes:
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "bedrock", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


class Endpoint(Protocol):
    """Where the client connects: a simulator here, or one in another process."""

    @property
    def port(self) -> int: ...

    def client_ssl_context(self) -> ssl.SSLContext: ...


class ChunkSigner:
    """The event signer: each signature covers the previous one, ``:date`` and the message
    (docs/protocols/nova_sonic.md#signing)."""

    def __init__(self, prior: str, secret: str = SECRET) -> None:
        self.prior = prior
        self.secret = secret

    def sign(self, inner: bytes, *, tamper: bool = False) -> bytes:
        """The outer message carrying ``inner`` (``tamper``: with one bit of its signature flipped)."""
        ms = int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
        amz = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        date_header = _header(":date", 8, struct.pack("!q", ms))
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz,
                f"{amz[:8]}/us-east-1/bedrock/aws4_request",
                self.prior,
                hashlib.sha256(date_header).hexdigest(),
                hashlib.sha256(inner).hexdigest(),
            ]
        )
        signature = hmac.new(_key(self.secret, amz[:8], "us-east-1"), sts.encode(), hashlib.sha256).digest()
        self.prior = signature.hex()
        if tamper:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        return _frame(date_header + _header(":chunk-signature", 6, struct.pack("!H", 32) + signature), inner)


class MiniClient:
    """Just enough of a Nova Sonic client to exercise the simulator; one stream at a time."""

    def __init__(self, stream: anyio.abc.ByteStream, h2: H2Connection, sim: Endpoint) -> None:
        self.stream = stream
        self.h2 = h2
        self.sim = sim
        self.sid = 0
        self.signer = ChunkSigner("")
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.body = b""
        self.received: list[dict[str, Any]] = []
        self.exceptions: list[tuple[str, str]] = []
        self.ended = False
        self.reset_code: int | None = None
        self.goaway_code: int | None = None
        self.data_frames = 0
        self.window_waits = 0
        self._buffer = EventStreamBuffer()
        self._lock = anyio.Lock()
        self._changed = anyio.Event()

    async def flush(self) -> None:
        async with self._lock:
            data = self.h2.data_to_send()
            if data:
                await self.stream.send(data)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(TIMEOUT):
            while not predicate():
                await self._changed.wait()

    async def read_loop(self) -> None:
        while True:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                self.ended = True
                self._notify()
                return
            for event in self.h2.receive_data(data):
                if isinstance(event, ResponseReceived):
                    headers = dict(cast(list[tuple[str, str]], event.headers))  # decoded: header_encoding
                    self.status = int(headers[":status"])
                    self.response_headers = headers
                elif isinstance(event, DataReceived):
                    assert event.data is not None and event.stream_id is not None
                    self.data_frames += 1
                    if self.status == 200:
                        self._buffer.add_data(event.data)
                        for message in self._buffer:
                            self._on_message(message.headers, message.payload)
                    else:
                        self.body += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                elif isinstance(event, StreamEnded):
                    self.ended = True
                elif isinstance(event, StreamReset):
                    self.reset_code = int(event.error_code or 0)
                elif isinstance(event, ConnectionTerminated):
                    self.goaway_code = int(event.error_code or 0)
            await self.flush()
            self._notify()

    def _on_message(self, headers: dict[str, Any], payload: bytes) -> None:
        if headers[":message-type"] == "exception":
            self.exceptions.append((headers[":exception-type"], json.loads(payload)["message"]))
            return
        assert headers[":message-type"] == "event" and headers[":event-type"] == "chunk"
        self.received.append(json.loads(base64.b64decode(json.loads(payload)["bytes"])))

    # ---------------------------------------------------------------- sending

    async def open(
        self,
        *,
        model: str = MODEL,
        secret: str = SECRET,
        access_key: str = AKID,
        token: str | None = None,
        query: str = "",
    ) -> None:
        self.sid = self.h2.get_next_available_stream_id()
        authority = f"127.0.0.1:{self.sim.port}"
        path = f"/model/{model.replace(':', '%3A')}/invoke-with-bidirectional-stream{query}"
        request = AWSRequest(
            method="POST",
            url=f"https://{authority}{path}",
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-EVENTS",
            },
        )
        SigV4Auth(Credentials(access_key, secret, token), "bedrock", "us-east-1").add_auth(request)
        self.signer = ChunkSigner(request.headers["Authorization"].rsplit("Signature=", 1)[1])
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", authority), (":path", path)]
        headers += [(k.lower(), str(v)) for k, v in request.headers.items()]
        self.h2.send_headers(self.sid, headers)
        await self.flush()

    def sign(self, inner: bytes, *, tamper: bool = False) -> bytes:
        return self.signer.sign(inner, tamper=tamper)

    async def send_raw_event(self, event_json: bytes, *, tamper: bool = False) -> None:
        inner_headers = (
            _str_header(":message-type", "event")
            + _str_header(":event-type", "chunk")
            + _str_header(":content-type", "application/json")
        )
        inner = _frame(inner_headers, json.dumps({"bytes": base64.b64encode(event_json).decode()}).encode())
        await self.send_data(self.sign(inner, tamper=tamper))

    async def send(self, name: str, body: dict[str, Any], *, tamper: bool = False) -> None:
        await self.send_raw_event(json.dumps({"event": {name: body}}).encode(), tamper=tamper)

    async def send_data(self, data: bytes, *, end_stream: bool = False) -> None:
        view = memoryview(data)
        while view:
            size = min(self.h2.local_flow_control_window(self.sid), self.h2.max_outbound_frame_size, len(view))
            if size <= 0:
                self.window_waits += 1
                await self._changed.wait()
                continue
            self.h2.send_data(self.sid, bytes(view[:size]))
            view = view[size:]
            await self.flush()
        if end_stream:
            self.h2.end_stream(self.sid)
            await self.flush()

    async def finish(self) -> None:
        """The signed empty frame, then END_STREAM (docs/protocols/nova_sonic.md#signing)."""
        await self.send_data(self.sign(b""), end_stream=True)

    # ---------------------------------------------------------------- conversation helpers

    async def start(self, *, tools: list[str] = (), system: str = "You are a test.", **prompt: Any) -> None:  # type: ignore[assignment]
        await self.send(
            "sessionStart", {"inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}}
        )
        body: dict[str, Any] = dict(PROMPT_START)
        if tools:
            body["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
            body["toolConfiguration"] = {
                "tools": [
                    {"toolSpec": {"name": t, "description": t, "inputSchema": {"json": json.dumps({"type": "object"})}}}
                    for t in tools
                ]
            }
        body.update(prompt)
        await self.send("promptStart", body)
        await self.text_content("SYSTEM", system, interactive=False)

    async def text_content(self, role: str, text: str, *, interactive: bool = True) -> None:
        name = str(uuid.uuid4())
        await self.send(
            "contentStart",
            {
                "promptName": PROMPT,
                "contentName": name,
                "type": "TEXT",
                "interactive": interactive,
                "role": role,
                "textInputConfiguration": {"mediaType": "text/plain"},
            },
        )
        await self.send("textInput", {"promptName": PROMPT, "contentName": name, "content": text})
        await self.send("contentEnd", {"promptName": PROMPT, "contentName": name})

    async def audio_start(self) -> str:
        name = str(uuid.uuid4())
        await self.send("contentStart", {**AUDIO_START, "contentName": name})
        return name

    async def audio(self, name: str, pcm: bytes, frame_ms: int = 32) -> None:
        step = frame_ms * 32
        for i in range(0, len(pcm), step):
            content = base64.b64encode(pcm[i : i + step]).decode()
            await self.send("audioInput", {"promptName": PROMPT, "contentName": name, "content": content})

    async def tool_result(self, tool_use_id: str, content: str) -> None:
        name = str(uuid.uuid4())
        await self.send(
            "contentStart",
            {
                "promptName": PROMPT,
                "contentName": name,
                "interactive": False,
                "type": "TOOL",
                "role": "TOOL",
                "toolResultInputConfiguration": {
                    "toolUseId": tool_use_id,
                    "type": "TEXT",
                    "textInputConfiguration": {"mediaType": "text/plain"},
                },
            },
        )
        await self.send("toolResult", {"promptName": PROMPT, "contentName": name, "content": content})
        await self.send("contentEnd", {"promptName": PROMPT, "contentName": name})

    async def close(self, *, audio: str | None = None) -> None:
        if audio is not None:
            await self.send("contentEnd", {"promptName": PROMPT, "contentName": audio})
        await self.send("promptEnd", {"promptName": PROMPT})
        await self.send("sessionEnd", {})
        await self.finish()

    def names(self) -> list[str]:
        return [next(iter(e["event"])) for e in self.received]

    def bodies(self, name: str) -> list[dict[str, Any]]:
        return [e["event"][name] for e in self.received if name in e["event"]]

    def count(self, name: str) -> int:
        return len(self.bodies(name))


PROMPT_START: dict[str, Any] = {
    "promptName": PROMPT,
    "textOutputConfiguration": {"mediaType": "text/plain"},
    "audioOutputConfiguration": {
        "mediaType": "audio/lpcm",
        "sampleRateHertz": 24000,
        "sampleSizeBits": 16,
        "channelCount": 1,
        "voiceId": "matthew",
        "encoding": "base64",
        "audioType": "SPEECH",
    },
}

AUDIO_START: dict[str, Any] = {
    "promptName": PROMPT,
    "type": "AUDIO",
    "interactive": True,
    "role": "USER",
    "audioInputConfiguration": {
        "mediaType": "audio/lpcm",
        "sampleRateHertz": 16000,
        "sampleSizeBits": 16,
        "channelCount": 1,
        "audioType": "SPEECH",
        "encoding": "base64",
    },
}


@asynccontextmanager
async def connect(sim: Endpoint, *, receive_window: int | None = None) -> AsyncIterator[MiniClient]:
    stream = await anyio.connect_tcp(
        "127.0.0.1",
        sim.port,
        tls=True,
        ssl_context=sim.client_ssl_context(),
        tls_hostname="127.0.0.1",
        tls_standard_compatible=False,
    )
    h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    if receive_window is not None:
        h2.local_settings = Settings(client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: receive_window})
    h2.initiate_connection()
    client = MiniClient(stream, h2, sim)
    async with stream, anyio.create_task_group() as tg:
        await client.flush()
        tg.start_soon(client.read_loop)
        yield client
        tg.cancel_scope.cancel()


def stages(client: MiniClient) -> list[str]:
    """The output as ``name[/type/role/stage]`` for contentStart and ``name/stopReason`` for contentEnd."""
    out: list[str] = []
    for event in client.received:
        ((name, body),) = event["event"].items()
        if name == "contentStart":
            stage = json.loads(body.get("additionalModelFields", "{}")).get("generationStage", "")
            out.append("/".join(filter(None, [name, body["type"], body["role"], stage])))
        elif name == "contentEnd":
            out.append(f"{name}/{body['type']}/{body['stopReason']}")
        elif name != "audioOutput" or not out or out[-1] != "audioOutput":
            out.append(name)
    return out


SPOKEN_REPLY = [
    "contentStart/TEXT/ASSISTANT/SPECULATIVE",
    "textOutput",
    "contentEnd/TEXT/PARTIAL_TURN",
    "contentStart/AUDIO/ASSISTANT",
    "audioOutput",
    "contentEnd/AUDIO/END_TURN",
    "contentStart/TEXT/ASSISTANT/FINAL",
    "textOutput",
    "contentEnd/TEXT/END_TURN",
]


# ---------------------------------------------------------------------------- signatures and the request


async def test_text_turn_and_clean_close() -> None:
    """A signed session, a typed turn answered with text and 24 kHz audio, a clean close
    (docs/protocols/nova_sonic.md#signing to docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        await client.text_content("USER", "hello")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        await client.close()
        await client.wait_for(lambda: client.ended)
        assert client.status == 200
        assert client.response_headers["content-type"] == "application/vnd.amazon.eventstream"
        assert stages(client) == ["completionStart", *SPOKEN_REPLY, "usageEvent", "completionEnd"]
        texts = [b["content"] for b in client.bodies("textOutput")]
        assert texts == ["Hi there!", "Hi there!"]
        audio_start = client.bodies("contentStart")[1]
        assert audio_start["audioOutputConfiguration"]["sampleRateHertz"] == 24000
        assert all(
            {"sessionId", "promptName", "completionId"} <= set(b) for e in client.received for b in e["event"].values()
        )
        pcm = b"".join(base64.b64decode(b["content"]) for b in client.bodies("audioOutput"))
        assert len(pcm) == 2 * 24 * 60 * len("Hi there!")
        record = sim.streams[0]
        assert record.ended_by == "client"
        assert record.signatures_verified == len(record.events) + 1  # every event and the empty end frame
        assert record.system_prompt == "You are a test."
        assert record.model_id == MODEL and record.access_key_id == AKID
        assert "secret" not in repr(record) and "Signature=<redacted>" in record.headers["authorization"]
        assert sim.user_inputs == [("text", "hello")]
        assert not sim.schema_failures and not sim.signature_failures


@pytest.mark.parametrize(
    ("kwargs", "status", "error_type"),
    [
        ({"secret": "wrong-secret"}, 403, "InvalidSignatureException"),
        ({"access_key": "AKIDUNKNOWN"}, 403, "UnrecognizedClientException"),
        ({"model": "amazon.titan-text-v1"}, 400, "ValidationException"),
    ],
)
async def test_request_refused_before_the_stream(kwargs: dict[str, str], status: int, error_type: str) -> None:
    """SigV4 and the model id are checked before the stream: an HTTP error with the AWS headers
    (docs/protocols/nova_sonic.md#signing, docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(**kwargs)
        await client.wait_for(lambda: client.ended)
        assert client.status == status
        assert client.response_headers["x-amzn-errortype"] == error_type
        assert client.response_headers["x-amzn-requestid"]
        assert json.loads(client.body)["message"]
        assert not sim.streams
        assert [(r.status, r.error_type) for r in sim.refused] == [(status, error_type)]


async def test_path_with_an_empty_query_is_the_same_operation() -> None:
    """The official SDK requests ``.../invoke-with-bidirectional-stream?`` (seen in scripts/nova_sdk_crosscheck.py)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(query="?")
        await client.start()
        await sim.wait_until(lambda: bool(sim.streams) and sim.streams[0].signatures_verified == 5)
        assert client.status == 200 and not sim.refused


async def test_session_token_is_required_when_configured() -> None:
    """Temporary credentials: the signed ``x-amz-security-token`` must match
    (docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator(session_tokens={AKID: "tok"}) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.wait_for(lambda: client.ended)
            assert client.status == 403
        async with connect(sim) as client:
            await client.open(token="tok")
            await client.start()
            await sim.wait_until(lambda: sim.streams[0].signatures_verified == 5)
            assert sim.streams[0].headers["x-amz-security-token"] == "<redacted>"


@pytest.mark.parametrize("how", ["tampered", "wrong_secret"])
async def test_bad_chunk_signature_ends_the_stream(how: str) -> None:
    """Every event's signature must continue the chain seeded by the request signature
    (docs/protocols/nova_sonic.md#signing)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send("sessionStart", {"inferenceConfiguration": {"maxTokens": 10}})
        if how == "wrong_secret":
            client.signer.secret = "wrong-secret"
        await client.send("sessionStart", {"inferenceConfiguration": {}}, tamper=how == "tampered")
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert "signature" in client.exceptions[0][1]
        assert [(f.stream, f.event_number) for f in sim.signature_failures] == [(0, 2)]
        assert sim.streams[0].signatures_verified == 1
        assert sim.streams[0].ended_by == "exception"


# ---------------------------------------------------------------------------- the schema and the order


def _event(name: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"event": {name: body}}).encode()


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("connectionEnd", {}, "Unknown input event 'connectionEnd'"),
        ("sessionStart", {}, "inferenceConfiguration"),
        ("sessionStart", {"inferenceConfiguration": {"maxTokens": "1024"}}, "expected int"),
        ("sessionStart", {"inferenceConfiguration": {"topP": 1.5}}, "topP"),
        ("sessionStart", {"inferenceConfiguration": {}, "turnDetection": {}}, "extra fields"),
        (
            "contentStart",
            {
                **AUDIO_START,
                "contentName": "a",
                "audioInputConfiguration": {**AUDIO_START["audioInputConfiguration"], "sampleRateHertz": 24000},
            },
            "sampleRateHertz",
        ),
        ("contentStart", {**AUDIO_START, "contentName": "a", "interactive": 1}, "expected bool"),
        (
            "contentStart",
            {k: v for k, v in AUDIO_START.items() if k != "audioInputConfiguration"} | {"contentName": "a"},
            "requires audioInputConfiguration",
        ),
        ("audioInput", {"promptName": "p", "contentName": "a", "content": "not base64!"}, "base64"),
        ("toolResult", {"promptName": "p", "contentName": "a"}, "content"),
    ],
)
def test_schema_rejects(name: str, body: dict[str, Any], fragment: str) -> None:
    """Unknown events, missing fields, wrong types and undocumented values are refused
    (docs/protocols/nova_sonic.md#input-events, docs/protocols/nova_sonic.md#no-published-schema)."""
    with pytest.raises(SchemaError, match=fragment):
        parse_event(_event(name, body))


async def _open_and_start(client: MiniClient, **start: Any) -> None:
    await client.open()
    await client.start(**start)


async def _connection_end(client: MiniClient) -> None:
    await client.start()
    await client.send("connectionEnd", {})


async def _prompt_first(client: MiniClient) -> None:
    await client.send("promptStart", PROMPT_START)


async def _audio_before_system(client: MiniClient) -> None:
    await client.send("sessionStart", {"inferenceConfiguration": {}})
    await client.send("promptStart", PROMPT_START)
    await client.audio_start()


async def _unknown_tool_result(client: MiniClient) -> None:
    await client.start()
    await client.tool_result("never-issued", "{}")


async def _prompt_end_with_open_audio(client: MiniClient) -> None:
    await client.start()
    await client.audio_start()
    await client.send("promptEnd", {"promptName": PROMPT})


async def _end_without_session_end(client: MiniClient) -> None:
    await client.start()
    await client.send_data(b"", end_stream=True)


async def _wrong_prompt_name(client: MiniClient) -> None:
    await client.start()
    await client.send("promptEnd", {"promptName": "other"})


async def _v1_turn_detection(client: MiniClient) -> None:
    await client.send(
        "sessionStart",
        {"inferenceConfiguration": {}, "turnDetectionConfiguration": {"endpointingSensitivity": "HIGH"}},
    )


async def _two_audio_contents(client: MiniClient) -> None:
    await client.start()
    await client.audio_start()
    await client.audio_start()


async def _history_text_input_over_1_kb(client: MiniClient) -> None:
    await client.start()
    await client.text_content("USER", "é" * 600, interactive=False)  # 1200 bytes in one textInput


async def _history_over_40_kb(client: MiniClient) -> None:
    await client.start()
    for i in range(41):  # 41 x 1 KB, each textInput within its limit
        await client.text_content("USER" if i % 2 == 0 else "ASSISTANT", "x" * 1024, interactive=False)


@pytest.mark.parametrize(
    ("script", "fragment", "model"),
    [
        (_connection_end, "connectionEnd", MODEL),
        (_prompt_first, "before sessionStart", MODEL),
        (_audio_before_system, "SYSTEM", MODEL),
        (_unknown_tool_result, "does not match a tool use", MODEL),
        (_prompt_end_with_open_audio, "is open", MODEL),
        (_end_without_session_end, "ended before sessionEnd", MODEL),
        (_wrong_prompt_name, "names prompt", MODEL),
        (_v1_turn_detection, "not supported by amazon.nova-sonic-v1:0", "amazon.nova-sonic-v1:0"),
        (_two_audio_contents, "only one at a time", MODEL),
        (_history_text_input_over_1_kb, "at most 1KB", MODEL),
        (_history_over_40_kb, "exceeds 40KB", MODEL),
    ],
)
async def test_stream_refuses_bad_input_with_a_validation_exception(
    script: Callable[[MiniClient], Any], fragment: str, model: str
) -> None:
    """A schema or order violation is answered with a validationException that ends the stream
    (docs/protocols/nova_sonic.md#exceptions, docs/protocols/nova_sonic.md#input-events)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(model=model)
        await script(client)
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert fragment in client.exceptions[0][1]
        assert len(sim.schema_failures) == 1 and fragment in sim.schema_failures[0].detail
        assert sim.streams[0].ended_by == "exception"


async def test_history_is_recorded_after_the_system_prompt() -> None:
    """docs/protocols/nova_sonic.md#history: non-interactive USER/ASSISTANT text after the system prompt is history."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.start()
        await client.text_content("USER", "earlier question", interactive=False)
        await client.text_content("ASSISTANT", "earlier answer", interactive=False)
        await client.text_content("USER", "now")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert sim.user_inputs == [
            ("history", "USER", "earlier question"),
            ("history", "ASSISTANT", "earlier answer"),
            ("text", "now"),
        ]
        await client.text_content("ASSISTANT", "late history", interactive=False)
        await client.wait_for(lambda: client.ended)
        assert "before any interactive content" in client.exceptions[0][1]


# ---------------------------------------------------------------------------- turns


async def test_audio_turn_gets_a_user_transcript_then_the_reply() -> None:
    """A spoken turn (found by turn detection on 16 kHz input) is echoed as USER TEXT FINAL, then answered
    (docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(transcripts=["what time is it"], rules=[Rule(spoken_turn=0, reply=Reply(say="Noon."))])
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        audio = await client.audio_start()
        spoken = loud(400) + silence(800)
        await client.audio(audio, spoken)
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert stages(client) == [
            "completionStart",
            "contentStart/TEXT/USER/FINAL",
            "textOutput",
            "contentEnd/TEXT/END_TURN",
            *SPOKEN_REPLY,
            "usageEvent",
        ]
        assert [b["content"] for b in client.bodies("textOutput")] == ["what time is it", "Noon.", "Noon."]
        assert client.bodies("textOutput")[0]["role"] == "USER"
        assert b"".join(i[1] for i in sim.user_inputs if i[0] == "audio") == spoken
        usage = client.bodies("usageEvent")[0]
        assert usage["totalTokens"] == usage["totalInputTokens"] + usage["totalOutputTokens"] > 0
        await client.close(audio=audio)
        await client.wait_for(lambda: client.ended)
        assert sim.streams[0].ended_by == "client"


async def test_tool_use_round_trip() -> None:
    """toolUse then contentEnd TOOL_USE; the client's TOOL result continues the turn
    (docs/protocols/nova_sonic.md#tool-results, docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, "tu-1")])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.")),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start(tools=["get_weather"])
        await client.text_content("USER", "weather in Paris?")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert stages(client) == [
            "completionStart",
            "contentStart/TOOL/TOOL",
            "toolUse",
            "contentEnd/TOOL/TOOL_USE",
            "usageEvent",
        ]
        use = client.bodies("toolUse")[0]
        assert (use["toolName"], use["toolUseId"], json.loads(use["content"])) == (
            "get_weather",
            "tu-1",
            {"city": "Paris"},
        )
        await client.tool_result("tu-1", '"sunny"')
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[-1]["content"] == 'It is "sunny".'
        assert sim.user_inputs[-1] == ("tool_result", "tu-1", '"sunny"')
        await client.tool_result("tu-1", "again")  # answered already
        await client.wait_for(lambda: client.ended)
        assert "does not match a tool use" in client.exceptions[0][1]


async def test_barge_in_interrupts_the_audio() -> None:
    """User speech while the assistant's audio goes out => textOutput interrupted and INTERRUPTED
    (docs/protocols/nova_sonic.md#barge-in)."""
    scenario = Scenario(
        rules=[
            Rule(spoken_turn=0, reply=Reply(say="A very long story.", audio_ms=20_000)),
            Rule(spoken_turn=1, reply=Reply(say="Yes?", audio_ms=100)),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario, speedup=1.0) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        audio = await client.audio_start()
        await client.audio(audio, loud(300) + silence(600))
        await client.wait_for(lambda: client.count("audioOutput") >= 1)
        await client.audio(audio, loud(300) + silence(600))
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        first_turn = stages(client)[: stages(client).index("usageEvent")]
        assert first_turn[-5:] == [
            "audioOutput",
            "contentEnd/AUDIO/INTERRUPTED",
            "contentStart/TEXT/ASSISTANT/FINAL",
            "textOutput",
            "contentEnd/TEXT/INTERRUPTED",
        ]
        assert '{ "interrupted" : true }' in [b["content"] for b in client.bodies("textOutput")]
        assert client.count("audioOutput") < 200  # 100 ms each: far less than the 20 s reply
        assert not sim.schema_failures


async def test_user_inputs_accumulate_across_streams() -> None:
    """A rotation replays history on a new stream: ``sim.user_inputs`` keeps everything, in order."""
    async with NovaSonicSimulator() as sim:
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "one")
            await client.wait_for(lambda: client.count("usageEvent") == 1)
            await client.close()
            await client.wait_for(lambda: client.ended)
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "one", interactive=False)
            await client.text_content("ASSISTANT", "You said: one", interactive=False)
            await client.text_content("USER", "two")
            await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert sim.user_inputs == [
            ("text", "one"),
            ("history", "USER", "one"),
            ("history", "ASSISTANT", "You said: one"),
            ("text", "two"),
        ]
        assert [r.index for r in sim.streams] == [0, 1]


# ---------------------------------------------------------------------------- limits and faults


async def test_stream_limit_ends_the_stream() -> None:
    """botocore's model: the stream stays open 8 minutes (scaled down here); then the service ends it."""
    async with NovaSonicSimulator(stream_lifetime_s=0.3) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.exceptions[0][0] == "validationException"
        assert "maximum duration" in client.exceptions[0][1]
        assert sim.streams[0].ended_by == "exception"


async def test_silence_timeout_mentions_531() -> None:
    """No input for ~175 s (scaled down) => ValidationException with InternalErrorCode=531
    (docs/protocols/nova_sonic.md#limits)."""
    async with NovaSonicSimulator(silence_timeout_s=0.3) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.exceptions[0][0] == "validationException"
        assert "InternalErrorCode=531" in client.exceptions[0][1]
        assert sim.streams[0].exception == {"type": "validationException", "message": client.exceptions[0][1]}


async def test_throttling_refuses_requests_then_recovers() -> None:
    """A throttled request gets HTTP 429 ThrottlingException; the next one is served."""
    async with NovaSonicSimulator(faults=[Fault(kind="throttling", times=1)]) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.wait_for(lambda: client.ended)
            assert (client.status, client.response_headers["x-amzn-errortype"]) == (429, "ThrottlingException")
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "hi")
            await client.wait_for(lambda: client.count("usageEvent") == 1)


@pytest.mark.parametrize(
    ("kind", "exception_type"),
    [
        ("model_timeout", "modelTimeoutException"),
        ("throttling", "throttlingException"),
        ("validation", "validationException"),
        ("internal", "internalServerException"),
    ],
)
async def test_exception_fault_after_events(kind: Any, exception_type: str) -> None:
    """Modeled exceptions arrive as event-stream exception messages with a message
    (docs/protocols/nova_sonic.md#exceptions)."""
    async with NovaSonicSimulator(faults=[Fault(kind=kind, after_events=3)]) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.status == 200
        assert client.exceptions[0][0] == exception_type and client.exceptions[0][1]
        assert len(sim.streams[0].events) == 3


async def test_rst_stream_fault() -> None:
    """RST_STREAM mid-stream (docs/protocols/nova_sonic.md#http2-transport: clients must handle StreamReset)."""
    async with NovaSonicSimulator(faults=[Fault(kind="rst", after_events=1)]) as sim, connect(sim) as client:
        await client.open()
        await client.send("sessionStart", {"inferenceConfiguration": {}})
        await client.wait_for(lambda: client.reset_code is not None)
        assert client.reset_code == 2
        assert sim.streams[0].ended_by == "rst"


async def test_goaway_fault() -> None:
    """GOAWAY then the connection closes (docs/protocols/nova_sonic.md#http2-transport)."""
    async with NovaSonicSimulator(faults=[Fault(kind="goaway", after_events=1, error_code=0)]) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.send("sessionStart", {"inferenceConfiguration": {}})
            await client.wait_for(lambda: client.goaway_code is not None and client.ended)
            assert client.goaway_code == 0
        assert sim.streams[0].ended_by == "goaway"


# ---------------------------------------------------------------------------- framing and flow control


@pytest.mark.parametrize("data_frame_bytes", [None, 100])
async def test_output_messages_split_across_data_frames(data_frame_bytes: int | None) -> None:
    """Messages straddle DATA frames; a 500 ms audio chunk (~43 KB) exceeds the 16 KiB frame
    (docs/protocols/nova_sonic.md#http2-transport)."""
    scenario = Scenario(default=Reply(say="Long.", audio_ms=1000))
    sim = NovaSonicSimulator(scenario=scenario, audio_chunk_ms=500, data_frame_bytes=data_frame_bytes)
    async with sim, connect(sim) as client:
        await _open_and_start(client)
        await client.text_content("USER", "hi")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert client.count("audioOutput") == 2
        assert len(base64.b64decode(client.bodies("audioOutput")[0]["content"])) == 24_000
        assert client.data_frames >= len(client.received) + 4  # each audio message took three or more frames
        if data_frame_bytes is not None:
            assert client.data_frames > 43_000 * 2 // 100


async def test_small_server_window_makes_the_client_wait() -> None:
    """The simulator grants a small window and updates it lazily: the client must wait for WINDOW_UPDATE."""
    big = "x" * 20_000
    async with NovaSonicSimulator(initial_window_size=4096) as sim, connect(sim) as client:
        await client.open()
        await client.wait_for(lambda: client.h2.remote_settings.initial_window_size == 4096)
        await client.start(system=big)
        await sim.wait_until(lambda: sim.streams[0].system_prompt is not None)
        assert sim.streams[0].system_prompt == big
        assert client.window_waits > 0


async def test_simulator_respects_the_client_window() -> None:
    """A client with a 2 KiB receive window: the simulator waits for its WINDOW_UPDATEs and loses nothing."""
    scenario = Scenario(default=Reply(say="Some audio.", audio_ms=1000))
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim, receive_window=2048) as client:
        await _open_and_start(client)
        await client.text_content("USER", "hi")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        pcm = b"".join(base64.b64decode(b["content"]) for b in client.bodies("audioOutput"))
        assert len(pcm) == 48_000
        assert sim.streams[0].window_waits > 0


async def test_connection_without_h2_alpn_is_closed() -> None:
    """The endpoint speaks HTTP/2 only (ALPN ``h2``, docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator() as sim:
        ctx = sim.client_ssl_context()
        ctx.set_alpn_protocols(["http/1.1"])
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
            stream = await anyio.connect_tcp("127.0.0.1", sim.port, tls=True, ssl_context=ctx, tls_hostname="127.0.0.1")
            async with stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with anyio.fail_after(TIMEOUT):
                    await stream.receive()


# ---------------------------------------------------------------------------- more behaviour


def test_output_schema_rejects_what_the_service_never_sends() -> None:
    """The simulator checks its own output against the output events; these are the mistakes it must catch
    (docs/protocols/nova_sonic.md#output-events)."""
    ids = {"sessionId": "s", "promptName": "p", "completionId": "c", "contentId": "x"}
    good_text = {**ids, "type": "TEXT", "role": "ASSISTANT", "textOutputConfiguration": {"mediaType": "text/plain"}}
    assert (
        check_output_event(
            {"event": {"contentStart": {**good_text, "additionalModelFields": '{"generationStage":"FINAL"}'}}}
        )
        is None
    )
    bad: list[dict[str, Any]] = [
        {"event": {"contentStart": good_text}},  # no generationStage
        {"event": {"contentStart": {**good_text, "additionalModelFields": '{"generationStage":"DRAFT"}'}}},
        {"event": {"contentEnd": {**ids, "type": "TEXT", "stopReason": "DONE"}}},
        {"event": {"audioOutput": {**ids, "content": "not base64!"}}},
        {"event": {"toolUse": {**ids, "toolName": "t", "toolUseId": "u", "content": "{not json"}}},
        {"event": {"connectionEnd": {}}},
        {"event": {"completionStart": {"sessionId": "s"}}},
    ]
    for event in bad:
        assert check_output_event(event) is not None, event


async def test_typed_text_while_the_audio_content_is_open() -> None:
    """Nova 2 cross-modal input: a USER text content while the audio content stays open
    (docs/protocols/nova_sonic.md#audio-input)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await _open_and_start(client)
        audio = await client.audio_start()
        await client.audio(audio, silence(96))
        await client.text_content("USER", "typed")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert client.bodies("textOutput")[-1]["content"] == "You said: typed"
        await client.close(audio=audio)
        await client.wait_for(lambda: client.ended)
        assert [i[0] for i in sim.user_inputs] == ["audio", "audio", "audio", "text"]
        assert sim.streams[0].ended_by == "client"


async def test_several_tool_uses_wait_for_every_result_and_undeclared_tools_are_not_called() -> None:
    """A model only calls declared tools; the turn continues once every tool use has its result."""
    scenario = Scenario(
        rules=[
            Rule(
                text_contains="both",
                reply=Reply(tool_calls=[ToolUse("a", {}, "id-a"), ToolUse("b", {}, "id-b"), ToolUse("nope")]),
            ),
            Rule(tool_result_for="b", reply=Reply(say="Got {result}.")),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await _open_and_start(client, tools=["a", "b"])
        await client.text_content("USER", "both please")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert [b["toolName"] for b in client.bodies("toolUse")] == ["a", "b"]
        assert "would call nope" in client.bodies("textOutput")[0]["content"]
        await client.tool_result("id-a", "A")
        await client.tool_result("id-b", "B")
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[-1]["content"] == "Got A; B."
        assert not sim.schema_failures


async def test_endpointing_sensitivity_sets_the_pause_that_ends_a_turn() -> None:
    """Nova 2 ``turnDetectionConfiguration``: LOW waits longer than HIGH before ending a spoken turn."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send(
            "sessionStart",
            {"inferenceConfiguration": {}, "turnDetectionConfiguration": {"endpointingSensitivity": "LOW"}},
        )
        await client.send("promptStart", PROMPT_START)
        await client.text_content("SYSTEM", "sys", interactive=False)
        audio = await client.audio_start()
        await client.audio(audio, loud(300) + silence(400))  # enough for HIGH (300 ms), not for LOW
        await client.text_content("USER", "probe")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert [b["role"] for b in client.bodies("textOutput")] == ["ASSISTANT", "ASSISTANT"]
        await client.audio(audio, silence(500))
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[2]["role"] == "USER"
        assert not sim.schema_failures


async def test_audio_input_keeps_the_silence_timer_at_bay() -> None:
    """The 531 timeout counts time without input events, so a client streaming audio is never timed out."""
    async with NovaSonicSimulator(silence_timeout_s=1.0) as sim, connect(sim) as client:
        await _open_and_start(client)
        audio = await client.audio_start()
        for _ in range(12):  # 1.2 s of real-time-ish streaming, one 100 ms frame at a time
            await client.audio(audio, silence(100), frame_ms=100)
            await anyio.sleep(0.1)
        assert not client.exceptions and not client.ended
        await client.wait_for(lambda: client.ended)
        assert "InternalErrorCode=531" in client.exceptions[0][1]
        assert sim.streams[0].ended_by == "exception"


async def test_how_streams_end_is_recorded() -> None:
    """``ended_by`` tells a client's RST_STREAM from a dropped connection."""
    async with NovaSonicSimulator() as sim:
        async with connect(sim) as client:
            await _open_and_start(client)
            client.h2.reset_stream(client.sid, 8)  # CANCEL
            await client.flush()
            await sim.wait_until(lambda: sim.streams[0].ended_by is not None)
        async with connect(sim) as client:
            await _open_and_start(client)
        await sim.wait_until(lambda: sim.streams[1].ended_by is not None)
    assert [r.ended_by for r in sim.streams] == ["client_reset", "connection_lost"]


@pytest.mark.parametrize(
    ("raw", "failure"),
    [
        (_frame(b"", b"x")[:-1] + b"\x00", "schema"),  # a message CRC that does not match
        (_frame(_header(":date", 8, struct.pack("!q", 0)), b""), "signature"),  # no :chunk-signature
    ],
)
async def test_malformed_frames_are_refused(raw: bytes, failure: str) -> None:
    """CRCs are checked and the outer message must carry ``:date`` and ``:chunk-signature``
    (docs/protocols/nova_sonic.md#message-envelopes)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send_data(raw)
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert len(sim.schema_failures if failure == "schema" else sim.signature_failures) == 1


# ---------------------------------------------------------------------------- properties of the framing and the chain


@settings(max_examples=25, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40),
)
def test_decoder_reassembles_messages_however_they_are_cut(payloads: list[bytes], cuts: list[int]) -> None:
    """Messages straddle DATA frames; cutting the bytes anywhere decodes the same messages
    (docs/protocols/nova_sonic.md#event-stream-framing)."""
    wire = b"".join(_frame(_str_header(":event-type", "chunk"), p) for p in payloads)
    decoder = MessageDecoder()
    decoded: list[bytes] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        decoded += [m.payload for m in decoder.feed(wire[pos : pos + step])]
        pos, i = pos + step, i + 1
    assert decoded == payloads and decoder.pending == 0


@settings(max_examples=25, deadline=None)
@given(inners=st.lists(st.binary(max_size=200), min_size=1, max_size=5), flip=st.integers(min_value=0))
def test_chunk_chain_accepts_a_correct_signer_and_nothing_else(inners: list[bytes], flip: int) -> None:
    """The chain verifies what a correct signer makes, and a flipped bit anywhere breaks it
    (docs/protocols/nova_sonic.md#signing)."""
    seed = "ab" * 32
    auth = RequestAuth(access_key_id=AKID, secret=SECRET, region="us-east-1", seed_signature=seed)
    signer = ChunkSigner(seed)
    frames = [signer.sign(inner) for inner in inners]
    good = ChunkChain(auth)
    for frame in frames:
        (message,) = MessageDecoder().feed(frame)
        date, signature = message.headers[":date"].value, message.headers[":chunk-signature"].value
        assert good.verify(date, signature, message.payload)
    victim = flip % len(frames)
    bad = ChunkChain(auth)
    results = []
    for n, frame in enumerate(frames):
        (message,) = MessageDecoder().feed(frame)
        date, signature = message.headers[":date"].value, message.headers[":chunk-signature"].value
        if n == victim:
            signature = bytes([signature[0] ^ (1 << (flip % 8))]) + signature[1:]
        results.append(bad.verify(date, signature, message.payload))
    assert results[victim] is False and all(results[:victim])


class _Remote:
    """A simulator in another process, as :func:`connect` needs it: a port and a TLS context."""

    def __init__(self, port: int, ca_path: str) -> None:
        self.port = port
        self.ca_path = ca_path

    def client_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_path)
        ctx.set_alpn_protocols(["h2"])
        return ctx


async def test_demo_server_runs_as_a_module() -> None:
    """``python -m adapters.testing.nova_sonic_simulator`` serves the demo scenario and says how to reach it."""
    command = [sys.executable, "-m", "adapters.testing.nova_sonic_simulator", "--port", "0", "--speedup", "100"]
    async with await anyio.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        try:
            assert process.stdout is not None
            lines: list[str] = []
            with anyio.fail_after(TIMEOUT):
                async for chunk in process.stdout:
                    lines += chunk.decode().splitlines()
                    if any(line.startswith("credentials:") for line in lines):
                        break
            endpoint = next(line.split()[3] for line in lines if line.startswith("Nova Sonic simulator:"))
            ca_path = next(line.split(": ", 1)[1] for line in lines if line.startswith("CA certificate:"))
            remote = _Remote(int(endpoint.rsplit(":", 1)[1]), ca_path)
            async with connect(remote) as client:
                await _open_and_start(client)
                await client.text_content("USER", "hello")
                await client.wait_for(lambda: client.count("usageEvent") == 1)
                assert client.bodies("textOutput")[-1]["content"].startswith("Hello! I am the bidi-core Nova")
        finally:
            process.terminate()
            await process.wait()
