"""From the clients' JSON to the figures, one plain-text table, a JSON file and a PNG.

Ratios are medians of per-repetition ratios (client and raw floor measured
back to back in the same repetition), because absolute times on a shared
2-core machine drift 20-50 % between runs while neighbours in time drift
together. Latency percentiles pool the samples of all repetitions (a p99
of one short repetition rests on two or three samples).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.workload import LATENCY_TARGET_MS, latency_summary

CLIENT_TITLES = {
    "raw": "raw floor",
    "raw-websockets": "raw websockets",
    "raw-trio": "raw trio",
    "bidi-asyncio": "bidi asyncio",
    "bidi-trio": "bidi trio",
    "reference": "reference",
}
BIDI = ("bidi-asyncio", "bidi-trio", "bidi-asyncio*", "bidi-trio*")


def title(client: str) -> str:
    """A column title; ``*`` marks bidi-core with prototype patches."""
    base = client.split("@", 1)[0].rstrip("*")
    return CLIENT_TITLES.get(base, base) + client[len(base) :]


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def aggregate(
    clients: list[str],
    runs: list[dict[str, Any]],
    ramps: dict[str, dict[str, dict[str, Any]]],
    imports: dict[str, dict[str, Any]],
    unavailable: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Figures per client (see README.md for what each one means). ``ramps``:
    mode (``output``, ``duplex``) -> client -> the ramp process's result."""
    by_rep: dict[tuple[str, int], dict[str, Any]] = {}
    for run in runs:
        if run.get("ok"):
            by_rep[(run["client"], run["rep"])] = run
    reps = sorted({run["rep"] for run in runs})
    out: dict[str, dict[str, Any]] = {}
    for client in clients:
        if client in unavailable:
            out[client] = {"unavailable": unavailable[client]}
            continue
        mine = [by_rep[(client, r)] for r in reps if (client, r) in by_rep]
        failed = [run for run in runs if run["client"] == client and not run.get("ok")]
        fig: dict[str, Any] = {"repetitions": len(mine)}
        if failed:
            fig["failures"] = [run.get("error", "failed") for run in failed]
        if not mine:
            fig["unavailable"] = (failed[0].get("error") if failed else None) or "no successful repetition"
            out[client] = fig
            continue
        scenarios = sorted({name for run in mine for name in run["result"]["scenarios"]})
        fig["cpu_us_per_chunk"] = {}
        fig["cpu_ratio_to_raw"] = {}
        fig["reference_ratio"] = {}
        fig["latency_ms"] = {}
        fig["sched_per_chunk"] = {}
        fig["incomplete"] = []
        for name in scenarios:
            cpu = [run["result"]["scenarios"][name]["cpu_us_per_chunk"] for run in mine]
            fig["cpu_us_per_chunk"][name] = _median(cpu)
            ratios, ref_ratios = [], []
            for r in reps:
                me = by_rep.get((client, r))
                raw = by_rep.get(("raw", r))
                ref = by_rep.get(("reference", r))
                mine_cpu = me and me["result"]["scenarios"].get(name, {}).get("cpu_us_per_chunk")
                if mine_cpu and raw and raw["result"]["scenarios"].get(name, {}).get("cpu_us_per_chunk"):
                    ratios.append(mine_cpu / raw["result"]["scenarios"][name]["cpu_us_per_chunk"])
                if mine_cpu and ref and ref["result"]["scenarios"].get(name, {}).get("cpu_us_per_chunk"):
                    ref_ratios.append(ref["result"]["scenarios"][name]["cpu_us_per_chunk"] / mine_cpu)
            fig["cpu_ratio_to_raw"][name] = _median(ratios)
            partner = asyncio_partner(client)
            if partner:
                # Trio beside asyncio, and beside the raw Trio floor: what is Trio's own and what is ours.
                for key, other in (("cpu_ratio_to_asyncio", partner), ("cpu_ratio_to_raw_trio", "raw-trio")):
                    fig.setdefault(key, {})[name] = _median(
                        [
                            mine_cpu / other_cpu
                            for r in reps
                            if (mine_cpu := _cpu(by_rep.get((client, r)), name))
                            and (other_cpu := _cpu(by_rep.get((other, r)), name))
                        ]
                    )
            fig["reference_ratio"][name] = _median(ref_ratios)
            per_run = [run["result"]["scenarios"][name] for run in mine]
            fig["sched_per_chunk"][name] = (
                _median([r.get("steps_per_chunk") for r in per_run]),
                _median([r.get("wakeups_per_chunk") for r in per_run]),
            )
            samples = [v * 1000 for run in mine for v in run["result"]["scenarios"][name]["latency_samples_us"]]
            fig["latency_ms"][name] = latency_summary(samples) if samples else None
            if not all(run["result"]["scenarios"][name]["complete"] for run in mine):
                fig["incomplete"].append(name)
        # Time to first audio after a text turn, over the scenarios whose server writes each
        # response's first chunk at once (turns20); the unpaced ones' (thr20, thr100: the first chunk
        # shares the CPU with the server's burst behind it) are kept per scenario for the JSON.
        first_audio: list[float] = []
        fig["first_audio_by_scenario"] = {}
        for name in scenarios:
            per_scenario = [v for run in mine for v in run["result"]["scenarios"][name].get("first_audio_ms", [])]
            fig["first_audio_by_scenario"][name] = _median(per_scenario)
            if all(run["result"]["scenarios"][name].get("first_chunk_at_once") for run in mine):
                first_audio += per_scenario
        fig["first_audio_ms"] = (
            {"n": len(first_audio), "median": _median(first_audio), "max": max(first_audio)} if first_audio else None
        )
        silence, never, late, rtt, first_rtt = [], 0, 0, [], []
        for run in mine:
            duplex = run["result"]["scenarios"].get("duplex")
            server = run.get("server", {}).get("duplex", {})
            if not duplex:
                continue
            late += duplex["late_chunks"]
            calls = [v / 1e6 for v in server.get("tool_rtt_ns", [])]
            # Each client process runs the duplex scenario once: its first call pays one-time costs.
            first_rtt += calls[:1]
            rtt += calls[1:]
            for turn, started in server.get("speech_started_ns", {}).items():
                heard = duplex["interrupted_ns"].get(turn)
                if heard is None:
                    never += 1
                    continue
                last = duplex["last_audio_ns"].get(turn, 0)
                silence.append((max(heard, last) - started) / 1e6)
        fig["barge_in_ms"] = (
            {"n": len(silence), "median": _median(silence), "max": max(silence), "never": never} if silence else None
        )
        if never and not silence:
            fig["barge_in_ms"] = {"n": 0, "median": None, "max": None, "never": never}
        fig["late_chunks"] = late
        fig["tool_rtt_ms"] = (
            {
                "n": len(rtt),
                "median": _median(rtt),
                "max": max(rtt),
                "first_call_median": _median(first_rtt),
                "first_call_max": max(first_rtt) if first_rtt else None,
            }
            if rtt
            else None
        )
        fig["peak_rss_mb"] = _median([run["result"]["peak_rss_mb"] for run in mine])
        fig["import_s"] = imports.get(client, {}).get("median_s")
        for mode, suffix in (("output", ""), ("duplex", "_duplex")):
            ramp = ramps.get(mode, {}).get(client)
            if ramp and ramp.get("ok"):
                levels = ramp["result"]["ramp"]["levels"]
                at100 = [lv for lv in levels if lv["sessions"] == 100 and lv["window"] == 1]
                # CPU per output chunk with 100 sessions at real time: every chunk wakes the loop, as in
                # production (in duplex the microphone blocks going up are in it too).
                fig[f"cpu_us_per_chunk_100_sessions{suffix}"] = (
                    at100[0]["cpu_fraction"] / (100 * 50) * 1e6 if at100 else None
                )
                fig[f"sessions_per_core{suffix}"] = ramp["result"]["ramp"]["sessions_per_core"]
                fig[f"sessions_capped{suffix}"] = ramp["result"]["ramp"]["capped"]
                fig[f"ramp_levels{suffix}"] = levels
            elif ramp:
                fig[f"sessions_per_core{suffix}"] = None
                fig[f"ramp_error{suffix}"] = ramp.get("error")
        out[client] = fig
    return out


