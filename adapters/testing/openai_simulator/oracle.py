"""Schema oracles: the provider's own published types decide what is valid.

docs/protocols/openai.md#schema-oracle: ``TypeAdapter(RealtimeClientEvent)`` accepts misspelled keys
(``extra="allow"``) and reports errors against the first union member, so the
client oracle is built from the ``*Param`` TypedDicts with ``extra="forbid"`` and
a real pydantic discriminator on ``type``. Two more holes found while building
this module, and closed here:

* pydantic validates ``Iterable[...]`` fields lazily (``response.create``'s
  ``response.tools`` and ``response.input`` come back as a ``ValidatorIterator``
  that validates nothing until consumed), so :func:`check_client_event` drains
  every iterator it finds;
* lax mode turns ``"5"`` and ``true`` into integers, which the JSON service does
  not, so client events are validated with ``strict=True``.

The server oracle is the lenient ``RealtimeServerEvent`` union (extra keys
allowed, discriminated on ``type``): it checks that every event the simulator
sends parses into the models the official SDK hands its users.

A validation failure becomes the service's error, in the service's words
(``unknown_parameter``, ``missing_required_parameter``, ``invalid_type``,
``invalid_value``; see the quotes in :mod:`.errors`) with ``param`` as a dotted
path such as ``session.tools[0].meta``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from openai.types.realtime import RealtimeServerEvent
from openai.types.realtime.realtime_client_event_param import RealtimeClientEventParam
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from adapters.testing.openai_simulator.errors import ServiceError

__all__ = ["CLIENT_ORACLE", "SERVER_ORACLE", "check_client_event", "check_server_event"]


def _discriminated(alias: Any) -> Any:
    """A pydantic discriminated union on ``type`` from openai's alias (docs/protocols/openai.md#schema-oracle)."""
    if get_origin(alias) is Annotated:
        alias = get_args(alias)[0]
    return Annotated[Union[get_args(alias)], Field(discriminator="type")]  # noqa: UP007 (a runtime union of a tuple)


CLIENT_ORACLE: TypeAdapter[Any] = TypeAdapter(
    _discriminated(RealtimeClientEventParam), config=ConfigDict(extra="forbid")
)
"""Strict: what a client may send (``openai.types.realtime.realtime_client_event_param``)."""

SERVER_ORACLE: TypeAdapter[Any] = TypeAdapter(_discriminated(RealtimeServerEvent))
"""Lenient: what the official SDK can parse (``openai.types.realtime.RealtimeServerEvent``)."""

Loc = tuple[str | int, ...]


def check_server_event(event: Mapping[str, Any]) -> str | None:
    """None if the official types accept ``event``, else a readable description of why not."""
    try:
        SERVER_ORACLE.validate_python(event)
    except ValidationError as exc:
        return str(exc)
    return None


def check_client_event(message: object) -> ServiceError | None:
    """None if ``message`` is a valid GA client event, else the error the service would send."""
    if not isinstance(message, dict):
        return ServiceError.invalid_json()
    try:
        validated = CLIENT_ORACLE.validate_python(message, strict=True)
    except ValidationError as exc:
        return _to_service_error(message, [_error(e["type"], tuple(e["loc"]), e) for e in exc.errors()])
    tag = message.get("type")
    lazy = _drain(validated, (tag,) if isinstance(tag, str) else ())
    if lazy:
        return _to_service_error(message, lazy)
    return None


def _error(kind: str, loc: Loc, raw: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "ctx": dict(raw.get("ctx") or {}), "input": raw.get("input")}


def _drain(value: Any, loc: Loc) -> list[dict[str, Any]]:
    """Consume pydantic's lazy ``Iterable`` validators, returning their errors with full locations."""
    if isinstance(value, Iterator):
        try:
            items = list(value)
        except ValidationError as exc:
            return [_error(e["type"], loc + tuple(e["loc"]), e) for e in exc.errors()]
        return [err for i, item in enumerate(items) for err in _drain(item, (*loc, i))]
    if isinstance(value, dict):
        return [err for key, item in value.items() for err in _drain(item, (*loc, key))]
    if isinstance(value, list | tuple):
        return [err for i, item in enumerate(value) for err in _drain(item, (*loc, i))]
    return []


