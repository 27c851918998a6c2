"""The Trio floor: the raw client on Trio, to tell Trio's own cost from bidi-core's.

The workload of :mod:`benchmarks.clients.raw` (its :class:`RawWorkload`:
wsproto, ``json.loads``, ``base64.b64decode``, the counting sink, the turns
asked for with text, audio of a response cut short by ``speech_started``
dropped, tool calls answered at once, the microphone in duplex and, with
``--mic``, in the sessions ramp) on the I/O a Trio user would write:
``trio.open_tcp_stream``, ``receive_some`` in the session's task, the
microphone in a task of the session's nursery paced with ``trio.sleep_until``,
the sessions of the ramp in one nursery.

What goes out is queued by the workload (it is synchronous, as wsproto is) and
sent with ``send_all`` by whichever task queued it: the reader after each read,
the microphone after each block. Two tasks must not be in ``send_all`` at once
(Trio raises ``BusyResourceError``); rather than a ``trio.Lock`` (two more
checkpoints per send), a task that finds another sending leaves its bytes to
it: that one sends until the queue is empty.
"""

from __future__ import annotations

from typing import Any

import trio

from benchmarks.clients import parse_args
from benchmarks.clients.raw import RawWorkload, ramp_sessions, run_scenarios
from benchmarks.scheduler_counts import COUNTS
from benchmarks.workload import Recorder, Scenario, pin_to_cpu, raise_fd_limit, write_result

CLIENT = "raw-trio"


class TrioSession(RawWorkload):
    """One conversation on a Trio stream."""

    def __init__(self, url: str, scenario: Scenario, key: str, recorder: Recorder, mic: bool = False) -> None:
        super().__init__(url, scenario, key, recorder, mic)
        self.outbox: list[bytes] = []
        self.write = self.outbox.append
        self.sending = False
        self.stream: trio.SocketStream | None = None
        self.nursery: trio.Nursery | None = None

    async def flush(self) -> None:
        """Send what is queued, unless another task is sending (it sends this too)."""
        if self.sending or self.stream is None:
            return
        self.sending = True
        try:
            while self.outbox:
                data = b"".join(self.outbox)
                self.outbox.clear()
                await self.stream.send_all(data)
        finally:
            self.sending = False

    async def run(self) -> None:
        stream = self.stream = await trio.open_tcp_stream(self.host, self.port)
        async with stream:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.write(self.handshake())
                await self.flush()
                while not self.closing:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    self.received(data)
                    if self.outbox:
                        await self.flush()
                nursery.cancel_scope.cancel()  # the microphone
            await self.flush()  # what the microphone was to send when it was cancelled (the close frame)

    def start_microphone(self) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self.microphone)

    async def microphone(self) -> None:
        """20 ms of microphone audio every 20 ms, paced from the start."""
        period = self.scenario.chunk_ms / 1000
        start = trio.current_time()
        n = 0
        while not self.closing:
            self.send(self.microphone_block())
            await self.flush()
            n += 1
            await trio.sleep_until(start + n * period)


async def run_sessions_ramp(args: Any) -> dict[str, Any]:
    """The sessions ramp, every session a task of one nursery."""
    async with trio.open_nursery() as nursery:
        result = await ramp_sessions(args, TrioSession, CLIENT, nursery.start_soon, trio.sleep)
        nursery.cancel_scope.cancel()
    return result


async def run(args: Any) -> dict[str, Any]:
    return await (run_sessions_ramp(args) if args.ramp else run_scenarios(args, TrioSession, CLIENT))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    pin_to_cpu(args.cpu)
    raise_fd_limit()
    if not args.ramp:
        COUNTS.install("trio")  # the scenarios report task steps and wake-ups per chunk (it wraps trio.run)
    result = trio.run(run, args)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
