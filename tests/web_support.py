"""Helpers of the web tests: a WebSocket client on wsproto + anyio (both backends), the app served by a
real hypercorn in the test's event loop, the server command as a subprocess, and the simulator's runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from hypercorn.config import Config
from hypercorn.utils import wrap_app
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from adapters.web import WebApp, WebConversation, WebLimits
from adapters.web.auth import AuthHook
from bidi_core import BidiAgent

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "sk-web-tests-provider-key"
RATE = 24000


@attrs.frozen
class Rejected:
    """A refused handshake: the HTTP status, headers (lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Closed:
    code: int
    reason: str


class NotOpen(Exception):
    """A message was sent after the connection stopped being open (the server closed or dropped it)."""


OPEN_CLIENTS: list[WsClient] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Every client a test opened is closed when it ends, passed or failed (import this into the test module)."""
    yield
    while OPEN_CLIENTS:
        await OPEN_CLIENTS.pop().close()


class WsClient:
    """A plain WebSocket client for tests: one message at a time, nothing hidden.

    One task may send while another receives (a flood beside a reader): the reader writes too (it answers
    pings and the server's close), so every write holds ``_write_lock``, and a message sent once the
    connection is no longer open raises :class:`NotOpen` instead of wsproto's LocalProtocolError.
    """

    def __init__(self, stream: anyio.abc.SocketStream, ws: WSConnection, subprotocol: str | None) -> None:
        self.stream = stream
        self.ws = ws
        self.subprotocol = subprotocol
        self._write_lock = anyio.Lock()
        self._pending: list[Any] = []
        self._parts: list[Any] = []
        self.closed: Closed | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        *,
        headers: Sequence[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> WsClient | Rejected:
        stream = await anyio.connect_tcp(host, port)
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=f"{host}:{port}",
            target=path,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
            subprotocols=list(subprotocols),
        )
        await stream.send(ws.send(request))
        body = b""
        rejected: RejectConnection | None = None
        while True:
            data = await stream.receive()
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    client = cls(stream, ws, event.subprotocol)
                    OPEN_CLIENTS.append(client)
                    return client
                if isinstance(event, RejectConnection):
                    rejected = event
                    if not event.has_body:
                        await stream.aclose()
                        return Rejected(event.status_code, _headers(event.headers), b"")
                if isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished and rejected is not None:
                        await stream.aclose()
                        return Rejected(rejected.status_code, _headers(rejected.headers), body)

    async def _send_message(self, message: TextMessage | BytesMessage) -> None:
        async with self._write_lock:
            if self.ws.state is not ConnectionState.OPEN:
                raise NotOpen(f"the connection is {self.ws.state.name}")
            try:
                await self.stream.send(self.ws.send(message))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise NotOpen("the connection was dropped") from exc

    async def send_text(self, text: str) -> None:
        await self._send_message(TextMessage(data=text))

    async def send_json(self, message: Mapping[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_bytes(self, data: bytes) -> None:
        await self._send_message(BytesMessage(data=data))

    async def receive(self) -> str | bytes | Closed:
        """The next whole message, or :class:`Closed` once the server closed (or dropped) the connection."""
        while True:
            await self._process()  # what wsproto already holds first (the handshake's read may have brought more)
            if self._pending:
                return self._pending.pop(0)
            if self.closed is not None:
                return self.closed
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.closed = self.closed or Closed(1006, "dropped")
                continue
            self.ws.receive_data(data)

    async def _process(self) -> None:
        for event in self.ws.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    whole = "".join(self._parts) if isinstance(event, TextMessage) else b"".join(self._parts)
                    self._parts = []
                    self._pending.append(whole)
            elif isinstance(event, Ping):
                async with self._write_lock:
                    await self.stream.send(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                async with self._write_lock:
                    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await self.stream.send(self.ws.send(event.response()))

    async def receive_json(self) -> dict[str, Any]:
        """The next JSON message, skipping audio; AssertionError when the connection closes first."""
        while True:
            message = await self.receive()
            if isinstance(message, Closed):
                raise AssertionError(f"closed before the expected message: {message}")  # noqa: TRY004
            if isinstance(message, str):
                return dict(json.loads(message))

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """JSON messages until one matches."""
        while True:
            message = await self.receive_json()
            if predicate(message):
                return message

    async def until_closed(self, into: list[Any] | None = None) -> Closed:
        while True:
            message = await self.receive()
            if isinstance(message, Closed):
                return message
            if into is not None:
                into.append(json.loads(message) if isinstance(message, str) else message)

    async def flood_until_closed(self, message: Mapping[str, Any], into: list[Any] | None = None) -> Closed:
        """Send ``message`` a hundred times a second, reading meanwhile, until the server closes.

        The server always has enough in the end (time passes). The reader may take the server's
        close between two sends: the next send then finds the connection closed, and stops."""

        async def flood() -> None:
            with suppress(NotOpen):
                while True:
                    await self.send_json(dict(message))
                    await anyio.sleep(0.01)  # pacing, a hundred a second: far over any test's limit

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            closed = await self.until_closed(into)
            tg.cancel_scope.cancel()
        return closed

    async def start(self, *, reports_playback: bool = True, rate: int = RATE) -> dict[str, Any]:
        """The usual opening: read ``session``, answer ``start``."""
        session = await self.receive_json()
        assert session["type"] == "session", session
        await self.send_json(
            {"type": "start", "input_audio": {"sample_rate": rate, "channels": 1}, "reports_playback": reports_playback}
        )
        return session

    async def close(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            with suppress(Exception):  # the server may have closed first
                async with self._write_lock:
                    await self.stream.send(self.ws.send(CloseConnection(code=1000)))
            await self.stream.aclose()

    async def drop(self) -> None:
        """Vanish: close the TCP connection without a close frame."""
        await self.stream.aclose()


def _headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in raw}


# ---------------------------------------------------------------------------------------- serving in-process


def simulator_runner(sim: OpenAIRealtimeSimulator, tools: Sequence[Any] = ()) -> Callable[[WebConversation], Any]:
    """A conversation runner: one BidiAgent per conversation, talking to ``sim``."""

    async def run(conversation: WebConversation) -> None:
        model = BidiOpenAIRealtimeModel(
            api_key=SIM_KEY,
            base_url=sim.base_url,
            provider_config={"transcription": {"model": "gpt-4o-mini-transcribe"}},
        )
        agent = BidiAgent(model=model, tools=list(tools), system_prompt="Test.")
        await agent.run(inputs=[conversation.input()], outputs=[conversation.output()])

    return run


@asynccontextmanager
async def serve(app: WebApp, backend: str) -> AsyncIterator[int]:
    """``app`` on a real hypercorn in this event loop, on 127.0.0.1; yields the port."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    sockets = config.create_sockets()
    port = sockets.insecure_sockets[0].getsockname()[1]
    stop = anyio.Event()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)  # connections made before the worker is up wait in the backlog
    async with anyio.create_task_group() as tg:
        if backend == "trio":
            from hypercorn.trio.run import worker_serve as trio_serve

            tg.start_soon(lambda: trio_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait))
        else:
            from hypercorn.asyncio.run import worker_serve as asyncio_serve

            tg.start_soon(lambda: asyncio_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait))
        try:
            yield port
        finally:
            # As the server command does: drain first (conversations closed by the app), then stop hypercorn.
            # hypercorn's own graceful timeout would cancel the conversations' tasks from outside, which on
            # Python 3.12's asyncio never finished.
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                await app.drain(0.01)
            stop.set()
    for sock in sockets.insecure_sockets:
        sock.close()


def web_app(
    sim: OpenAIRealtimeSimulator, *, limits: WebLimits | None = None, auth: AuthHook | None = None, **kw: Any
) -> WebApp:
    return WebApp(simulator_runner(sim, kw.pop("tools", ())), limits=limits, auth=auth, **kw)


# ---------------------------------------------------------------------------------------- the server command


@contextmanager
def server_process(
    *args: str, env: Mapping[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m adapters.web --port 0 ARGS`` in a subprocess; yields it and its port once it listens.

    Its stdout and stderr go to ``log`` (read it after the process ended). On
    leaving, a process still running is killed.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("OPENAI_API_KEY", None) if "OPENAI_API_KEY" not in (env or {}) else None
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.web", "--port", "0", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=out,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening on http://" not in line:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the server did not start: {line!r}; see {log}")
        port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if log is not None:
            out.close()  # type: ignore[union-attr]


async def wait_ready(port: int) -> None:
    """Until ``/readyz`` answers 200 (the worker has started), bounded by the caller."""
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            await anyio.sleep(0.05)
            continue
        async with stream:
            await stream.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        if data.startswith(b"HTTP/1.1 200"):
            return
        await anyio.sleep(0.05)


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return status, headers, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