def asyncio_partner(client: str) -> str | None:
    """The asyncio column a Trio column is compared with (``bidi-trio*`` with ``bidi-asyncio*``)."""
    return client.replace("bidi-trio", "bidi-asyncio", 1) if client.startswith("bidi-trio") else None


def _cpu(run: dict[str, Any] | None, name: str) -> float | None:
    value = run["result"]["scenarios"].get(name, {}).get("cpu_us_per_chunk") if run else None
    return float(value) if value else None


# --------------------------------------------------------------------------- targets


def targets(figures: dict[str, dict[str, Any]], chunk_ms: int = 20) -> list[dict[str, Any]]:
    """The issues' targets, judged for each bidi-core column: issue 16's real-time goals
    (ratios and differences to the wsproto raw floor of the same run) first, for a Trio
    column the same goals against the raw Trio floor of the same run (when it ran), then
    the earlier ones that still apply."""
    raw = figures.get("raw", {})
    raw_trio = figures.get("raw-trio")
    rows: list[dict[str, Any]] = []

    for client in [c for c in figures if c.startswith("bidi-")]:
        fig = figures.get(client)
        if not fig or "unavailable" in fig:
            continue

        def judge(name: str, goal: str, value: Any, ok: bool | None, client: str = client) -> None:
            rows.append({"client": client, "target": name, "goal": goal, "value": value, "met": ok})

        def minus_floor(key: str, fig: dict[str, Any] = fig, floor_fig: dict[str, Any] = raw) -> float | None:
            mine, floor = fig.get(key), floor_fig.get(key)
            if not mine or not floor or mine.get("median") is None or floor.get("median") is None:
                return None
            return float(mine["median"] - floor["median"])

        duplex = fig["cpu_ratio_to_raw"].get("duplex")
        one = fig["cpu_ratio_to_raw"].get("rt20")
        judge("CPU/chunk vs raw floor, duplex at real time", "<= 1.2x", duplex, _le(duplex, 1.2))
        judge("CPU/chunk vs raw floor, 1 real-time session", "<= 1.1x", one, _le(one, 1.1))
        if asyncio_partner(client):
            trio = (fig.get("cpu_ratio_to_asyncio") or {}).get("rt20")
            judge("CPU/chunk, 1 real-time session, Trio / asyncio", "<= 1.1x", trio, _le(trio, 1.1))
        mine_n, floor_n = fig.get("sessions_per_core_duplex"), raw.get("sessions_per_core_duplex")
        share = mine_n / floor_n if mine_n is not None and floor_n else None
        judge("duplex sessions per core / raw floor's", ">= 0.9x", share, _ge(share, 0.9))
        for key, name in (
            ("first_audio_ms", "time to first audio - raw, median"),
            ("tool_rtt_ms", "tool round trip - raw, median"),
            ("barge_in_ms", "barge-in to silence - raw, median"),
        ):
            diff = minus_floor(key)
            judge(name, "<= 0.5 ms", diff, _le(diff, 0.5))
        if asyncio_partner(client) and raw_trio is not None:
            # The same goals against the floor on Trio: bidi-core's share of the cost, Trio's taken out.
            to_trio = fig.get("cpu_ratio_to_raw_trio") or {}
            duplex, one = to_trio.get("duplex"), to_trio.get("rt20")
            judge("CPU/chunk vs raw trio floor, duplex at real time", "<= 1.2x", duplex, _le(duplex, 1.2))
            judge("CPU/chunk vs raw trio floor, 1 real-time session", "<= 1.1x", one, _le(one, 1.1))
            mine_100 = fig.get("cpu_us_per_chunk_100_sessions_duplex")
            floor_100 = raw_trio.get("cpu_us_per_chunk_100_sessions_duplex")
            at100 = mine_100 / floor_100 if mine_100 and floor_100 else None
            judge("CPU/chunk vs raw trio floor, 100 duplex sessions", "<= 1.2x", at100, _le(at100, 1.2))
            mine_n, floor_n = fig.get("sessions_per_core_duplex"), raw_trio.get("sessions_per_core_duplex")
            share = mine_n / floor_n if mine_n is not None and floor_n else None
            judge("duplex sessions per core / raw trio floor's", ">= 0.9x", share, _ge(share, 0.9))
            diff = minus_floor("tool_rtt_ms", floor_fig=raw_trio)
            judge("tool round trip - raw trio floor, median", "<= 0.5 ms", diff, _le(diff, 0.5))

        ratio = fig["cpu_ratio_to_raw"].get("thr20")
        ref = fig["reference_ratio"].get("thr20")
        lat = (fig["latency_ms"] or {}).get("rt20")
        raw_lat = (raw.get("latency_ms") or {}).get("rt20")
        p99 = lat["p99"] - raw_lat["p99"] if lat and raw_lat else None
        tool = fig.get("tool_rtt_ms")
        barge = fig.get("barge_in_ms")
        sessions = fig.get("sessions_per_core")
        judge("CPU/chunk vs raw floor (unpaced 20 ms)", "<= 1.3x", ratio, _le(ratio, 1.3))
        judge("CPU/chunk, reference / bidi-core (20 ms)", ">= 3x", ref, _ge(ref, 3.0))
        judge("output latency p99 - raw p99, real time", "<= 0.2 ms", p99, _le(p99, 0.2))
        judge(
            "tool round trip (median, after the first call)",
            "< 1 ms",
            tool and tool["median"],
            _lt(tool and tool["median"], 1.0),
        )
        judge(
            "barge-in to silence (max)",
            f"<= one block ({chunk_ms} ms)",
            barge and barge["max"],
            (_le(barge["max"], chunk_ms) and not barge["never"]) if barge else None,
        )
        judge("peak RSS", "< 40 MB", fig.get("peak_rss_mb"), _lt(fig.get("peak_rss_mb"), 40))
        judge("import bidi_core + OpenAI adapter", "< 0.2 s", fig.get("import_s"), _lt(fig.get("import_s"), 0.2))
        judge(
            f"sessions per core, output only, p99 <= {LATENCY_TARGET_MS:g} ms", ">= 300", sessions, _ge(sessions, 300)
        )
    return rows


