"""Tool arguments drawn from a tool's JSON schema, valid and invalid (hypothesis strategies).

The model calls a tool with the JSON arguments it makes up from the schema it
was told about, and it gets them wrong now and then. :func:`tool_arguments`
draws arguments the way a well-behaved model writes them;
:func:`invalid_tool_arguments` draws the mistakes models make (a required
argument missing, an argument the schema does not have, a value of the wrong
type or outside an ``enum``, a bad item deep in a list), each checked to be
really invalid with :func:`schema_accepts`.

A tool is given as its schema (a Mapping), or as anything with
``.spec.input_schema`` (a ``bidi_core.BidiTool``) or ``.input_schema`` (a
``ports.model.ToolSpec``): the adapters never import the core, so tools are
read by duck typing.

The schema subset is what ``@tool`` writes and what hand-written tool schemas
use: ``type`` (one name or a list), ``enum``, ``const``, ``anyOf``/``oneOf``,
``properties``/``required``/``additionalProperties``, ``items``, the numeric
bounds (``minimum``, ``maximum``, their exclusive forms, ``multipleOf``),
``minLength``/``maxLength``/``pattern`` and ``minItems``/``maxItems``/
``uniqueItems``. Annotations (``description``, ``default``, ``title``,
``format``, ``examples``) are ignored. Anything else (``$ref``, ``allOf``,
``not``, ``if``) is refused with a :class:`~ports.errors.BidiUsageError`
rather than silently drawing values the schema does not allow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import strategies as st

from ports.errors import BidiUsageError

__all__ = ["input_schema_of", "invalid_tool_arguments", "json_values", "schema_accepts", "tool_arguments"]

_ANNOTATIONS = frozenset(
    {"description", "default", "title", "format", "examples", "$schema", "$id", "$comment", "deprecated"}
)
_CONSTRAINTS = frozenset(
    {
        "type",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
    }
)
_TYPES = ("string", "integer", "number", "boolean", "null", "array", "object")

MAX_ITEMS = 4
"""Longest list or dict drawn when the schema sets no bound (a model's arguments are short)."""
MAX_TEXT = 16


def input_schema_of(tool: Any) -> Mapping[str, Any]:
    """The input schema of a tool: the Mapping itself, ``tool.spec.input_schema`` or ``tool.input_schema``."""
    if isinstance(tool, Mapping):
        return tool
    spec = getattr(tool, "spec", None)
    schema = getattr(spec, "input_schema", None) if spec is not None else None
    if schema is None:
        schema = getattr(tool, "input_schema", None)
    if not isinstance(schema, Mapping):
        raise BidiUsageError(
            f"expected a JSON schema (a Mapping) or a tool with .spec.input_schema or .input_schema, got {tool!r}"
        )
    return schema


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any JSON value: null, booleans, numbers, strings, and lists and objects of them."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(10**6), 10**6)
        | st.floats(allow_nan=False, allow_infinity=False, width=32)
        | st.text(max_size=MAX_TEXT)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------- checking


def _check_keywords(schema: Mapping[str, Any]) -> None:
    unknown = set(schema) - _CONSTRAINTS - _ANNOTATIONS
    if unknown:
        raise BidiUsageError(f"JSON schema keyword(s) {sorted(unknown)} are not supported by these strategies")


def _types(schema: Mapping[str, Any]) -> tuple[str, ...]:
    declared = schema.get("type")
    if declared is None:
        return ()
    names = (declared,) if isinstance(declared, str) else tuple(declared)
    for name in names:
        if name not in _TYPES:
            raise BidiUsageError(f"unknown JSON schema type {name!r}")
    return names


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list | tuple)
    if name == "object":
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    # JSON Schema counts 3.0 as an integer (and so does bidi-core's tool registry).
    return name == "number" or isinstance(value, int) or float(value).is_integer()


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``; ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def schema_accepts(schema: Mapping[str, Any] | bool, value: Any) -> bool:
    """Whether ``value`` is valid against ``schema`` (the subset this module supports)."""
    if isinstance(schema, bool):
        return schema
    _check_keywords(schema)
    types = _types(schema)
    if types and not any(_is_type(value, t) for t in types):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        return False
    if "anyOf" in schema and not any(schema_accepts(s, value) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(schema_accepts(s, value) for s in schema["oneOf"]) != 1:
        return False
    if _is_type(value, "number"):
        if not _number_ok(schema, value):
            return False
    elif isinstance(value, str):
        if not _string_ok(schema, value):
            return False
    elif isinstance(value, list | tuple):
        if not _array_ok(schema, value):
            return False
    elif isinstance(value, Mapping) and not _object_ok(schema, value):
        return False
    return True


def _number_ok(schema: Mapping[str, Any], value: float) -> bool:
    if "minimum" in schema and value < schema["minimum"]:
        return False
    if "maximum" in schema and value > schema["maximum"]:
        return False
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return False
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return False
    step = schema.get("multipleOf")
    return step is None or math.isclose(value / step, round(value / step), abs_tol=1e-9)


def _string_ok(schema: Mapping[str, Any], value: str) -> bool:
    if len(value) < schema.get("minLength", 0):
        return False
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return False
    return "pattern" not in schema or re.search(schema["pattern"], value) is not None


def _array_ok(schema: Mapping[str, Any], value: list[Any] | tuple[Any, ...]) -> bool:
    if len(value) < schema.get("minItems", 0):
        return False
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return False
    if schema.get("uniqueItems") and any(_same(a, b) for i, a in enumerate(value) for b in value[i + 1 :]):
        return False
    items = schema.get("items")
    return items is None or all(schema_accepts(items, v) for v in value)


def _object_ok(schema: Mapping[str, Any], value: Mapping[str, Any]) -> bool:
    properties: Mapping[str, Any] = schema.get("properties", {})
    if any(name not in value for name in schema.get("required", ())):
        return False
    if any(not schema_accepts(properties[k], v) for k, v in value.items() if k in properties):
        return False
    extra = schema.get("additionalProperties", True)
    return all(schema_accepts(extra, v) for k, v in value.items() if k not in properties)


# --------------------------------------------------------------------------- valid values


def tool_arguments(tool: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments a model may call ``tool`` with: every required one, some of the optional ones, valid values."""
    schema = input_schema_of(tool)
    if "type" not in schema:
        schema = {**schema, "type": "object"}
    if _types(schema) != ("object",):
        raise BidiUsageError(f"a tool's input schema must be an object schema, got type {schema.get('type')!r}")
    return values(schema).map(dict)


def values(schema: Mapping[str, Any] | bool) -> st.SearchStrategy[Any]:
    """JSON values valid against ``schema``."""
    if isinstance(schema, bool):
        return json_values() if schema else st.nothing()
    _check_keywords(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"])).filter(lambda v: schema_accepts(schema, v))
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([values({**rest, **branch}) for branch in schema[key]]).filter(
                lambda v: schema_accepts(schema, v)
            )
    types = _types(schema) or ("string", "integer", "number", "boolean", "null", "array", "object")
    if len(types) > 1:
        return st.one_of([values({**schema, "type": t}) for t in types])
    return _typed(schema, types[0])


def _typed(schema: Mapping[str, Any], name: str) -> st.SearchStrategy[Any]:
    if name == "null":
        return st.none()
    if name == "boolean":
        return st.booleans()
    if name == "string":
        return _strings(schema)
    if name in ("integer", "number"):
        return _numbers(schema, integer=name == "integer")
    if name == "array":
        return _arrays(schema)
    return _objects(schema)


def _strings(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", max(low, MAX_TEXT))
    if "pattern" in schema:
        return st.from_regex(schema["pattern"]).filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=high)


def _numbers(schema: Mapping[str, Any], *, integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] if low is None else max(low, schema["exclusiveMinimum"])
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] if high is None else min(high, schema["exclusiveMaximum"])
    step = schema.get("multipleOf")
    if integer or step is not None:
        lo = None if low is None else math.ceil(low / (step or 1))
        hi = None if high is None else math.floor(high / (step or 1))
        drawn: st.SearchStrategy[Any] = st.integers(lo, hi)
        if step is not None:
            drawn = drawn.map(lambda n: n * step)
    else:
        drawn = st.floats(low, high, allow_nan=False, allow_infinity=False) | st.integers(
            None if low is None else math.ceil(low), None if high is None else math.floor(high)
        )
    return drawn.filter(lambda v: _number_ok(schema, v))


def _arrays(schema: Mapping[str, Any]) -> st.SearchStrategy[list[Any]]:
    low = schema.get("minItems", 0)
    high = schema.get("maxItems", max(low, MAX_ITEMS))
    items = values(schema.get("items", True))
    unique = (lambda v: json.dumps(v, sort_keys=True)) if schema.get("uniqueItems") else None
    return st.lists(items, min_size=low, max_size=high, unique_by=unique)


def _objects(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = [k for k in schema.get("required", ()) if k in properties]
    missing = [k for k in schema.get("required", ()) if k not in properties]
    extra = schema.get("additionalProperties", True)
    fixed = st.fixed_dictionaries(
        {k: values(properties[k]) for k in required},
        optional={k: values(v) for k, v in properties.items() if k not in required},
    )
    if missing:  # required but described only by additionalProperties
        fixed = st.tuples(fixed, st.fixed_dictionaries({k: values(extra) for k in missing})).map(
            lambda pair: {**pair[0], **pair[1]}
        )
    if properties and not isinstance(extra, Mapping):
        return fixed  # a model fills in the named arguments; it does not invent others
    if extra is False:
        return fixed
    keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in properties)
    more = st.dictionaries(keys, values(extra), max_size=MAX_ITEMS)
    return st.tuples(fixed, more).map(lambda pair: {**pair[1], **pair[0]})


# --------------------------------------------------------------------------- invalid values


def invalid_tool_arguments(tool: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments ``tool``'s schema refuses, as models get them wrong: a required argument
    missing, an unknown one, a wrong type, a value outside an ``enum`` or a bound, a bad list item.

    Always an object (the model's arguments are one): the mistakes are inside it.
    """
    schema = input_schema_of(tool)
    if "type" not in schema:
        schema = {**schema, "type": "object"}
    options = _invalid_objects(schema)
    if not options:
        raise BidiUsageError("this schema accepts every object: no arguments are invalid")
    return st.one_of(options).filter(lambda v: not schema_accepts(schema, v)).map(dict)


def _invalid(schema: Mapping[str, Any] | bool) -> st.SearchStrategy[Any] | None:
    """Values ``schema`` refuses, or None when it refuses nothing a model could write."""
    if isinstance(schema, bool):
        return None if schema else json_values()
    options: list[st.SearchStrategy[Any]] = []
    samples = [v for v in _WRONG + _near_misses(schema) if not schema_accepts(schema, v)]
    if samples:
        options.append(st.sampled_from(samples))
    types = _types(schema)
    if types == ("object",):
        options += _invalid_objects(schema)
    elif types == ("array",):
        options += _invalid_arrays(schema)
    if not options:
        return None
    return st.one_of(options).filter(lambda v: not schema_accepts(schema, v))


_WRONG: list[Any] = ["oops", "", 0, 7, -1, 2.5, True, False, None, [], ["x"], {}, {"x": 1}]
"""Values of every JSON type: what a confused model sends where another type belongs."""


def _near_misses(schema: Mapping[str, Any]) -> list[Any]:
    """Values just outside what the schema allows: past a bound, not one of the ``enum``, too long."""
    samples: list[Any] = []
    for option in schema.get("enum", ()):
        samples.append(f"{option}?" if isinstance(option, str) else "other")
    for key, delta in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
        if key in schema:
            samples.append(schema[key] + delta)
    if "integer" in _types(schema):
        samples.append(1.5)
    if schema.get("minLength", 0) > 0:
        samples.append("x" * (schema["minLength"] - 1))
    if "maxLength" in schema:
        samples.append("x" * (schema["maxLength"] + 1))
    if "pattern" in schema:
        samples.append("\u2603 no match \u2603")
    return samples


def _invalid_objects(schema: Mapping[str, Any]) -> list[st.SearchStrategy[Any]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    valid = _objects(schema)
    options: list[st.SearchStrategy[Any]] = []
    required = [k for k in schema.get("required", ()) if k in properties]
    if required:
        options.append(
            st.tuples(valid, st.sampled_from(required)).map(lambda p: {k: v for k, v in p[0].items() if k != p[1]})
        )
    extra = schema.get("additionalProperties", True)
    if extra is False:
        unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in properties)
        options.append(st.tuples(valid, unknown, json_values(2)).map(lambda p: {**p[0], p[1]: p[2]}))
    elif isinstance(extra, Mapping) and not properties:
        bad = _invalid(extra)
        if bad is not None:
            key = st.text(min_size=1, max_size=8)
            options.append(st.tuples(valid, key, bad).map(lambda p: {**p[0], p[1]: p[2]}))
    for name, sub in properties.items():
        bad = _invalid(sub)
        if bad is not None:
            options.append(st.tuples(valid, bad).map(_setting(name)))
    return options


def _setting(name: str) -> Callable[[tuple[dict[str, Any], Any]], dict[str, Any]]:
    """``(arguments, value) -> arguments`` with ``name`` set to ``value``."""
    return lambda pair: {**pair[0], name: pair[1]}


def _invalid_arrays(schema: Mapping[str, Any]) -> list[st.SearchStrategy[Any]]:
    options: list[st.SearchStrategy[Any]] = []
    bad_item = _invalid(schema.get("items", True))
    if bad_item is not None:
        high = max(schema.get("maxItems", MAX_ITEMS), 1)
        good = values(schema.get("items", True))
        options.append(
            st.tuples(st.lists(good, max_size=high - 1), bad_item, st.integers(0, high - 1)).map(
                lambda p: [*p[0][: p[2]], p[1], *p[0][p[2] :]]
            )
        )
    if schema.get("minItems", 0) > 0:
        options.append(st.just([]))
    if "maxItems" in schema:
        item = values(schema.get("items", True))
        size = schema["maxItems"] + 1
        options.append(st.lists(item, min_size=size, max_size=size))
    return options
