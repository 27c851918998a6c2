"""BidiNovaSonicModel: configuration, credentials, TLS, and the connection factory."""

from __future__ import annotations

import copy
import itertools
import logging
import os
import ssl
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import attrs
from botocore.httpsession import get_cert_path  # type: ignore[import-untyped]

from adapters.connection import ConnectionOptions, merge_options
from adapters.nova_sonic.config import MODELS, NOVA_2_SONIC, NovaSonicConfig, parse_provider_config
from adapters.nova_sonic.errors import error_for_response
from adapters.nova_sonic.frames import NovaFrames
from adapters.nova_sonic.h2transport import RequestStream, open_stream, recorded
from adapters.nova_sonic.session import NovaSonicSession
from adapters.nova_sonic.signing import AwsCredentials, EventSigner, sign_request
from adapters.nova_sonic.wire import recorded_audio
from adapters.recording import Recording, record_connection
from ports.audio import AudioFormat
from ports.errors import BidiConnectionError, BidiProviderError, BidiUsageError, redact
from ports.model import ConnectRequest, ModelCapabilities

__all__ = ["DEFAULT_REGION", "DEFAULT_SYSTEM_PROMPT", "STREAM_LIMIT_S", "BidiNovaSonicModel"]

logger = logging.getLogger("bidi_core.adapters.nova_sonic")

STREAM_LIMIT_S = 8 * 60.0
"""A bidirectional stream "remains open for 8 minutes" (botocore's bedrock-runtime model)."""
DEFAULT_REGION = "us-east-1"
DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Keep your answers short."
"""What Nova is told when the agent has no system prompt (``default_system_prompt=`` changes it)."""

_ids = itertools.count(1)


class _CredentialThreadFilter(logging.Filter):
    """Drops botocore's DEBUG records made while a thread resolves our credentials.

    Resolving may call STS or SSO (roles, SSO profiles, web identity), and
    botocore logs those calls at DEBUG: the request's signature and headers
    (``botocore.auth``, ``botocore.endpoint``: the SSO bearer token, the source
    session token) and the answer's body (``botocore.parsers``: the new secret
    key and session token). Only records of the resolving thread are dropped,
    so the app's own boto3 clients log as before.
    """

    LOGGERS = ("botocore.auth", "botocore.endpoint", "botocore.parsers", "botocore.utils")

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG or record.thread not in self.threads

    def install(self) -> None:
        for name in self.LOGGERS:
            log = logging.getLogger(name)
            if self not in log.filters:
                log.addFilter(self)


_quiet_resolution = _CredentialThreadFilter()


def _session_region(session: Any) -> str | None:
    region = getattr(session, "region_name", None)  # boto3.Session
    if region:
        return str(region)
    get = getattr(session, "get_config_variable", None)  # botocore.session.Session
    value = get("region") if get is not None else None
    return str(value) if value else None


def _session_ca_bundle(session: Any) -> str | None:
    core = getattr(session, "_session", session)  # boto3.Session wraps a botocore session
    get = getattr(core, "get_config_variable", None)
    value = get("ca_bundle") if get is not None else None
    return str(value) if value else None


