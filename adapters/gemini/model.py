"""BidiGeminiLiveModel: configuration, endpoints, credentials and the connection factory.

Two backends speak the same ``BidiGenerateContent`` protocol:

* the Gemini API (AI Studio): ``wss://generativelanguage.googleapis.com/ws/
  google.ai.generativelanguage.{v1beta}.GenerativeService.BidiGenerateContent``,
  key in the ``x-goog-api-key`` header, model ``models/<id>``;
* Vertex AI (``vertexai=True``): ``wss://{location}-aiplatform.googleapis.com/ws/
  google.cloud.aiplatform.{v1beta1}.LlmBidiService/BidiGenerateContent``, an
  OAuth access token as ``Authorization: Bearer`` (or an express-mode API key),
  model ``projects/{project}/locations/{location}/publishers/google/models/<id>``
  (the paths google-genai's ``live.py`` builds).

``base_url`` points either at another host (``https``/``wss`` or, for a local
simulator, ``http``/``ws``), with the versioned path appended, or at a full
``.../BidiGenerateContent`` URL used as it is. A custom CA goes in
``ssl_context`` (or ``connection=ConnectionOptions(ssl_context=...)``); without
one, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are honoured (read at each connection
and handed to our WebSocket client, ``adapters/websocket.py``).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs

from adapters.connection import ConnectionOptions, merge_options
from adapters.gemini.config import GeminiConfig, parse_provider_config
from adapters.gemini.errors import error_for_response
from adapters.gemini.session import GeminiLiveSession
from adapters.gemini.wire import recorded_audio
from adapters.message_socket import MessageSocket, recorded
from adapters.recording import JsonFrames, Recording, record_connection
from adapters.urls import redacted_url, websocket_url
from adapters.websocket import open_websocket, ssl_context_for
from ports.audio import AudioFormat
from ports.errors import BidiConnectionError, BidiProviderError, BidiUsageError
from ports.model import ConnectRequest, ModelCapabilities

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "BidiGeminiLiveModel"]

logger = logging.getLogger("bidi_core.adapters.gemini")

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
DEFAULT_BASE_URL = "wss://generativelanguage.googleapis.com"
API_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
VERTEX_PATH = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

AccessToken = str | Callable[[], str | Awaitable[str]]
"""A Vertex AI OAuth token, or a function (sync or async) returning a fresh one per connection."""

_ids = itertools.count(1)


class BidiGeminiLiveModel:
    """Gemini Live as a :class:`ports.model.BidiModel`.

    ``api_key`` defaults to ``GOOGLE_API_KEY``, then ``GEMINI_API_KEY``. For
    Vertex AI pass ``vertexai=True`` with ``project`` and ``location``
    (defaults: ``GOOGLE_CLOUD_PROJECT``, ``GOOGLE_CLOUD_LOCATION``, else
    ``us-central1``) and an ``access_token`` (a string or a function returning
    one); without a token or key, Application Default Credentials are used
    through ``google-auth`` if it is installed. ``provider_config`` (see
    :mod:`adapters.gemini.config`) is validated now, not at the first
    connection. ``max_connection_s`` is None because the service announces
    the end of a connection with ``goAway`` (about every 10 minutes), which
    the core turns into a rotation at the next turn boundary.

    ``connection`` (:class:`~adapters.connection.ConnectionOptions`) sets the
    timeouts (connect 10 s, read 15 s of silence, close 3 s), the TLS trust and
    a proxy; ``connect_timeout_s`` and ``ssl_context`` (an ``ssl.SSLContext``,
    or as ``verify`` elsewhere ``False`` or a CA path) are the older spellings
    and must not contradict it. ``setup_timeout_s`` (15 s) bounds the wait
    for ``setupComplete``. ``connection.record_to`` records every connection
    (``docs/recording.md``).
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        provider_config: Mapping[str, Any] | None = None,
        ssl_context: Any = None,
        vertexai: bool = False,
        project: str | None = None,
        location: str | None = None,
        access_token: AccessToken | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_connection_s: float | None = None,
        setup_timeout_s: float = 15.0,
        connect_timeout_s: float | None = None,
        connection: ConnectionOptions | None = None,
    ) -> None:
        if not isinstance(model_id, str) or not model_id.strip("/ "):
            raise BidiUsageError("model_id must be a non-empty string, e.g. " + repr(DEFAULT_MODEL))
        if api_version is not None and (not isinstance(api_version, str) or not api_version.isalnum()):
            raise BidiUsageError(f"api_version must be like 'v1beta' or 'v1alpha', got {api_version!r}")
        if not (isinstance(setup_timeout_s, int | float) and setup_timeout_s > 0):
            raise BidiUsageError("setup_timeout_s must be a positive number of seconds")
        self.vertexai = bool(vertexai)
        key = api_key if api_key is not None else (os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY"))
        self._api_key = key or None
        self._access_token = access_token
        if isinstance(access_token, str) and not access_token:
            raise BidiUsageError("access_token must not be empty")
        if not self.vertexai and not self._api_key:
            raise BidiUsageError("no Gemini API key: pass api_key= or set GOOGLE_API_KEY (or GEMINI_API_KEY)")
        self.project: str | None
        self.location: str | None
        if self.vertexai:
            self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
            self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION") or "us-central1"
            if not self.project and not model_id.startswith("projects/") and not self._api_key:
                raise BidiUsageError(
                    "Vertex AI needs a project: pass project= or set GOOGLE_CLOUD_PROJECT "
                    "(or give model_id as a full projects/.../models/... path)"
                )
        else:
            self.project, self.location = project, location
        self.api_version = api_version or ("v1beta1" if self.vertexai else "v1beta")
        self._model_id = model_id
        self.model_path = self._model_path(model_id)
        self.url = self._endpoint(base_url)
        self.config: GeminiConfig = parse_provider_config(provider_config, vertex=self.vertexai)
        self._provider_config = copy.deepcopy(dict(provider_config or {}))
        context = ssl_context if isinstance(ssl_context, ssl.SSLContext) or ssl_context is None else None
        if context is None and ssl_context is not None:
            context = ssl_context_for(ssl_context)  # False, or a CA path, as ``verify`` elsewhere
        self.connection = merge_options(connection, connect_timeout_s=connect_timeout_s, ssl_context=context)
        self._extra_headers = dict(extra_headers or {})
        self._setup_timeout_s = float(setup_timeout_s)
        self._capabilities = ModelCapabilities(
            input_audio=AudioFormat(self.config.input_rate),
            output_audio=AudioFormat(24000),
            can_truncate=False,
            cancels_on_speech=True,
            resumable=self.config.resumption,
            max_connection_s=max_connection_s,
            supports_images=True,
        )
        self._recording = Recording.from_options(
            self.connection,
            provider="gemini",
            model_id=model_id,
            settings=self.recording_settings(),
            audio_fields=recorded_audio,
            codec=JsonFrames,
        )

    def recording_settings(self) -> dict[str, Any]:
        """What a recording says of this model, enough for :meth:`for_replay` to build it again."""
        return {
            "provider_config": self._provider_config,
            "vertexai": self.vertexai,
            "model_path": self.model_path,
            "api_version": self.api_version,
            "max_connection_s": self._capabilities.max_connection_s,
            "setup_timeout_s": self._setup_timeout_s,
        }

    @classmethod
    def for_replay(cls, model_id: str, settings: Mapping[str, Any]) -> BidiGeminiLiveModel:
        """The model a recording was made with, without credentials (``adapters.testing.replay``)."""
        vertex = bool(settings.get("vertexai"))
        model = cls(
            model_id,
            api_key=None if vertex else "replay",
            access_token="replay" if vertex else None,
            vertexai=vertex,
            project="replay" if vertex else None,
            api_version=settings.get("api_version"),
            provider_config=settings.get("provider_config"),
            max_connection_s=settings.get("max_connection_s"),
            setup_timeout_s=settings.get("setup_timeout_s", 15.0),
        )
        model.model_path = settings.get("model_path", model.model_path)
        return model

    def _model_path(self, model_id: str) -> str:
        if not self.vertexai:
            if model_id.startswith(("models/", "tunedModels/")):
                return model_id
            if "/" in model_id:
                raise BidiUsageError(f"model_id {model_id!r}: expected 'gemini-...' or 'models/gemini-...'")
            return f"models/{model_id}"
        if model_id.startswith("projects/"):
            return model_id
        name = model_id.removeprefix("models/")
        if not name.startswith("publishers/"):
            name = f"publishers/google/models/{name}"
        if self.project:
            return f"projects/{self.project}/locations/{self.location}/{name}"
        return name  # express mode (API key): the service fills in the project

    def _endpoint(self, base_url: str | None) -> str:
        path = (VERTEX_PATH if self.vertexai else API_PATH).format(version=self.api_version)
        if base_url is None:
            if not self.vertexai:
                return DEFAULT_BASE_URL + path
            host = (
                "aiplatform.googleapis.com"
                if self.location == "global"
                else f"{self.location}-aiplatform.googleapis.com"
            )
            return f"wss://{host}{path}"
        full = isinstance(base_url, str) and "BidiGenerateContent" in urlsplit(base_url).path
        return websocket_url(base_url, path="" if full else path)

    def __repr__(self) -> str:
        backend = ", vertexai=True" if self.vertexai else ""
        return (
            f"BidiGeminiLiveModel(model_id={self._model_id!r}{backend}, "
            f"url={redacted_url(self.url, *self._secrets())!r}, credentials='***')"
        )

    def _secrets(self) -> tuple[str, ...]:
        token = self._access_token if isinstance(self._access_token, str) else None
        return tuple(s for s in (self._api_key, token) if s)

    @property
    def provider_name(self) -> str:
        """The service, as OpenTelemetry's GenAI conventions name it (``gen_ai.provider.name``)."""
        return "gcp.vertex_ai" if self.vertexai else "gcp.gemini"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    async def _token(self) -> str | None:
        token = self._access_token
        if token is None:
            if self._api_key:
                return None
            # Abandoned on cancellation: a token endpoint that does not answer must not hold up stop().
            return await anyio.to_thread.run_sync(_default_credentials_token, abandon_on_cancel=True)
        if isinstance(token, str):
            return token
        value = token()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise BidiUsageError("access_token() must return a non-empty string")
        return value

    async def _headers(self) -> tuple[dict[str, str], tuple[str, ...]]:
        headers = dict(self._extra_headers)
        secrets = self._secrets()
        token = await self._token() if self.vertexai else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
            secrets = (*secrets, token)
        elif self._api_key:
            headers["x-goog-api-key"] = self._api_key
        return headers, secrets

    def _options(self) -> ConnectionOptions:
        """The options for this connection: the TLS trust is ``ssl_context``, else ``SSL_CERT_FILE``/``SSL_CERT_DIR``
        as they are now (read per connection, so a process that sets them late still gets them), else the system's."""
        if self.connection.ssl_context is not None:
            return self.connection
        path = os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")
        if not path:
            return self.connection
        return attrs.evolve(self.connection, ssl_context=ssl_context_for(path))

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[GeminiLiveSession]:
        """Open a ``BidiGenerateContent`` WebSocket, set it up, and resume or seed the session.

        Raises :class:`BidiResumptionRejectedError` when the service refuses
        the handle, :class:`BidiProviderError` when it refuses the setup,
        :class:`BidiConnectionError` when it cannot be reached.
        """
        connection_id = f"gemini-{next(_ids)}"
        headers, secrets = await self._headers()
        logger.debug("connecting %s to %s", connection_id, redacted_url(self.url, *secrets))
        with record_connection(self._recording, connection_id, self.url, secrets) as tap:
            async with (
                open_websocket(
                    self.url,
                    headers,
                    secrets=secrets,
                    options=self._options(),
                    error_for_response=partial(error_for_response, secrets=secrets),
                ) as ws,
                self.open_session(recorded(ws, tap), connection_id, request, secrets) as session,
            ):
                yield session
        logger.debug("%s closed", connection_id)

    @asynccontextmanager
    async def open_session(
        self, ws: MessageSocket, connection_id: str, request: ConnectRequest, secrets: tuple[str, ...] = ()
    ) -> AsyncIterator[GeminiLiveSession]:
        """The session over an open socket: :meth:`connect` after the upgrade (a replay's socket, too)."""
        session = GeminiLiveSession(ws, connection_id, self._capabilities, self.config, secrets)
        await session.open(self.model_path, request, timeout_s=self._setup_timeout_s)
        yield session


def _default_credentials_token() -> str:
    """An access token from Application Default Credentials (blocking: run in a thread)."""
    try:
        import google.auth  # type: ignore[import-untyped,unused-ignore]
        import google.auth.transport.requests  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise BidiUsageError(
            "Vertex AI needs credentials: pass access_token= (a token or a function returning one), "
            "api_key= for express mode, or install google-auth to use Application Default Credentials"
        ) from None
    try:
        credentials, _project = google.auth.default(scopes=[CLOUD_SCOPE])
    except Exception as exc:  # DefaultCredentialsError: none configured, or unreadable
        raise BidiProviderError(
            f"could not get Vertex AI credentials: {type(exc).__name__}", code="authentication_failed"
        ) from None
    try:
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call,unused-ignore]
    except Exception as exc:
        # A new token is fetched for every connection, rotations included: a network fault or a
        # refusal the library calls transient must not end a conversation that reconnecting saves.
        import google.auth.exceptions  # type: ignore[import-untyped,unused-ignore]

        transient = isinstance(exc, google.auth.exceptions.TransportError) or getattr(exc, "retryable", False) is True
        message = f"could not refresh the Vertex AI access token: {type(exc).__name__}"
        if transient:
            raise BidiConnectionError(message) from None
        raise BidiProviderError(message, code="authentication_failed") from None
    token = credentials.token
    if not isinstance(token, str) or not token:
        raise BidiProviderError("Application Default Credentials gave no access token", code="authentication_failed")
    return token
