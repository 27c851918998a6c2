"""The WebSocket client over real sockets: TLS with a custom CA, refusals, messages, closes, timeouts, secrets.

Each test runs a small wsproto server on 127.0.0.1 (behind TLS made with a
trustme CA where the test says so) that does one thing: accept and talk,
refuse with a status, never answer, or close with a code. The client is
``adapters.websocket.open_websocket`` exactly as the provider adapters call it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trustme
from anyio.streams.tls import TLSListener
from wsproto import ConnectionType, WSConnection
from wsproto import events as ev

from adapters.connection import ConnectionOptions
from adapters.websocket import WebSocketClosed, open_websocket, ssl_context_for
from ports.errors import BidiConnectionError, BidiProviderError, BidiUsageError
from tests.support import after_checkpoints

KEY = "sk-websocket-test-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Client": "bidi-test"}

Talk = Callable[["Peer"], Awaitable[None]]


class Peer:
    """The server's end of one accepted WebSocket."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection, request: ev.Request) -> None:
        self.stream = stream
        self.ws = ws
        self.request = request

    async def send(self, *events: ev.Event) -> None:
        await self.stream.send(b"".join(self.ws.send(e) for e in events))

    async def next_event(self) -> ev.Event:
        while True:
            for event in self.ws.events():
                return event
            self.ws.receive_data(await self.stream.receive())


class Server:
    def __init__(self, port: int, tls: bool) -> None:
        self.port = port
        self.tls = tls
        self.requests: list[ev.Request] = []
        self.received: list[ev.Event] = []

    def url(self, path: str = "/v1/realtime?model=m") -> str:
        return f"{'wss' if self.tls else 'ws'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}{path}"


async def _accept(stream: anyio.abc.ByteStream) -> tuple[WSConnection, ev.Request]:
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive())
        for event in ws.events():
            assert isinstance(event, ev.Request)
            return ws, event


@asynccontextmanager
async def serving(
    talk: Talk | None = None,
    *,
    refuse: tuple[int, bytes] | None = None,
    silent: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    """A server that talks (``talk`` after accepting), refuses with a status and body, or never answers."""
    listener: anyio.abc.Listener[anyio.abc.ByteStream] = await anyio.create_tcp_listener(
        local_host="127.0.0.1", local_port=0
    )
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    if ssl_context is not None:
        listener = TLSListener(listener, ssl_context, standard_compatible=False)
    server = Server(port, ssl_context is not None)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            try:
                if silent:
                    await anyio.sleep_forever()
                ws, request = await _accept(stream)
                server.requests.append(request)
                if refuse is not None:
                    status, body = refuse
                    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    reply = ws.send(ev.RejectConnection(status_code=status, headers=headers, has_body=True))
                    await stream.send(reply + ws.send(ev.RejectData(data=body, body_finished=True)))
                    return
                peer = Peer(stream, ws, request)
                if talk is not None:
                    await talk(peer)
                while True:  # then record what the client sends until it goes
                    event = await peer.next_event()
                    server.received.append(event)
                    if isinstance(event, ev.CloseConnection):
                        return
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError, OSError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield server
        tg.cancel_scope.cancel()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def accept_then(*events: ev.Event) -> Talk:
    """Accept the upgrade and send these events in the same write as the 101 response."""

    async def talk(peer: Peer) -> None:
        await peer.stream.send(peer.ws.send(ev.AcceptConnection()) + b"".join(peer.ws.send(e) for e in events))

    return talk


# ---------------------------------------------------------------- handshake, TLS


async def test_upgrade_sends_path_query_host_with_port_and_headers() -> None:
    async with serving(accept_then(ev.TextMessage("hello"))) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), HEADERS, secrets=(KEY,)) as ws:
                assert await ws.receive() == "hello"
                await ws.send_text("from the client")
    [request] = server.requests
    assert request.target == "/v1/realtime?model=m"
    assert request.host == f"127.0.0.1:{server.port}"
    headers = dict(request.extra_headers)
    assert headers[b"authorization"] == f"Bearer {KEY}".encode()
    assert headers[b"x-client"] == b"bidi-test"
    assert isinstance(server.received[0], ev.TextMessage) and server.received[0].data == "from the client"
    assert isinstance(server.received[-1], ev.CloseConnection) and server.received[-1].code == 1000


