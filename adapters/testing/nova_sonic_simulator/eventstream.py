"""AWS event-stream framing (docs/protocols/nova_sonic.md#event-stream-framing), written from the format description.

A message is ``u32 total | u32 headers_len | u32 crc32(prelude) | headers | payload | u32 crc32(all before)``;
a header is ``u8 name_len | name | u8 type | value``. The simulator decodes what the
client sends with :class:`MessageDecoder` (strict: bad CRCs, unknown header types,
duplicate headers and oversized messages are errors, never guesses) and encodes
what it sends with :func:`encode_message`. It keeps the header *types* it read
because the chunk signature covers the encoded ``:date`` header, so a ``:date``
sent as a plain integer is a different (and wrongly signed) message.
"""

from __future__ import annotations

import binascii
import struct
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

__all__ = [
    "Header",
    "HeaderType",
    "Message",
    "MessageDecoder",
    "MessageFormatError",
    "encode_headers",
    "encode_message",
]

PRELUDE_LENGTH = 12
MAX_MESSAGE_LENGTH = 24 * 1024 * 1024 + 128 * 1024
"""The largest message the service accepts: a 24 MiB payload plus 128 KiB of headers."""
MAX_HEADERS_LENGTH = 128 * 1024


class HeaderType:
    """The value type codes of docs/protocols/nova_sonic.md#event-stream-framing."""

    TRUE = 0
    FALSE = 1
    BYTE = 2
    SHORT = 3
    INTEGER = 4
    LONG = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


class MessageFormatError(ValueError):
    """The bytes are not a well-formed event-stream message."""


@attrs.frozen
class Header:
    """One header: its wire type code and decoded value (``bytes`` for BYTES, ``int`` ms for TIMESTAMP)."""

    type: int
    value: Any


@attrs.frozen
class Message:
    """A decoded message and the exact bytes it came from (the inner message is signed as raw bytes)."""

    headers: Mapping[str, Header]
    payload: bytes
    raw: bytes

    def string(self, name: str) -> str | None:
        """The value of a STRING header, None if absent or of another type."""
        header = self.headers.get(name)
        if header is None or header.type != HeaderType.STRING:
            return None
        return str(header.value)


def _encode_value(type_code: int, value: Any) -> bytes:
    if type_code in (HeaderType.TRUE, HeaderType.FALSE):
        return b""
    if type_code == HeaderType.BYTE:
        return struct.pack("!b", value)
    if type_code == HeaderType.SHORT:
        return struct.pack("!h", value)
    if type_code == HeaderType.INTEGER:
        return struct.pack("!i", value)
    if type_code in (HeaderType.LONG, HeaderType.TIMESTAMP):
        return struct.pack("!q", value)
    if type_code in (HeaderType.BYTES, HeaderType.STRING):
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return struct.pack("!H", len(raw)) + raw
    if type_code == HeaderType.UUID:
        return uuid.UUID(str(value)).bytes if not isinstance(value, bytes) else value
    raise ValueError(f"unknown header type {type_code}")


def encode_headers(headers: Mapping[str, Header]) -> bytes:
    """The header block of a message, in the given order."""
    out = bytearray()
    for name, header in headers.items():
        raw_name = name.encode("utf-8")
        out += struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!B", header.type)
        out += _encode_value(header.type, header.value)
    return bytes(out)


def encode_message(headers: Mapping[str, Header], payload: bytes) -> bytes:
    """One complete message with both CRCs."""
    header_bytes = encode_headers(headers)
    total = PRELUDE_LENGTH + len(header_bytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    body = prelude + header_bytes + payload
    return body + struct.pack("!I", binascii.crc32(body))


def string_headers(**values: str) -> dict[str, Header]:
    """STRING headers from keyword arguments (``message_type`` becomes ``:message-type``)."""
    return {":" + name.replace("_", "-"): Header(HeaderType.STRING, value) for name, value in values.items()}


def _decode_headers(data: bytes) -> dict[str, Header]:
    headers: dict[str, Header] = {}
    pos = 0
    try:
        while pos < len(data):
            name_len = data[pos]
            pos += 1
            name = data[pos : pos + name_len].decode("utf-8")
            if len(name.encode()) != name_len or not name:
                raise MessageFormatError("truncated header name")
            pos += name_len
            type_code = data[pos]
            pos += 1
            value: Any
            if type_code == HeaderType.TRUE:
                value = True
            elif type_code == HeaderType.FALSE:
                value = False
            elif type_code == HeaderType.BYTE:
                (value,) = struct.unpack_from("!b", data, pos)
                pos += 1
            elif type_code == HeaderType.SHORT:
                (value,) = struct.unpack_from("!h", data, pos)
                pos += 2
            elif type_code == HeaderType.INTEGER:
                (value,) = struct.unpack_from("!i", data, pos)
                pos += 4
            elif type_code in (HeaderType.LONG, HeaderType.TIMESTAMP):
                (value,) = struct.unpack_from("!q", data, pos)
                pos += 8
            elif type_code in (HeaderType.BYTES, HeaderType.STRING):
                (length,) = struct.unpack_from("!H", data, pos)
                pos += 2
                raw = data[pos : pos + length]
                if len(raw) != length:
                    raise MessageFormatError("truncated header value")
                pos += length
                value = raw if type_code == HeaderType.BYTES else raw.decode("utf-8")
            elif type_code == HeaderType.UUID:
                raw = data[pos : pos + 16]
                if len(raw) != 16:
                    raise MessageFormatError("truncated uuid header")
                value = uuid.UUID(bytes=raw)
                pos += 16
            else:
                raise MessageFormatError(f"unknown header type {type_code} for {name!r}")
            if name in headers:
                raise MessageFormatError(f"duplicate header {name!r}")
            headers[name] = Header(type_code, value)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"malformed headers: {exc}") from exc
    return headers


def decode_message(raw: bytes) -> Message:
    """Decode exactly one complete message."""
    if len(raw) < PRELUDE_LENGTH + 4:
        raise MessageFormatError("message shorter than its prelude")
    total, headers_len, prelude_crc = struct.unpack_from("!III", raw, 0)
    if total != len(raw):
        raise MessageFormatError(f"length {total} in the prelude, {len(raw)} bytes given")
    if binascii.crc32(raw[:8]) != prelude_crc:
        raise MessageFormatError("prelude CRC mismatch")
    (message_crc,) = struct.unpack_from("!I", raw, total - 4)
    if binascii.crc32(raw[: total - 4]) != message_crc:
        raise MessageFormatError("message CRC mismatch")
    if PRELUDE_LENGTH + headers_len > total - 4:
        raise MessageFormatError("headers longer than the message")
    headers = _decode_headers(raw[PRELUDE_LENGTH : PRELUDE_LENGTH + headers_len])
    return Message(headers=headers, payload=raw[PRELUDE_LENGTH + headers_len : total - 4], raw=raw)


class MessageDecoder:
    """Reassembles messages from arbitrary byte chunks (HTTP/2 DATA frames)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        """Add bytes and yield every message now complete. Raises :class:`MessageFormatError`."""
        self._buffer += data
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_len, prelude_crc = struct.unpack_from("!III", self._buffer, 0)
            if binascii.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise MessageFormatError("prelude CRC mismatch")
            if total > MAX_MESSAGE_LENGTH or headers_len > MAX_HEADERS_LENGTH or total < PRELUDE_LENGTH + 4:
                raise MessageFormatError(f"message length {total} out of bounds")
            if len(self._buffer) < total:
                return
            raw = bytes(self._buffer[:total])
            del self._buffer[:total]
            yield decode_message(raw)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buffer)
