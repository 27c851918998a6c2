"""How fast audio crosses between a device's thread and the event loop.

Runs BidiAudioIO against FakeAudioDevice streams that keep their own time on
their own threads (no test stepping them), on asyncio and on Trio, and prints:

* **handoff**: from the moment the device thread calls the microphone
  callback to the moment ``await input()`` returns that block's event on the
  loop (the loop is idle and waiting, as in a conversation);
* **callback duration**: how long the microphone callback takes (copy,
  buffer, wake the loop) and the speaker's (copy from the buffer, pad with
  silence): the time they hold the device's thread;
* **interruption handled**: how long ``await output(BidiInterruptionEvent)``
  takes (it discards the queue and the block in flight);
* **interruption to silence**: from handing the interruption to the output
  to the return of the first speaker callback that plays silence. It is
  bounded by one device block (20 ms here), since the device asks for audio
  once per block; the device's own output latency comes on top on hardware;
* **late samples**: samples of the interrupted response in blocks whose
  callback started after the interruption was handled (must be 0).

    python benchmarks/audio_handoff.py [--blocks 2000] [--interruptions 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import time
from typing import Any

import anyio

from adapters.audio import BidiAudioIO
from adapters.testing import FakeAudioDevice
from ports.audio import AudioFormat
from ports.events import BidiAudioStreamEvent, BidiInterruptionEvent
from ports.io import PlaybackReport
from ports.model import ModelCapabilities

CAPS = ModelCapabilities(input_audio=AudioFormat(16000), output_audio=AudioFormat(24000))


class View:
    capabilities = CAPS

    def report_playback(self, report: PlaybackReport) -> None:
        pass


def percentiles(values_ns: list[int]) -> tuple[float, float, float]:
    ordered = sorted(values_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, p99 / 1000, ordered[-1] / 1000


async def measure_handoff(blocks: int) -> dict[str, Any]:
    # 160 frames at 16 kHz = 10 ms blocks, run 5x faster than real time: a block every 2 ms.
    dev = FakeAudioDevice(pace=5.0)
    inp = BidiAudioIO(backend=dev, input_frames_per_buffer=160).input()
    await inp.start(View())
    mic = dev.input_stream
    for i in range(1, blocks + 50):
        mic.feed(struct.pack("<h", i) * 160)  # each block says which one it is
    arrived: dict[int, int] = {}
    try:
        while len(arrived) < blocks:
            event = await inp()
            now = time.perf_counter_ns()
            arrived.setdefault(struct.unpack_from("<h", event.audio)[0], now)
    finally:
        await inp.stop()
    called = {struct.unpack_from("<h", block)[0]: start for start, _, block in mic.history()}
    handoff = [arrived[i] - called[i] for i in sorted(arrived) if i > 10]  # past the start-up
    callback = [end - start for start, end, _ in mic.history()[10:]]
    return {"handoff": handoff, "callback": callback}


async def measure_interruption(rounds: int) -> dict[str, Any]:
    dev = FakeAudioDevice(pace=1.0)  # real time: a 480-frame block (20 ms at 24 kHz) every 20 ms
    out = BidiAudioIO(backend=dev, output_frames_per_buffer=480).output()
    await out.start(View())
    speaker = dev.output_stream
    handled: list[int] = []
    to_silence: list[int] = []
    late = 0
    try:
        for round_ in range(1, rounds + 1):
            value = round_ % 30000 + 1
            for _ in range(10):
                await out(BidiAudioStreamEvent(audio=struct.pack("<h", value) * 720, response_id=f"r{round_}"))
            mark = speaker.callbacks + 1 + round_ % 3
            while speaker.callbacks < mark:  # play part of it first  # noqa: ASYNC110
                await anyio.sleep(0.001)
            await anyio.sleep(random.uniform(0, 0.02))  # then interrupt anywhere within a block
            start = time.perf_counter_ns()
            await out(BidiInterruptionEvent("user_speech", f"r{round_}"))
            done = time.perf_counter_ns()
            handled.append(done - start)
            while True:
                history = [h for h in speaker.history() if h[1] > start]
                silent = [end for _, end, block in history if not any(block)]
                if silent:
                    to_silence.append(silent[0] - start)
                    break
                await anyio.sleep(0.001)
            sample = struct.pack("<h", value)
            late += sum(block.count(sample) for s, _, block in speaker.history() if s > done)
        callback = [end - start for start, end, _ in speaker.history()]
    finally:
        await out.stop()
    return {"handled": handled, "to_silence": to_silence, "late": late, "callback": callback}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--interruptions", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for backend in ("asyncio", "trio"):
        handoff = anyio.run(measure_handoff, args.blocks, backend=backend)
        interruption = anyio.run(measure_interruption, args.interruptions, backend=backend)
        rows.append(
            (backend, "input callback -> loop handoff", len(handoff["handoff"]), *percentiles(handoff["handoff"]))
        )
        rows.append((backend, "input callback duration", len(handoff["callback"]), *percentiles(handoff["callback"])))
        speaker = interruption["callback"]
        rows.append((backend, "output callback duration", len(speaker), *percentiles(speaker)))
        rows.append(
            (backend, "interruption handled", len(interruption["handled"]), *percentiles(interruption["handled"]))
        )
        rows.append(
            (
                backend,
                "interruption -> silent block",
                len(interruption["to_silence"]),
                *percentiles(interruption["to_silence"]),
            )
        )
        rows.append((backend, "late samples after interruption", interruption["late"], None, None, None))
    print(f"{'backend':<8} {'measure':<34} {'n':>6} {'p50 µs':>10} {'p99 µs':>10} {'max µs':>10}")
    for backend, name, n, p50, p99, worst in rows:
        if p50 is None:
            print(f"{backend:<8} {name:<34} {n:>6}")
        else:
            print(f"{backend:<8} {name:<34} {n:>6} {p50:>10.1f} {p99:>10.1f} {worst:>10.1f}")


if __name__ == "__main__":
    main()