def _le(v: float | None, limit: float) -> bool | None:
    return None if v is None else v <= limit


def _lt(v: float | None, limit: float) -> bool | None:
    return None if v is None else v < limit


def _ge(v: float | None, limit: float) -> bool | None:
    return None if v is None else v >= limit


# --------------------------------------------------------------------------- the table


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def table(clients: list[str], figures: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        cells = []
        for client in clients:
            fig = figures.get(client, {})
            cells.append("(see below)" if "unavailable" in fig else cell(client, fig))
        rows.append((label, cells))

    def cpu(name: str) -> Any:
        def cell(client: str, fig: dict[str, Any]) -> str:
            value = fig["cpu_us_per_chunk"].get(name)
            ratio = fig["cpu_ratio_to_raw"].get(name)
            if client == "raw" or ratio is None:
                return _num(value)
            return f"{_num(value)} ({ratio:.2f}x)"

        return cell

    def sched(name: str) -> Any:
        def cell(client: str, fig: dict[str, Any]) -> str:
            steps, wakeups = fig.get("sched_per_chunk", {}).get(name, (None, None))
            return "-" if steps is None else f"{steps:.2f} / {_num(wakeups, '{:.2f}')}"

        return cell

    def at100(suffix: str) -> Any:
        raw100 = figures.get("raw", {}).get(f"cpu_us_per_chunk_100_sessions{suffix}")

        def cell(client: str, fig: dict[str, Any]) -> str:
            value = fig.get(f"cpu_us_per_chunk_100_sessions{suffix}")
            if value is None:
                return "-"
            return _num(value) if client == "raw" or not raw100 else f"{_num(value)} ({value / raw100:.2f}x)"

        return cell

    def ref_ratio(client: str, fig: dict[str, Any]) -> str:
        value = fig["reference_ratio"].get("thr20")
        return "-" if client == "reference" or value is None else f"{value:.2f}x"

    def latency(name: str) -> Any:
        def cell(client: str, fig: dict[str, Any]) -> str:
            lat = fig["latency_ms"].get(name)
            return "-" if not lat else f"{lat['p50']:.2f} / {lat['p99']:.2f}"

        return cell

    def barge(client: str, fig: dict[str, Any]) -> str:
        b = fig.get("barge_in_ms")
        if not b:
            return "-"
        text = f"{_num(b['median'], '{:.2f}')} / {_num(b['max'], '{:.2f}')}"
        return text + (f" ({b['never']} never)" if b["never"] else "")

    def first_audio(client: str, fig: dict[str, Any]) -> str:
        f = fig.get("first_audio_ms")
        return "-" if not f else f"{f['median']:.2f} / {f['max']:.2f}"

    def tool(client: str, fig: dict[str, Any]) -> str:
        t = fig.get("tool_rtt_ms")
        return "-" if not t else f"{t['median']:.2f} / {t['max']:.2f}"

    def first_tool(client: str, fig: dict[str, Any]) -> str:
        t = fig.get("tool_rtt_ms")
        return "-" if not t or t.get("first_call_median") is None else f"{t['first_call_median']:.2f}"

    def sessions(suffix: str) -> Any:
        def cell(client: str, fig: dict[str, Any]) -> str:
            n = fig.get(f"sessions_per_core{suffix}")
            if n is None:
                return "failed" if fig.get(f"ramp_error{suffix}") else "-"
            return f">= {n}" if fig.get(f"sessions_capped{suffix}") else str(n)

        return cell

    row("CPU us/chunk, unpaced 20 ms (x raw)", cpu("thr20"))
    row("CPU us/chunk, unpaced 100 ms (x raw)", cpu("thr100"))
    row("CPU us/chunk, 100 real-time sessions (x raw)", at100(""))
    row("CPU us/chunk, 100 duplex sessions (x raw)", at100("_duplex"))
    row("CPU us/chunk, 1 real-time session (x raw)", cpu("rt20"))
    row("CPU us/chunk, duplex + mic (x raw)", cpu("duplex"))
    row("task steps / wake-ups per chunk, real time", sched("rt20"))
    row("task steps / wake-ups per chunk, duplex", sched("duplex"))
    row("reference CPU / this client's, 20 ms", ref_ratio)
    row("output latency p50 / p99, real time (ms)", latency("rt20"))
    row("output latency p50 / p99, duplex (ms)", latency("duplex"))
    row("time to first audio after text, med / max (ms)", first_audio)
    row("barge-in to silence, median / max (ms)", barge)
    row("audio chunks after the interruption", lambda c, f: str(f.get("late_chunks", "-")))
    row("tool round trip, median / max (ms)", tool)
    row("  first call of the process (ms)", first_tool)
    row("peak RSS (MB)", lambda c, f: _num(f.get("peak_rss_mb")))
    row("import time (s)", lambda c, f: _num(f.get("import_s"), "{:.3f}"))
    row(f"sessions per core, output only (p99 <= {LATENCY_TARGET_MS:g} ms)", sessions(""))
    row(f"sessions per core, duplex (p99 <= {LATENCY_TARGET_MS:g} ms)", sessions("_duplex"))

    headers = ["figure"] + [title(c) for c in clients]
    widths = [max(len(headers[0]), *(len(label) for label, _ in rows))]
    for i in range(len(clients)):
        widths.append(max(len(headers[i + 1]), *(len(cells[i]) for _, cells in rows)))
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for label, cells in rows:
        lines.append("  ".join([label.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)]))
    notes = []
    for client in clients:
        fig = figures.get(client, {})
        if "unavailable" in fig:
            notes.append(f"{title(client)}: unavailable: {fig['unavailable']}")
        for failure in fig.get("failures", []):
            notes.append(f"{title(client)}: a repetition failed: {failure}")
        if fig.get("incomplete"):
            notes.append(f"{title(client)}: incomplete scenarios: {', '.join(fig['incomplete'])}")
        for mode, suffix in (("output", ""), ("duplex", "_duplex")):
            if fig.get(f"ramp_error{suffix}"):
                notes.append(f"{title(client)}: {mode} sessions ramp failed: {fig[f'ramp_error{suffix}']}")
    return "\n".join([*lines, *(["", *notes] if notes else [])])


