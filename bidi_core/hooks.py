"""Hooks: the application's own code at the conversation's turning points.

``agent.hooks`` is a small typed registry, in the core's vocabulary:
a connection started, restarted or closed; a response started or completed;
an interruption; and around each tool call, ``before_tool_call`` (approve,
refuse with words the model hears, or wait for a person's yes) and
``after_tool_call`` (rewrite the result). Each registration method works as
a decorator and takes sync or async functions; several hooks of a kind run
in the order they were added.

How they run (the shell's rules for tools): the tool hooks run in the tool
call's own task, so a hook that waits for a person stalls nothing else:
audio keeps flowing, the user can keep talking, and the wait is cancelled
with the call (a barge-in for ``cancel_on_interruption`` tools, the provider
withdrawing it, the conversation ending). The other hooks run one after
another, in the order of the events, in one task of the agent's task group,
never in the path of audio. A sync hook runs on the event loop: keep it
quick, and make a hook that waits async. A hook that raises is reported as a
``hook_error`` :class:`~ports.events.BidiErrorEvent` and logged; it never
ends the conversation. What a refusal or a failed check becomes for the
model is the core's decision (``ToolRefused``): a failed check never lets
the call run.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import anyio
import attrs

from bidi_core.shell_events import HookFailed, ShellEvent, ToolFinished, ToolRefused
from bidi_core.tools import ToolOutcome, ToolRegistry
from ports.events import (
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
)

__all__ = ["Allow", "HookError", "HookRunner", "Hooks", "Refuse", "ToolDecision", "run_call"]

logger = logging.getLogger("bidi_core.hooks")


@attrs.frozen
class Allow:
    """Let the tool call run (returning ``None`` means the same)."""


@attrs.frozen
class Refuse:
    """Do not run the call; the model is told ``message`` as the call's (error) result."""

    message: str = attrs.field(validator=attrs.validators.instance_of(str))


ToolDecision: TypeAlias = Allow | Refuse

_F = TypeVar("_F", bound=Callable[..., Any])
Notified: TypeAlias = Callable[[Any], Awaitable[None] | None]
BeforeTool: TypeAlias = Callable[[BidiToolUseEvent], Awaitable[ToolDecision | None] | ToolDecision | None]
AfterTool: TypeAlias = Callable[
    [BidiToolUseEvent, BidiToolResultEvent], Awaitable[BidiToolResultEvent | None] | BidiToolResultEvent | None
]

_KINDS: dict[type, str] = {
    BidiConnectionStartEvent: "on_connection_started",
    BidiConnectionRestartEvent: "on_connection_restarted",
    BidiConnectionCloseEvent: "on_connection_closed",
    BidiResponseStartEvent: "on_response_started",
    BidiResponseCompleteEvent: "on_response_completed",
    BidiInterruptionEvent: "on_interruption",
}


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


class HookError(Exception):
    """A hook raised ``cause``; ``hook`` names its kind. An after-call hook's
    error carries the ``result`` as it was before that hook."""

    def __init__(self, hook: str, cause: Exception, result: BidiToolResultEvent | None = None) -> None:
        super().__init__(f"{hook} hook failed: {type(cause).__name__}: {cause}")
        self.hook = hook
        self.cause = cause
        self.result = result

    def reported(self) -> HookFailed:
        return HookFailed(self.hook, type(self.cause).__name__, f"{type(self.cause).__name__}: {self.cause}")


