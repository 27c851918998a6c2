"""Tools: Python functions the model may call during a conversation.

``@tool`` turns a function into a :class:`BidiTool`: a name, a description and
a JSON schema the model is told about, all read from the function itself (its
type hints and its docstring), so the function stays the single source of
truth. :class:`ToolRegistry` holds the tools of one agent and runs the calls
the model makes.

The model is an unreliable caller. It invents arguments, forgets required
ones, sends ``true`` where a number belongs. So :meth:`ToolRegistry.execute`
checks every call against the type hints *before* the function runs and
answers a bad call with an error result that says exactly what was wrong: the
model reads it and usually corrects itself on the next try. Whatever a tool
does (raise, hang past its timeout, return something that is not JSON), the
outcome is a result for the model, never an exception that would end the
conversation. Cancellation is the one thing that passes through untouched: it
belongs to whoever cancelled.

Only the type hints a JSON schema can express are accepted (``str``, ``int``,
``float``, ``bool``, ``None``, ``list``, ``dict[str, ...]``, ``Literal``,
:class:`~enum.Enum` subclasses, unions of these, ``Annotated`` and ``Any``);
anything else is refused when the tool is defined, not when the model first
calls it mid-conversation.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from bidi_core.tool_schema import InvalidArguments, ToolSignature, analyse, describe, is_async
from ports.errors import BidiToolError, BidiUsageError
from ports.events import BidiToolResultEvent, BidiToolUseEvent
from ports.model import ToolSpec

__all__ = ["BidiTool", "ToolOutcome", "ToolRegistry", "stop_conversation", "tool"]

logger = logging.getLogger("bidi_core.tools")

F = TypeVar("F", bound=Callable[..., Any])

# What the providers accept as a function name (OpenAI, Gemini, Nova Sonic agree on this subset).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --------------------------------------------------------------------------- BidiTool


def _validate_name(value: str) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise BidiUsageError(
            f"tool name {value!r} is not accepted by the providers: use 1 to 64 letters, digits, '_' or '-' "
            "(pass name=... to @tool)"
        )


def _check_name(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    _validate_name(value)


def _check_timeout(_inst: object, _attr: attrs.Attribute[float | None], value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        raise BidiUsageError(f"a tool timeout must be a positive number of seconds or None, got {value!r}")


def _check_callable(_inst: object, _attr: attrs.Attribute[Callable[..., Any]], value: Callable[..., Any]) -> None:
    if not callable(value):
        raise BidiUsageError(f"a tool's func must be callable, got {type(value).__name__}")


@attrs.frozen
class BidiTool:
    """A function the model may call, with what the model is told about it.

    Made by :func:`tool`, which reads the schema from the function. Built
    directly with a hand-written ``input_schema``, the arguments are passed to
    ``func`` as they come: only a tool made by :func:`tool` knows the type
    hints needed to check and convert them.

    ``timeout`` bounds how long the conversation waits for a result.
    ``cancel_on_interruption`` lets the core cancel the call when the user
    barges in (for work whose answer is useless once the user moved on).
    ``ends_conversation`` is set only on :data:`stop_conversation`.

    Calling a ``BidiTool`` calls ``func``, so a decorated function can still be
    used (and tested) as the plain function it was.
    """

    name: str = attrs.field(validator=_check_name)
    description: str = attrs.field(validator=attrs.validators.instance_of(str))
    input_schema: Mapping[str, Any] = attrs.field(hash=False)
    func: Callable[..., Any] = attrs.field(validator=_check_callable)
    timeout: float | None = attrs.field(default=None, validator=_check_timeout)
    cancel_on_interruption: bool = False
    ends_conversation: bool = False
    _signature: ToolSignature | None = attrs.field(default=None, eq=False, repr=False, kw_only=True, alias="_signature")

    @property
    def spec(self) -> ToolSpec:
        """What the model is told: name, description, input schema."""
        return ToolSpec(self.name, self.description, self.input_schema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def _yields(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` makes a generator (a function's or, for a callable object, its ``__call__``'s)."""
    if not (inspect.isfunction(func) or inspect.ismethod(func) or isinstance(func, functools.partial)):
        func = type(func).__call__  # a callable object (``tool`` refused the rest): its __call__ runs
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


@overload
def tool(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    cancel_on_interruption: bool = False,
) -> BidiTool: ...


