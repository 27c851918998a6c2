"""The conversation's turns: responses and their audio, barge-in, what the
outputs played, and the tools the model calls."""

from __future__ import annotations

import math

import attrs

from bidi_core.connection_rules import (
    close,
)
from bidi_core.effects import (
    AppendHistory,
    CancelTool,
    ClearPlayback,
    Effect,
    Emit,
    RunTool,
    SendToModel,
)
from bidi_core.outbox_rules import (
    accept,
)
from bidi_core.shell_events import (
    HookFailed,
    PlaybackProgress,
    ToolCancelled,
    ToolFinished,
    ToolRefused,
)
from bidi_core.state import (
    Conversation,
    Phase,
    Result,
    ToolCall,
    remember_interrupted,
)
from ports.events import (
    BidiAudioStreamEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, TruncateResponse

# --------------------------------------------------------------------------- handlers: responses


def response_start(conv: Conversation, ev: BidiResponseStartEvent) -> Result:
    effects: list[Effect] = []
    if conv.response_id is not None and conv.response_id != ev.response_id:
        # The provider moved on without closing the previous response.
        effects.append(Emit(BidiResponseCompleteEvent(response_id=conv.response_id, stop_reason="interrupted")))
    effects.append(Emit(ev))
    new = attrs.evolve(
        conv,
        phase=Phase.RESPONDING,
        response_id=ev.response_id,
        audible_id=ev.response_id,
        audible_from_old_connection=False,
        received_ms=0.0,
        played_ms=0.0,
    )
    return new, tuple(effects)


def audio(conv: Conversation, ev: BidiAudioStreamEvent) -> Result:
    rid = ev.response_id if ev.response_id is not None else conv.response_id
    if rid is None or rid != conv.response_id or rid in conv.interrupted_ids:
        return conv, ()  # late audio of a response that ended or was cut short
    if ev.response_id is None:
        ev = attrs.evolve(ev, response_id=rid)
    if conv.audio_unobserved:
        return conv, (Emit(ev),)
    return attrs.evolve(conv, received_ms=conv.received_ms + ev.duration_ms), (Emit(ev),)


def transcript(conv: Conversation, ev: BidiTranscriptStreamEvent) -> Result:
    if ev.is_final and ev.text:
        return conv, (Emit(ev), AppendHistory(TextMessage(role=ev.role, text=ev.text)))
    return conv, (Emit(ev),)


def emit(conv: Conversation, ev: BidiErrorEvent) -> Result:
    return conv, (Emit(ev),)


def usage(conv: Conversation, ev: BidiUsageEvent) -> Result:
    """A usage report: summed (``agent.usage``) and passed on."""
    return attrs.evolve(conv, usage=conv.usage.add(ev)), (Emit(ev),)


def ignore(conv: Conversation, ev: object) -> Result:
    """Accepted and without consequence (a straggler of something already settled)."""
    return conv, ()


def unexpected(conv: Conversation, ev: object) -> Result:
    """A provider event that makes no sense now (an adapter bug, or a provider
    that broke its protocol): reported, otherwise ignored."""
    message = f"unexpected provider event: {type(ev).__name__} is not allowed while {conv.phase.value}"
    return conv, (Emit(BidiErrorEvent(message=message, code="protocol_error")),)


def response_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Result:
    if ev.response_id != conv.response_id:
        return conv, ()  # completion of a response already closed locally
    if not conv.tracks_playback or conv.played_ms >= conv.received_ms:
        # Nothing of it can still be playing: no output reports playback, or
        # everything received was already played (or it had no audio at all).
        conv = attrs.evolve(conv, audible_id=None)
    return attrs.evolve(conv, phase=Phase.LISTENING, response_id=None), (Emit(ev),)


def interrupted_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Result:
    if ev.response_id != conv.response_id:
        return conv, ()
    completed = Emit(attrs.evolve(ev, stop_reason="interrupted"))
    return attrs.evolve(conv, phase=Phase.LISTENING, response_id=None), (completed,)


def interrupt(conv: Conversation, rid: str, cancel: bool) -> Result:
    """Cut ``rid`` short: discard its audio everywhere, tell the user and the model."""
    effects: list[Effect] = [ClearPlayback(rid), Emit(BidiInterruptionEvent(reason="user_speech", response_id=rid))]
    if cancel and not conv.capabilities.cancels_on_speech:
        effects.append(SendToModel(CancelResponse(rid)))
    if conv.capabilities.can_truncate and conv.tracks_playback and not conv.audible_from_old_connection:
        heard = min(conv.played_ms, conv.received_ms)
        effects.append(SendToModel(TruncateResponse(response_id=rid, audio_end_ms=int(heard))))
    for call in sorted(conv.pending_tools, key=lambda c: c.tool_use_id):
        if call.name in conv.config.interruptible_tools:
            effects.append(CancelTool(call.tool_use_id))
    # An answer from an earlier connection is not remembered as interrupted: the
    # current connection numbers its own responses and may reuse that id.
    remembered = conv.interrupted_ids if conv.audible_from_old_connection else remember_interrupted(conv, rid)
    conv = attrs.evolve(
        conv,
        audible_id=None,
        audible_from_old_connection=False,
        interrupted_ids=remembered,
        played_ms=0.0,
        received_ms=0.0,
    )
    return conv, tuple(effects)


def speech_while_responding(conv: Conversation, ev: BidiSpeechStartedEvent) -> Result:
    assert conv.response_id is not None
    conv, effects = interrupt(conv, conv.response_id, cancel=True)
    return attrs.evolve(conv, phase=Phase.INTERRUPTED), effects


def speech_while_idle(conv: Conversation, ev: BidiSpeechStartedEvent) -> Result:
    """Speech with no response generating interrupts only audio still playing."""
    if conv.audible_id is None:
        return conv, ()
    return interrupt(conv, conv.audible_id, cancel=False)


def playback(conv: Conversation, ev: PlaybackProgress) -> Result:
    report = ev.report
    if conv.audio_unobserved:
        # An output that did not declare ``reports_playback`` reports after all: what
        # the current response received went uncounted, so it counts as unbounded
        # (audible until the output says it finished; a truncate says what was played).
        received = math.inf if conv.response_id is not None else conv.received_ms
        conv = attrs.evolve(conv, audio_unobserved=False, received_ms=received)
    if not conv.tracks_playback:
        conv = attrs.evolve(conv, tracks_playback=True)
    if report.response_id != conv.audible_id:
        return conv, ()
    conv = attrs.evolve(conv, played_ms=max(conv.played_ms, report.played_ms))
    if report.finished and conv.response_id != report.response_id:
        conv = attrs.evolve(conv, audible_id=None)
    return conv, ()


# --------------------------------------------------------------------------- handlers: tools


def tool_use(conv: Conversation, ev: BidiToolUseEvent) -> Result:
    if ev.tool_use_id in conv.tool_ids():
        return conv, (
            Emit(BidiErrorEvent(message=f"duplicate tool call id {ev.tool_use_id!r}", code="protocol_error")),
        )
    call = ToolCall(ev.tool_use_id, ev.name, conv.connection_id)
    new = attrs.evolve(conv, pending_tools=conv.pending_tools | {call})
    return new, (Emit(ev), AppendHistory(ToolCallMessage(ev.tool_use_id, ev.name, dict(ev.input))), RunTool(ev))


def settle_tool(conv: Conversation, call: ToolCall, result: BidiToolResultEvent) -> Result:
    """The call is over: the model hears its outcome (now or on the next
    connection), unless the provider withdrew it."""
    withdrawn = call.tool_use_id in conv.withdrawn_tools
    conv = attrs.evolve(
        conv, pending_tools=conv.pending_tools - {call}, withdrawn_tools=conv.withdrawn_tools - {call.tool_use_id}
    )
    if withdrawn:
        # Never sent; the history keeps calls and results in pairs (providers refuse
        # a replayed call with no outcome).
        note = ToolResultMessage(call.tool_use_id, call.name, "cancelled", "The model withdrew this call.")
        return conv, (Emit(result), AppendHistory(note))
    conv, sent = accept(conv, result, issued_on=call.issued_on)
    return conv, (Emit(result), *sent)


def tool_finished(conv: Conversation, ev: ToolFinished) -> Result:
    r = ev.result
    call = conv.tool_call(r.tool_use_id)
    if call is None:
        return conv, ()  # cancelled meanwhile; its cancellation already settled it
    effects: list[Effect] = []
    if ev.error_type is not None:
        effects.append(Emit(BidiErrorEvent(message=str(r.content), code="tool_error", details=ev.error_type)))
    if ev.ends_conversation:
        # Not sent: the conversation ends here. Kept so a later session knows.
        conv = attrs.evolve(conv, pending_tools=conv.pending_tools - {call})
        effects += [Emit(r), AppendHistory(ToolResultMessage(r.tool_use_id, r.name, r.status, r.content))]
        return close(conv, "user_request", None, effects)
    conv, settled = settle_tool(conv, call, r)
    return conv, (*effects, *settled)


def tool_cancelled(conv: Conversation, ev: ToolCancelled) -> Result:
    call = conv.tool_call(ev.tool_use_id)
    if call is None:
        return conv, ()
    # We cancelled it (barge-in) or the provider withdrew it; either way the call is answered.
    result = BidiToolResultEvent(
        tool_use_id=call.tool_use_id, name=call.name, status="cancelled", content="The tool call was cancelled."
    )
    return settle_tool(conv, call, result)


def tool_withdrawn(conv: Conversation, ev: BidiToolCancelEvent) -> Result:
    ids = conv.tool_ids() & set(ev.tool_use_ids)
    new = attrs.evolve(conv, withdrawn_tools=conv.withdrawn_tools | ids)
    return new, tuple(CancelTool(i) for i in sorted(ids))


def tool_refused(conv: Conversation, ev: ToolRefused) -> Result:
    """A hook kept the call from running. The model is answered all the same (an
    error result, so it does not wait or call again blindly): with the hook's
    words, or, when the hook itself failed, with words of ours, and the user
    hears of the failure. A check that fails never lets the call through."""
    call = conv.tool_call(ev.tool_use_id)
    if call is None:
        return conv, ()
    effects: list[Effect] = []
    if ev.error_type is not None:
        content = f"The tool call was not run: the check before it failed ({ev.error_type})."
        message = f"before_tool_call hook failed for {call.name}: {ev.detail or ev.error_type}"
        effects.append(Emit(BidiErrorEvent(message=message, code="hook_error", details=ev.error_type)))
    else:
        content = ev.message or f"The call to {call.name} was refused."
    result = BidiToolResultEvent(tool_use_id=call.tool_use_id, name=call.name, status="error", content=content)
    conv, settled = settle_tool(conv, call, result)
    return conv, (*effects, *settled)


def hook_failed(conv: Conversation, ev: HookFailed) -> Result:
    """Reported, never silent; the conversation goes on."""
    message = f"{ev.hook} hook failed: {ev.detail or ev.error_type}"
    return conv, (Emit(BidiErrorEvent(message=message, code="hook_error", details=ev.error_type)),)
