"""What the soak's server and client agree on (standard library only: the server imports it too).

**The conversation.** Duplex at real time, as in the benchmark's ``duplex``
scenario but endless: the microphone streams 20 ms blocks all along; the
server's "voice activity detector" starts a turn 100 ms after the previous one
ended, each turn one second of audio in 20 ms deltas (turn 0, the warm-up,
0.4 s). The client barges in on every third turn after hearing 10 chunks; a
tool call comes before the audio of every fourth turn. Turn numbers go on
across connections: a new connection of the same conversation continues with
the next turn, so the client can check order over the whole conversation.

**The microphone stamp.** Every microphone block's PCM begins with 12 bytes:
the benchmark's 6-byte barge marker slot (``b"BARG"`` and the turn, or zeros)
then ``b"SQ"`` and the block's number in the conversation (``<I``). The
server reads them from the first 16 base64 characters, which lie in the
unmasked 128-byte prefix its fast path looks at.

**Forced endings.** ``?drop_every=S&drops=1011,1012,reset`` in the URL's query
makes the server end each connection after ``S * (0.5 .. 1.5)`` seconds (a
per-conversation, per-connection draw, so the conversations' endings are
staggered), cycling through the listed endings: a close frame with that code
(the server keeps reading until the client's close frame, as RFC 6455 asks)
or ``reset`` (a TCP reset, no close frame: what a network fault looks like).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass

from benchmarks.workload import BARGE_MARKER, MARKER, Scenario

MIC_TAG = b"SQ"
MIC_STAMP = struct.Struct("<6s2sI")
"""The first 12 bytes of a microphone block: barge marker slot, ``b"SQ"``, block number."""
MIC_B64_CHARS = 16
"""Base64 characters that encode the 12 stamp bytes."""
SOAK_SCENARIO = "soak"
ENDINGS = ("1011", "1012", "1001", "reset")
"""What ``drops`` may list: close codes after which a new connection continues
(``docs/protocols/openai.md#ending-a-session``), or a TCP reset."""


@dataclass(frozen=True)
class EndlessDuplex(Scenario):
    """The soak's duplex conversation: as many turns as it lasts."""

    turn_ms: int = 1000

    def chunks_in_turn(self, turn: int) -> int:
        return -(-(self.turns_ms[0] if turn == 0 else self.turn_ms) // self.chunk_ms)

    @property
    def last_turn(self) -> int:
        return 1 << 40


SOAK = EndlessDuplex(
    SOAK_SCENARIO,
    "duplex",
    20,
    True,
    (400,),
    barge_every=3,
    tool_every=4,
    barge_after_chunks=10,
    transcript_every=5,
    describe="endless real-time duplex: 1 s turns, barge-in every 3rd, a tool call every 4th",
)


def mic_pcm(seq: int, chunk_bytes: int, barge_turn: int | None = None) -> bytes:
    """A microphone block numbered ``seq`` (a barge-in marker for ``barge_turn`` if given)."""
    slot = MARKER.pack(BARGE_MARKER, barge_turn) if barge_turn is not None else bytes(MARKER.size)
    return MIC_STAMP.pack(slot, MIC_TAG, seq) + bytes(chunk_bytes - MIC_STAMP.size)


def read_mic_stamp(head: bytes) -> tuple[bytes, int | None]:
    """The marker slot and the block number (None if the block carries no number)."""
    if len(head) < MIC_STAMP.size:
        return head, None
    slot, tag, seq = MIC_STAMP.unpack_from(head)
    return slot, seq if tag == MIC_TAG else None


def connection_lifetime_s(key: str, connection: int, drop_every_s: float) -> float:
    """How long the server keeps connection number ``connection`` of conversation ``key`` open."""
    return drop_every_s * (0.5 + random.Random(f"{key}:{connection}").random())


def ending_for(key: str, connection: int, drops: tuple[str, ...]) -> str:
    """Which ending connection number ``connection`` of ``key`` gets: the list in turn, from a per-key offset."""
    return drops[(zlib.crc32(key.encode()) + connection) % len(drops)]
