"""The ASGI app: conversations on ``/ws``, the demo page on ``/``, health, readiness and metrics.

    app = WebApp(run_conversation, limits=WebLimits(max_conversations=20), auth=token_auth(secret))

``run_conversation(conversation)`` is the application's: it runs one agent
with ``conversation.input()`` and ``conversation.output()`` and returns when
the conversation is over (the composition root, :mod:`adapters.web.compose`,
builds one from options). The app does the rest, per worker process:

* **who**: an ``Origin`` allow list (a browser WebSocket has no CORS) and an
  auth hook that sees the handshake; refused with 403/401 before accepting;
* **admission**: at most ``max_conversations`` at once, beyond that the
  handshake is refused with HTTP 503 and ``Retry-After``, never accepted and
  then dropped; also 503 while draining;
* **limits**: a time limit and an idle timeout per conversation (the client is
  told ``closing`` and the agent is asked to stop, then cancelled after
  ``close_grace_s``); frame size and input rates are the I/O's;
* **operations**: ``/healthz``, ``/readyz`` (503 while draining or full),
  ``/metrics``; :meth:`WebApp.drain` for a graceful shutdown.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from adapters.web.auth import Accept, AuthHook, Handshake, Refuse, origin_allowed
from adapters.web.io import ClientGone, WebSocketInput, WebSocketIO, WebSocketOutput
from adapters.web.limits import WebLimits
from adapters.web.metrics import CONTENT_TYPE, ConversationMetrics, WebMetrics

__all__ = ["ConversationRunner", "ServedConversation", "ServedIO", "WebApp", "WebConversation"]

logger = logging.getLogger("bidi_core.adapters.web")

STATIC = Path(__file__).parent / "static"

# Close codes (RFC 6455) by why the server ended a conversation.
_CLOSE_CODES = {"drain": 1001, "flood": 1008, "error": 1011}
# Reasons the server tells the client in a ``closing`` message (the others: the client did it, or it is gone).
_TOLD = frozenset({"time_limit", "idle", "drain", "flood", "no_start"})


class ServedIO(Protocol):
    """What the app needs of a conversation's I/O to run its limits and drain (browsers' :class:`WebSocketIO`,
    phone calls' stream): when the other side was last active, how to end, how to tell the other side."""

    @property
    def last_activity(self) -> float:
        """``anyio.current_time()`` of the other side's last audio or text (the idle timeout's clock)."""
        ...

    @property
    def end_reason(self) -> str | None:
        """Why the I/O decided the conversation must end (``"client_gone"``, ...), or None."""
        ...

    def end(self, reason: str) -> None:
        """Ask the conversation to end (once): the agent is asked to stop."""
        ...

    async def tell_draining(self, seconds: float) -> None:
        """Tell the other side the server is draining: ``seconds`` left (a browser is told; a phone is not)."""
        ...

    async def tell_closing(self, reason: str) -> None:
        """Tell the other side why the server ends the conversation, before it closes."""
        ...

    async def tell_failure(self) -> None:
        """Tell the other side the conversation failed on the server."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket (a no-op once it is gone)."""
        ...


class ServedConversation:
    """One accepted conversation on a WebSocket of the app, whatever speaks on it (a browser, a phone call).

    The app's watcher reads and sets ``ending``, ``drain_deadline`` and
    ``scope``; :meth:`run` is the application's part (it returns when the
    conversation is over).
    """

    def __init__(self, io: ServedIO, handshake: Handshake, identity: str | None) -> None:
        self.io = io
        self.handshake = handshake
        self.identity = identity
        self.started_at = anyio.current_time()
        self.ending: str | None = None
        self.told_closing = False
        self.drain_deadline: float | None = None
        self._poke = anyio.Event()
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        """Run the conversation until it is over (the subclass calls the application's runner)."""
        raise NotImplementedError

    def poke(self) -> None:
        """Wake the conversation's watcher: something it watches changed."""
        self._poke.set()

    async def _wait_poke(self) -> None:
        await self._poke.wait()
        self._poke = anyio.Event()


