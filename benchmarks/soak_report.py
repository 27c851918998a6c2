"""The soak's verdicts, its table and curve, the README block and the picture (:mod:`benchmarks.soak`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

_README_START = "<!-- soak:start -->"
_README_END = "<!-- soak:end -->"
ALLOWED_ERRORS = frozenset({"conversation_already_has_active_response"})
"""Error events that are part of the workload: a ``response.create`` (the answer to a tool call of a
connection that ended, sent again as text) racing the server's next turn; the adapter asks again."""


def totals(result: dict[str, Any]) -> dict[str, Any]:
    """Sums over the conversations and the server's records."""
    convs = result["conversations"]
    server = [result["server"].get(c["key"], {}) for c in convs]

    def c_sum(name: str) -> int:
        return sum(int(c[name]) for c in convs)

    def s_sum(name: str) -> int:
        return sum(int(s.get(name, 0)) for s in server)

    restarts: dict[str, int] = {}
    errors: dict[str, int] = {}
    endings: dict[str, int] = {}
    for c in convs:
        for k, v in c["restarts"].items():
            restarts[k] = restarts.get(k, 0) + v
        for k, v in c["errors"].items():
            errors[k] = errors.get(k, 0) + v
    for s in server:
        for k, v in s.get("endings", {}).items():
            endings[k] = endings.get(k, 0) + v
    return {
        "conversations": len(convs),
        "chunks": c_sum("chunks"),
        "turns": c_sum("turns"),
        "complete_turns": c_sum("complete_turns"),
        "cut_by_barge": c_sum("cut_by_barge"),
        "cut_by_reconnect": c_sum("cut_by_reconnect"),
        "cut_at_end": c_sum("cut_at_end"),
        "late_chunks": c_sum("late_chunks"),
        "violations": c_sum("violations"),
        "barge_requests": c_sum("barge_requests"),
        "interruptions": c_sum("interruptions"),
        "server_barge_ins": s_sum("barge_ins"),
        "stale_barges": s_sum("stale_barges"),
        "tool_calls": c_sum("tool_calls"),
        "server_tool_outputs": s_sum("tool_outputs"),
        "orphan_responses": s_sum("orphan_responses"),
        "restarts": restarts,
        "reconnects": sum(restarts.values()),
        "server_endings": endings,
        "connections": s_sum("connections"),
        "errors": errors,
        "mic_sent": c_sum("mic_sent"),
        "mic_received": s_sum("mic_blocks"),
        "mic_lost_at_reset": s_sum("mic_lost_at_reset"),
        "close_timeouts": s_sum("close_timeouts"),
        "mic_missing": s_sum("mic_missing"),
        "mic_repeated": s_sum("mic_repeated"),
        "dropped_audio": c_sum("dropped_audio"),
    }


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each verdict: name, passed, what was measured."""
    out: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> None:
        out.append({"name": name, "passed": bool(passed), "detail": detail})

    settings = result["settings"]
    t = totals(result)
    before, warm, end, after = result["before"], result["after_warmup"], result["end_of_load"], result["after_stop"]
    growth = end["rss_mb"] - warm["rss_mb"]
    peak = max(r["rss_mb"] for r in result["rows"] if r["phase"] == "load")
    behind = ""
    load_rows = [r for r in result["rows"] if r["phase"] == "load"]
    due = settings["sessions"] * (end["t"] - warm["t"]) / 0.02
    pace = (end["mic_sent"] - warm["mic_sent"]) / due if due else 1.0
    grew = end.get("backlog", 0) > warm.get("backlog", 0) + 10 * settings["sessions"]
    waited = sum(r.get("starved", 0) for r in load_rows) / max(len(load_rows), 1)
    if grew or pace < 0.9:
        behind = (
            f"; the client did not keep real time: microphone at {pace:.0%} of its pace, unsent microphone "
            f"blocks {warm.get('backlog', 0)} -> {end.get('backlog', 0)}"
            + (" (the growth holds them)" if grew else "")
            + f", runnable but waiting for a CPU {waited:.0%} of the time"
        )
    check(
        "memory",
        growth < settings["max_growth"],
        f"RSS {warm['rss_mb']:.1f} MB after warm-up, {end['rss_mb']:.1f} MB at the end of the load "
        f"({growth:+.2f} MB; peak {peak:.1f} MB; limit {settings['max_growth']:g} MB){behind}",
    )
    for name in ("fds", "tasks", "threads"):
        check(
            name,
            after[name] == before[name],
            f"{before[name]} before, {end[name]} under load, {after[name]} after every conversation stopped",
        )
    check(
        "output audio",
        t["violations"] == 0 and t["chunks"] > 0,
        f"{t['chunks']} chunks in {t['turns']} turns: {t['complete_turns']} whole, {t['cut_by_barge']} cut by a "
        f"barge-in, {t['cut_by_reconnect']} by a lost connection, {t['cut_at_end']} by the end; "
        f"{t['violations']} lost, repeated, reordered or late ({t['late_chunks']} late)",
    )
    mic_problems = []
    for c in result["conversations"]:
        s = result["server"].get(c["key"], {})
        received_through = s.get("mic_next", 0)
        missing, dropped = s.get("mic_missing", 0), c["dropped_audio"]
        if received_through != c["mic_sent"]:
            mic_problems.append(f"{c['key']}: sent {c['mic_sent']}, the server's last was {received_through - 1}")
        if s.get("mic_repeated", 0) or missing > dropped:
            mic_problems.append(f"{c['key']}: {s.get('mic_anomalies')}")
        if s.get("mic_blocks", 0) != c["mic_sent"] - missing - s.get("mic_lost_at_reset", 0):
            mic_problems.append(f"{c['key']}: received {s.get('mic_blocks')} of {c['mic_sent']} sent")
    check(
        "microphone",
        not mic_problems,
        f"{t['mic_sent']} blocks accepted, {t['mic_received']} received in order; {t['mic_lost_at_reset']} "
        f"destroyed on the wire by TCP resets (or {t['close_timeouts']} closes the client did not answer in 5 s), "
        f"{t['mic_missing']} missing otherwise, {t['mic_repeated']} repeated; dropped_audio {t['dropped_audio']}"
        + (f"; {'; '.join(mic_problems[:5])}" if mic_problems else ""),
    )
    check(
        "dropped_audio",
        t["dropped_audio"] == 0,
        f"{t['dropped_audio']} blocks dropped by the outbox (its cap is 30 s of audio per conversation)",
    )
    ending = result["ending"]
    failures = [f"{c['key']}: {c['failure']}" for c in result["conversations"] if c["failure"]]
    early = [c["key"] for c in result["conversations"] if c["close_reason"] != "client_disconnect"]
    check(
        "conversations",
        not failures and not early and not ending["stop_timed_out"] and not ending["mic_unreceived_conversations"],
        f"{t['conversations']} ran to the end; stopped in {ending['stop_s']:.2f} s"
        + (f"; failed: {failures[:3]}" if failures else "")
        + (f"; closed otherwise: {early[:3]}" if early else "")
        + (
            f"; microphone not all received: {ending['mic_unreceived_conversations'][:3]}"
            if ending["mic_unreceived_conversations"]
            else ""
        ),
    )
    unexpected = {k: v for k, v in t["errors"].items() if k not in ALLOWED_ERRORS}
    check("errors", not unexpected, f"error events {t['errors'] or 'none'}")
    seconds = settings["minutes"] * 60
    asked = set(settings["drops"].split(",")) if settings["drop_every"] > 0 else set()
    every_kind = seconds < 6 * settings["drop_every"] or asked <= set(t["server_endings"])
    reconnected = sum(1 for c in result["conversations"] if sum(c["restarts"].values()))
    all_reconnected = seconds < 1.5 * settings["drop_every"] + 10 or reconnected == t["conversations"]
    check(
        "workload",
        t["interruptions"] > 0
        and t["tool_calls"] > 0
        and (not asked or t["reconnects"] > 0)
        and every_kind
        and all_reconnected,
        f"{t['interruptions']} barge-ins ({t['server_barge_ins']} at the server), {t['tool_calls']} tool calls, "
        f"{t['reconnects']} reconnects ({reconnected} of {t['conversations']} conversations; server endings "
        f"{t['server_endings']})",
    )
    return out


def curve_table(result: dict[str, Any], max_rows: int = 40) -> str:
    """The curve: every row, or every n-th one (the first, the phase changes and the last always)."""
    rows = result["rows"]
    step = max(1, -(-len(rows) // max_rows))
    keep = [
        r
        for i, r in enumerate(rows)
        if i % step == 0 or i == len(rows) - 1 or (r["phase"] != rows[i - 1]["phase"] and r["phase"] != "stopped")
    ]
    lines = [
        "    t s  phase     RSS MB   fds  tasks  threads  live  reconnects  CPU  waiting  load  mic pace  unsent"
        "  latency p50 / p99 ms",
    ]
    for r in keep:
        latency = "-" if r.get("p50_ms") is None else f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"
        pace = "-" if r.get("mic_pace") is None else f"{r['mic_pace']:.0%}"
        lines.append(
            f"{r['t']:7.1f}  {r['phase']:8s} {r['rss_mb']:7.1f}  {r['fds']:4d}  {r['tasks']:5d}  {r['threads']:7d}  "
            f"{r['live']:4d}  {r['reconnects']:10d}  {r['cpu']:3.0%}  {r.get('starved', 0):7.0%}  "
            f"{r['loadavg']:4.1f}  {pace:>8s}  {r.get('backlog', 0):6d}  {latency}"
        )
    return "\n".join(lines)


def summary_lines(result: dict[str, Any]) -> list[str]:
    s, t, lat = result["settings"], totals(result), result["latency"]
    head = (
        f"soak on {result['backend']}: {s['sessions']} conversations x {s['minutes']:g} min, warm-up "
        f"{s['warmup']:g} s, a forced ending every {s['drop_every']:g} s x0.5-1.5 ({s['drops']}), history kept "
        f"{s['history'] or 'whole'}; {result['machine']['cpus']} CPUs, Python {result['machine']['python']}: "
        f"{'PASSED' if result['passed'] else 'FAILED'}"
    )
    lines = [head]
    for c in result["checks"]:
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    lines.append(
        f"  output latency (server write to output) p50 {lat.get('p50_ms', float('nan')):.1f} ms, p99 "
        f"{lat.get('p99_ms', float('nan')):.1f} ms, max {lat['max_ms']:.1f} ms; {t['connections']} connections, "
        f"{t['orphan_responses']} answers to a tool result re-sent after a reconnect, {t['stale_barges']} barge-in "
        f"markers that reached a new connection"
    )
    return lines


def print_result(result: dict[str, Any]) -> None:
    print(curve_table(result))
    print("\n".join(summary_lines(result)))
    sys.stdout.flush()


def readme_block(results: list[dict[str, Any]]) -> str:
    parts = [_README_START]
    for result in results:
        parts += ["```", *summary_lines(result), "", curve_table(result, max_rows=22), "```"]
    parts.append(_README_END)
    return "\n".join(parts)


def update_readme(path: Path, results: list[dict[str, Any]]) -> None:
    text = path.read_text()
    block = readme_block(results)
    pattern = re.compile(re.escape(_README_START) + ".*?" + re.escape(_README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {_README_START} ... {_README_END} block to replace")
    path.write_text(pattern.sub(lambda _: block, text))


def write_png(result: dict[str, Any], path: Path) -> None:
    """The curve as a picture, if matplotlib is installed (the library never imports it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = result["rows"]
    t = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(5, 1, figsize=(8, 11), sharex=True)
    for ax, key, label in zip(
        axes,
        ("rss_mb", "backlog", "fds", "tasks", "threads"),
        ("RSS (MB)", "unsent mic blocks", "file descriptors", "tasks", "threads"),
        strict=True,
    ):
        ax.plot(t, [r.get(key, 0) for r in rows], marker=".")
        ax.set_ylabel(label)
        ax.axvline(result["after_warmup"]["t"] / 60, color="grey", linestyle=":")
        ax.axvline(result["end_of_load"]["t"] / 60, color="grey", linestyle=":")
    axes[-1].set_xlabel("minutes")
    s = result["settings"]
    axes[0].set_title(f"soak, {result['backend']}: {s['sessions']} conversations, {s['minutes']:g} min")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"curve: {path}", file=sys.stderr)
