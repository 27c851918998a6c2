"""Run an example's ``main()`` on asyncio (default) or Trio (``--backend trio``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable

import anyio


def run(main: Callable[[], Awaitable[None]], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop to run on")
    parser.add_argument("--debug", action="store_true", help="show bidi_core's debug logs")
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s")
        logging.getLogger("bidi_core").setLevel(logging.DEBUG)
    try:
        anyio.run(main, backend=args.backend)
    except KeyboardInterrupt:
        print("\nConversation cancelled by user")