class BidiNovaSonicModel:
    """Amazon Nova Sonic (``InvokeModelWithBidirectionalStream``) as a :class:`ports.model.BidiModel`.

    Credentials come from ``credentials`` (a botocore ``Credentials``, refreshable
    ones included), else ``boto_session`` (a ``boto3.Session`` or a botocore
    session), else botocore's default chain (environment, profile, SSO, role,
    container and instance metadata). They are resolved again for every
    connection, so rotated or refreshed keys are picked up at the next stream.

    ``region`` defaults to the session's (``AWS_DEFAULT_REGION``, the profile),
    then ``AWS_REGION``, then ``us-east-1``. ``endpoint_url`` (for VPC endpoints
    and the simulator) defaults to ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``,
    ``AWS_ENDPOINT_URL``, then ``https://bedrock-runtime.{region}.amazonaws.com``.
    TLS trusts ``ssl_context`` if given, else ``verify`` (a CA bundle path, or
    ``False`` to skip verification, as boto3's ``verify``), else
    ``AWS_CA_BUNDLE`` / the profile's ``ca_bundle``, else the bundle botocore
    uses. ``provider_config`` is validated now, before anything connects.

    ``max_stream_s`` is the service's stream limit (8 minutes); the core rotates
    to a new stream, seeded with the history, at a turn boundary before it.

    Nova requires a SYSTEM text at the start of every stream. When the agent
    has no system prompt, ``default_system_prompt`` is sent instead; its
    default is :data:`DEFAULT_SYSTEM_PROMPT`, "You are a helpful voice
    assistant. Keep your answers short."

    ``connection`` (:class:`~adapters.connection.ConnectionOptions`) sets the
    timeouts and the TLS trust (no proxy: the stream is HTTP/2 straight over
    TLS): ``connect_timeout_s`` (10 s) for TCP and TLS; ``read_timeout_s``
    (15 s) of silence, pings unanswered included, fails a connection;
    ``close_timeout_s`` (3 s) bounds the polite close and the drain. The
    keyword arguments of the same names, and ``ssl_context``, are the older
    spellings and must not contradict it. ``response_timeout_s`` (5 s) is how
    long ``connect()`` waits for the service to accept the request before
    going on (a later refusal surfaces from ``receive()``).
    ``connection.record_to`` records every stream (``docs/recording.md``).
    """

    def __init__(
        self,
        model_id: str = NOVA_2_SONIC,
        *,
        region: str | None = None,
        boto_session: Any = None,
        credentials: Any = None,
        endpoint_url: str | None = None,
        verify: bool | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        provider_config: Mapping[str, Any] | None = None,
        max_stream_s: float = STREAM_LIMIT_S,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        response_timeout_s: float = 5.0,
        close_timeout_s: float | None = None,
        connection: ConnectionOptions | None = None,
        default_system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise BidiUsageError("model_id must be a non-empty string")
        if model_id not in MODELS:
            logger.info("model %r is not one of the known Nova Sonic models %s", model_id, list(MODELS))
        if not isinstance(max_stream_s, int | float) or max_stream_s <= 0:
            raise BidiUsageError("max_stream_s must be a positive number of seconds")
        if not isinstance(default_system_prompt, str) or not default_system_prompt.strip():
            raise BidiUsageError("default_system_prompt must be a non-empty string: Nova needs a system prompt")
        self._model_id = model_id
        self.default_system_prompt = default_system_prompt
        self.connection = merge_options(
            connection,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            close_timeout_s=close_timeout_s,
            ssl_context=ssl_context,
        )
        if self.connection.proxy is not None:
            raise BidiUsageError("Nova Sonic connects directly (HTTP/2 over TLS): it takes no proxy")
        self.config: NovaSonicConfig = parse_provider_config(provider_config, model_id)
        self._provider_config = copy.deepcopy(dict(provider_config or {}))
        if credentials is not None and not hasattr(credentials, "get_frozen_credentials"):
            raise BidiUsageError("credentials must be botocore Credentials (with get_frozen_credentials())")
        if boto_session is not None and not hasattr(boto_session, "get_credentials"):
            raise BidiUsageError("boto_session must be a boto3.Session or a botocore session")
        if boto_session is None and credentials is None:
            import botocore.session  # type: ignore[import-untyped]

            boto_session = botocore.session.get_session()
        self._credentials = credentials
        self._boto_session = boto_session
        self.region = (
            region
            or (_session_region(boto_session) if boto_session is not None else None)
            or os.environ.get("AWS_REGION")
            or DEFAULT_REGION
        )
        url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            or os.environ.get("AWS_ENDPOINT_URL")
            or f"https://bedrock-runtime.{self.region}.amazonaws.com"
        ).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise BidiUsageError(f"endpoint_url must be an https:// URL (HTTP/2 over TLS), got {url!r}")
        self.endpoint_url = url
        self._host = parts.hostname
        self._port = parts.port or 443
        self._netloc = parts.netloc
        self._base_path = parts.path
        self._ssl_context = self._make_ssl_context(verify, self.connection.ssl_context, boto_session)
        self._response_timeout_s = response_timeout_s
        self._capabilities = ModelCapabilities(
            input_audio=AudioFormat(self.config.input_rate),
            output_audio=AudioFormat(self.config.output_rate),
            can_truncate=False,
            cancels_on_speech=True,
            resumable=False,
            max_connection_s=float(max_stream_s),
            supports_images=False,
        )
        self._recording = Recording.from_options(
            self.connection,
            provider="nova_sonic",
            model_id=model_id,
            settings=self.recording_settings(),
            audio_fields=recorded_audio,
            codec=NovaFrames,
        )

    def recording_settings(self) -> dict[str, Any]:
        """What a recording says of this model, enough for :meth:`for_replay` to build it again."""
        return {
            "provider_config": self._provider_config,
            "region": self.region,
            "max_stream_s": self._capabilities.max_connection_s,
            "default_system_prompt": self.default_system_prompt,
        }

    @classmethod
    def for_replay(cls, model_id: str, settings: Mapping[str, Any]) -> BidiNovaSonicModel:
        """The model a recording was made with, without credentials (``adapters.testing.replay``)."""
        from botocore.credentials import Credentials  # type: ignore[import-untyped]

        return cls(
            model_id,
            region=settings.get("region", DEFAULT_REGION),
            credentials=Credentials("REPLAY", "replay-secret"),
            provider_config=settings.get("provider_config"),
            max_stream_s=settings.get("max_stream_s", STREAM_LIMIT_S),
            default_system_prompt=settings.get("default_system_prompt", DEFAULT_SYSTEM_PROMPT),
        )

    def replay_signer(self) -> EventSigner:
        """A signer for a replayed stream (``adapters.testing.replay``): nothing checks its signatures."""
        return EventSigner(AwsCredentials("REPLAY", "replay-secret", None), self.region, "0" * 64)

    @staticmethod
    def _make_ssl_context(verify: bool | str | None, given: ssl.SSLContext | None, session: Any) -> ssl.SSLContext:
        if given is not None:
            context = given
        elif verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            bundle = verify if isinstance(verify, str) else None
            bundle = bundle or os.environ.get("AWS_CA_BUNDLE") or (_session_ca_bundle(session) if session else None)
            bundle = bundle or get_cert_path(True)
            try:
                context = ssl.create_default_context(cafile=bundle)
            except (OSError, ssl.SSLError) as exc:
                raise BidiUsageError(f"cannot load the CA bundle {bundle!r}: {exc}") from None
        context.set_alpn_protocols(["h2"])
        return context

    def __repr__(self) -> str:
        return (
            f"BidiNovaSonicModel(model_id={self._model_id!r}, region={self.region!r}, "
            f"endpoint_url={self.endpoint_url!r})"
        )

    @property
    def provider_name(self) -> str:
        """The service, as OpenTelemetry's GenAI conventions name it (``gen_ai.provider.name``)."""
        return "aws.bedrock"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    @property
    def path(self) -> str:
        return f"{self._base_path}/model/{quote(self._model_id, safe='')}/invoke-with-bidirectional-stream"

    def _resolve_credentials(self) -> AwsCredentials:
        """Blocking (the chain may read files or call STS/SSO/IMDS): run in a worker thread.

        botocore's DEBUG records of this thread are dropped meanwhile (see
        :class:`_CredentialThreadFilter`)."""
        _quiet_resolution.install()
        thread = threading.get_ident()
        _quiet_resolution.threads.add(thread)
        try:
            source = self._credentials
            if source is None:
                source = self._boto_session.get_credentials()
            frozen = source.get_frozen_credentials() if source is not None else None
        finally:
            _quiet_resolution.threads.discard(thread)
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise BidiProviderError(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "or pass boto_session= / credentials=",
                code="NoCredentials",
            )
        return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)

    async def _fresh_credentials(self) -> AwsCredentials:
        try:
            return await anyio.to_thread.run_sync(self._resolve_credentials)
        except BidiProviderError:
            raise
        except Exception as exc:  # botocore's credential errors (SSO expired, no profile, ...)
            raise BidiProviderError(
                f"resolving AWS credentials failed: {type(exc).__name__}: {redact(str(exc))}"[:500],
                code="CredentialsError",
            ) from None

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[NovaSonicSession]:
        """Open a stream, start the session (settings, tools, system prompt, history), yield it.

        The system prompt is the request's, else ``default_system_prompt``.
        Leaving closes the input politely (``promptEnd``, ``sessionEnd``, the
        signed empty frame), drains the output (bounded) and closes the connection.
        """
        connection_id = f"nova-{next(_ids)}"
        credentials = await self._fresh_credentials()
        secrets = credentials.secrets()
        signed = sign_request(credentials, self.region, f"https://{self._netloc}{self.path}")
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", self._netloc),
            (":path", self.path),
            *[(name, value) for name, value in signed.headers if name != "host"],
        ]
        secrets = (*secrets, signed.seed_signature)
        logger.debug("connecting %s to %s (key %s)", connection_id, self.endpoint_url, credentials.access_key)
        with record_connection(self._recording, connection_id, self.endpoint_url + self.path, secrets) as tap:
            async with open_stream(
                self._host,
                self._port,
                headers,
                ssl_context=self._ssl_context,
                error_for_response=partial(error_for_response, secrets=secrets),
                options=self.connection,
            ) as stream:
                signer = EventSigner(credentials, self.region, signed.seed_signature)
                async with self.open_session(recorded(stream, tap), signer, connection_id, request, secrets) as session:
                    yield session
        logger.debug("%s closed", connection_id)

    @asynccontextmanager
    async def open_session(
        self,
        stream: RequestStream,
        signer: EventSigner,
        connection_id: str,
        request: ConnectRequest,
        secrets: tuple[str, ...] = (),
    ) -> AsyncIterator[NovaSonicSession]:
        """The session over an open stream: :meth:`connect` once the request is sent (a replay's stream, too)."""
        session = NovaSonicSession(
            stream,
            signer,
            connection_id=connection_id,
            capabilities=self._capabilities,
            config=self.config,
            secrets=secrets,
            close_timeout_s=self.connection.close_timeout_s,
        )
        if not request.system_prompt:
            request = attrs.evolve(request, system_prompt=self.default_system_prompt)
        try:
            try:
                await session.open(request)
            except BidiConnectionError as exc:
                raise await session.explain(exc) from None
            with anyio.move_on_after(self._response_timeout_s):
                # The service answers the request headers once it accepted them; a refusal
                # (bad signature, unknown model) raises here. Without an answer in time we go
                # on: a later refusal surfaces from receive().
                await stream.wait_response()
            logger.debug("%s open (%d history items)", connection_id, len(request.history))
            yield session
        finally:
            await session.close()
