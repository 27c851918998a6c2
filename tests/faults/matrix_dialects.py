"""How each simulator says a fault: the words the matrix's rows are written in.

A row names a fault once and says how each provider's simulator plays it;
these helpers keep that to a line per provider. A fault "in the middle of a
response" cuts a long spoken answer after two of its audio chunks; a fault
"in the middle of a tool call" is injected while the tool runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import struct
from typing import Any

from botocore.credentials import Credentials  # type: ignore[import-untyped]

from adapters.connection import ConnectionOptions
from adapters.gemini import BidiGeminiLiveModel
from adapters.nova_sonic import BidiNovaSonicModel
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import gemini_simulator as gm
from adapters.testing import nova_sonic_simulator as nv
from adapters.testing import openai_simulator as oa
from adapters.testing._simulator_kit.websocket_server import Refusal
from adapters.testing.nova_sonic_simulator.eventstream import encode_message, string_headers
from adapters.testing.nova_sonic_simulator.scenario import FaultKind
from tests.faults.matrix_engine import Setup
from tests.test_providers_common import AKID, GEMINI_KEY, NOVA_SECRET, NOVA_TOKEN, OPENAI_KEY, Provider

__all__ = [
    "GM",
    "NV",
    "OA",
    "READ_TIMEOUT",
    "dead_port",
    "nova_event",
    "nova_message",
    "refusal",
    "unknown_host",
    "untrusted",
    "wrong_key",
]

LONG = "A long answer that the fault will cut in the middle."
AUDIO_MS = 3000
CUT_AFTER = 2
READ_TIMEOUT_S = 1.0
"""The read timeout of the silence cases: how soon a silent service is noticed (the default is 15 s)."""


def READ_TIMEOUT(sim: Any) -> dict[str, Any]:
    """Model options: a short read timeout, so a silent service is noticed in a second."""
    return {"connection": ConnectionOptions(read_timeout_s=READ_TIMEOUT_S)}


def _tls_trust(sim: Any) -> dict[str, Any]:
    """Model options for a WebSocket simulator serving TLS: trust its CA."""
    return {"connection": ConnectionOptions(ssl_context=sim.client_ssl_context())}


def refusal(status: int, retry_after: str | None = None, times: int = 1) -> Refusal:
    return Refusal(status, headers={"Retry-After": retry_after} if retry_after else {}, times=times)


class OA:
    """OpenAI Realtime's simulator."""

    @staticmethod
    def instead(**reply: Any) -> Setup:
        """The trigger's response is replaced by the fault (or carries it)."""
        return Setup(reply=oa.Reply(**reply))

    @staticmethod
    def mid_response(**fault: Any) -> Setup:
        reply = oa.Reply(say=LONG, audio_ms=AUDIO_MS, after_deltas=CUT_AFTER, **fault)
        return Setup(reply=reply, mid_response=True)

    @staticmethod
    def mid_tool(**fault: Any) -> Setup:
        return Setup(inject=oa.Reply(**fault))

    @staticmethod
    def tls_mid_response() -> Setup:
        reply = oa.Reply(say=LONG, audio_ms=AUDIO_MS, after_deltas=CUT_AFTER, drop=True)
        return Setup(reply=reply, sim={"tls": True}, model=_tls_trust, mid_response=True)

    @staticmethod
    def tls_mid_tool() -> Setup:
        return Setup(inject=oa.Reply(drop=True), sim={"tls": True}, model=_tls_trust)

    @staticmethod
    def error(message: str, code: str, kind: str = "invalid_request_error") -> Setup:
        return Setup(reply=oa.Reply(error=oa.ServiceError(message, code, kind)))


