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

import enum
import functools
import inspect
import json
import logging
import math
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, overload

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import docstring_parser

from ports.errors import BidiToolError, BidiUsageError
from ports.events import BidiToolResultEvent, BidiToolUseEvent
from ports.model import ToolSpec

__all__ = ["BidiTool", "ToolOutcome", "ToolRegistry", "stop_conversation", "tool"]

logger = logging.getLogger("bidi_core.tools")

F = TypeVar("F", bound=Callable[..., Any])

# What the providers accept as a function name (OpenAI, Gemini, Nova Sonic agree on this subset).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Invalid(Exception):
    """One argument does not fit its type hint; the message is for the model."""


# --------------------------------------------------------------------------- type model
#
# A type hint is parsed once, when the tool is defined, into a small tree of
# the classes below. The same tree writes the JSON schema the model sees and
# checks and converts the JSON the model sends back, so the two cannot drift.


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, as the model would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    """A short JSON rendering of a value for an error message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Kind:
    """A parsed type hint: its JSON schema and how to check a JSON value against it."""

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def expected(self) -> str:
        """What a value must be, for an error message ("an integer")."""
        raise NotImplementedError

    def accepts_none(self) -> bool:
        return False

    def convert(self, value: Any, path: str) -> Any:
        """Check ``value`` and return its Python form; raise :class:`_Invalid` if it does not fit."""
        raise NotImplementedError

    def _mismatch(self, value: Any, path: str) -> _Invalid:
        return _Invalid(f"'{path}' must be {self.expected()}, got {_json_type(value)}")


@attrs.frozen
class _AnyKind(_Kind):
    """No annotation, or ``Any``: no constraint at all."""

    def schema(self) -> dict[str, Any]:
        return {}

    def expected(self) -> str:
        return "any value"

    def accepts_none(self) -> bool:
        return True

    def convert(self, value: Any, path: str) -> Any:
        return value


@attrs.frozen
class _Scalar(_Kind):
    json_type: Literal["string", "integer", "number", "boolean", "null"]

    def schema(self) -> dict[str, Any]:
        return {"type": self.json_type}

    def expected(self) -> str:
        return {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean"}.get(
            self.json_type, "null"
        )

    def accepts_none(self) -> bool:
        return self.json_type == "null"

    def convert(self, value: Any, path: str) -> Any:
        kind = self.json_type
        # bool is a subclass of int in Python but not in JSON: true is never a number.
        if kind == "string" and isinstance(value, str):
            return value
        if kind == "boolean" and isinstance(value, bool):
            return value
        if kind == "null" and value is None:
            return None
        if (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            if kind == "number":
                return float(value)
            # JSON Schema counts 3.0 as an integer, and some models write integers that way.
            if kind == "integer" and (isinstance(value, int) or value.is_integer()):
                return int(value)
        raise self._mismatch(value, path)


@attrs.frozen
class _Array(_Kind):
    item: _Kind | None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array"}
        if self.item is not None:
            out["items"] = self.item.schema()
        return out

    def expected(self) -> str:
        return "an array"

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise self._mismatch(value, path)
        if self.item is None:
            return list(value)
        return [self.item.convert(v, f"{path}[{i}]") for i, v in enumerate(value)]


@attrs.frozen
class _Object(_Kind):
    value: _Kind | None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.value is not None:
            out["additionalProperties"] = self.value.schema()
        return out

    def expected(self) -> str:
        return "an object"

    def convert(self, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self._mismatch(value, path)
        if self.value is None:
            return dict(value)
        return {k: self.value.convert(v, f"{path}[{k!r}]") for k, v in value.items()}


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


@attrs.frozen
class _Choice(_Kind):
    """``Literal[...]`` or an Enum: a fixed set of JSON values, each standing for a Python value."""

    options: tuple[tuple[Any, Any], ...]  # (JSON value, Python value)

    def schema(self) -> dict[str, Any]:
        values = [j for j, _ in self.options]
        types_ = {_json_type(v) for v in values}
        if types_ == {"integer", "number"}:
            types_ = {"number"}
        out: dict[str, Any] = {}
        if len(types_) == 1:
            out["type"] = types_.pop()
        out["enum"] = values
        return out

    def expected(self) -> str:
        return "one of " + ", ".join(_show(j) for j, _ in self.options)

    def accepts_none(self) -> bool:
        return any(j is None for j, _ in self.options)

    def convert(self, value: Any, path: str) -> Any:
        for json_value, python_value in self.options:
            if _same_json(value, json_value):
                return python_value
        raise _Invalid(f"'{path}' must be {self.expected()}, got {_show(value)}")


@attrs.frozen
class _Union(_Kind):
    members: tuple[_Kind, ...]

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [m.schema() for m in self.members]}

    def expected(self) -> str:
        return " or ".join(m.expected() for m in self.members)

    def accepts_none(self) -> bool:
        return any(m.accepts_none() for m in self.members)

    def convert(self, value: Any, path: str) -> Any:
        if value is None and self.accepts_none():
            return None
        candidates = [m for m in self.members if not (isinstance(m, _Scalar) and m.json_type == "null")]
        if len(candidates) == 1:
            # Optional[X]: X's own message is the precise one (it may point inside a list).
            return candidates[0].convert(value, path)
        for member in candidates:
            try:
                return member.convert(value, path)
            except _Invalid:
                continue
        raise self._mismatch(value, path)


@attrs.frozen
class _Described(_Kind):
    """``Annotated[X, "what it is"]``: X, with a description in the schema."""

    inner: _Kind
    description: str

    def schema(self) -> dict[str, Any]:
        return {**self.inner.schema(), "description": self.description}

    def expected(self) -> str:
        return self.inner.expected()

    def accepts_none(self) -> bool:
        return self.inner.accepts_none()

    def convert(self, value: Any, path: str) -> Any:
        return self.inner.convert(value, path)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _parse_hint(hint: Any, where: str) -> _Kind:
    """Parse one type hint; ``where`` names it in the error for an unsupported one."""
    if hint is Any or hint is inspect.Parameter.empty:
        return _AnyKind()
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        inner = _parse_hint(args[0], where)
        text = next((m for m in args[1:] if isinstance(m, str)), None)
        return _Described(inner, text) if text else inner
    if hint is None or hint is type(None):
        return _Scalar("null")
    if hint is bool:
        return _Scalar("boolean")
    if hint is int:
        return _Scalar("integer")
    if hint is float:
        return _Scalar("number")
    if hint is str:
        return _Scalar("string")
    if origin in (Union, types.UnionType):
        return _Union(tuple(_parse_hint(a, where) for a in args))
    if origin is Literal:
        options = [(v.value, v) if isinstance(v, enum.Enum) else (v, v) for v in args]
        if not all(isinstance(j, _JSON_SCALARS) for j, _ in options):
            raise BidiUsageError(f"{where}: Literal values must be str, int, float, bool or None, got {hint!r}")
        return _Choice(tuple(options))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = list(hint)
        if not members or not all(isinstance(m.value, _JSON_SCALARS) for m in members):
            raise BidiUsageError(f"{where}: Enum {hint.__name__} must have str, int, float or bool values")
        return _Choice(tuple((m.value, m) for m in members))
    if hint is list or origin is list:
        return _Array(_parse_hint(args[0], where) if args else None)
    if hint is dict or origin is dict:
        if args and args[0] is not str:
            raise BidiUsageError(f"{where}: dict keys must be str (JSON object keys are strings), got {hint!r}")
        return _Object(_parse_hint(args[1], where) if args else None)
    raise BidiUsageError(
        f"{where} has an unsupported type {hint!r}; use str, int, float, bool, list, dict[str, ...], "
        "Literal, an Enum, Optional of these, or Any"
    )


# --------------------------------------------------------------------------- signatures


@attrs.frozen
class _Param:
    name: str
    kind: _Kind
    required: bool
    positional_only: bool
    default: Any


@attrs.frozen
class _Signature:
    """A tool function's parameters, parsed once; binds the model's JSON to call arguments."""

    params: tuple[_Param, ...]
    passthrough: bool = False  # pass any arguments on unchecked (a hand-built BidiTool)

    def bind(self, tool_name: str, arguments: Any) -> tuple[list[Any], dict[str, Any]]:
        """Check ``arguments`` and return positional and keyword arguments for the call.

        Raises :class:`_Invalid` naming every problem at once, so the model can
        fix them all in one retry.
        """
        if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
            raise _Invalid(f"Invalid arguments for {tool_name}: expected an object, got {_json_type(arguments)}")
        if self.passthrough:
            return [], dict(arguments)
        known = {p.name for p in self.params}
        problems: list[str] = []
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self.params:
            if param.name not in arguments:
                if param.required:
                    problems.append(f"'{param.name}' is required")
                elif param.positional_only:
                    args.append(param.default)
                continue
            try:
                value = param.kind.convert(arguments[param.name], param.name)
            except _Invalid as exc:
                problems.append(str(exc))
                continue
            if param.positional_only:
                args.append(value)
            else:
                kwargs[param.name] = value
        unknown = [str(k) for k in arguments if k not in known]
        if unknown:
            accepted = ", ".join(f"'{p.name}'" for p in self.params) or "none, this tool takes no arguments"
            listed = ", ".join(f"'{k}'" for k in unknown)
            problems.append(f"unknown argument{'s' if len(unknown) > 1 else ''} {listed} (accepted: {accepted})")
        if problems:
            raise _Invalid(f"Invalid arguments for {tool_name}: " + "; ".join(problems))
        return args, kwargs


def _json_default(value: Any) -> tuple[bool, Any]:
    """The JSON form of a default value, if it has one (an Enum default shows its value)."""
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return True, json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return False, None


def _words(name: str) -> str:
    """``get_weather`` or ``getWeather`` -> ``Get weather``: a description of last resort."""
    parts = [p for p in re.split(r"_+|(?<=[a-z0-9])(?=[A-Z])", name) if p]
    if not parts:
        return name
    text = " ".join(p.lower() if p.istitle() else p for p in parts)
    return text[0].upper() + text[1:]


def _hint_target(func: Callable[..., Any]) -> Any:
    """The object whose annotations and docstring describe ``func``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isfunction(func) or inspect.ismethod(func):
        return func
    call = getattr(type(func), "__call__", None)  # noqa: B004 - a callable object: its __call__ has the hints
    return call if call is not None else func


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    return not inspect.isfunction(func) and inspect.iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004


