"""The demo page in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) with a fake
microphone playing a WAV, against ``python -m adapters.web`` (asyncio or Trio workers: the test's backend)
and the OpenAI simulator.

The voice asks a question, the simulator hears it and answers with ten seconds of audio, the page plays it
and reports what it played; the voice talks over the answer, the page clears its buffer, and the simulator
is told to truncate the answer at a position the page reported as played.

Nothing is skipped: without chromium or playwright the test fails and says what to install.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario
from tests.web_support import SIM_KEY, server_process, wait_ready

CHROMIUM = "/usr/bin/chromium"
REPLY_MS = 10000


def chromium_path() -> str:
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.fail("the browser test needs Debian's chromium: apt-get install chromium (.ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser test needs Playwright for Python: pip install playwright (in the dev extra)")
    return found


def voice(path: Path, rate: int = 48000) -> None:
    """A question (1 s of a loud 200 Hz tone), 4.5 s of quiet, then 1 s of talking over the answer."""

    def tone(ms: int) -> bytes:
        scale, step = 0.5 * 32767, 2 * math.pi * 200 / rate
        return b"".join(struct.pack("<h", round(scale * math.sin(step * i))) for i in range(ms * rate // 1000))

    def quiet(ms: int) -> bytes:
        return bytes(ms * rate // 1000 * 2)

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(quiet(300) + tone(1000) + quiet(4500) + tone(1000) + quiet(30000))


STATS = """() => {
  const c = window.bidiDemo;
  return JSON.stringify({played: c.stats.played, reported: c.stats.reported, clears: c.stats.clears,
                         interruptions: c.stats.interruptions, framesSent: c.stats.framesSent,
                         errors: c.stats.errors, log: document.getElementById("log").innerText});
}"""


def drive(chromium: str, url: str, wav: Path) -> dict[str, Any]:
    """In a worker thread: open the page, press Start, wait for the reply to play and for the barge-in."""
    from playwright.sync_api import sync_playwright

    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.click("#start")
            # The reply plays: the page has played more than half a second of some response.
            page.wait_for_function(
                "() => window.bidiDemo && Object.values(window.bidiDemo.stats.played).some((ms) => ms > 500)",
                timeout=40000,
            )
            # The barge-in: the page was told of the interruption and its playback buffer was cleared.
            page.wait_for_function("() => window.bidiDemo.stats.clears.length > 0", timeout=40000)
            page.wait_for_timeout(300)  # a few more render quanta: nothing of the cleared response may play
            stats: dict[str, Any] = json.loads(page.evaluate(STATS))
            stats["page_errors"] = errors
            return stats
        finally:
            browser.close()


@pytest.mark.timeout(150)
async def test_talk_listen_and_barge_in_from_chromium(anyio_backend: str, tmp_path: Path) -> None:
    chromium = chromium_path()
    wav = tmp_path / "voice.wav"
    voice(wav)
    scenario = Scenario(
        rules=[Rule(spoken_turn=0, reply=Reply(say="A long answer to talk over.", audio_ms=REPLY_MS))],
        transcripts=["What is the weather like?", "Stop, please."],
    )
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=scenario) as sim:
        env = {"OPENAI_API_KEY": SIM_KEY}
        args = ["--worker-class", anyio_backend, "--provider", "openai", "--base-url", sim.base_url]
        with server_process(*args, env=env, log=tmp_path / "server.log") as (_proc, port):
            with anyio.fail_after(120):
                await wait_ready(port)
                stats = await anyio.to_thread.run_sync(drive, chromium, f"http://127.0.0.1:{port}/", wav)
                await sim.wait_until(lambda: bool(sim.truncations))
    assert not stats["page_errors"] and not stats["errors"], stats
    sent = sim.connections[0].sent_types()
    # The question was heard: the simulator's turn detection found speech, then the barge-in.
    assert sent.count("input_audio_buffer.speech_started") >= 2, sent
    assert stats["framesSent"] > 0
    assert stats["interruptions"] >= 1
    clear = stats["clears"][0]
    rid = clear["rid"]
    # The reply played in the page, and the barge-in cleared audio that was still waiting to play.
    assert 500 < clear["playedAtClear"] < REPLY_MS
    assert clear["discardedMs"] > 0
    # Nothing of the interrupted response played after the clear.
    assert stats["played"][rid] == pytest.approx(clear["playedAtClear"])
    # The simulator truncated the answer at a position the page had reported as played, never beyond it.
    truncation = sim.truncations[0]
    assert truncation.audio_ms == REPLY_MS
    assert truncation.audio_end_ms in {int(ms) for ms in stats["reported"][rid]}, (truncation, clear)
    assert 0 < truncation.audio_end_ms <= clear["playedAtClear"]
    assert "Assistant: A long answer to talk over." in stats["log"]
