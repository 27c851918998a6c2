"""Conversations served to browsers: a WebSocket I/O adapter, an ASGI app, a server command.

Needs the ``web`` extra (starlette, hypercorn, prometheus-client).

* :class:`WebSocketIO`: one Starlette ``WebSocket`` as a conversation input
  and output (docs/web-protocol.md), to mount a conversation in your own
  Starlette or FastAPI app;
* :class:`WebApp`: the ASGI app: the demo page (``/``), conversations
  (``/ws``), ``/healthz``, ``/readyz``, ``/metrics``, admission control,
  limits, auth and Origin checks, graceful drain;
* ``python -m adapters.web``: the app on hypercorn (asyncio or Trio workers).
"""

from adapters.web.app import ConversationRunner, ServedConversation, ServedIO, WebApp, WebConversation
from adapters.web.auth import Accept, AuthHook, Handshake, Refuse, token_auth
from adapters.web.io import ClientGone, WebSocketInput, WebSocketIO, WebSocketOutput
from adapters.web.limits import WebLimits
from adapters.web.metrics import WebMetrics

__all__ = [
    "Accept",
    "AuthHook",
    "ClientGone",
    "ConversationRunner",
    "Handshake",
    "Refuse",
    "ServedConversation",
    "ServedIO",
    "WebApp",
    "WebConversation",
    "WebLimits",
    "WebMetrics",
    "WebSocketIO",
    "WebSocketInput",
    "WebSocketOutput",
    "token_auth",
]
