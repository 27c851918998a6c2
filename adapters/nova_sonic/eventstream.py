"""AWS event-stream framing: our encoder, botocore's decoder.

A message is ``u32 total | u32 headers_len | u32 crc(prelude) | headers |
payload | u32 crc(everything before)`` (docs/protocols/nova_sonic.md#event-stream-framing). botocore
ships a decoder with CRC checks (:class:`botocore.eventstream.EventStreamBuffer`)
but no encoder, so the encoder is here; it is small, and the tests round-trip
it through botocore's decoder.
"""

from __future__ import annotations

import binascii
import datetime
import struct
from collections.abc import Mapping
from typing import TypeAlias

import attrs
from botocore.eventstream import EventStreamBuffer  # type: ignore[import-untyped]

from ports.errors import BidiProtocolError

__all__ = ["EventStreamDecoder", "HeaderValue", "Message", "encode_headers", "encode_message"]

HeaderValue: TypeAlias = "str | bytes | bool | int | datetime.datetime"

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)
_I32 = (-(2**31), 2**31 - 1)


def _encode_value(value: HeaderValue) -> bytes:
    # bool first: it is an int too.
    if isinstance(value, bool):
        return b"\x00" if value else b"\x01"
    if isinstance(value, int):
        if _I32[0] <= value <= _I32[1]:
            return b"\x04" + struct.pack(">i", value)
        return b"\x05" + struct.pack(">q", value)
    if isinstance(value, bytes):
        return b"\x06" + struct.pack(">H", len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"\x07" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("event-stream timestamps must be timezone-aware")
        return b"\x08" + struct.pack(">q", (value - _EPOCH) // _MS)
    raise TypeError(f"cannot encode an event-stream header of type {type(value).__name__}")


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """The header block of a message, in the given order."""
    out = bytearray()
    for name, value in headers.items():
        raw = name.encode("utf-8")
        out += struct.pack(">B", len(raw)) + raw + _encode_value(value)
    return bytes(out)


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One whole event-stream message."""
    header_block = encode_headers(headers)
    total = 12 + len(header_block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(header_block))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + header_block + payload
    return body + struct.pack(">I", binascii.crc32(body))


@attrs.frozen
class Message:
    """A decoded message: its headers (strings, bytes, ints, bools, timestamps) and payload."""

    headers: Mapping[str, object]
    payload: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")


class EventStreamDecoder:
    """Bytes in (as they arrive, split anywhere), whole messages out.

    We cut the byte stream into messages by the prelude's length, after
    checking that the lengths are sane (botocore's buffer would loop forever
    on a message claiming to be shorter than its own prelude), and hand each
    whole message to botocore's buffer, which checks both CRCs and parses the
    headers. Any failure (botocore's ``ParserError`` family, and on some
    garbage plain ``struct``/``KeyError``/``UnicodeDecodeError``) becomes
    :class:`BidiProtocolError`, after which the decoder stays broken: a stream
    that lost its framing cannot resynchronise.
    """

    MAX_MESSAGE = 24 * 1024 * 1024 + 128 * 1024 + 16
    """botocore's own limits: 24 MiB of payload and 128 KiB of headers."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._broken: BidiProtocolError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._data)

    def _fail(self, why: str, raw: bytes) -> BidiProtocolError:
        self._broken = BidiProtocolError(f"the server sent a malformed event-stream message ({why})"[:300], raw=raw)
        return self._broken

    def feed(self, data: bytes) -> list[Message]:
        if self._broken is not None:
            raise self._broken
        self._data += data
        messages: list[Message] = []
        while len(self._data) >= 12:
            total, headers_len = struct.unpack_from(">II", self._data)
            if total < 16 or headers_len > total - 16 or total > self.MAX_MESSAGE:
                raise self._fail(f"impossible lengths: total {total}, headers {headers_len}", bytes(self._data[:64]))
            if len(self._data) < total:
                break
            raw = bytes(self._data[:total])
            del self._data[:total]
            buffer = EventStreamBuffer()
            buffer.add_data(raw)
            try:
                message = next(buffer)
            except Exception as exc:  # ParserError family, struct.error, KeyError, UnicodeDecodeError
                raise self._fail(f"{type(exc).__name__}: {exc}", raw[:200]) from None
            messages.append(Message(dict(message.headers), bytes(message.payload)))
        return messages
