"""The load server with what the soak needs: forced endings, numbered microphone blocks, endless turns.

A subclass of :class:`benchmarks.loadserver.Connection` (nothing there
changes), so the benchmark's server stays as lean as it was:

* ``?drop_every=S&drops=...`` ends each connection after a while
  (:mod:`benchmarks.soak_workload`): a close frame with 1001/1011/1012, after
  which it sends nothing but keeps reading (and counting microphone blocks)
  until the client's close frame, or a TCP reset (``SO_LINGER`` 0, then abort);
* it checks the microphone blocks of each conversation across all its
  connections: in order, none twice, none missing except right after a reset
  or a close the client did not answer within 5 s (blocks the client wrote
  into the connection that was then destroyed; OpenAI Realtime acknowledges
  no append, so no client can know which those were);
* turns go on across connections (the next connection continues with the
  next turn number), and a ``response.create`` with no tool call pending (the
  client's answer to a call of a connection that ended, sent again as text on
  the new one) gets an audio answer, as the service would give.

``GET /stats`` (from the base server) returns each conversation's record.

    python -m benchmarks.soak_server --port 0      # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit

from benchmarks.loadserver import Connection, LoadServer
from benchmarks.soak_workload import (
    ENDINGS,
    MIC_B64_CHARS,
    SOAK,
    SOAK_SCENARIO,
    connection_lifetime_s,
    ending_for,
    read_mic_stamp,
)
from benchmarks.workload import API_KEY, raise_fd_limit

_CLOSE_WAIT_S = 5.0
"""How long a closing connection waits for the client's close frame before hanging up."""
_KEEP = 20
"""Anomalies kept per conversation (the counts are complete)."""


def _new_record(rec: dict[str, Any]) -> None:
    rec.update(
        next_turn=0,
        mic_next=0,
        mic_blocks=0,
        mic_lost_at_reset=0,
        mic_missing=0,
        mic_repeated=0,
        mic_anomalies=[],
        after_reset=False,
        close_timeouts=0,
        endings={},
        barge_ins=0,
        stale_barges=0,
        orphan_responses=0,
        tool_outputs=0,
    )


