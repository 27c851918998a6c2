"""BidiOpenAIRealtimeModel: configuration and the connection factory."""

from __future__ import annotations

import copy
import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from adapters.connection import ConnectionOptions, merge_options
from adapters.message_socket import MessageSocket, recorded
from adapters.openai.config import OpenAIConfig, parse_provider_config
from adapters.openai.errors import error_for_response
from adapters.openai.session import OpenAIRealtimeSession
from adapters.openai.wire import recorded_audio
from adapters.recording import JsonFrames, Recording, record_connection
from adapters.urls import redacted_url, websocket_url
from adapters.websocket import open_websocket, ssl_context_for
from ports.audio import AudioFormat
from ports.errors import BidiUsageError
from ports.model import ConnectRequest, ModelCapabilities

__all__ = ["DEFAULT_BASE_URL", "BidiOpenAIRealtimeModel"]

logger = logging.getLogger("bidi_core.adapters.openai")

DEFAULT_BASE_URL = "wss://api.openai.com/v1"
SESSION_LIMIT_S = 60 * 60.0
"""The service ends a session after 60 minutes (docs/protocols/openai.md#session-limits)."""

_ids = itertools.count(1)


class BidiOpenAIRealtimeModel:
    """OpenAI Realtime (GA) as a :class:`ports.model.BidiModel`.

    ``api_key`` defaults to ``OPENAI_API_KEY``; ``base_url`` to
    ``OPENAI_REALTIME_BASE_URL``, then ``OPENAI_BASE_URL``, then the public
    endpoint (``http(s)`` URLs are turned into ``ws(s)``; the path ends before
    ``/realtime``, as the official client's ``websocket_base_url``). Azure and
    proxies take a ``base_url`` and, if they need them, ``extra_headers``.
    ``provider_config`` is validated now, not at the first connection.

    ``connection`` (:class:`~adapters.connection.ConnectionOptions`) sets the
    timeouts (connect 10 s, read 15 s of silence, close 3 s), the TLS trust and
    a proxy. ``verify`` is the older spelling of the TLS trust: ``None`` (the
    system's CA store), ``False`` (no verification), an ``ssl.SSLContext`` or a
    CA file or directory path; it must not contradict ``connection``.
    ``connection.record_to`` records every connection (``docs/recording.md``).
    """

    def __init__(
        self,
        model_id: str = "gpt-realtime",
        *,
        api_key: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        base_url: str | None = None,
        provider_config: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_connection_s: float | None = SESSION_LIMIT_S,
        verify: Any = None,
        connection: ConnectionOptions | None = None,
    ) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise BidiUsageError("model_id must be a non-empty string")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key:
            raise BidiUsageError("no OpenAI API key: pass api_key= or set OPENAI_API_KEY")
        self._model_id = model_id
        self._api_key = key
        self.organization = organization if organization is not None else os.environ.get("OPENAI_ORGANIZATION")
        self.project = project if project is not None else os.environ.get("OPENAI_PROJECT")
        base = base_url or os.environ.get("OPENAI_REALTIME_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        self.base_url = websocket_url(base or DEFAULT_BASE_URL)
        self.config: OpenAIConfig = parse_provider_config(provider_config)
        self._provider_config = copy.deepcopy(dict(provider_config or {}))
        self._extra_headers = dict(extra_headers or {})
        context = verify if isinstance(verify, ssl.SSLContext) or verify is None else ssl_context_for(verify)
        self.connection = merge_options(connection, ssl_context=context)
        self._capabilities = ModelCapabilities(
            input_audio=AudioFormat(24000),
            output_audio=AudioFormat(24000),
            can_truncate=True,
            cancels_on_speech=self.config.server_interrupts,
            resumable=False,
            max_connection_s=max_connection_s,
            supports_images=True,
        )
        self._recording = Recording.from_options(
            self.connection,
            provider="openai",
            model_id=model_id,
            settings=self.recording_settings(),
            audio_fields=recorded_audio,
            codec=JsonFrames,
        )

    def recording_settings(self) -> dict[str, Any]:
        """What a recording says of this model, enough for :meth:`for_replay` to build it again."""
        return {"provider_config": self._provider_config, "max_connection_s": self._capabilities.max_connection_s}

    @classmethod
    def for_replay(cls, model_id: str, settings: Mapping[str, Any]) -> BidiOpenAIRealtimeModel:
        """The model a recording was made with, without credentials (``adapters.testing.replay``)."""
        return cls(
            model_id,
            api_key="replay",
            provider_config=settings.get("provider_config"),
            max_connection_s=settings.get("max_connection_s", SESSION_LIMIT_S),
        )

    def __repr__(self) -> str:
        base = redacted_url(self.base_url, self._api_key)
        return f"BidiOpenAIRealtimeModel(model_id={self._model_id!r}, base_url={base!r}, api_key='***')"

    @property
    def provider_name(self) -> str:
        """The service, as OpenTelemetry's GenAI conventions name it (``gen_ai.provider.name``)."""
        return "openai"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    @property
    def url(self) -> str:
        return websocket_url(self.base_url, path="/realtime", query={"model": self._model_id})

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._api_key}", **self._extra_headers}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[OpenAIRealtimeSession]:
        """Open a Realtime WebSocket, configure the session and seed the history."""
        connection_id = f"openai-{next(_ids)}"
        secrets = (self._api_key,)
        logger.debug("connecting %s to %s", connection_id, redacted_url(self.url, *secrets))
        with record_connection(self._recording, connection_id, self.url, secrets) as tap:
            async with (
                open_websocket(
                    self.url,
                    self._headers(),
                    secrets=secrets,
                    options=self.connection,
                    error_for_response=partial(error_for_response, secrets=secrets),
                ) as ws,
                self.open_session(recorded(ws, tap), connection_id, request) as session,
            ):
                yield session
        logger.debug("%s closed", connection_id)

    @asynccontextmanager
    async def open_session(
        self, ws: MessageSocket, connection_id: str, request: ConnectRequest
    ) -> AsyncIterator[OpenAIRealtimeSession]:
        """The session over an open socket: :meth:`connect` after the upgrade (a replay's socket, too)."""
        session = OpenAIRealtimeSession(ws, connection_id, self._capabilities, self.config)
        await session.open(self._model_id, request, timeout_s=self.connection.connect_timeout_s)
        logger.debug("%s open (%d history items)", connection_id, len(request.history))
        yield session
