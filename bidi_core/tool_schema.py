"""Type hints to JSON schema, and the model's JSON arguments back to Python.

The half of :mod:`bidi_core.tools` that knows about types: it reads a
function's signature, type hints and docstring into a JSON schema for the
model, and checks and converts the arguments the model sends against the same
hints. Only hints a JSON schema can express are accepted; anything else is
refused when the tool is defined.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import logging
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

import attrs

from ports.errors import BidiUsageError

__all__ = ["InvalidArguments", "ToolSignature", "analyse", "describe", "is_async"]

logger = logging.getLogger("bidi_core.tools")


class InvalidArguments(Exception):
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
        """Check ``value`` and return its Python form; raise :class:`InvalidArguments` if it does not fit."""
        raise NotImplementedError

    def _mismatch(self, value: Any, path: str) -> InvalidArguments:
        return InvalidArguments(f"'{path}' must be {self.expected()}, got {_json_type(value)}")


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
        raise InvalidArguments(f"'{path}' must be {self.expected()}, got {_show(value)}")


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
            except InvalidArguments:
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
class ToolSignature:
    """A tool function's parameters, parsed once; binds the model's JSON to call arguments."""

    params: tuple[_Param, ...]
    passthrough: bool = False  # pass any arguments on unchecked (a hand-built BidiTool)

    def bind(self, tool_name: str, arguments: Any) -> tuple[list[Any], dict[str, Any]]:
        """Check ``arguments`` and return positional and keyword arguments for the call.

        Raises :class:`InvalidArguments` naming every problem at once, so the model can
        fix them all in one retry.
        """
        if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
            raise InvalidArguments(
                f"Invalid arguments for {tool_name}: expected an object, got {_json_type(arguments)}"
            )
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
            except InvalidArguments as exc:
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
            raise InvalidArguments(f"Invalid arguments for {tool_name}: " + "; ".join(problems))
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


def is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    return not inspect.isfunction(func) and inspect.iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004


def describe(func: Callable[..., Any], name: str) -> tuple[str, dict[str, str]]:
    """The tool description and the per-parameter descriptions, from the docstring."""
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    text = inspect.getdoc(target)
    if not text:
        return _words(name), {}
    import docstring_parser  # here, not at the top: only a tool with a docstring needs it (benchmarks/README.md)

    try:
        doc = docstring_parser.parse(text)
    except docstring_parser.ParseError:
        logger.debug("could not parse the docstring of %s; using it whole", name, exc_info=True)
        return text, {}
    parts = [p.strip() for p in (doc.short_description, doc.long_description) if p and p.strip()]
    params = {p.arg_name: " ".join(p.description.split()) for p in doc.params if p.description}
    return "\n\n".join(parts) or _words(name), params


def analyse(func: Callable[..., Any], name: str, param_docs: Mapping[str, str]) -> tuple[dict[str, Any], ToolSignature]:
    """Read ``func``'s parameters into a JSON schema and a :class:`ToolSignature`."""
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
    return input_schema, ToolSignature(tuple(params))
