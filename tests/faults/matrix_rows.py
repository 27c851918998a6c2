"""The fault matrix as data: scenario -> how each provider's simulator plays it -> what the user sees.

One :class:`Row` per scenario; its ``cells`` say, per provider, the simulator
setup (:class:`~tests.faults.matrix_engine.Setup`, written with the dialects of
``matrix_dialects.py``) and the outcome (``matrix_outcomes.py``). A provider
that cannot have the fault (an HTTP/2 ``RST_STREAM`` on a WebSocket) has no
cell: the table shows "n/a". Why each outcome is the right one is the
provider's rule in ``docs/protocols/<provider>.md#ending-a-session`` and
``#errors``, and ``docs/design.md`` (retryable errors reconnect, a bad message
is an error event, the application's failures are raised).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from adapters.testing import nova_sonic_simulator as nv
from adapters.testing.nova_sonic_simulator.scenario import FaultKind
from bidi_core import BidiConnectionError, BidiProviderError
from tests.faults.matrix_dialects import (
    GM,
    HUGE_FRAME,
    NV,
    OA,
    READ_TIMEOUT,
    dead_port,
    nova_event,
    nova_huge_prelude,
    nova_message,
    refusal,
    unknown_host,
    untrusted,
    wrong_key,
)
from tests.faults.matrix_engine import RETRY, Case, InputBroke, Outcome, OutputBroke, Script, Setup
from tests.faults.matrix_outcomes import (
    Continues,
    Ends,
    Fails,
    FastOutputUnaffected,
    Reconnects,
    Recovers,
    ToolFails,
)

__all__ = ["PROVIDER_NAMES", "ROWS", "Row", "cases"]

PROVIDER_NAMES = ("openai", "gemini", "nova_sonic")


@attrs.frozen
class Row:
    scenario: str
    group: str
    script: Script
    cells: Mapping[str, tuple[Setup, Outcome]]


def _row(scenario: str, group: str, script: Script, **cells: tuple[Setup, Outcome]) -> Row:
    return Row(scenario, group, script, cells)


RECONNECTS = Reconnects()
EXPIRING = Reconnects(("expiring",))
SILENT = Reconnects(repeatable=True)
PROTOCOL_ERROR = Continues("protocol_error")
SETUP = Setup()


def _both(
    name: str,
    openai: tuple[dict[str, object], Outcome] | None,
    gemini: tuple[dict[str, object], Outcome] | None,
    nova: tuple[tuple[FaultKind, dict[str, object]], Outcome] | None,
) -> list[Row]:
    """A disconnect in the middle of a response and in the middle of a tool call."""
    rows = []
    scripts: tuple[tuple[str, Script], ...] = (("mid-response", "response"), ("mid-tool", "tool"))
    for where, script in scripts:
        cells: dict[str, tuple[Setup, Outcome]] = {}
        if openai is not None:
            fault, outcome = openai
            cells["openai"] = ((OA.mid_response if script == "response" else OA.mid_tool)(**fault), outcome)
        if gemini is not None:
            fault, outcome = gemini
            cells["gemini"] = ((GM.mid_response if script == "response" else GM.mid_tool)(**fault), outcome)
        if nova is not None:
            (kind, extra), outcome = nova
            cells["nova_sonic"] = ((NV.mid_response if script == "response" else NV.mid_tool)(kind, **extra), outcome)
        rows.append(Row(f"{name} {where}", "disconnect", script, cells))
    return rows


def _tls_eof() -> list[Row]:
    return [
        _row(
            "TLS closed without close_notify mid-response",
            "disconnect",
            "response",
            openai=(OA.tls_mid_response(), RECONNECTS),
            gemini=(GM.tls_mid_response(), RECONNECTS),
            nova_sonic=(NV.mid_response("drop"), RECONNECTS),
        ),
        _row(
            "TLS closed without close_notify mid-tool",
            "disconnect",
            "tool",
            openai=(OA.tls_mid_tool(), RECONNECTS),
            gemini=(GM.tls_mid_tool(), RECONNECTS),
            nova_sonic=(NV.mid_tool("drop"), RECONNECTS),
        ),
    ]


ENDS = Ends()
GIVES_UP = Fails(BidiProviderError, asked=RETRY.max_attempts)
"""A refusal that never ends: retried as the policy says, then the last refusal is the error."""
GEMINI_1007 = Fails(BidiProviderError, ("1007",), fatal=True)

DISCONNECTS = [
    *_both("TCP reset", ({"reset": True}, RECONNECTS), ({"reset": True}, RECONNECTS), (("reset", {}), RECONNECTS)),
    *_both("close 1000 (session ended)", ({"close": (1000, "")}, ENDS), ({"close": (1000, "")}, ENDS), None),
    *_both("close 1001", ({"close": (1001, "going away")}, RECONNECTS), ({"close": (1001, "")}, RECONNECTS), None),
    *_both("close 1006 (no close frame)", ({"drop": True}, RECONNECTS), ({"drop": True}, RECONNECTS), None),
    *_both("close 1007", ({"close": (1007, "bad data")}, RECONNECTS), ({"close": (1007, "bad")}, GEMINI_1007), None),
    *_both("close 1011", ({"close": (1011, "server error")}, RECONNECTS), ({"close": (1011, "")}, RECONNECTS), None),
    *_both("close 1012", ({"close": (1012, "restart")}, RECONNECTS), ({"close": (1012, "")}, RECONNECTS), None),
    *_both("HTTP/2 END_STREAM (session ended)", None, None, (("end_stream", {}), ENDS)),
    *_both("HTTP/2 RST_STREAM", None, None, (("rst", {}), RECONNECTS)),
    *_both("HTTP/2 GOAWAY", None, None, (("goaway", {}), RECONNECTS)),
    *_tls_eof(),
]


def _handshake(status: int, retry_after: str | None, outcome: Outcome, nova: tuple[Setup, Outcome] | None) -> Row:
    name = f"handshake refused {status}" + (f", Retry-After {retry_after}" if retry_after else "")
    if status in (429, 503) and retry_after is None:
        name += ", no Retry-After"
    cells = {
        "openai": (Setup(sim={"refusals": [refusal(status, retry_after)]}), outcome),
        "gemini": (Setup(sim={"refusals": [refusal(status, retry_after)]}), outcome),
    }
    if nova is not None:
        cells["nova_sonic"] = nova
    return Row(name, "handshake", "handshake", cells)


HANDSHAKES = [
    Row(
        "handshake refused 401",
        "handshake",
        "handshake",
        {
            "openai": (Setup(sim={"refusals": [refusal(401)]}), Fails(BidiProviderError, ("API key",), fatal=True)),
            "gemini": (
                Setup(sim={"refusals": [refusal(401)]}),
                Fails(BidiProviderError, ("API key or access token",), fatal=True),
            ),
        },
    ),
    Row(
        "handshake refused 403",
        "handshake",
        "handshake",
        {
            "openai": (Setup(sim={"refusals": [refusal(403)]}), Fails(BidiProviderError, ("API key",), fatal=True)),
            "gemini": (
                Setup(sim={"refusals": [refusal(403)]}),
                Fails(BidiProviderError, ("API key or access token",), fatal=True),
            ),
            "nova_sonic": (
                NV.refused("access_denied"),
                Fails(BidiProviderError, ("the AWS credentials may not do this",), fatal=True),
            ),
        },
    ),
    Row(
        "wrong credentials",
        "handshake",
        "handshake",
        {
            "openai": (Setup(endpoint=wrong_key), Fails(BidiProviderError, ("API key",), fatal=True)),
            "gemini": (Setup(endpoint=wrong_key), Fails(BidiProviderError, ("API key not valid",), fatal=True)),
            "nova_sonic": (
                Setup(endpoint=wrong_key),
                Fails(BidiProviderError, ("the AWS credentials were not accepted",), fatal=True),
            ),
        },
    ),
    _handshake(429, "1", Recovers(wait_s=1.0), (NV.refused("throttling", "1"), Recovers(wait_s=1.0))),
    _handshake(429, None, Recovers(), (NV.refused("throttling"), Recovers())),
    _handshake(503, "1", Recovers(wait_s=1.0), (NV.refused("unavailable", "1"), Recovers(wait_s=1.0))),
    _handshake(503, None, Recovers(), (NV.refused("unavailable"), Recovers())),
    Row(
        "handshake refused 429 every time",
        "handshake",
        "handshake",
        {
            "openai": (Setup(sim={"refusals": [refusal(429, times=99)]}), GIVES_UP),
            "gemini": (Setup(sim={"refusals": [refusal(429, times=99)]}), GIVES_UP),
            "nova_sonic": (Setup(sim={"faults": [nv.Fault("throttling", times=99)]}), GIVES_UP),
        },
    ),
    Row(
        "DNS failure",
        "handshake",
        "handshake",
        {
            p: (Setup(endpoint=unknown_host), Fails(BidiConnectionError, ("bidi-core-fault.invalid",)))
            for p in ("openai", "gemini", "nova_sonic")
        },
    ),
    Row(
        "connection refused",
        "handshake",
        "handshake",
        {p: (Setup(endpoint=dead_port), Fails(BidiConnectionError)) for p in ("openai", "gemini", "nova_sonic")},
    ),
    Row(
        "TLS certificate not trusted",
        "handshake",
        "handshake",
        {
            "openai": (
                Setup(sim={"tls": True}, endpoint=untrusted),
                Fails(BidiConnectionError, ("certificate",), fatal=True),
            ),
            "gemini": (
                Setup(sim={"tls": True}, endpoint=untrusted),
                Fails(BidiConnectionError, ("certificate",), fatal=True),
            ),
            "nova_sonic": (Setup(endpoint=untrusted), Fails(BidiConnectionError, ("certificate",), fatal=True)),
        },
    ),
]


# ---------------------------------------------------------------- malformed frames

GARBAGE = "this is not JSON"
NOVA_AUDIO_BAD_BASE64 = (
    b'{"event": {"audioOutput": {"sessionId": "s", "promptName": "p", "completionId": "c",'
    b' "contentId": "x", "content": "AAA"}}}'
)
OPENAI_AUDIO_BAD_BASE64 = (
    '{"type": "response.output_audio.delta", "event_id": "e", "response_id": "r", "item_id": "i",'
    ' "output_index": 0, "content_index": 0, "delta": "AAA"}'
)
GEMINI_AUDIO_BAD_BASE64 = (
    b'{"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",'
    b' "data": "AAA"}}]}}}'
)

MALFORMED = [
    _row(
        "non-JSON message",
        "malformed",
        "response",
        openai=(OA.instead(raw=[GARBAGE], say="Fine."), PROTOCOL_ERROR),
        gemini=(GM.instead(raw=[GARBAGE.encode()], say="Fine."), PROTOCOL_ERROR),
        nova_sonic=(NV.raw(nova_message(GARBAGE.encode())), PROTOCOL_ERROR),
    ),
    _row(
        "JSON of the wrong shape",
        "malformed",
        "response",
        openai=(OA.instead(raw=['{"type": "response.output_audio.delta", "delta": 5}'], say="Fine."), PROTOCOL_ERROR),
        gemini=(GM.instead(raw=[b'{"serverContent": {"modelTurn": 5}}'], say="Fine."), PROTOCOL_ERROR),
        nova_sonic=(NV.raw(nova_event(b'{"event": {"textOutput": 5}}')), PROTOCOL_ERROR),
    ),
    _row(
        "binary where text is expected",
        "malformed",
        "response",
        openai=(OA.instead(raw=[b"\x00\xffbinary"], say="Fine."), PROTOCOL_ERROR),
        gemini=(GM.instead(raw=[b"\xff\xfe\x00binary"], say="Fine."), PROTOCOL_ERROR),
        nova_sonic=(NV.raw(nova_event(b"\xff\xfe\x00binary")), PROTOCOL_ERROR),
    ),
    _row(
        "event larger than any real one",
        "malformed",
        "response",
        openai=(OA.instead(garble=HUGE_FRAME), RECONNECTS),
        gemini=(GM.instead(garble=HUGE_FRAME), RECONNECTS),
        nova_sonic=(NV.raw(nova_huge_prelude()), RECONNECTS),
    ),
    _row(
        "truncated base64 audio",
        "malformed",
        "response",
        openai=(OA.instead(raw=[OPENAI_AUDIO_BAD_BASE64], say="Fine."), PROTOCOL_ERROR),
        gemini=(GM.instead(raw=[GEMINI_AUDIO_BAD_BASE64], say="Fine."), PROTOCOL_ERROR),
        nova_sonic=(NV.raw(nova_event(NOVA_AUDIO_BAD_BASE64)), PROTOCOL_ERROR),
    ),
]


# ---------------------------------------------------------------- in-band errors

IN_BAND = [
    _row(
        "in-band rate limit",
        "in-band",
        "response",
        openai=(OA.error("Rate limit reached for requests.", "rate_limit_exceeded"), Continues("rate_limit_exceeded")),
        gemini=(GM.instead(close=(1011, "Resource has been exhausted (e.g. check quota).")), RECONNECTS),
        nova_sonic=(NV.instead("throttling"), RECONNECTS),
    ),
    _row(
        "in-band invalid request",
        "in-band",
        "response",
        openai=(OA.error("Invalid value: 'x'.", "invalid_value"), Continues("invalid_value")),
        gemini=(GM.instead(close=(1007, "Request contains an invalid argument.")), GEMINI_1007),
        nova_sonic=(NV.instead("validation"), Fails(BidiProviderError, ("ValidationException",), fatal=True)),
    ),
    _row(
        "in-band server error",
        "in-band",
        "response",
        openai=(OA.error("The server had an error.", "server_error", "server_error"), Continues("server_error")),
        gemini=(GM.instead(close=(1011, "Internal error occurred.")), RECONNECTS),
        nova_sonic=(NV.instead("internal"), RECONNECTS),
    ),
    _row(
        "in-band session expired",
        "in-band",
        "response",
        openai=(OA.error("Your session hit the maximum duration of 60 minutes.", "session_expired"), RECONNECTS),
        gemini=(GM.instead(close=(1011, "Deadline expired before operation could complete.")), RECONNECTS),
        nova_sonic=(NV.instead("model_timeout"), RECONNECTS),  # what ends a stream at its limit
    ),
    _row("Nova ThrottlingException", "in-band", "response", nova_sonic=(NV.instead("throttling"), RECONNECTS)),
    _row("Nova ModelTimeoutException", "in-band", "response", nova_sonic=(NV.instead("model_timeout"), RECONNECTS)),
    _row(
        "Nova ValidationException (silence timeout, 531)",
        "in-band",
        "response",
        nova_sonic=(
            NV.instead("validation", message="Timed out waiting for input events. InternalErrorCode=531"),
            RECONNECTS,
        ),
    ),
    _row("Nova ServiceUnavailableException", "in-band", "response", nova_sonic=(NV.instead("unavailable"), RECONNECTS)),
]


# ---------------------------------------------------------------- silence


def _silent(setup: Setup) -> Setup:
    return attrs.evolve(setup, model=READ_TIMEOUT)


SILENCE = [
    _row(
        "silence: nothing comes, socket open",
        "silence",
        "response",
        openai=(_silent(OA.instead(silence=True)), SILENT),
        gemini=(_silent(GM.instead(silence=True)), SILENT),
        nova_sonic=(_silent(NV.instead("silence")), SILENT),
    ),
    _row(
        "silence mid-response",
        "silence",
        "response",
        openai=(_silent(OA.mid_response(silence=True)), SILENT),
        gemini=(_silent(GM.mid_response(silence=True)), SILENT),
        nova_sonic=(_silent(NV.mid_response("silence")), SILENT),
    ),
    _row(
        "silence mid-tool",
        "silence",
        "tool",
        openai=(_silent(OA.mid_tool(silence=True)), SILENT),
        gemini=(_silent(GM.mid_tool(silence=True)), SILENT),
        nova_sonic=(_silent(NV.mid_tool("silence")), SILENT),
    ),
    _row(
        "silence: setup never answered",
        "silence",
        "handshake",
        openai=(_silent(Setup(sim={"silent_connections": [0]})), Recovers(silent=True)),
        gemini=(_silent(Setup(sim={"silent_connections": [0]})), Recovers(silent=True)),
        nova_sonic=(_silent(Setup(sim={"faults": [nv.Fault("silence", stream=0)]})), Recovers(silent=True)),
    ),
    _row(
        "server stops reading and answering",
        "silence",
        "response",
        openai=(_silent(OA.instead(deaf=True)), SILENT),
        gemini=(_silent(GM.instead(deaf=True)), SILENT),
        nova_sonic=(_silent(NV.instead("deaf")), SILENT),
    ),
]


# ---------------------------------------------------------------- the limits

LIMITS = [
    _row(
        "session limit mid-response",
        "limits",
        "response",
        openai=(OA.mid_response(session_limit=True), RECONNECTS),
        gemini=(GM.mid_response(go_away=True, close=(1000, "")), EXPIRING),
        nova_sonic=(NV.mid_response("model_timeout"), RECONNECTS),
    ),
    _row(
        "session limit mid-tool",
        "limits",
        "tool",
        openai=(OA.mid_tool(session_limit=True), RECONNECTS),
        gemini=(GM.mid_tool(go_away=True, close=(1000, "")), EXPIRING),
        nova_sonic=(NV.mid_tool("model_timeout"), RECONNECTS),
    ),
    _row(
        "Gemini resumption refused mid-response",
        "limits",
        "response",
        gemini=(
            attrs.evolve(GM.mid_response(drop=True), sim={"handle_ttl_s": 1e-6}),
            Reconnects(("connection_lost", "resumption_rejected")),
        ),
    ),
    _row(
        "Gemini resumption refused mid-tool",
        "limits",
        "tool",
        gemini=(
            attrs.evolve(GM.mid_tool(drop=True), sim={"handle_ttl_s": 1e-6}),
            Reconnects(("connection_lost", "resumption_rejected")),
        ),
    ),
]


# ---------------------------------------------------------------- the application's own parts

_EVERY = ("openai", "gemini", "nova_sonic")
APPLICATION = [
    Row(
        "slow output beside a fast one",
        "application",
        "slow_output",
        dict.fromkeys(_EVERY, (SETUP, FastOutputUnaffected())),
    ),
    Row(
        "output raises",
        "application",
        "output_raises",
        dict.fromkeys(_EVERY, (SETUP, Fails(OutputBroke, ("unplugged",), closed=False))),
    ),
    Row(
        "input raises",
        "application",
        "input_raises",
        dict.fromkeys(_EVERY, (SETUP, Fails(InputBroke, ("driver",), closed=False))),
    ),
    Row(
        "tool hangs past its timeout",
        "application",
        "tool_hangs",
        dict.fromkeys(_EVERY, (SETUP, ToolFails("timed out"))),
    ),
    Row("tool raises", "application", "tool_raises", dict.fromkeys(_EVERY, (SETUP, ToolFails("no weather station")))),
]

ROWS: list[Row] = [*DISCONNECTS, *HANDSHAKES, *MALFORMED, *IN_BAND, *SILENCE, *LIMITS, *APPLICATION]


def cases(provider: str) -> list[Case]:
    """The rows this provider can have, as cases."""
    return [Case(row.scenario, row.group, row.script, *row.cells[provider]) for row in ROWS if provider in row.cells]
