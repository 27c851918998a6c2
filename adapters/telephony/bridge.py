"""Phone calls on the web app: Twilio's voice webhook and its Media Streams, under the app's gates.

    web = WebApp(run_browser_conversation)
    TwilioBridge(web, run_call, public_url="https://phone.example.com")   # TWILIO_AUTH_TOKEN from the environment

    async def run_call(call: PhoneCall) -> None:
        agent = BidiAgent(model=..., tools=[...])
        await agent.run(inputs=[call.input()], outputs=[call.output()])

Point the number's "A call comes in" webhook at ``{public_url}/twilio/voice``
(HTTP POST). The bridge mounts two routes on the app:

* ``POST /twilio/voice``, the **webhook**: checks ``X-Twilio-Signature``
  against the public URL (docs/protocols/twilio.md#request-signatures) and
  refuses an unsigned or forged request with 403; when the app is draining or
  full the call is rejected as busy (``<Reject reason="busy"/>``); otherwise
  it answers with ``<Connect><Stream>`` to the stream route, with a per-call
  token as a ``<Parameter>`` (docs/protocols/twilio.md#connecting-a-call-to-a-stream);
* ``/twilio/stream``, the **Media Stream** WebSocket: admitted by the app as
  any conversation is (draining, capacity, metrics, time limit, idle
  timeout, drain deadline) with Twilio's signature as its auth hook; the call
  runs once its ``start`` brings back the token of the same call.

``run_call(call)`` is the application's: it runs one agent on
``call.input()`` / ``call.output()``; when it returns, the stream is closed
and the call hangs up. A caller who hangs up ends the conversation
(``client_disconnect``).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import quoteattr

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from adapters.telephony.signature import SIGNATURE_HEADER, call_token, signature_valid, stream_signature_auth
from adapters.telephony.stream import (
    DEFAULT_DTMF_TEXT,
    DtmfDigit,
    TwilioMediaStream,
    TwilioStreamInput,
    TwilioStreamOutput,
)
from adapters.web.app import ServedConversation, WebApp
from adapters.web.auth import Accept, Handshake
from adapters.web.metrics import ConversationMetrics
from ports.errors import BidiUsageError

__all__ = ["CallRunner", "PhoneCall", "TwilioBridge", "TOKEN_PARAMETER"]

logger = logging.getLogger("bidi_core.adapters.telephony")

TOKEN_PARAMETER = "bidi_call_token"
"""The ``<Parameter>`` that carries the per-call token from the webhook to the stream's ``start``."""

_MAX_WEBHOOK_BYTES = 64 * 1024


class PhoneCall(ServedConversation):
    """One call's Media Stream, handed to the application's runner once its ``start`` is in."""

    io: TwilioMediaStream

    def __init__(self, stream: TwilioMediaStream, handshake: Handshake, identity: str | None, bridge: TwilioBridge):
        super().__init__(stream, handshake, identity)
        self.stream = stream
        self._bridge = bridge

    def input(self) -> TwilioStreamInput:
        return self.stream.input()

    def output(self) -> TwilioStreamOutput:
        return self.stream.output()

    @property
    def call_sid(self) -> str | None:
        return self.stream.call_sid

    @property
    def custom_parameters(self) -> Mapping[str, str]:
        """The stream's ``<Parameter>``\\ s (the bridge's own token left out)."""
        start = self.stream.start
        params = dict(start.custom_parameters) if start is not None else {}
        params.pop(TOKEN_PARAMETER, None)
        return params

    @property
    def digits(self) -> list[DtmfDigit]:
        """The keys pressed so far."""
        return self.stream.digits

    async def run(self) -> None:
        bridge = self._bridge
        async with self.stream:
            with anyio.move_on_after(bridge.start_timeout_s):
                await self.stream.wait_started()
            start = self.stream.start
            if start is None:
                self.stream.end("no_start")
                return
            token = start.custom_parameters.get(TOKEN_PARAMETER, "")
            expected = call_token(bridge._auth_token, start.call_sid)
            if not hmac.compare_digest(token.encode(), expected.encode()):
                logger.warning("a stream whose 'start' lacks its call's token: closed")
                bridge.web.metrics.refused.labels(reason="call_token").inc()
                self.stream.end("bad_call_token")
                return
            await bridge.run_call(self)


CallRunner: TypeAlias = Callable[[PhoneCall], Awaitable[None]]