class Hooks:
    """The hooks of one agent (``agent.hooks``)."""

    def __init__(self) -> None:
        self._notified: dict[type, list[Notified]] = {}
        self._before: list[BeforeTool] = []
        self._after: list[AfterTool] = []

    def __repr__(self) -> str:
        counts = {_KINDS[t]: len(fns) for t, fns in self._notified.items()}
        return f"<Hooks {counts} before_tool_call={len(self._before)} after_tool_call={len(self._after)}>"

    # ------------------------------------------------------------------ registering

    def _add(self, kind: type, fn: _F) -> _F:
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {fn!r}")
        self._notified.setdefault(kind, []).append(fn)
        return fn

    def on_connection_started(self, fn: Callable[[BidiConnectionStartEvent], Any]) -> Any:
        return self._add(BidiConnectionStartEvent, fn)

    def on_connection_restarted(self, fn: Callable[[BidiConnectionRestartEvent], Any]) -> Any:
        return self._add(BidiConnectionRestartEvent, fn)

    def on_connection_closed(self, fn: Callable[[BidiConnectionCloseEvent], Any]) -> Any:
        return self._add(BidiConnectionCloseEvent, fn)

    def on_response_started(self, fn: Callable[[BidiResponseStartEvent], Any]) -> Any:
        return self._add(BidiResponseStartEvent, fn)

    def on_response_completed(self, fn: Callable[[BidiResponseCompleteEvent], Any]) -> Any:
        """Sees the completion with its :class:`~ports.events.ResponseTiming`."""
        return self._add(BidiResponseCompleteEvent, fn)

    def on_interruption(self, fn: Callable[[BidiInterruptionEvent], Any]) -> Any:
        return self._add(BidiInterruptionEvent, fn)

    def before_tool_call(self, fn: BeforeTool) -> BeforeTool:
        """``fn(call)`` decides whether the call runs: :class:`Allow` (or ``None``),
        or :class:`Refuse` with words for the model. It may await as long as it
        needs (ask a person and wait for the answer): only this call waits."""
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {fn!r}")
        self._before.append(fn)
        return fn

    def after_tool_call(self, fn: AfterTool) -> AfterTool:
        """``fn(call, result)`` may return another result for the model (``None``
        keeps it); each hook sees the previous one's result."""
        if not callable(fn):
            raise TypeError(f"a hook must be callable, got {fn!r}")
        self._after.append(fn)
        return fn

    # ------------------------------------------------------------------ running (the shell's)

    def wants(self, event: object) -> bool:
        return type(event) in self._notified

    async def notify(self, event: BidiOutputEvent) -> None:
        """Run the hooks of ``event``'s kind in order; raises :class:`HookError` for
        the first that fails, after the others ran."""
        failure: HookError | None = None
        for fn in list(self._notified.get(type(event), ())):
            try:
                await _call(fn, event)
            except Exception as exc:
                failure = failure or HookError(_KINDS[type(event)], exc)
        if failure is not None:
            raise failure

    async def before(self, call: BidiToolUseEvent) -> Refuse | None:
        """The first refusal, or ``None``: the call may run. Raises :class:`HookError`."""
        for fn in list(self._before):
            try:
                decision = await _call(fn, call)
            except Exception as exc:
                raise HookError("before_tool_call", exc) from exc
            if isinstance(decision, Refuse):
                return decision
            if decision is not None and not isinstance(decision, Allow):
                raise HookError(
                    "before_tool_call",
                    TypeError(f"a before_tool_call hook returns Allow(), Refuse(message) or None, not {decision!r}"),
                )
        return None

    async def after(self, call: BidiToolUseEvent, result: BidiToolResultEvent) -> BidiToolResultEvent:
        """``result`` as the after hooks leave it. Raises :class:`HookError` (the
        result so far is on it as ``.result``)."""
        for fn in list(self._after):
            try:
                rewritten = await _call(fn, call, result)
            except Exception as exc:
                raise HookError("after_tool_call", exc, result) from exc
            if rewritten is None:
                continue
            if not isinstance(rewritten, BidiToolResultEvent) or rewritten.tool_use_id != call.tool_use_id:
                error = TypeError(f"an after_tool_call hook returns a result for call {call.tool_use_id} or None")
                raise HookError("after_tool_call", error, result)
            result = rewritten
        return result

    @property
    def has_tool_hooks(self) -> bool:
        return bool(self._before or self._after)


async def run_call(registry: ToolRegistry, hooks: Hooks, call: BidiToolUseEvent) -> list[ShellEvent]:
    """Run one tool call with its hooks; what happened, as the shell reports it to the core.

    Cancellation passes through (the caller reports it): also while a
    ``before_tool_call`` hook waits for a person.
    """
    if not hooks.has_tool_hooks:
        return [_finished(await registry.execute(call))]
    try:
        refusal = await hooks.before(call)
    except HookError as exc:
        logger.warning("%s", exc, exc_info=exc.cause)
        return [ToolRefused(call.tool_use_id, error_type=type(exc.cause).__name__, detail=exc.reported().detail)]
    if refusal is not None:
        logger.debug("tool %s (%s) refused by a hook", call.name, call.tool_use_id)
        return [ToolRefused(call.tool_use_id, message=refusal.message)]
    outcome = await registry.execute(call)
    try:
        result = await hooks.after(call, outcome.result)
    except HookError as exc:
        logger.warning("%s", exc, exc_info=exc.cause)
        return [exc.reported(), _finished(outcome)]  # the tool's own result stands
    return [_finished(attrs.evolve(outcome, result=result))]


def _finished(outcome: ToolOutcome) -> ToolFinished:
    error_type = type(outcome.error).__name__ if outcome.error is not None else None
    return ToolFinished(outcome.result, outcome.ends_conversation, error_type)


class HookRunner:
    """Runs the notification hooks one event at a time, in order, in one task
    that ends once the conversation closed and every queued event had its hooks."""

    def __init__(self, hooks: Hooks, failed: Callable[[HookFailed], None]) -> None:
        self._hooks = hooks
        self._failed = failed
        self._queue: deque[BidiOutputEvent] = deque()
        self._ready = anyio.Event()
        self._closed = False
        self.done = anyio.Event()

    def put(self, event: BidiOutputEvent) -> None:
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def run(self) -> None:
        try:
            while True:
                while self._queue:
                    event = self._queue.popleft()
                    try:
                        await self._hooks.notify(event)
                    except HookError as exc:
                        logger.warning("%s", exc, exc_info=exc.cause)
                        self._failed(exc.reported())
                if self._closed:
                    return
                await self._ready.wait()
                self._ready = anyio.Event()
        finally:
            self.done.set()
