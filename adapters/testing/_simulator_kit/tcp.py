"""Transport faults every simulator can play on its TCP connection.

A service's connection can end three ways a client tells apart: a close the
protocol speaks (a WebSocket close frame, HTTP/2 ``GOAWAY``), the TCP
connection closed without one (FIN; under TLS, without ``close_notify``, which
every simulator's TLS does since it is not "standard compatible"), and a reset
(RST: the peer's kernel forgets the connection at once, unread data
included). :func:`reset_on_close` makes the next close of a stream the third.
"""

from __future__ import annotations

import socket
import struct

import anyio.abc

__all__ = ["reset_on_close"]


def reset_on_close(stream: anyio.abc.AnyByteStream) -> bool:
    """Make closing ``stream`` send a TCP RST instead of a FIN (``SO_LINGER`` on, zero seconds).

    Works through TLS (the raw socket is an extra attribute of every anyio
    stream above it). False when the stream has no socket (nothing changed).
    """
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # already closed
        return False
    return True
