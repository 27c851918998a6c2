"""A client's WebSocket frame for one whole message, built without wsproto.

Every microphone block is one text message going up, fifty a second per
conversation. wsproto builds each frame through its event, its extension
loop and a masker that copies the payload into a ``bytearray`` and masks it
in four strided slices; this builds the same bytes (RFC 6455 5.2: FIN, the
opcode, the masked length, a fresh random masking key, the masked payload)
in a few C calls, about half of wsproto's time (``benchmarks/README.md``,
"The duplex up path"). :class:`adapters.websocket.WebSocketConnection` uses
it only where wsproto would build exactly this frame: the connection open,
no extension negotiated, a whole (unfragmented) message. Everything else
(control frames, the close) is still wsproto's.
"""

from __future__ import annotations

import os
import struct

__all__ = ["OP_BINARY", "OP_TEXT", "masked_frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame of ``opcode`` carrying ``payload``, masked as a client must
    (with a key from ``os.urandom``: RFC 6455 10.3 wants it unpredictable)."""
    size = len(payload)
    if size < 126:
        header = _SHORT.pack(0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = _MEDIUM.pack(0x80 | opcode, 0x80 | 126, size)
    else:
        header = _LONG.pack(0x80 | opcode, 0x80 | 127, size)
    key = os.urandom(4)
    if not size:
        return header + key
    mask = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
    return b"".join((header, key, masked))