def _describe(func: Callable[..., Any], name: str) -> tuple[str, dict[str, str]]:
    """The tool description and the per-parameter descriptions, from the docstring."""
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    text = inspect.getdoc(target)
    if not text:
        return _words(name), {}
    try:
        doc = docstring_parser.parse(text)
    except docstring_parser.ParseError:
        logger.debug("could not parse the docstring of %s; using it whole", name, exc_info=True)
        return text, {}
    parts = [p.strip() for p in (doc.short_description, doc.long_description) if p and p.strip()]
    params = {p.arg_name: " ".join(p.description.split()) for p in doc.params if p.description}
    return "\n\n".join(parts) or _words(name), params


def _analyse(func: Callable[..., Any], name: str, param_docs: Mapping[str, str]) -> tuple[dict[str, Any], _Signature]:
    """Read ``func``'s parameters into a JSON schema and a :class:`_Signature`."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise BidiUsageError(f"tool {name}: cannot read the signature of {func!r}: {exc}") from exc
    try:
        hints = typing.get_type_hints(_hint_target(func), include_extras=True)
    except NameError as exc:
        raise BidiUsageError(
            f"tool {name}: cannot resolve its type hints ({exc}); the types must be importable from its module"
        ) from exc
    except TypeError:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    params: list[_Param] = []
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise BidiUsageError(
                f"tool {name}: *args and **kwargs cannot be described to the model; name every parameter (got {param})"
            )
        where = f"tool {name}: parameter {param.name!r}"
        kind = _parse_hint(hints.get(param.name, param.annotation), where)
        has_default = param.default is not inspect.Parameter.empty
        if has_default and param.default is None and not kind.accepts_none():
            kind = _Union((kind, _Scalar("null")))  # `x: str = None` means "a string, or nothing"
        schema = kind.schema()
        if "description" not in schema and param.name in param_docs:
            schema["description"] = param_docs[param.name]
        if has_default:
            ok, default = _json_default(param.default)
            if ok:
                schema["default"] = default
        else:
            required.append(param.name)
        properties[param.name] = schema
        params.append(
            _Param(
                name=param.name,
                kind=kind,
                required=not has_default,
                positional_only=param.kind is inspect.Parameter.POSITIONAL_ONLY,
                default=param.default,
            )
        )
    input_schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return input_schema, _Signature(tuple(params))


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
    _signature: _Signature | None = attrs.field(default=None, eq=False, repr=False, kw_only=True, alias="_signature")

    @property
    def spec(self) -> ToolSpec:
        """What the model is told: name, description, input schema."""
        return ToolSpec(self.name, self.description, self.input_schema)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


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
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            raise BidiUsageError(
                f"tool {getattr(f, '__name__', f)!r}: a tool returns one value; it cannot be a generator"
            )
        target = f
        while isinstance(target, functools.partial):
            target = target.func
        tool_name = name if name is not None else getattr(target, "__name__", type(target).__name__)
        _validate_name(tool_name)  # before reading hints: the name appears in their errors
        doc_description, param_docs = _describe(f, tool_name)
        input_schema, signature = _analyse(f, tool_name, param_docs)
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
    if _is_async(func):
        value = func(*args, **kwargs)
    else:
        value = await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))
    if inspect.isawaitable(value):  # an async function behind a sync-looking wrapper
        value = await value
    return value


async def _run(found: BidiTool, call: BidiToolUseEvent) -> ToolOutcome:
    name, ends = found.name, found.ends_conversation
    # A hand-built BidiTool has no signature: its arguments only have to be an object.
    signature = found._signature or _Signature(params=(), passthrough=True)
    try:
        args, kwargs = signature.bind(name, call.input)
    except _Invalid as exc:
        logger.debug("tool %s (%s): %s", name, call.tool_use_id, exc)
        return _error(call, str(exc), BidiToolError(str(exc)), ends_conversation=ends)

    logger.debug("tool %s (%s) started", name, call.tool_use_id)
    started = time.monotonic()
    # move_on_after rather than fail_after: its cancel_called tells our deadline
    # apart from a TimeoutError the tool raised itself (an HTTP timeout, say).
    deadline = anyio.move_on_after(found.timeout)
    value: Any = None
    failure: Exception | None = None
    try:
        with deadline:
            value = await _invoke(found.func, args, kwargs)
            # A sync tool's thread ignores cancellation and returns normally: without this
            # checkpoint a cancelled call would still report success (and the core would send
            # a result for a call the provider withdrew).
            await anyio.lowlevel.checkpoint_if_cancelled()
    except Exception as exc:  # the tool's fault: the model hears about it, the conversation goes on
        failure = exc
    elapsed = time.monotonic() - started

    if found.timeout is not None and deadline.cancel_called:
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
