"""The server command's settings: options, each with an environment variable (options win).

Secrets are read from the environment only (``BIDI_WEB_TOKEN``, the
providers' keys), never from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

import attrs

from adapters.web.auth import is_loopback
from adapters.web.limits import WebLimits

__all__ = ["PROVIDERS", "ServerSettings", "SettingsError", "parse_settings"]

PROVIDERS = ("auto", "openai", "gemini", "nova", "simulator")


class SettingsError(Exception):
    """The settings cannot start a server; the message says what to change."""


@attrs.frozen(kw_only=True)
class ServerSettings:
    """Everything a worker process needs to build the app (picklable: workers are spawned)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    worker_class: str = "asyncio"
    provider: str = "auto"
    model: str | None = None
    base_url: str | None = None
    voice: str | None = None
    system_prompt: str | None = None
    tools: tuple[str, ...] = ()
    auth: str | None = None
    token_env: str = "BIDI_WEB_TOKEN"
    allowed_origins: tuple[str, ...] | None = None
    allow_unauthenticated: bool = False
    access_log: bool = False
    log_level: str = "info"
    limits: WebLimits = attrs.field(factory=WebLimits)
    twilio_public_url: str | None = None
    """Also answer phone calls (``adapters.telephony``) reached at this public URL; the auth token comes
    from ``TWILIO_AUTH_TOKEN``."""

    def check(self, environ: Mapping[str, str]) -> None:
        """Refuse what must not start: an open port without an auth hook, unless the user says so."""
        if self.workers < 1:
            raise SettingsError("--workers must be at least 1")
        if self.worker_class not in ("asyncio", "trio"):
            raise SettingsError("--worker-class must be asyncio or trio")
        if self.provider not in PROVIDERS:
            raise SettingsError(f"--provider must be one of {', '.join(PROVIDERS)}")
        if self.twilio_public_url is not None and not environ.get("TWILIO_AUTH_TOKEN"):
            raise SettingsError(
                "--twilio-public-url needs the account's auth token in TWILIO_AUTH_TOKEN: every call's webhook "
                "and stream are checked against it"
            )
        has_auth = self.auth is not None or bool(environ.get(self.token_env))
        if not is_loopback(self.host) and not has_auth and not self.allow_unauthenticated:
            raise SettingsError(
                f"refusing to listen on {self.host} without authentication: anyone who can reach it could talk "
                f"to the model on your account. Set {self.token_env}, pass --auth module:attribute, or pass "
                "--allow-unauthenticated if something in front of this server authenticates clients."
            )


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.web",
        description="Serve voice conversations to browsers: the demo page on /, conversations on /ws, "
        "/healthz, /readyz and /metrics. Without provider credentials it talks to the bundled OpenAI simulator.",
    )
    add = parser.add_argument
    add("--host", help="address to listen on (env BIDI_WEB_HOST; default 127.0.0.1)")
    add("--port", type=int, help="port (env BIDI_WEB_PORT; default 8000; 0 picks a free one)")
    add("--workers", type=int, help="worker processes (env BIDI_WEB_WORKERS; default 1)")
    add("--worker-class", choices=["asyncio", "trio"], help="event loop of the workers (env BIDI_WEB_WORKER_CLASS)")
    add("--provider", choices=PROVIDERS, help="model provider (env BIDI_WEB_PROVIDER; default auto: "
        "openai with OPENAI_API_KEY, else the bundled simulator)")  # fmt: skip
    add("--model", help="model id (env BIDI_WEB_MODEL)")
    add("--base-url", help="provider endpoint, e.g. a proxy (env BIDI_WEB_BASE_URL)")
    add("--voice", help="the model's voice (env BIDI_WEB_VOICE)")
    add("--system-prompt", help="system prompt (env BIDI_WEB_SYSTEM_PROMPT)")
    add("--tool", action="append", dest="tools", metavar="MODULE:ATTRIBUTE",
        help="a tool, or a list of tools, for the model; repeatable (env BIDI_WEB_TOOLS, comma-separated)")  # fmt: skip
    add("--auth", metavar="MODULE:ATTRIBUTE", help="auth hook: a callable taking a Handshake (env BIDI_WEB_AUTH)")
    add("--allowed-origin", action="append", dest="origins", metavar="ORIGIN",
        help="an Origin allowed besides the page's own; '*' for any (env BIDI_WEB_ALLOWED_ORIGINS)")  # fmt: skip
    add("--allow-unauthenticated", action="store_true", default=None,
        help="listen on a non-loopback address without auth (env BIDI_WEB_ALLOW_UNAUTHENTICATED=1)")  # fmt: skip
    add("--access-log", action="store_true", default=None, help="log every request, secrets redacted")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="(env BIDI_WEB_LOG_LEVEL)")
    add("--max-conversations", type=int, help="per worker (env BIDI_WEB_MAX_CONVERSATIONS; default 50)")
    add("--max-duration", type=float, metavar="S", help="per conversation (env BIDI_WEB_MAX_DURATION_S)")
    add("--idle-timeout", type=float, metavar="S", help="no audio or text (env BIDI_WEB_IDLE_TIMEOUT_S)")
    add("--drain", type=float, metavar="S", help="on SIGTERM, time left to conversations (env BIDI_WEB_DRAIN_S)")
    add("--max-frame-bytes", type=int, help="largest client frame (env BIDI_WEB_MAX_FRAME_BYTES)")
    add("--max-messages-per-s", type=float, help="client message rate (env BIDI_WEB_MAX_MESSAGES_PER_S)")
    add("--twilio-public-url", metavar="URL", help="also answer Twilio calls: the https URL Twilio reaches this "
        "server at; webhook URL/twilio/voice (env BIDI_WEB_TWILIO_PUBLIC_URL; needs TWILIO_AUTH_TOKEN)")  # fmt: skip
    return parser


