"""Exceptions, seen from an adapter: the one error a group carries, all of its leaves, a kept error raised again.

A task group wraps whatever leaves it in an exception group, even a single
error raised by the body of an ``async with`` (a test's assertion, the
caller's own ``BidiConnectionError``). An adapter's context manager that runs
a task group of its own (a watchdog, a reader) should hand that error back as
itself: the caller did not start the group and should not have to unpack it.

Neutral on purpose: the simulators may use it too (they must not import the
provider clients).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["again", "leaves", "sole_exception", "unwrapped"]

_E = TypeVar("_E", bound=BaseException)


def again(error: _E) -> _E:
    """A fresh copy of an error a connection keeps, to raise.

    A connection remembers why it can no longer be used (closed, torn, silent,
    reset, refused) and raises that again on every later call. Raised itself,
    the kept error would get a traceback whose frames hold the connection,
    which holds the error: a reference cycle. The connection's socket, parser
    and buffers, long-lived and so in the collector's oldest generation, then
    outlive it until the collector's rare full pass, and memory grows with
    every connection that ended (``benchmarks/README.md``, "The soak"). A copy
    has a traceback of its own that nothing of the connection holds.

    The copy is made without calling ``__init__`` (``copy.copy`` would, with
    the message alone, and errors with keyword-only fields refuse that): the
    same class and ``args``, its attributes (code, request id, ...), and no
    traceback, cause or context.
    """
    kind = type(error)
    fresh = kind.__new__(kind, *error.args)
    fresh.__dict__.update(error.__dict__)
    return fresh


def leaves(exc: BaseException) -> list[BaseException]:
    """Every exception in ``exc`` that is not itself a group, depth first, in order."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out += leaves(sub)
        return out
    return [exc]


def sole_exception(exc: BaseException) -> BaseException | None:
    """The single exception ``exc`` carries (through nested groups of one), else None."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


@contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise an exception group that carries one exception as that exception.

    Wrap it around a task group whose children never raise (they record their
    failures instead): the one exception is then the body's own. A group of
    several is left as it is.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        one = sole_exception(group)
        if one is None:
            raise
        raise one from None