@overload
def tool(
    func: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    cancel_on_interruption: bool = False,
) -> Callable[[Callable[..., Any]], BidiTool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    cancel_on_interruption: bool = False,
) -> BidiTool | Callable[[Callable[..., Any]], BidiTool]:
    """Make a function (sync or async) a tool: ``@tool`` or ``@tool(name=..., timeout=...)``.

    The name defaults to the function's, the description to its docstring
    (short and long description; the Args section, in Google, NumPy or reST
    style, describes the parameters). Parameters without a default are
    required. ``Annotated[int, "how many days"]`` describes a parameter in
    place and wins over the docstring.

    A sync tool runs in a worker thread so it cannot stall the conversation.
    A thread cannot be killed: when a sync tool's call is cancelled or times
    out, the conversation still waits for the function to return (it may call
    :func:`anyio.from_thread.check_cancelled` to stop early). An async tool
    is cancelled at its next ``await``.

    Raises :class:`BidiUsageError` at once for what the model could not be told
    about: ``*args``/``**kwargs``, a type with no JSON form, a name the
    providers refuse.
    """

    def wrap(f: Callable[..., Any]) -> BidiTool:
        if isinstance(f, BidiTool):
            changes: dict[str, Any] = {"name": name, "description": description, "timeout": timeout}
            changes = {k: v for k, v in changes.items() if v is not None}
            if cancel_on_interruption:
                changes["cancel_on_interruption"] = True
            return attrs.evolve(f, **changes) if changes else f
        if isinstance(f, type) or not callable(f):
            raise BidiUsageError(f"@tool takes a function, got {f!r}")
        target = f
        while isinstance(target, functools.partial):
            target = target.func
        tool_name = name if name is not None else getattr(target, "__name__", type(target).__name__)
        if _yields(f):
            raise BidiUsageError(f"tool {tool_name!r}: a tool returns one value; it cannot be a generator")
        _validate_name(tool_name)  # before reading hints: the name appears in their errors
        doc_description, param_docs = describe(f, tool_name)
        input_schema, signature = analyse(f, tool_name, param_docs)
        return BidiTool(
            name=tool_name,
            description=description if description is not None else doc_description,
            input_schema=input_schema,
            func=f,
            timeout=timeout,
            cancel_on_interruption=cancel_on_interruption,
            _signature=signature,
        )

    if func is None:
        return wrap
    return wrap(func)


async def _stop_conversation() -> str:
    return "Ending the conversation."


stop_conversation: BidiTool = attrs.evolve(
    tool(
        _stop_conversation,
        name="stop_conversation",
        description=(
            "End the conversation. Call this when the user asks to end the conversation, "
            "for example by saying goodbye or asking you to stop or hang up."
        ),
    ),
    ends_conversation=True,
)
"""The built-in tool that lets the model hang up when the user asks it to.

Add it to an agent's tools to let the user end a voice conversation by
saying so. Its outcome has ``ends_conversation`` set; the core closes the
conversation instead of sending the result to the model.
"""


# --------------------------------------------------------------------------- running calls


@attrs.frozen
class ToolOutcome:
    """What one call came to: the result for the model and what the core must do about it.

    ``error`` is the exception behind an error result (the tool's own, or a
    :class:`BidiToolError` for an unknown tool, bad arguments or a timeout),
    so the core can tell the user as well as the model.
    """

    result: BidiToolResultEvent
    error: BaseException | None = None
    ends_conversation: bool = False


def _content(value: Any) -> Any:
    """A tool's return value as result content: a str, a JSON value, else its str()."""
    if isinstance(value, str):
        return value
    try:
        # The round trip snapshots the value and makes it plain JSON (tuples become lists).
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return str(value)


class ToolRegistry:
    """The tools of one agent, by name, and the one place calls are run.

    Plain functions are wrapped with :func:`tool`. Names must be unique: the
    model calls tools by name only.
    """

    def __init__(self, tools: Iterable[BidiTool | Callable[..., Any]] = ()) -> None:
        if isinstance(tools, BidiTool | str | bytes) or callable(tools) or not isinstance(tools, Iterable):
            raise BidiUsageError(f"tools must be a list of functions or BidiTools, got {type(tools).__name__}")
        self._tools: dict[str, BidiTool] = {}
        for item in tools:
            if isinstance(item, BidiTool):
                made = item
            elif callable(item) and not isinstance(item, type):
                made = tool(item)
            else:
                raise BidiUsageError(f"a tool must be a function or a BidiTool, got {item!r}")
            if made.name in self._tools:
                raise BidiUsageError(f"two tools are named {made.name!r}; the model calls tools by name only")
            self._tools[made.name] = made
        self._specs = tuple(t.spec for t in self._tools.values())
        self._names = frozenset(self._tools)
        self._interruptible = frozenset(n for n, t in self._tools.items() if t.cancel_on_interruption)

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """What the model is told about every tool, in registration order."""
        return self._specs

    @property
    def names(self) -> frozenset[str]:
        return self._names

    @property
    def interruptible(self) -> frozenset[str]:
        """Names of the tools the core cancels when the user barges in."""
        return self._interruptible

    def get(self, name: str) -> BidiTool | None:
        return self._tools.get(name)

    def __repr__(self) -> str:
        return f"<ToolRegistry {sorted(self._names)}>"

    async def execute(self, call: BidiToolUseEvent) -> ToolOutcome:
        """Run one call and return its outcome; never raises for what the tool or the model did.

        Unknown tool, invalid arguments, an exception from the tool, a timeout:
        each becomes an error result whose text tells the model what went
        wrong. Cancellation of the caller, and BaseExceptions that are not
        Exceptions (KeyboardInterrupt, SystemExit), propagate unchanged. A sync
        tool's thread cannot be stopped, so cancelling waits for it to return.
        """
        found = self._tools.get(call.name)
        if found is None:
            available = ", ".join(sorted(self._names)) or "none"
            message = f"Unknown tool {call.name!r}. Available tools: {available}"
            logger.debug("unknown tool %r (%s)", call.name, call.tool_use_id)
            return _error(call, message, BidiToolError(message))
        return await _run(found, call)