def parse_settings(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Options over environment variables over defaults."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)

    def pick(value: object, name: str, default: object, kind: type = str) -> object:
        if value is not None:
            return value
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None

    base = WebLimits()
    limits = WebLimits(
        max_conversations=pick(args.max_conversations, "BIDI_WEB_MAX_CONVERSATIONS", base.max_conversations, int),  # type: ignore[arg-type]
        max_duration_s=pick(args.max_duration, "BIDI_WEB_MAX_DURATION_S", base.max_duration_s, float),  # type: ignore[arg-type]
        idle_timeout_s=pick(args.idle_timeout, "BIDI_WEB_IDLE_TIMEOUT_S", base.idle_timeout_s, float),  # type: ignore[arg-type]
        drain_s=pick(args.drain, "BIDI_WEB_DRAIN_S", base.drain_s, float),  # type: ignore[arg-type]
        max_frame_bytes=pick(args.max_frame_bytes, "BIDI_WEB_MAX_FRAME_BYTES", base.max_frame_bytes, int),  # type: ignore[arg-type]
        max_messages_per_s=pick(args.max_messages_per_s, "BIDI_WEB_MAX_MESSAGES_PER_S", base.max_messages_per_s, float),  # type: ignore[arg-type]
    )
    origins = tuple(args.origins) if args.origins else _split(env.get("BIDI_WEB_ALLOWED_ORIGINS")) or None
    tools = tuple(args.tools) if args.tools else _split(env.get("BIDI_WEB_TOOLS"))
    return ServerSettings(
        host=str(pick(args.host, "BIDI_WEB_HOST", "127.0.0.1")),
        port=int(pick(args.port, "BIDI_WEB_PORT", 8000, int)),  # type: ignore[call-overload]
        workers=int(pick(args.workers, "BIDI_WEB_WORKERS", 1, int)),  # type: ignore[call-overload]
        worker_class=str(pick(args.worker_class, "BIDI_WEB_WORKER_CLASS", "asyncio")),
        provider=str(pick(args.provider, "BIDI_WEB_PROVIDER", "auto")),
        model=pick(args.model, "BIDI_WEB_MODEL", None),  # type: ignore[arg-type]
        base_url=pick(args.base_url, "BIDI_WEB_BASE_URL", None),  # type: ignore[arg-type]
        voice=pick(args.voice, "BIDI_WEB_VOICE", None),  # type: ignore[arg-type]
        system_prompt=pick(args.system_prompt, "BIDI_WEB_SYSTEM_PROMPT", None),  # type: ignore[arg-type]
        tools=tools,
        auth=pick(args.auth, "BIDI_WEB_AUTH", None),  # type: ignore[arg-type]
        allowed_origins=origins,
        allow_unauthenticated=bool(args.allow_unauthenticated) or _env_flag(env.get("BIDI_WEB_ALLOW_UNAUTHENTICATED")),
        access_log=bool(args.access_log) or _env_flag(env.get("BIDI_WEB_ACCESS_LOG")),
        log_level=str(pick(args.log_level, "BIDI_WEB_LOG_LEVEL", "info")),
        limits=limits,
        twilio_public_url=pick(args.twilio_public_url, "BIDI_WEB_TWILIO_PUBLIC_URL", None),  # type: ignore[arg-type]
    )
