"""One soak conversation: ``BidiAgent.run()`` with a numbered microphone, a checking output and a tool.

Everything goes through the public API, as in ``benchmarks/clients/bidi.py``.
What the client checks, per conversation (:class:`ConversationRecord`):

* **output audio** (:class:`CheckingOutput`, fed on the spot, as an inline
  output): each chunk's stamp says its turn and its number in the turn. Turns
  only go forward; within a turn the chunks come 0, 1, 2, ... with none
  missing, none twice, none out of order; a turn whose response completed
  normally has all its chunks; one cut short (a barge-in: ``interrupted``; a
  lost connection: ``error``) has a prefix of them; no chunk of an
  interrupted response reaches the output after the interruption;
* **microphone** (:class:`NumberedMicrophone`): one numbered block every
  20 ms, a barge-in marker in the first block after the output heard 10 chunks
  of a barge-in turn. The server checks what it received against the numbers;
  the driver compares its count with what the microphone handed the agent.

Memory stays flat by construction on the client's side: counters and one
shared latency histogram, nothing per chunk. The history is the
application's (``agent.messages``): like a long-running voice application
the client keeps the last ``history_limit`` messages, so that what grows is
what bidi-core keeps, not the conversation's transcript.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import anyio

from adapters.openai import BidiOpenAIRealtimeModel
from benchmarks.soak_workload import SOAK, SOAK_SCENARIO, mic_pcm
from benchmarks.workload import API_KEY, STAMP, TOOL_RESULT, model_id
from bidi_core import (
    BidiAgent,
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiTool,
    tool,
)

_KEEP = 10
"""Violations kept per conversation (the count is complete)."""


class LatencyHistogram:
    """Server write to output, in 0.1 ms buckets up to 1 s (one list for all conversations)."""

    BUCKET_NS = 100_000
    BUCKETS = 10_000

    def __init__(self) -> None:
        self.counts = [0] * (self.BUCKETS + 1)
        self.window = [0] * (self.BUCKETS + 1)
        self.max_ns = 0

    def add(self, ns: int) -> None:
        bucket = min(max(ns, 0) // self.BUCKET_NS, self.BUCKETS)
        self.counts[bucket] += 1
        self.window[bucket] += 1
        if ns > self.max_ns:
            self.max_ns = ns

    def summary(self) -> dict[str, float]:
        out = {"n": float(sum(self.counts)), "max_ms": self.max_ns / 1e6}
        out.update(self._percentiles(self.counts))
        return out

    def take_window(self) -> dict[str, float]:
        """p50 and p99 of what came since the last call (the curve's latency columns)."""
        counts, self.window = self.window, [0] * (self.BUCKETS + 1)
        return self._percentiles(counts, (50, 99))

    def _percentiles(self, counts: list[int], qs: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
        """Nearest rank, each bucket read as its upper edge (the last one means "1 s or more")."""
        total = sum(counts)
        out = {}
        for q in qs:
            rank, seen = q / 100 * total, 0
            for i, n in enumerate(counts):
                seen += n
                if seen >= rank and n:
                    out[f"p{q:g}_ms"] = (i + 1) * self.BUCKET_NS / 1e6
                    break
        return out


@dataclass
class ConversationRecord:
    """What one conversation did and what went wrong in it."""

    key: str
    mic_sent: int = 0
    chunks: int = 0
    turns: int = 0
    complete_turns: int = 0
    cut_by_barge: int = 0
    cut_by_reconnect: int = 0
    cut_at_end: int = 0
    tool_calls: int = 0
    tool_responses: int = 0
    barge_requests: int = 0
    interruptions: int = 0
    late_chunks: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    violations: int = 0
    violation_samples: list[str] = field(default_factory=list)
    close_reason: str | None = None
    failure: str | None = None
    dropped_audio: int = 0
    history_len: int = 0

    def violation(self, what: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < _KEEP:
            self.violation_samples.append(what)

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not isinstance(v, Counter)}
        out["restarts"] = dict(self.restarts)
        out["errors"] = dict(self.errors)
        return out


def make_tool(rec: ConversationRecord) -> BidiTool:
    @tool
    async def get_time(zone: str = "UTC") -> str:
        """The current time.

        Args:
            zone: A time zone name.
        """
        rec.tool_calls += 1
        return TOOL_RESULT

    return get_time


class NumberedMicrophone:
    """A ``BidiInput``: a numbered block every 20 ms until :meth:`end`; then ``EOFError``."""

    def __init__(self, rec: ConversationRecord) -> None:
        self.rec = rec
        self.size = SOAK.chunk_bytes
        self.period = SOAK.chunk_ms / 1000
        self.next_at = 0.0
        self.barge_turn: int | None = None
        self.ending = False
        self.ended = anyio.Event()

    async def start(self, agent: Any) -> None:
        self.next_at = anyio.current_time()

    async def stop(self) -> None:
        return None

    def end(self) -> None:
        """No block after the one being waited for (the driver then checks the server got them all)."""
        self.ending = True

    async def __call__(self) -> BidiAudioInputEvent:
        self.next_at += self.period
        await anyio.sleep(max(0.0, self.next_at - anyio.current_time()))
        if self.ending:
            self.ended.set()
            raise EOFError
        turn, self.barge_turn = self.barge_turn, None
        seq = self.rec.mic_sent
        self.rec.mic_sent = seq + 1
        return BidiAudioInputEvent(audio=mic_pcm(seq, self.size, turn), sample_rate=24000)


class CheckingOutput:
    """A ``BidiOutput`` taken inline: checks every audio chunk's place in its turn (module docstring)."""

    reports_playback = False

    def __init__(
        self, rec: ConversationRecord, mic: NumberedMicrophone, latency: LatencyHistogram, history_limit: int
    ) -> None:
        self.rec = rec
        self.mic = mic
        self.latency = latency
        self.history_limit = history_limit
        self.agent: BidiAgent | None = None
        self.turn = -1
        self.response_id: str | None = None
        self.next_seq = 0
        self.turn_ended = True
        self.interrupted: deque[str | None] = deque(maxlen=16)
        self.stopping = False

    async def start(self, agent: Any) -> None:
        self.agent = agent

    async def stop(self) -> None:
        return None

    async def __call__(self, event: Any) -> None:
        self.offer(event)

    def offer(self, event: Any) -> bool:
        kind = type(event)
        if kind is BidiAudioStreamEvent:
            self._audio(event)
        elif kind is BidiResponseCompleteEvent:
            self._complete(event)
        elif kind is BidiInterruptionEvent:
            self.rec.interruptions += 1
            self.interrupted.append(event.response_id)
        elif kind is BidiConnectionRestartEvent:
            self.rec.restarts[event.reason] += 1
            self.interrupted.clear()  # response ids belong to a connection
        elif kind is BidiErrorEvent:
            self.rec.errors[event.code or "none"] += 1
        elif kind is BidiConnectionCloseEvent:
            self.rec.close_reason = event.reason
        return True

    def _audio(self, event: BidiAudioStreamEvent) -> None:
        now = time.monotonic_ns()
        rec = self.rec
        stamp_ns, turn, seq = STAMP.unpack_from(event.audio)
        self.latency.add(now - stamp_ns)
        rec.chunks += 1
        rid = event.response_id
        if rid in self.interrupted:
            rec.late_chunks += 1
            rec.violation(f"chunk {seq} of turn {turn} after its response {rid} was interrupted")
            return
        if turn == self.turn and rid == self.response_id and not self.turn_ended:
            if seq != self.next_seq:
                rec.violation(f"turn {turn}: chunk {seq} where {self.next_seq} was due")
            self.next_seq = seq + 1
        elif turn > self.turn:
            if not self.turn_ended:
                rec.violation(f"turn {turn} began before the response of turn {self.turn} ended")
            if seq != 0:
                rec.violation(f"turn {turn} began with chunk {seq}")
            self.turn, self.response_id, self.next_seq, self.turn_ended = turn, rid, seq + 1, False
            rec.turns += 1
        else:
            rec.violation(f"chunk {seq} of turn {turn} ({rid}) while at turn {self.turn} ({self.response_id})")
            return
        if SOAK.is_barge_turn(turn) and self.next_seq == SOAK.barge_after_chunks:
            self.mic.barge_turn = turn
            rec.barge_requests += 1

    def _complete(self, event: BidiResponseCompleteEvent) -> None:
        rec = self.rec
        if event.stop_reason == "tool_use":
            rec.tool_responses += 1
        if event.response_id != self.response_id or self.turn_ended:
            return  # a response without audio (a tool call's, or one cut before its first chunk)
        self.turn_ended = True
        expected = SOAK.chunks_in_turn(self.turn)
        if event.stop_reason == "complete":
            if self.next_seq == expected:
                rec.complete_turns += 1
            else:
                rec.violation(f"turn {self.turn} completed with {self.next_seq} of {expected} chunks")
        elif self.stopping:
            rec.cut_at_end += 1  # the driver stopped the conversation with a response in flight
        elif event.stop_reason == "interrupted":
            rec.cut_by_barge += 1
        elif event.stop_reason == "error":
            rec.cut_by_reconnect += 1
        else:
            rec.violation(f"turn {self.turn}'s audio response ended with {event.stop_reason!r}")
        messages = self.agent.messages if self.agent is not None else []
        if self.history_limit and len(messages) > self.history_limit:
            del messages[: len(messages) - self.history_limit]


class SoakConversation:
    """One conversation: its agent, microphone, output and record."""

    def __init__(self, url: str, key: str, latency: LatencyHistogram, history_limit: int) -> None:
        self.rec = ConversationRecord(key)
        self.mic = NumberedMicrophone(self.rec)
        self.output = CheckingOutput(self.rec, self.mic, latency, history_limit)
        model = BidiOpenAIRealtimeModel(model_id(SOAK_SCENARIO, key), api_key=API_KEY, base_url=url)
        self.agent = BidiAgent(model=model, tools=[make_tool(self.rec)])
        self.done = False

    async def run(self) -> None:
        try:
            await self.agent.run(inputs=[self.mic], outputs=[self.output])
        except Exception as exc:  # a conversation that fails is a finding, not a crash of the soak
            self.rec.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.done = True
            self.rec.dropped_audio = self.agent.dropped_audio
            self.rec.history_len = len(self.agent.messages)

    def stop(self) -> None:
        self.output.stopping = True
        self.agent.request_stop()
