"""``python -m adapters.web``: the app on hypercorn, asyncio or Trio workers, one or many processes.

The parent binds the sockets, prints ``listening on http://HOST:PORT`` and
runs the workers: in its own process for ``--workers 1``, else in spawned
processes that share the sockets (the kernel spreads connections over them).
Each worker runs hypercorn's own serving loop with a shutdown trigger of
ours: on SIGTERM (or SIGINT) the app drains (readiness false, new
conversations refused, running ones told and given ``--drain`` seconds, then
closed politely), and only then does hypercorn stop listening. With several
workers the parent forwards the signal to each and exits 0 once all have.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from multiprocessing.connection import wait
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger
from hypercorn.utils import wrap_app

from adapters.web.app import WebApp
from adapters.web.settings import ServerSettings

__all__ = ["RedactingLogger", "hypercorn_config", "serve", "serving"]

logger = logging.getLogger("bidi_core.adapters.web")

_SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"sec-websocket-protocol", b"x-twilio-signature"}
)
_SECRET_QUERY = frozenset({"token", "key", "api_key", "access_token"})


class RedactingLogger(Logger):
    """hypercorn's logger with credentials taken out of what an access log line may show."""

    def atoms(self, request: Any, response: Any, request_time: float) -> Mapping[str, str]:
        safe = dict(request)
        query = parse_qsl(request.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        safe["query_string"] = urlencode(
            [(k, "<redacted>" if k.lower() in _SECRET_QUERY else v) for k, v in query], safe="<>"
        ).encode("latin-1")
        safe["headers"] = [
            (name, b"<redacted>" if name.lower() in _SECRET_HEADERS else value) for name, value in request["headers"]
        ]
        return super().atoms(safe, response, request_time)  # type: ignore[arg-type]


def hypercorn_config(settings: ServerSettings) -> Config:
    config = Config()
    config.bind = [f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"]
    config.workers = settings.workers
    config.worker_class = settings.worker_class
    # hypercorn's loggers go through the root logger (stderr, one format), never stdout: stdout is for the
    # one "listening on" line.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = settings.log_level.upper()
    if settings.access_log:
        config.accesslog = logging.getLogger("hypercorn.access")
        config.logger_class = RedactingLogger
    # hypercorn closes (1009) past its limit, without a word: keep it well above ours, which answers with an error.
    config.websocket_max_message_size = max(1024 * 1024, 4 * settings.limits.max_frame_bytes)
    # After our drain every conversation is closed; what hypercorn still waits for is their close handshakes.
    config.graceful_timeout = settings.limits.close_grace_s + 1.0
    return config


def _configure_logging(settings: ServerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )


def _bound(sockets: Sockets) -> str:
    sock = sockets.insecure_sockets[0]
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve_worker(app: WebApp, config: Config, sockets: Sockets, settings: ServerSettings) -> None:
    signals = (signal.SIGTERM,) if settings.workers > 1 else (signal.SIGTERM, signal.SIGINT)
    with anyio.open_signal_receiver(*signals) as received:

        async def shutdown_trigger() -> None:
            async for signum in received:
                logger.info("%s: draining", signal.Signals(signum).name)
                break
            await app.drain()

        wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        if settings.worker_class == "trio":
            from hypercorn.trio.run import worker_serve as trio_serve

            await trio_serve(wrapped, config, sockets=sockets, shutdown_trigger=shutdown_trigger)
        else:
            from hypercorn.asyncio.run import worker_serve as asyncio_serve

            await asyncio_serve(wrapped, config, sockets=sockets, shutdown_trigger=shutdown_trigger)


@asynccontextmanager
async def serving(
    app: WebApp, *, host: str = "127.0.0.1", port: int = 0, drain_s: float | None = None
) -> AsyncIterator[int]:
    """``app`` on hypercorn in the current event loop (asyncio or Trio), for examples, tests and benchmarks.

    Yields the port (``port=0`` picks a free one); connections wait in the
    backlog until the worker serves them. Leaving drains the app (``drain_s``,
    default its limits'), then stops hypercorn.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = app.limits.close_grace_s + 1.0
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    bound = int(sockets.insecure_sockets[0].getsockname()[1])
    stop = anyio.Event()
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    try:
        async with anyio.create_task_group() as tg:
            if _backend() == "trio":
                from hypercorn.trio.run import worker_serve as trio_serve

                tg.start_soon(lambda: trio_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait))
            else:
                from hypercorn.asyncio.run import worker_serve as asyncio_serve

                tg.start_soon(lambda: asyncio_serve(wrapped, config, sockets=sockets, shutdown_trigger=stop.wait))
            try:
                yield bound
            finally:
                with anyio.CancelScope(shield=True):
                    await app.drain(drain_s)
                    stop.set()
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()


def _backend() -> str:
    import sniffio  # anyio's own way of telling the running loop

    return str(sniffio.current_async_library())


def _worker(settings: ServerSettings, sockets: Sockets) -> None:
    """One worker process (or the only one): build the app and serve until drained."""
    from adapters.web.compose import build_app

    if settings.workers > 1:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl+C as SIGTERM
    _configure_logging(settings)
    app = build_app(settings)
    anyio.run(_serve_worker, app, hypercorn_config(settings), sockets, settings, backend=settings.worker_class)


def serve(settings: ServerSettings) -> int:
    """Bind, run the workers until they have drained, return the exit code."""
    _configure_logging(settings)
    config = hypercorn_config(settings)
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)  # from now on connections wait in the backlog until a worker serves them
    print(
        f"bidi-core web: listening on {_bound(sockets)} "
        f"({settings.workers} {settings.worker_class} worker(s); Ctrl+C or SIGTERM drains)",
        flush=True,
    )
    if settings.workers == 1:
        _worker(settings, sockets)
        return 0
    ctx = multiprocessing.get_context("spawn")
    processes = [
        ctx.Process(target=_worker, kwargs={"settings": settings, "sockets": sockets}, name=f"bidi-web-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("%s: draining %d worker(s)", signal.Signals(signum).name, len(processes))
            for process in processes:
                if process.is_alive():
                    process.terminate()  # SIGTERM: the worker drains

    for process in processes:
        process.start()
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    alive = list(processes)
    while alive:
        done = wait([p.sentinel for p in alive])
        for process in [p for p in alive if p.sentinel in done]:
            process.join()
            alive.remove(process)
            if process.exitcode != 0:
                logger.error("worker %s exited with %s", process.name, process.exitcode)
                code = code or 1
                forward(signal.SIGTERM, None)
            elif not stopping:
                logger.error("worker %s exited on its own", process.name)
                code = code or 1
                forward(signal.SIGTERM, None)
    for sock in sockets.insecure_sockets:
        sock.close()
    return code
