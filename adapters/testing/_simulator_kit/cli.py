"""``python -m adapters.testing.<provider>_simulator``: the command-line runner every demo simulator shares.

Each simulator's ``__main__`` says what is its own (its options, how to build it
from them, what to print once it listens); the rest is the same everywhere:
``--host``/``--port`` first, ``--backend`` and ``-v`` last, logging to stderr,
serving until Ctrl+C, which is a normal exit (status 0), not a traceback, even
when trio delivers it inside a connection's task.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import anyio

from adapters._exceptions import leaves

__all__ = ["demo_parser", "run_demo"]

_Sim = TypeVar("_Sim")


def demo_parser(prog: str, doc: str | None, *, port: int) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line, with ``--host`` and ``--port`` (default ``port``)."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default: {port}; 0 picks a free one)")
    return parser


def run_demo(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    *,
    verbose_help: str,
    start: Callable[[argparse.Namespace], AbstractAsyncContextManager[_Sim]],
    announce: Callable[[_Sim, argparse.Namespace], Iterable[str]],
) -> int:
    """Add ``--backend`` and ``-v`` to ``parser``, parse ``argv``, then serve ``start(args)`` until Ctrl+C.

    ``announce(sim, args)`` gives the lines to print once the simulator listens
    (its address, what to trust, how to stop it); they are flushed at once so a
    script reading stdout sees them while the simulator runs.
    """
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")

    async def serve() -> None:
        async with start(args) as sim:
            for line in announce(sim, args):
                print(line, flush=True)
            await anyio.sleep_forever()

    try:
        anyio.run(serve, backend=args.backend)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        # Trio raises KeyboardInterrupt in whatever task runs when Ctrl+C comes, a connection's too: then it
        # arrives wrapped in the task groups it crossed. Ctrl+C and nothing else is still a normal exit.
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(group)):
            return 0
        raise
    return 0
