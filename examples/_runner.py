"""Run an example's ``main()`` on asyncio (default) or Trio (``--backend trio``).

An example with options of its own (say ``--wav``) passes ``options``, a
function that adds them to the parser; its ``main`` then takes the parsed
arguments.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from typing import overload

import anyio


@overload
def run(main: Callable[[], Awaitable[None]], description: str, *, announce_cancel: bool = True) -> None: ...


@overload
def run(
    main: Callable[[argparse.Namespace], Awaitable[None]],
    description: str,
    options: Callable[[argparse.ArgumentParser], None],
    *,
    announce_cancel: bool = True,
) -> None: ...


def run(
    main: Callable[..., Awaitable[None]],
    description: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    announce_cancel: bool = True,
) -> None:
    """``announce_cancel=False``: the example says itself that Ctrl+C ended it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop to run on")
    parser.add_argument("--debug", action="store_true", help="show bidi_core's debug logs")
    if options is not None:
        options(parser)
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s")
        logging.getLogger("bidi_core").setLevel(logging.DEBUG)
    try:
        anyio.run(main, *([] if options is None else [args]), backend=args.backend)
    except BaseException as exc:
        if not _ctrl_c(exc):
            raise
        if announce_cancel:
            print("\nConversation cancelled by user")


def _ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl+C. Trio raises KeyboardInterrupt in whichever task is
    running; inside a task group (an offline example's in-process simulator) it
    arrives wrapped in an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_ctrl_c(sub) for sub in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)
