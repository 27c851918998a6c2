"""A tiny independent client for the Nova Sonic simulator over real TLS/HTTP/2 sockets, and its tests' helpers.

The client (h2 + botocore's SigV4Auth + a 30-line encoder and chunk signer) is
written from docs/protocols/nova_sonic.md for these tests only, independently of both the
simulator and our adapter, so the simulator is checked against the protocol and
not against itself.
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
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, cast

import anyio
import anyio.abc
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


def _event(name: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"event": {name: body}}).encode()


async def _open_and_start(client: MiniClient, **start: Any) -> None:
    await client.open()
    await client.start(**start)