async def test_http_url_is_upgraded_and_an_empty_path_becomes_root() -> None:
    async with serving(accept_then(ev.TextMessage("hi"))) as server:
        with anyio.fail_after(10):
            async with open_websocket(f"http://127.0.0.1:{server.port}", {}) as ws:
                assert await ws.receive() == "hi"
    assert server.requests[0].target == "/"


@pytest.mark.parametrize("verify_kind", ["context", "path"])
async def test_wss_with_a_custom_ca(
    verify_kind: str,
    ca: trustme.CA,
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    if verify_kind == "context":
        verify: ssl.SSLContext | str = client_tls
    else:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        verify = str(tmp_path / "ca.pem")
    payload = bytes(range(256)) * 300  # bigger than one TLS record
    async with serving(accept_then(ev.TextMessage("secure"), ev.BytesMessage(payload)), ssl_context=server_tls) as s:
        with anyio.fail_after(10):
            async with open_websocket(
                s.url(), HEADERS, secrets=(KEY,), options=ConnectionOptions(ssl_context=ssl_context_for(verify))
            ) as ws:
                assert await ws.receive() == "secure"
                assert await ws.receive() == payload
                await ws.send_text("over tls")
    assert s.requests[0].host == f"localhost:{s.port}"
    assert any(isinstance(e, ev.TextMessage) and e.data == "over tls" for e in s.received)


async def test_wss_against_an_unknown_ca_is_a_connection_error(server_tls: ssl.SSLContext) -> None:
    async with serving(accept_then(), ssl_context=server_tls) as server:
        with (
            anyio.fail_after(10),
            pytest.raises(BidiConnectionError, match=r"certificate of .* is not trusted") as caught,
        ):
            async with open_websocket(server.url(f"/v1?key={KEY}"), HEADERS, secrets=(KEY,)):
                pass
    assert caught.value.retryable is False  # every attempt would meet the same certificate
    assert KEY not in str(caught.value)
    assert not server.requests  # nothing was sent over an unverified connection


async def test_wss_without_verification_connects(server_tls: ssl.SSLContext) -> None:
    async with serving(accept_then(ev.TextMessage("unverified")), ssl_context=server_tls) as server:
        with anyio.fail_after(10):
            async with open_websocket(
                server.url(), {}, options=ConnectionOptions(ssl_context=ssl_context_for(False))
            ) as ws:
                assert await ws.receive() == "unverified"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("status", "kind", "code", "retryable"),
    [
        (401, BidiProviderError, "authentication_failed", False),
        (403, BidiProviderError, "forbidden", False),
        (429, BidiProviderError, "rate_limited", True),
        (400, BidiProviderError, "invalid_request", False),
        (404, BidiProviderError, "invalid_request", False),
        (500, BidiConnectionError, None, None),
        (503, BidiConnectionError, None, None),
    ],
)
async def test_a_refused_upgrade_is_a_typed_error_with_the_status_and_body(
    status: int, kind: type[Exception], code: str | None, retryable: bool | None
) -> None:
    # The body quotes the key, as a careless server might: it must not reach the error.
    body = json.dumps({"error": {"message": f"refused for Bearer {KEY}", "code": "nope"}}).encode()
    async with serving(refuse=(status, body)) as server:
        with anyio.fail_after(10), pytest.raises(kind) as caught:
            async with open_websocket(server.url(f"/v1?key={KEY}"), HEADERS, secrets=(KEY,)):
                pass
    error = caught.value
    assert not isinstance(error, BidiProviderError) or kind is BidiProviderError
    assert f"HTTP {status}" in str(error)
    assert "refused for Bearer ***" in str(error)
    assert KEY not in str(error) and KEY not in repr(error)
    if code is not None:
        assert isinstance(error, BidiProviderError)
        assert error.code == code
        assert error.retryable is retryable
    else:
        assert not isinstance(error, BidiProviderError)


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    async with serving(silent=True) as server:
        with anyio.fail_after(10), pytest.raises(BidiConnectionError, match=r"no answer within 0\.3 s") as caught:
            async with open_websocket(
                server.url(f"/v1?key={KEY}"), HEADERS, secrets=(KEY,), options=ConnectionOptions(connect_timeout_s=0.3)
            ):
                pass
    assert KEY not in str(caught.value)


