"""Which certificates a TLS connection to a provider trusts (``ConnectionOptions.ssl_context``'s
``verify`` forms), shared by every transport: the system's store made once per process, none, a
context of the caller's, or a CA file or directory."""

from __future__ import annotations

import logging
import os
import ssl
from contextlib import suppress
from typing import Any

from ports.errors import BidiUsageError

__all__ = ["ssl_context_for"]

logger = logging.getLogger("bidi_core.adapters.tls")

_default_contexts: dict[bool, ssl.SSLContext] = {}


def _default_context(verified: bool) -> ssl.SSLContext:
    """The process's one default context (made once: loading the CA store costs CPU, ``benchmarks/README.md``)."""
    context = _default_contexts.get(verified)
    if context is None:
        context = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
        if not verified:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not context.cert_store_stats()["x509_ca"] and not _system_ca_dir():
            _load_certifi(context)
        _default_contexts[verified] = context
    return context


def _system_ca_dir() -> bool:
    capath = os.environ.get("SSL_CERT_DIR") or ssl.get_default_verify_paths().capath
    with suppress(OSError):
        return bool(capath and os.listdir(capath))
    return False


def _load_certifi(context: ssl.SSLContext) -> None:
    """No system CA store (some Python builds on macOS and Windows): use certifi's if it is installed."""
    try:
        import certifi
    except ImportError:
        logger.debug("no system CA certificates and no certifi: wss:// will fail to verify")
        return
    context.load_verify_locations(certifi.where())


def ssl_context_for(verify: Any) -> ssl.SSLContext:
    """The TLS trust ``verify`` names: ``None``/``True`` the process's default
    context (the system's CA store, ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    honoured), ``False`` no verification, an ``ssl.SSLContext`` itself, or the
    path of a CA file or directory."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is None or verify is True:
        return _default_context(True)
    if verify is False:
        return _default_context(False)
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        try:
            if os.path.isdir(path):
                return ssl.create_default_context(capath=path)
            return ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise BidiUsageError(f"cannot load the CA certificates at {path!r}: {exc}") from None
    raise BidiUsageError(f"verify must be None, a bool, an ssl.SSLContext or a CA path, got {type(verify).__name__}")
