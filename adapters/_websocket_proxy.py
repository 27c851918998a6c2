"""The WebSocket upgrade through a proxy (``ConnectionOptions.proxy``, or the environment's), with httpx.

httpx speaks to proxies (CONNECT, authentication, SOCKS with its extra) and
httpx-ws does the upgrade; both are imported only when a proxy applies (the
``proxy`` extra). After the upgrade the frames are read by
:class:`~adapters.websocket.WebSocketConnection`, on httpcore's network stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType

from adapters.connection import ConnectionOptions
from adapters.websocket import ErrorForResponse, WebSocketConnection, logger, ssl_context_for
from ports.errors import BidiConnectionError, BidiUsageError, redact

__all__ = ["open_via_httpx"]

_READ_SIZE = 65536


class _HttpcoreStream(anyio.abc.ByteStream):
    """httpcore's network stream (what httpx hands over after an upgrade) as an anyio byte stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        data: bytes = await self._stream.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        await self._stream.write(item)

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._stream.aclose()


@asynccontextmanager
async def open_via_httpx(
    url: str,
    http_scheme: str,
    proxy: str,
    headers: Mapping[str, str],
    secrets: tuple[str, ...],
    options: ConnectionOptions,
    error_for_response: ErrorForResponse,
) -> AsyncIterator[WebSocketConnection]:
    """The upgrade through httpx (it speaks to proxies: CONNECT, auth, SOCKS with its extra)."""
    try:
        import httpx
        import httpx_ws
    except ImportError:
        raise BidiUsageError(
            "a proxy applies to this host (ConnectionOptions.proxy, or HTTP_PROXY/HTTPS_PROXY/ALL_PROXY): install "
            '"bidi-core[proxy]" (httpx and httpx-ws) to connect through it, or exclude the host with NO_PROXY'
        ) from None

    def session(stream: Any, **_ignored: Any) -> WebSocketConnection:
        # httpx-ws passes its own queue/keepalive settings; they describe its background reader.
        return WebSocketConnection(
            _HttpcoreStream(stream),
            WSConnection(ConnectionType.CLIENT),
            read_timeout_s=options.read_timeout_s,
            close_timeout_s=options.close_timeout_s,
        )

    http_url = http_scheme + url[url.index(":") :]
    timeout = httpx.Timeout(options.connect_timeout_s, read=None, write=options.connect_timeout_s)
    logger.debug("connecting through a proxy")
    verify = options.ssl_context or ssl_context_for(None)
    async with httpx.AsyncClient(timeout=timeout, verify=verify, proxy=proxy) as client:
        try:
            async with httpx_ws.aconnect_ws(
                http_url,
                client,
                headers=dict(headers),
                session_class=session,  # type: ignore[arg-type,type-var]
                keepalive_ping_interval_seconds=None,
            ) as ws:
                yield ws
        except httpx_ws.WebSocketUpgradeError as exc:
            body = b""
            with suppress(httpx.HTTPError, RuntimeError):
                body = await exc.response.aread()
            refused = {k.lower(): v for k, v in exc.response.headers.items()}
            raise error_for_response(exc.response.status_code, refused, body) from None
        except (httpx.TransportError, OSError) as exc:
            raise BidiConnectionError(
                redact(f"cannot reach {http_url} through the proxy: {type(exc).__name__}: {exc}", *secrets)
            ) from None