async def test_nothing_listening_is_a_connection_error_without_the_key() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(10), pytest.raises(BidiConnectionError, match="cannot reach") as caught:
        async with open_websocket(f"ws://127.0.0.1:{port}/v1?key={KEY}", HEADERS, secrets=(KEY,)):
            pass
    assert KEY not in str(caught.value)


async def test_a_server_that_hangs_up_during_the_handshake() -> None:
    async def hang_up(peer: Peer) -> None:
        raise anyio.EndOfStream  # before any answer

    async with serving(hang_up) as server:
        with anyio.fail_after(10), pytest.raises(BidiConnectionError, match="during the WebSocket handshake"):
            async with open_websocket(server.url(), HEADERS, secrets=(KEY,)):
                pass


async def test_not_a_websocket_url_is_a_usage_error() -> None:
    with pytest.raises(BidiUsageError) as caught:
        async with open_websocket(f"ftp://example.com/?key={KEY}", {}, secrets=(KEY,)):
            pass
    assert KEY not in str(caught.value)


# ---------------------------------------------------------------- messages and closes


async def test_binary_and_fragmented_messages_arrive_whole() -> None:
    async def talk(peer: Peer) -> None:
        await peer.send(ev.AcceptConnection())
        await peer.send(ev.BytesMessage(b"\x00\x01binary"))
        await peer.send(ev.TextMessage("frag", message_finished=False))
        await peer.send(ev.Ping(b"are you there"))  # control frames may come between fragments
        await peer.send(ev.TextMessage("mented ", message_finished=False), ev.TextMessage("text"))
        await peer.send(ev.BytesMessage(b"bin", message_finished=False))
        await peer.send(ev.BytesMessage(b"ary parts"))
        await peer.send(ev.TextMessage("é" * 70000))  # one message over several reads

    async with serving(talk) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                assert await ws.receive() == b"\x00\x01binary"
                assert await ws.receive() == "fragmented text"
                assert await ws.receive() == b"binary parts"
                assert await ws.receive() == "é" * 70000
                await ws.send_bytes(b"up")
    pongs = [e for e in server.received if isinstance(e, ev.Pong)]
    assert pongs and pongs[0].payload == b"are you there"
    assert any(isinstance(e, ev.BytesMessage) and e.data == b"up" for e in server.received)


async def test_a_close_frame_gives_its_code_and_reason_and_is_answered() -> None:
    async with serving(accept_then(ev.TextMessage("last words"), ev.CloseConnection(4001, "session over"))) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                assert await ws.receive() == "last words"
                with pytest.raises(WebSocketClosed) as caught:
                    await ws.receive()
                with pytest.raises(WebSocketClosed):
                    await ws.send_text("too late")
    assert (caught.value.code, caught.value.reason) == (4001, "session over")
    assert isinstance(caught.value, BidiConnectionError)
    # The client answered the close (the server's echo of its code), and sent nothing after it.
    assert [type(e) for e in server.received] == [ev.CloseConnection]


async def test_sending_after_a_close_frame_was_read_but_not_yet_received_is_that_close() -> None:
    # The close frame arrives in the same read as the message before it: wsproto has seen it, receive()
    # has not handed it out yet. A send made on that message (an answer, the writer's next audio block)
    # must say "closed, with this code", never leak wsproto's LocalProtocolError (found by the soak).
    talk = accept_then(ev.TextMessage("answer me"), ev.CloseConnection(1012, "service restart"))
    async with serving(talk) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                assert await ws.receive() == "answer me"
                with pytest.raises(WebSocketClosed) as on_text:
                    await ws.send_text("the answer")
                with pytest.raises(WebSocketClosed) as on_bytes:
                    await ws.send_bytes(b"audio")
                with pytest.raises(WebSocketClosed) as on_receive:
                    await ws.receive()
    assert {(e.value.code, e.value.reason) for e in (on_text, on_bytes, on_receive)} == {(1012, "service restart")}
    assert [type(e) for e in server.received] == [ev.CloseConnection]  # answered, nothing sent after it


async def test_a_normal_close_without_reason() -> None:
    async with serving(accept_then(ev.CloseConnection(1000))) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                with pytest.raises(WebSocketClosed) as caught:
                    await ws.receive()
    assert (caught.value.code, caught.value.reason) == (1000, "")


