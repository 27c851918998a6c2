"""ConnectionOptions: how every provider adapter connects (timeouts, TLS trust, proxy).

One frozen value, the same for OpenAI, Gemini and Nova Sonic::

    BidiGeminiLiveModel(connection=ConnectionOptions(read_timeout_s=30, ssl_context=my_ca))

The models also keep the keyword arguments they had before this class existed
(``connect_timeout_s=``, ``read_timeout_s=``, ``ssl_context=``, ...);
:func:`merge_options` folds them in, and a keyword that contradicts
``connection=`` is a :class:`BidiUsageError` rather than a silent choice.
"""

from __future__ import annotations

import math
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import attrs

from ports.errors import BidiUsageError, redact

__all__ = ["ConnectionOptions", "merge_options"]


def _positive_seconds(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (value > 0 and math.isfinite(value)):
        raise BidiUsageError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


def _ssl_context(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        raise BidiUsageError(f"ssl_context must be an ssl.SSLContext or None, got {type(value).__name__}")


def _proxy(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    scheme = urlsplit(value).scheme.lower() if isinstance(value, str) else ""
    if scheme not in ("http", "https", "socks5", "socks5h"):
        shown = redact(value) if isinstance(value, str) else type(value).__name__
        raise BidiUsageError(f"proxy must be an http://, https:// or socks5:// URL, got {shown!r}")


def _record_to(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not (isinstance(value, str | os.PathLike) and os.fspath(value)):
        raise BidiUsageError(f"record_to must be a file path or None, got {type(value).__name__}")


def _bool(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise BidiUsageError(f"{attribute.name} must be True or False, got {value!r}")


@attrs.frozen
class ConnectionOptions:
    """How a model connects to its provider.

    ``connect_timeout_s`` bounds TCP, TLS and the protocol's handshake (the
    WebSocket upgrade). ``read_timeout_s`` is liveness: a connection on which
    nothing arrived for that long (the pings it is sent meanwhile unanswered)
    fails with a retryable :class:`~ports.errors.BidiConnectionError`, so a
    provider that goes silent with the socket open becomes a reconnect, not an
    endless wait. A quiet connection is pinged after two thirds of it (at most
    every 10 s). ``close_timeout_s`` bounds the polite goodbye (a close frame,
    or Nova's end of input and drain). ``ssl_context`` is the TLS trust (a
    private CA); ``None`` means the system's store, ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` honoured. ``proxy`` (``http://``, ``https://`` or
    ``socks5://``; WebSocket providers only, and it needs the ``proxy`` extra)
    is used for every connection; ``None`` means the one the environment
    names (``HTTPS_PROXY``, ``ALL_PROXY``, with ``NO_PROXY``), if any.

    ``record_to`` (a path) records every connection of the model, every frame
    both ways with its time, credentials removed, as JSON Lines
    (``docs/recording.md``; ``adapters/recording.py``), which
    ``adapters.testing.replay`` plays back offline; ``record_audio=False``
    keeps only the length of each audio block.
    """

    connect_timeout_s: float = attrs.field(default=10.0, validator=_positive_seconds)
    read_timeout_s: float = attrs.field(default=15.0, validator=_positive_seconds)
    close_timeout_s: float = attrs.field(default=3.0, validator=_positive_seconds)
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, validator=_ssl_context)
    proxy: str | None = attrs.field(default=None, validator=_proxy, repr=False)
    record_to: str | os.PathLike[str] | None = attrs.field(default=None, validator=_record_to)
    record_audio: bool = attrs.field(default=True, validator=_bool)

    def __repr__(self) -> str:
        # The proxy URL may carry credentials (http://user:password@host).
        proxy = "None" if self.proxy is None else "'***'"
        context = "None" if self.ssl_context is None else "<ssl.SSLContext>"
        return (
            f"ConnectionOptions(connect_timeout_s={self.connect_timeout_s:g}, read_timeout_s={self.read_timeout_s:g}, "
            f"close_timeout_s={self.close_timeout_s:g}, ssl_context={context}, proxy={proxy}"
            + (f", record_to={os.fspath(self.record_to)!r}" if self.record_to is not None else "")
            + (", record_audio=False" if not self.record_audio else "")
            + ")"
        )


def merge_options(connection: ConnectionOptions | None, **given: Any) -> ConnectionOptions:
    """``connection`` with the model's own keyword arguments folded in.

    ``given`` maps option names to what the caller passed, ``None`` meaning
    not passed. Without ``connection`` they fill a fresh :class:`ConnectionOptions`.
    With it, a keyword that says the same is fine, and one that says
    otherwise raises :class:`BidiUsageError` (which of the two did the caller
    mean?).
    """
    if connection is not None and not isinstance(connection, ConnectionOptions):
        raise BidiUsageError(f"connection must be a ConnectionOptions, got {type(connection).__name__}")
    passed = {name: value for name, value in given.items() if value is not None}
    if connection is None:
        return ConnectionOptions(**passed)
    for name, value in passed.items():
        mine = getattr(connection, name)
        if mine is not value and mine != value:
            raise BidiUsageError(
                f"{name}= and connection.{name} disagree: pass it in one place "
                f"(connection=ConnectionOptions({name}=...) or {name}=...)"
            )
    return connection