def _split(message: Mapping[str, Any], error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], tuple[str | int, ...]]:
    """Split a pydantic location into the field path in the message and the union-member labels.

    pydantic interleaves union member names (``RealtimeSessionCreateRequestParam``,
    ``AudioPCM``) with field names; walking the message tells them apart: a part
    is a field only if the data at that point has it (or it is the missing one).
    """
    loc: Loc = error["loc"][1:]  # the first part is the discriminator tag
    data: Any = message
    path: list[str | int] = []
    labels: list[str | int] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(data, dict) and isinstance(part, str) and (part in data or (last and error["type"] == "missing")):
            path.append(part)
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int):
            path.append(part)
            data = data[part] if 0 <= part < len(data) else None
        else:
            labels.append(part)
    return tuple(path), tuple(labels)


def _param(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a decimal",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "typed_dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
    "iterable_type": "an array",
    "none_required": "null",
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _one_of(values: Sequence[str]) -> str:
    if len(values) <= 1:
        return "".join(values)
    if len(values) == 2:
        return f"{values[0]} and {values[1]}"
    return ", ".join(values[:-1]) + f", and {values[-1]}"


def _to_service_error(message: Mapping[str, Any], errors: list[dict[str, Any]]) -> ServiceError:
    """Pick the most telling error and word it as the service does.

    Unions yield one error per member; the member the client meant is the one
    whose ``type`` literal matched, then the one with fewest errors, then the
    deepest location. ``missing`` beats ``unknown``, which beats value and type errors.
    """
    split = [(_split(message, e), e) for e in errors]
    wrong_branch = {labels for (path, labels), e in split if e["type"] == "literal_error" and path[-1:] == ("type",)}
    per_branch = Counter(labels for (_, labels), _e in split)
    rank = {"missing": 0, "extra_forbidden": 1, "union_tag_not_found": 0, "union_tag_invalid": 0, "literal_error": 2}

    def key(item: tuple[tuple[Loc, Loc], dict[str, Any]]) -> tuple[int, int, int, int]:
        (path, labels), e = item
        misbranched = any(labels[: len(w)] == w for w in wrong_branch if w)
        return (int(misbranched), per_branch[labels], -len(path), rank.get(e["type"], 3))

    (path, _labels), best = min(split, key=key)
    param = _param(path)
    kind = best["type"]
    if kind == "union_tag_not_found":
        where = _param((*path, "type"))
        return ServiceError(f"Missing required parameter: '{where}'.", "missing_required_parameter", param=where)
    if kind == "union_tag_invalid":
        where = _param((*path, "type"))
        tags = [t.strip() for t in str(best["ctx"].get("expected_tags", "")).split(",") if t.strip()]
        return ServiceError(
            f"Invalid value: '{best['ctx'].get('tag')}'. Supported values are: {_one_of(tags)}.",
            "invalid_value",
            param=where,
        )
    if kind == "missing":
        return ServiceError(f"Missing required parameter: '{param}'.", "missing_required_parameter", param=param)
    if kind == "extra_forbidden":
        return ServiceError(f"Unknown parameter: '{param}'.", "unknown_parameter", param=param)
    if kind == "literal_error":
        expected: list[str] = []
        for (other_path, _), e in split:
            if other_path == path and e["type"] == "literal_error":
                for value in str(e["ctx"].get("expected", "")).replace(" or ", ", ").split(", "):
                    if value and value not in expected:
                        expected.append(value)
        return ServiceError(
            f"Invalid value: {best['input']!r}. Supported values are: {_one_of(expected)}.",
            "invalid_value",
            param=param,
        )
    if kind in _TYPE_WORDS:
        return ServiceError(
            f"Invalid type for '{param}': expected {_TYPE_WORDS[kind]}, but got {_json_kind(best['input'])} instead.",
            "invalid_type",
            param=param,
        )
    return ServiceError(f"Invalid value for '{param}'.", "invalid_value", param=param)