async def test_a_connection_lost_without_a_close_frame_is_1006() -> None:
    async def talk(peer: Peer) -> None:
        await peer.send(ev.AcceptConnection(), ev.TextMessage("bye"))
        await peer.stream.aclose()
        raise anyio.ClosedResourceError

    async with serving(talk) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                assert await ws.receive() == "bye"
                with pytest.raises(WebSocketClosed) as caught:
                    await ws.receive()
    assert caught.value.code == 1006


# ---------------------------------------------------------------- through a proxy


@pytest.mark.parametrize("given_by", ["environment", "options"])
async def test_wss_through_an_https_proxy(
    given_by: str, monkeypatch: pytest.MonkeyPatch, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    tunnels: list[bytes] = []

    async def proxy(client: anyio.abc.ByteStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await client.receive()
            tunnels.append(head.split(b"\r\n", 1)[0])
            host, port = head.split()[1].decode().rsplit(":", 1)
            async with await anyio.connect_tcp("127.0.0.1" if host == "localhost" else host, int(port)) as upstream:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pipe(a: anyio.abc.ByteStream, b: anyio.abc.ByteStream) -> None:
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)):
                        while True:
                            await b.send(await a.receive())
                    tg.cancel_scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipe, client, upstream)
                    tg.start_soon(pipe, upstream, client)

    proxy_listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy_port = proxy_listener.extra(anyio.abc.SocketAttribute.local_port)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    options = ConnectionOptions(ssl_context=client_tls)
    if given_by == "environment":
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    else:
        options = ConnectionOptions(ssl_context=client_tls, proxy=f"http://127.0.0.1:{proxy_port}")
    async with proxy_listener, anyio.create_task_group() as tg:
        tg.start_soon(proxy_listener.serve, proxy)
        async with serving(accept_then(ev.TextMessage("via proxy")), ssl_context=server_tls) as server:
            with anyio.fail_after(10):
                async with open_websocket(server.url(), HEADERS, secrets=(KEY,), options=options) as ws:
                    assert await ws.receive() == "via proxy"
        tg.cancel_scope.cancel()
    assert tunnels == [f"CONNECT localhost:{server.port} HTTP/1.1".encode()]
    assert dict(server.requests[0].extra_headers)[b"authorization"] == f"Bearer {KEY}".encode()


async def test_a_proxy_without_httpx_installed_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "httpx_ws", None)  # as if it were not installed
    with pytest.raises(BidiUsageError, match="NO_PROXY"):
        async with open_websocket("ws://example.invalid/v1", {}):
            pass


# ---------------------------------------------------------------- cancellation


def _sockets_to(port: int) -> set[str]:
    """This process's descriptors that are TCP sockets connected to ``port`` (the client ends; the server's
    ends, in this process too, have it as their local port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") in inodes:
                found.add(fd)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_a_cut_anywhere_in_the_opening_leaves_no_socket_open(
    tls: bool, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """Cancel ``open_websocket`` (resolving, connecting, TLS, the upgrade) after each count of checkpoints
    in turn: every socket it made is closed as the cancellation leaves it, none left for the garbage
    collector (switched off here, so a socket only the collector would close stays open and is seen).
    asyncio's own happy eyeballs left the winning socket open when cut just as it connected (the
    cancellation sweep found it)."""
    options = ConnectionOptions(ssl_context=client_tls) if tls else ConnectionOptions()
    cut = opened = 0
    gc.disable()
    try:
        async with serving(accept_then(), ssl_context=server_tls if tls else None) as server:
            for steps in range(80):
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(after_checkpoints, steps, scope.cancel)
                        with anyio.fail_after(10):
                            async with open_websocket(server.url(), HEADERS, options=options):
                                opened += 1
                                await anyio.sleep_forever()
                cut += scope.cancelled_caught
                # A transport closes its socket on the event loop's next turn: wait for that, not longer.
                with anyio.fail_after(5):
                    while _sockets_to(server.port):  # noqa: ASYNC110 (no event says a descriptor closed)
                        await anyio.sleep(0.01)
    finally:
        gc.enable()
    assert cut == 80 and opened > 0  # cut before, during and after the opening