class GM:
    """Gemini Live's simulator."""

    @staticmethod
    def instead(**reply: Any) -> Setup:
        return Setup(reply=gm.Reply(**reply))

    @staticmethod
    def mid_response(**fault: Any) -> Setup:
        reply = gm.Reply(say=LONG, audio_ms=AUDIO_MS, after_chunks=CUT_AFTER, **fault)
        return Setup(reply=reply, mid_response=True)

    @staticmethod
    def mid_tool(**fault: Any) -> Setup:
        return Setup(inject=gm.Reply(**fault))

    @staticmethod
    def tls_mid_response() -> Setup:
        reply = gm.Reply(say=LONG, audio_ms=AUDIO_MS, after_chunks=CUT_AFTER, drop=True)
        return Setup(
            reply=reply,
            sim={"tls": True},
            model=lambda sim: {"ssl_context": sim.client_ssl_context()},
            mid_response=True,
        )

    @staticmethod
    def tls_mid_tool() -> Setup:
        return Setup(
            inject=gm.Reply(drop=True), sim={"tls": True}, model=lambda sim: {"ssl_context": sim.client_ssl_context()}
        )


class NV:
    """Nova Sonic's simulator (HTTP/2 over TLS: every drop is one without ``close_notify``)."""

    @staticmethod
    def instead(kind: FaultKind, **fault: Any) -> Setup:
        return Setup(reply=nv.Reply(fault=nv.Fault(kind, **fault)))

    @staticmethod
    def mid_response(kind: FaultKind, **fault: Any) -> Setup:
        reply = nv.Reply(say=LONG, audio_ms=AUDIO_MS, fault=nv.Fault(kind, **fault), after_chunks=CUT_AFTER)
        return Setup(reply=reply, mid_response=True)

    @staticmethod
    def mid_tool(kind: FaultKind, **fault: Any) -> Setup:
        return Setup(inject=nv.Fault(kind, **fault))

    @staticmethod
    def raw(*messages: bytes) -> Setup:
        return Setup(reply=nv.Reply(raw=messages, say="Fine."))

    @staticmethod
    def refused(kind: FaultKind, retry_after: str | None = None) -> Setup:
        return Setup(sim={"faults": [nv.Fault(kind, stream=0, retry_after=retry_after)]})


def nova_message(payload: bytes) -> bytes:
    """An event-stream message as the service frames an event, carrying ``payload`` as it is."""
    return encode_message(
        string_headers(event_type="chunk", content_type="application/json", message_type="event"), payload
    )


def nova_event(event_bytes: bytes) -> bytes:
    """A well-framed message whose event (the base64 ``bytes`` field) is ``event_bytes`` as they are."""
    return nova_message(json.dumps({"bytes": base64.b64encode(event_bytes).decode()}).encode())


def nova_huge_prelude() -> bytes:
    """A prelude with good CRC that claims a 64 MiB message (more than the 24 MiB the service allows)."""
    prelude = struct.pack("!II", 64 << 20, 0)
    return prelude + struct.pack("!I", binascii.crc32(prelude))


HUGE_FRAME = bytes([0x82, 127]) + (64 << 20).to_bytes(8, "big")
"""A WebSocket frame header claiming a 64 MiB binary message (more than any real event)."""


# ---------------------------------------------------------------- models the simulator does not serve


def unknown_host(provider: Provider, sim: Any) -> Any:
    """A model whose host does not resolve (``.invalid`` never does: RFC 6761)."""
    host = "bidi-core-fault.invalid"
    if provider.name == "openai":
        return BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=f"ws://{host}:{sim.port}/v1")
    if provider.name == "gemini":
        return BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=f"ws://{host}:{sim.port}")
    return _nova(provider, f"https://{host}:{sim.port}", verify=sim.ca_cert_pem_path)


def dead_port(provider: Provider, sim: Any) -> Any:
    """A model for a port nothing listens on: one the system just gave out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return provider.dead_model(port)


def untrusted(provider: Provider, sim: Any) -> Any:
    """A model that trusts only the system's CAs, against a simulator whose certificate no system trusts."""
    if provider.name == "openai":
        return BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url)
    if provider.name == "gemini":
        return BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=sim.ws_base_url)
    return _nova(provider, sim.endpoint_url)


def wrong_key(provider: Provider, sim: Any) -> Any:
    """A model with the wrong API key (Nova: a known access key signed with the wrong secret)."""
    model, _wrong = provider.wrong_model(sim)
    return model


def _nova(provider: Provider, url: str, *, verify: str | None = None) -> Any:
    return BidiNovaSonicModel(
        endpoint_url=url, region="us-east-1", verify=verify, credentials=Credentials(AKID, NOVA_SECRET, NOVA_TOKEN)
    )