def _error(
    call: BidiToolUseEvent, message: str, error: BaseException, *, ends_conversation: bool = False
) -> ToolOutcome:
    result = BidiToolResultEvent(tool_use_id=call.tool_use_id, name=call.name, status="error", content=message)
    return ToolOutcome(result, error=error, ends_conversation=ends_conversation)


async def _invoke(func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if is_async(func):
        value = func(*args, **kwargs)
    else:
        value = await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))
    if inspect.isawaitable(value):  # an async function behind a sync-looking wrapper
        value = await value
    return value


async def _run(found: BidiTool, call: BidiToolUseEvent) -> ToolOutcome:
    name, ends = found.name, found.ends_conversation
    # A hand-built BidiTool has no signature: its arguments only have to be an object.
    signature = found._signature or ToolSignature(params=(), passthrough=True)
    try:
        args, kwargs = signature.bind(name, call.input)
    except InvalidArguments as exc:
        logger.debug("tool %s (%s): %s", name, call.tool_use_id, exc)
        return _error(call, str(exc), BidiToolError(str(exc)), ends_conversation=ends)

    logger.debug("tool %s (%s) started", name, call.tool_use_id)
    started = time.monotonic()
    # move_on_after rather than fail_after: its cancel_called tells our deadline
    # apart from a TimeoutError the tool raised itself (an HTTP timeout, say).
    # Without a timeout there is no deadline to tell apart: no cancel scope (one costs
    # time on every call, on Trio most of this function's cost: benchmarks/README.md).
    deadline = anyio.move_on_after(found.timeout) if found.timeout is not None else None
    value: Any  # set by every path that reads it: only a call that returned is a success
    failure: Exception | None = None
    try:
        if deadline is None:
            value = await _invoke(found.func, args, kwargs)
            await anyio.lowlevel.checkpoint_if_cancelled()  # see below
        else:
            with deadline:
                value = await _invoke(found.func, args, kwargs)
                # A sync tool's thread ignores cancellation and returns normally: without this
                # checkpoint a cancelled call would still report success (and the core would send
                # a result for a call the provider withdrew).
                await anyio.lowlevel.checkpoint_if_cancelled()
    except Exception as exc:  # the tool's fault: the model hears about it, the conversation goes on
        failure = exc
    elapsed = time.monotonic() - started

    if deadline is not None and deadline.cancel_called:
        # Also when a sync tool overran and returned anyway: its answer came too late.
        message = f"{name} timed out after {found.timeout:g}s"
        logger.warning("tool %s (%s) timed out after %gs", name, call.tool_use_id, found.timeout)
        logger.debug("tool %s (%s) finished: timeout in %.3fs", name, call.tool_use_id, elapsed)
        error = BidiToolError(message)
        error.__cause__ = failure
        return _error(call, message, error, ends_conversation=ends)
    if failure is not None:
        detail = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        # The exception's text may quote the arguments: only its type is logged above DEBUG.
        logger.warning("tool %s (%s) raised %s", name, call.tool_use_id, type(failure).__name__)
        logger.debug("tool %s (%s) finished: error in %.3fs", name, call.tool_use_id, elapsed, exc_info=failure)
        return _error(call, f"{name} failed: {detail}", failure, ends_conversation=ends)

    logger.debug("tool %s (%s) finished: success in %.3fs", name, call.tool_use_id, elapsed)
    result = BidiToolResultEvent(tool_use_id=call.tool_use_id, name=name, status="success", content=_content(value))
    return ToolOutcome(result, ends_conversation=ends)