class SoakConnection(Connection):
    """One client connection of the soak."""

    def __init__(self, server: LoadServer) -> None:
        super().__init__(server)
        self.closing = False
        self.turns_started = False

    # ------------------------------------------------------------------ the upgrade: schedule the ending

    def _http(self, request: str) -> None:
        super()._http(request)
        if not self.websocket or self.scenario is not SOAK:
            return
        if "mic_next" not in self.stats:
            _new_record(self.stats)
        query = parse_qs(urlsplit(request.split(" ", 2)[1]).query)
        every = float(query.get("drop_every", ["0"])[0])
        drops = tuple(query.get("drops", [",".join(ENDINGS)])[0].split(","))
        if every > 0 and drops:
            index = self.stats["connections"] - 1
            ending = ending_for(self.key, index, drops)
            self._later(connection_lifetime_s(self.key, index, every), lambda: self._force_end(ending))

    def _force_end(self, ending: str) -> None:
        if self.closed or self.closing:
            return
        endings = self.stats["endings"]
        endings[ending] = endings.get(ending, 0) + 1
        if self.active is not None:
            self.active.finished = True  # the pacer sends it no more
            self.active = None
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if ending == "reset":
            self.stats["after_reset"] = True
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            self.closed = True
            return
        code = int(ending)
        self.transport.write(_close_frame(code, "soak: forced reconnect"))
        self.closing = True
        self._later(_CLOSE_WAIT_S, self._hang_up)

    def _hang_up(self) -> None:
        """The client never answered our close: what it wrote meanwhile may be lost, as in a reset."""
        if not self.closed:
            self.stats["close_timeouts"] += 1
            self.stats["after_reset"] = True
            self.transport.close()
            self.closed = True

    # ------------------------------------------------------------------ frames while closing

    def send_event(self, event: dict[str, Any]) -> None:
        if not self.closing:
            super().send_event(event)

    def _frame(self, fin: int, opcode: int, mask: bytes, buf: bytearray, start: int, length: int) -> None:
        if self.closing and opcode == 0x8:  # the client's answer to our close: hang up
            self.transport.close()
            self.closed = True
            return
        super()._frame(fin, opcode, mask, buf, start, length)

    # ------------------------------------------------------------------ the microphone

    def _append(self, prefix: bytes) -> bool:
        if self.scenario is not SOAK:
            return super()._append(prefix)
        at = prefix.find(b'"audio"')
        if at < 0:
            return False
        quote = prefix.find(b'"', at + 7)
        if quote < 0 or quote + 1 + MIC_B64_CHARS > len(prefix):
            return False
        self.stats["mic_chunks"] += 1
        self._mic(base64.b64decode(prefix[quote + 1 : quote + 1 + MIC_B64_CHARS]))
        return True

    def _on_input_audio_buffer_append(self, message: dict[str, Any]) -> None:
        if self.scenario is not SOAK:
            super()._on_input_audio_buffer_append(message)
            return
        self.stats["mic_chunks"] += 1
        self._mic(base64.b64decode(str(message.get("audio", ""))[:MIC_B64_CHARS]))

    def _mic(self, head: bytes) -> None:
        if self.scenario is not SOAK:
            super()._mic(head)
            return
        slot, seq = read_mic_stamp(head)
        self._count_block(seq)
        if self.closing:
            return
        if not self.mic_started:
            self.mic_started = True
            self._maybe_start_duplex()
        r = self.active
        if slot[:4] == b"BARG":
            turn = int.from_bytes(slot[4:6], "little")
            if r is None or r.turn != turn:
                self.stats["stale_barges"] += 1  # for a turn a previous connection was playing
                return
            self.stats["barge_ins"] += 1
            super()._mic(slot)

    def _count_block(self, seq: int | None) -> None:
        rec = self.stats
        rec["mic_blocks"] += 1
        expected = rec["mic_next"]
        after_reset, rec["after_reset"] = rec["after_reset"], False
        if seq is None:
            self._anomaly("a microphone block without a number")
        elif seq == expected:
            rec["mic_next"] = seq + 1
        elif seq > expected:
            if after_reset:
                rec["mic_lost_at_reset"] += seq - expected
            else:
                rec["mic_missing"] += seq - expected
                self._anomaly(f"block {seq} after {expected - 1}: {seq - expected} missing")
            rec["mic_next"] = seq + 1
        else:
            rec["mic_repeated"] += 1
            self._anomaly(f"block {seq} again (or late) after {expected - 1}")

    def _anomaly(self, what: str) -> None:
        kept = self.stats["mic_anomalies"]
        if len(kept) < _KEEP:
            kept.append(f"connection {self.stats['connections']}: {what}")

    # ------------------------------------------------------------------ turns across connections

    def _maybe_start_duplex(self) -> None:
        if self.scenario is not SOAK:
            super()._maybe_start_duplex()
            return
        if self.mic_started and self.configured and not self.turns_started:
            self.turns_started = True
            self._duplex_turn(self.stats["next_turn"])

    def _duplex_turn(self, turn: int) -> None:
        if self.scenario is SOAK:
            # One chain of turns: a timer of a turn that something else already followed does nothing.
            if self.closing or self.closed or self.active is not None or turn != self.stats["next_turn"]:
                return
            self.stats["next_turn"] = turn + 1
        super()._duplex_turn(turn)

    def _on_response_create(self, message: dict[str, Any]) -> None:
        if self.scenario is not SOAK or self.follow_up_turn is not None or self.active is not None:
            super()._on_response_create(message)
            return
        self.stats["orphan_responses"] += 1
        turn = self.stats["next_turn"]
        self.stats["next_turn"] = turn + 1
        self._start_audio(turn)

    def _on_conversation_item_create(self, message: dict[str, Any]) -> None:
        super()._on_conversation_item_create(message)
        item = message.get("item") or {}
        if self.scenario is SOAK and item.get("type") == "function_call_output":
            self.stats["tool_outputs"] += 1


def _close_frame(code: int, reason: str) -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode()
    return bytes((0x88, len(payload))) + payload


async def serve(port: int, ready: Any) -> None:
    server = LoadServer("full", API_KEY)
    server.scenarios = {**server.scenarios, SOAK_SCENARIO: SOAK}
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: SoakConnection(server), "127.0.0.1", port, backlog=4096)
    ready(listener.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(0, lambda: None if os.read(0, 4096) else stop.set())  # the driver's end of stdin closed: leave
    async with listener:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.port, lambda port: print(f"PORT {port}", flush=True)))


if __name__ == "__main__":
    main()
