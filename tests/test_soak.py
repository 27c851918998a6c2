"""The soak (``benchmarks/soak.py``, ``nox -s soak``) cannot rot: its checks catch what they are for, and
a short soak passes on both backends.

The short soak is 5 conversations for 6 seconds, a forced reconnect every 1.5 s or so, each backend in
its own process, both at once (about 8 s in all); the real one is ``nox -s soak`` (not in CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.loadserver import LoadServer
from benchmarks.soak_client import CheckingOutput, ConversationRecord, LatencyHistogram, NumberedMicrophone
from benchmarks.soak_server import SoakConnection, _new_record
from benchmarks.soak_workload import SOAK, mic_pcm, read_mic_stamp
from benchmarks.workload import API_KEY, STAMP
from ports.events import BidiAudioStreamEvent, BidiInterruptionEvent, BidiResponseCompleteEvent

ROOT = Path(__file__).resolve().parent.parent


def chunk(turn: int, seq: int, rid: str) -> BidiAudioStreamEvent:
    return BidiAudioStreamEvent(STAMP.pack(0, turn, seq) + bytes(SOAK.chunk_bytes - STAMP.size), response_id=rid)


def play(*events: object) -> ConversationRecord:
    rec = ConversationRecord("k")
    output = CheckingOutput(rec, NumberedMicrophone(rec), LatencyHistogram(), history_limit=0)
    for event in events:
        output.offer(event)
    return rec


def whole_turn(turn: int, rid: str) -> list[object]:
    return [chunk(turn, i, rid) for i in range(SOAK.chunks_in_turn(turn))]


async def test_the_output_check_passes_whole_turns_and_turns_cut_by_a_barge_in_or_a_lost_connection() -> None:
    rec = play(
        *whole_turn(1, "r1"),
        BidiResponseCompleteEvent("r1", "complete"),
        *whole_turn(2, "r2")[:12],
        BidiInterruptionEvent("user_speech", "r2"),
        BidiResponseCompleteEvent("r2", "interrupted"),
        *whole_turn(3, "r1")[:5],
        BidiResponseCompleteEvent("r1", "error"),
    )
    assert (rec.violations, rec.complete_turns, rec.cut_by_barge, rec.cut_by_reconnect) == (0, 1, 1, 1)


async def test_the_output_check_catches_a_lost_a_repeated_a_reordered_and_a_late_chunk() -> None:
    turn = whole_turn(1, "r1")
    lost = play(*turn[:20], *turn[21:], BidiResponseCompleteEvent("r1", "complete"))
    repeated = play(*turn[:20], turn[19], *turn[20:])
    reordered = play(*turn[:20], turn[21], turn[20], *turn[22:])
    tail_lost = play(*turn[:-1], BidiResponseCompleteEvent("r1", "complete"))
    late = play(*turn[:12], BidiInterruptionEvent("user_speech", "r1"), turn[12])
    head_lost = play(*turn[1:])
    backwards = play(*whole_turn(2, "r2"), BidiResponseCompleteEvent("r2", "complete"), *turn)
    for rec in (lost, repeated, reordered, tail_lost, late, head_lost, backwards):
        assert rec.violations > 0, rec
    assert late.late_chunks == 1


async def test_the_output_asks_the_microphone_for_a_barge_in_on_barge_in_turns_only() -> None:
    rec = ConversationRecord("k")
    mic = NumberedMicrophone(rec)
    output = CheckingOutput(rec, mic, LatencyHistogram(), history_limit=0)
    for event in whole_turn(1, "r1")[: SOAK.barge_after_chunks]:
        output.offer(event)
    assert mic.barge_turn is None
    for event in whole_turn(3, "r3")[: SOAK.barge_after_chunks]:
        output.offer(event)
    assert mic.barge_turn == 3


def test_microphone_blocks_carry_their_number_and_the_barge_in_marker() -> None:
    slot, seq = read_mic_stamp(mic_pcm(70000, SOAK.chunk_bytes, barge_turn=9))
    assert (slot, seq) == (b"BARG\x09\x00", 70000)
    assert read_mic_stamp(mic_pcm(3, SOAK.chunk_bytes)) == (bytes(6), 3)


def test_the_server_counts_missing_repeated_and_reset_lost_blocks_apart() -> None:
    conn = SoakConnection(LoadServer("quick", API_KEY))
    conn.stats = {"connections": 1}
    _new_record(conn.stats)
    for seq in (0, 1, 2, 4, 4, 5):  # 3 missing, 4 repeated
        conn._count_block(seq)
    conn.stats["after_reset"] = True
    for seq in (8, 9):  # 6 and 7 were in the connection a reset destroyed
        conn._count_block(seq)
    conn._count_block(12)  # 10 and 11 missing, with no reset to explain it
    rec = conn.stats
    assert (rec["mic_blocks"], rec["mic_next"], rec["mic_missing"], rec["mic_repeated"]) == (9, 13, 3, 1)
    assert rec["mic_lost_at_reset"] == 2
    assert len(rec["mic_anomalies"]) == 3


def test_a_short_soak_passes_on_both_backends(tmp_path: Path) -> None:
    runs = {}
    for backend in ("asyncio", "trio"):
        out = tmp_path / f"{backend}.json"
        command = [sys.executable, "-m", "benchmarks.soak", "--backend", backend, "--minutes", "0.1"]
        command += ["--sessions", "5", "--drop-every", "1.5", "--warmup", "2", "--sample", "0.5"]
        command += ["--json", str(out), "--no-png"]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs[backend] = (process, out)
    for backend, (process, out) in runs.items():
        output, _ = process.communicate(timeout=50)
        assert process.returncode == 0, output
        result = json.loads(out.read_text())
        assert result["passed"] and result["backend"] == backend
        verdicts = {c["name"]: c["passed"] for c in result["checks"]}
        assert all(verdicts.values()) and len(verdicts) == 10, verdicts
        convs = result["conversations"]
        assert sum(c["chunks"] for c in convs) > 500
        assert sum(c["interruptions"] for c in convs) > 0 and sum(c["tool_calls"] for c in convs) > 0
        assert sum(sum(c["restarts"].values()) for c in convs) >= 5