class TwilioBridge:
    """Twilio's voice webhook and Media Streams, mounted on ``web`` (see the module's docstring).

    ``public_url``: the scheme and host Twilio reaches this server at
    (``https://phone.example.com``; a path prefix is kept), the base of the
    signed URLs and of the stream's ``wss://`` URL. ``auth_token``: the
    account's auth token (default: ``TWILIO_AUTH_TOKEN``); never logged.
    ``lead_ms``, ``chunk_ms``, ``dtmf_text``: the stream's pacing and keys
    (:class:`~adapters.telephony.stream.TwilioMediaStream`). ``on_dtmf(call,
    digit)``: called for each key press. ``check_stream_signature=False``
    skips the signature check of the stream's upgrade (the URL Twilio signs
    there is our reading, docs/protocols/twilio.md#request-signatures); the
    per-call token still guards the stream.
    """

    def __init__(
        self,
        web: WebApp,
        run_call: CallRunner,
        *,
        public_url: str,
        auth_token: str | None = None,
        voice_path: str = "/twilio/voice",
        stream_path: str = "/twilio/stream",
        lead_ms: float = 100.0,
        chunk_ms: int = 20,
        dtmf_text: str | None = DEFAULT_DTMF_TEXT,
        on_dtmf: Callable[[PhoneCall, DtmfDigit], None] | None = None,
        start_timeout_s: float = 10.0,
        check_stream_signature: bool = True,
    ) -> None:
        token = auth_token if auth_token is not None else os.environ.get("TWILIO_AUTH_TOKEN")
        if not token:
            raise BidiUsageError("TwilioBridge needs the account's auth token: auth_token= or TWILIO_AUTH_TOKEN")
        parts = urlsplit(public_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
            raise BidiUsageError("public_url must be an http(s) URL without a query, e.g. https://phone.example.com")
        self.web = web
        self.run_call = run_call
        self._auth_token = token
        self.public_url = public_url.rstrip("/")
        self.voice_path = voice_path
        self.stream_path = stream_path
        self.lead_ms = lead_ms
        self.chunk_ms = chunk_ms
        self.dtmf_text = dtmf_text
        self.on_dtmf = on_dtmf
        self.start_timeout_s = start_timeout_s
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self.stream_url = f"{ws_scheme}://{parts.netloc}{parts.path.rstrip('/')}{stream_path}"
        self._stream_auth = stream_signature_auth(token, self.stream_url) if check_stream_signature else None
        web.starlette.router.add_route(voice_path, self._voice, methods=["POST"])
        web.starlette.router.add_websocket_route(stream_path, self._stream)

    def __repr__(self) -> str:
        return f"TwilioBridge(public_url={self.public_url!r})"

    # ------------------------------------------------------------------ the webhook

    async def _voice(self, request: Request) -> Response:
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > _MAX_WEBHOOK_BYTES:
                return self._forbidden("too_large")
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        query = request.url.query
        url = f"{self.public_url}{request.url.path}" + (f"?{query}" if query else "")
        if not signature_valid(self._auth_token, request.headers.get(SIGNATURE_HEADER), url, params):
            return self._forbidden("twilio_signature")
        form = dict(params)
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return self._forbidden("no_call_sid")
        if not self.web.ready:
            reason = "draining" if self.web.draining else "capacity"
            self.web.refused(reason)
            return _twiml('<Reject reason="busy"/>')
        logger.info("call %s: connecting it to the stream", call_sid)
        token = call_token(self._auth_token, call_sid)
        stream = (
            f"<Connect><Stream url={quoteattr(self.stream_url)}>"
            f"<Parameter name={quoteattr(TOKEN_PARAMETER)} value={quoteattr(token)}/>"
            "</Stream></Connect>"
        )
        return _twiml(stream)

    def _forbidden(self, reason: str) -> Response:
        self.web.refused(reason)
        return Response("forbidden", status_code=403, media_type="text/plain")

    # ------------------------------------------------------------------ the stream

    async def _stream(self, websocket: WebSocket) -> None:
        await self.web.serve_websocket(websocket, self._open, auth=self._stream_auth)

    def _open(
        self,
        websocket: WebSocket,
        handshake: Handshake,
        decision: Accept,
        observer: ConversationMetrics,
        on_end: Callable[[str], None],
    ) -> PhoneCall:
        call: PhoneCall | None = None

        def dtmf(digit: DtmfDigit) -> None:
            if self.on_dtmf is not None and call is not None:
                self.on_dtmf(call, digit)

        stream = TwilioMediaStream(
            websocket,
            lead_ms=self.lead_ms,
            chunk_ms=self.chunk_ms,
            dtmf_text=self.dtmf_text,
            on_dtmf=dtmf,
            observer=observer,
            on_end=on_end,
        )
        call = PhoneCall(stream, handshake, decision.identity, self)
        return call


def _twiml(verbs: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>'
    return Response(body, media_type="text/xml")