def targets_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    width = max([14, *(len(title(r["client"])) for r in rows)])
    for r in rows:
        value = r["value"]
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
        verdict = {True: "met", False: "MISSED", None: "not measured"}[r["met"]]
        lines.append(f"  {title(r['client']):<{width}} {r['target']:<50} {r['goal']:<22} {shown:>9}  {verdict}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the picture


def plot(path: str, clients: list[str], runs: list[dict[str, Any]], figures: dict[str, dict[str, Any]]) -> str:
    """Latency distributions (CDFs) per client at real time and in duplex, and
    the sessions ramp's p99. Returns a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no PNG: matplotlib is not installed (nox -s bench installs it)"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, name, heading in ((axes[0], "rt20", "real time, 20 ms deltas"), (axes[1], "duplex", "duplex (mic up)")):
        for client in clients:
            samples = sorted(
                v / 1000
                for run in runs
                if run["client"] == client and run.get("ok")
                for v in run["result"]["scenarios"].get(name, {}).get("latency_samples_us", [])
            )
            if samples:
                ys = [(i + 1) / len(samples) for i in range(len(samples))]
                ax.plot(samples, ys, label=title(client), drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_xlabel("output latency: server stamp to output sink (ms)")
        ax.set_ylabel("fraction of chunks")
        ax.set_title(heading)
        ax.axhline(0.99, color="grey", lw=0.5, ls=":")
        ax.legend()
    ax = axes[2]
    for client in clients:
        for suffix, style, what in (("", "-", "output"), ("_duplex", "--", "duplex")):
            levels = figures.get(client, {}).get(f"ramp_levels{suffix}") or []
            if levels:
                ax.plot(
                    [lv["sessions"] for lv in levels],
                    [min(lv["p99_ms"], 1000) for lv in levels],
                    marker="o",
                    ls=style,
                    label=f"{title(client)}, {what}",
                )
    ax.axhline(LATENCY_TARGET_MS, color="red", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-time sessions in one process (one core)")
    ax.set_ylabel("output latency p99 (ms)")
    ax.set_title("sessions per core (solid: output only, dashed: duplex)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