class WebConversation(ServedConversation):
    """One accepted browser conversation, handed to the application's runner."""

    io: WebSocketIO

    def __init__(
        self, io: WebSocketIO, handshake: Handshake, identity: str | None, runner: ConversationRunner | None = None
    ) -> None:
        super().__init__(io, handshake, identity)
        self._runner = runner

    def input(self) -> WebSocketInput:
        return self.io.input()

    def output(self) -> WebSocketOutput:
        return self.io.output()

    async def run(self) -> None:
        if self._runner is not None:
            await self._runner(self)


ConversationRunner: TypeAlias = Callable[[WebConversation], Awaitable[None]]

OpenConversation: TypeAlias = Callable[
    [WebSocket, Handshake, Accept, ConversationMetrics, Callable[[str], None]], ServedConversation
]
"""Makes the I/O and the conversation for an accepted WebSocket: ``(websocket, handshake, decision, observer,
on_end)``; the I/O calls ``on_end(reason)`` when it decides the conversation must end."""


class WebApp:
    """The ASGI app (call it as one, or mount :attr:`starlette`). See the module's docstring."""

    def __init__(
        self,
        run_conversation: ConversationRunner,
        *,
        limits: WebLimits | None = None,
        auth: AuthHook | None = None,
        allowed_origins: Collection[str] | None = None,
        metrics: WebMetrics | None = None,
        lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
        demo_page: bool = True,
    ) -> None:
        self.run_conversation = run_conversation
        self.limits = limits or WebLimits()
        self.auth = auth
        self.allowed_origins = allowed_origins
        self.metrics = metrics or WebMetrics()
        self.draining = False
        self._live: set[ServedConversation] = set()
        self._reserved = 0
        self._all_ended = anyio.Event()
        self._all_ended.set()
        routes: list[Any] = [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
            WebSocketRoute("/ws", self._conversation),
        ]
        if demo_page:
            routes += [Route("/", self._index), Route("/static/{name}", self._static)]
        self.starlette = Starlette(routes=routes, lifespan=lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.starlette(scope, receive, send)

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> int:
        """Conversations open now (including handshakes admitted and being accepted)."""
        return self._reserved

    @property
    def ready(self) -> bool:
        """Whether this worker takes new conversations: not draining and not full."""
        return not self.draining and self._reserved < self.limits.max_conversations

    async def wait_idle(self) -> None:
        """Wait until no conversation is open (bound it with a timeout: clients decide when that is)."""
        await self._all_ended.wait()

    async def drain(self, drain_s: float | None = None) -> None:
        """Stop taking conversations; let the running ones go on for ``drain_s``; then close them politely.

        Readiness turns false and new handshakes get 503 at once. Each running
        conversation is told ``draining`` (with the deadline); at the deadline
        the ones still open are told ``closing`` (reason ``drain``), their
        agent is asked to stop, and their socket is closed with 1001. Returns
        when every conversation has ended.
        """
        seconds = self.limits.drain_s if drain_s is None else drain_s
        self.draining = True
        deadline = anyio.current_time() + seconds
        logger.info("draining: %d conversation(s) open, %.1f s to finish", len(self._live), seconds)
        for conv in list(self._live):
            conv.drain_deadline = deadline
            conv.poke()
        # Every conversation ends by itself by the deadline plus its grace; the bound is a safety net.
        with anyio.move_on_after(seconds + 2 * self.limits.close_grace_s + 5):
            await self._all_ended.wait()
        logger.info("drained: %d conversation(s) left", len(self._live))

    # ------------------------------------------------------------------ HTTP

    async def _index(self, request: Request) -> Response:
        return _static_file("index.html")

    async def _static(self, request: Request) -> Response:
        return _static_file(str(request.path_params["name"]))

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        body = {"ready": self.ready, "draining": self.draining, "active": self.active}
        return JSONResponse(body, status_code=200 if self.ready else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ the conversation endpoint

    async def _conversation(self, websocket: WebSocket) -> None:
        def open_browser(
            ws: WebSocket, handshake: Handshake, decision: Accept, observer: ConversationMetrics, on_end: Any
        ) -> ServedConversation:
            io = WebSocketIO(ws, limits=self.limits, observer=observer, on_end=on_end)
            return WebConversation(io, handshake, decision.identity, self.run_conversation)

        await self.serve_websocket(websocket, open_browser, auth=self.auth)

    async def serve_websocket(
        self, websocket: WebSocket, open_conversation: OpenConversation, *, auth: AuthHook | None
    ) -> None:
        """Admit, accept and run one conversation on ``websocket`` under this app's gates, limits and drain.

        The browsers' ``/ws`` uses it, and so does any other kind of
        conversation mounted on the app (phone calls: ``adapters.telephony``):
        the handshake is judged (draining, Origin, ``auth``, capacity) and
        refused with an HTTP status before ``accept()``; an accepted one counts
        in the metrics and capacity, is watched for the time limit, the idle
        timeout and the drain deadline, and its socket is closed at the end.
        """
        handshake = _handshake(websocket)
        decision = await self._admit(handshake, auth)
        if isinstance(decision, Refuse):
            await self._refuse(websocket, decision)
            return
        self._reserved += 1
        self._all_ended = anyio.Event() if self._reserved == 1 else self._all_ended
        reason = "error"
        try:
            await websocket.accept(subprotocol=decision.subprotocol)
            self.metrics.started.inc()
            self.metrics.active.inc()
            try:
                reason = await self._serve(websocket, handshake, decision, open_conversation)
            finally:
                self.metrics.active.dec()
        except ClientGone:
            reason = "client_gone"
        finally:
            self._reserved -= 1
            if self._reserved == 0:
                self._all_ended.set()
            self.metrics.ended.labels(reason=reason).inc()
            logger.info("conversation ended: %s", reason)

    def refused(self, reason: str) -> None:
        """Count a refusal made outside a WebSocket handshake (a phone call turned away by its webhook)."""
        self.metrics.refused.labels(reason=reason).inc()
        logger.info("refused a conversation: %s", reason)

    async def _admit(self, handshake: Handshake, auth: AuthHook | None) -> Accept | Refuse:
        """Draining, Origin, auth, then capacity (last, so a refused client never holds a slot)."""
        if self.draining:
            return Refuse(503, "draining")
        if not origin_allowed(handshake, self.allowed_origins):
            return Refuse(403, "origin")
        decision: Accept | Refuse = Accept()
        if auth is not None:
            answer: object = auth(handshake)
            if inspect.isawaitable(answer):
                answer = await answer
            if isinstance(answer, Accept | Refuse):
                decision = answer
            else:
                logger.error("the auth hook returned %r, not Accept or Refuse: refusing", type(answer).__name__)
                decision = Refuse(500, "auth_hook_error")
            if (
                isinstance(decision, Accept)
                and decision.subprotocol is not None
                and decision.subprotocol not in handshake.subprotocols
            ):
                logger.error("the auth hook chose a subprotocol the client did not offer: refusing")
                decision = Refuse(500, "auth_hook_error")
        if isinstance(decision, Accept) and self._draining_now():  # it may have begun while the hook ran
            return Refuse(503, "draining")
        if isinstance(decision, Accept) and self._reserved >= self.limits.max_conversations:
            return Refuse(503, "capacity")
        return decision

    def _draining_now(self) -> bool:
        return self.draining

    async def _refuse(self, websocket: WebSocket, refusal: Refuse) -> None:
        self.metrics.refused.labels(reason=refusal.reason).inc()
        logger.info("refused a conversation: %s (HTTP %d)", refusal.reason, refusal.status)
        headers = {"Retry-After": str(self.limits.retry_after_s)} if refusal.status == 503 else None
        response = JSONResponse({"error": refusal.reason}, status_code=refusal.status, headers=headers)
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:  # a server without the denial extension answers 403 to a close before accept
            await websocket.close(code=1013 if refusal.status == 503 else 1008)

    async def _serve(
        self, websocket: WebSocket, handshake: Handshake, decision: Accept, open_conversation: OpenConversation
    ) -> str:
        observer: ConversationMetrics = self.metrics.conversation()
        conv: ServedConversation | None = None

        def on_end(reason: str) -> None:
            if conv is not None and conv.ending is None:
                conv.ending = reason
                conv.poke()

        conv = open_conversation(websocket, handshake, decision, observer, on_end)
        io = conv.io
        if self.draining:
            conv.drain_deadline = anyio.current_time()
        self._live.add(conv)
        reason = "complete"
        try:
            with conv.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch, conv, name="bidi web watcher")
                    try:
                        await conv.run()
                    except ClientGone:
                        pass
                    except Exception as exc:
                        observer.failure(exc)
                        logger.exception("a conversation failed")
                        conv.ending = conv.ending or "error"
                        await io.tell_failure()
                    tg.cancel_scope.cancel()
            reason = conv.ending or io.end_reason or "complete"
        finally:
            self._live.discard(conv)
            # The watcher may not have told the client yet: the I/O that ends the conversation itself (flood,
            # no start) asks the agent to stop at once, and an agent that stops before the woken watcher runs
            # ends the task group, which cancels the watcher. The client hears why before the close all the same.
            await self._tell_closing(conv)
            code = _CLOSE_CODES.get(reason, 1000)
            with anyio.move_on_after(self.limits.close_grace_s, shield=True):
                await io.close(code, reason)
        return reason

    async def _watch(self, conv: ServedConversation) -> None:
        """Time limit, idle timeout, drain deadline and the I/O's own end: tell the client, stop, then cancel."""
        limits, io = self.limits, conv.io
        told_drain = False
        while conv.ending is None:
            now = anyio.current_time()
            deadlines = [(math.inf, "")]
            if limits.max_duration_s is not None:
                deadlines.append((conv.started_at + limits.max_duration_s, "time_limit"))
            if limits.idle_timeout_s is not None:
                deadlines.append((io.last_activity + limits.idle_timeout_s, "idle"))
            if conv.drain_deadline is not None:
                deadlines.append((conv.drain_deadline, "drain"))
                if not told_drain:
                    told_drain = True
                    await io.tell_draining(max(0.0, conv.drain_deadline - now))
            when, why = min(deadlines)
            if when <= now:
                conv.ending = why
                break
            with anyio.move_on_after(when - now):
                await conv._wait_poke()
        reason = conv.ending
        await self._tell_closing(conv)
        io.end(reason)
        await anyio.sleep(limits.close_grace_s)
        logger.info("conversation did not end %.1f s after %s: cancelled", limits.close_grace_s, reason)
        conv.scope.cancel()

    async def _tell_closing(self, conv: ServedConversation) -> None:
        """Tell the client ``closing`` (once, for the reasons the server tells) before the agent stops or the
        socket closes. Shielded, so ending the conversation's task group cannot cut the message short, and
        bounded by ``close_grace_s``, so a client that never reads cannot hold the server."""
        reason = conv.ending
        if conv.told_closing or reason is None or reason not in _TOLD:
            return
        conv.told_closing = True
        with anyio.move_on_after(self.limits.close_grace_s, shield=True):
            await conv.io.tell_closing(reason)


_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_STATIC_CACHE: dict[str, bytes] = {}


def _static_file(name: str) -> Response:
    """The demo's few small files, read once and served from memory (no file I/O per request: hypercorn's
    Trio worker does not finish a FileResponse)."""
    media = _MEDIA_TYPES.get(Path(name).suffix)
    if media is None or "/" in name or name.startswith("."):
        return Response("not found", status_code=404)
    body = _STATIC_CACHE.get(name)
    if body is None:
        try:
            body = _STATIC_CACHE[name] = (STATIC / name).read_bytes()
        except OSError:
            return Response("not found", status_code=404)
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})


def _handshake(websocket: WebSocket) -> Handshake:
    headers: dict[str, str] = {}
    for raw_name, raw_value in websocket.scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = dict(parse_qsl(websocket.scope.get("query_string", b"").decode("latin-1")))
    subprotocols = tuple(websocket.scope.get("subprotocols", ()))
    client = websocket.scope.get("client")
    return Handshake(
        path=websocket.scope.get("path", ""),
        headers=headers,
        query=query,
        subprotocols=subprotocols,
        client=tuple(client) if client else None,
    )
