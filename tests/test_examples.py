"""The README's main example and the foundation examples run and end by themselves.

Each runs in a subprocess, as a user would start it, on asyncio and on Trio.
The quickstart runs offline (no ``OPENAI_API_KEY``): the simulator, the real
adapter over a real WebSocket, a scripted voice, a tool call, a barge-in and
``stop_conversation``; its reply audio goes to a WAV file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=45,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_quickstart_runs_offline_with_a_tool_and_a_barge_in(backend: str, tmp_path: Path) -> None:
    wav = tmp_path / "reply.wav"
    out = run_example("quickstart", "--backend", backend, "--wav", str(wav))
    lines = out.splitlines()
    assert "You: What's the weather like in Paris?" in lines
    assert '[tool] get_weather({"location": "Paris"})' in lines
    interrupted = lines.index("[interrupted]")
    assert lines.index("You: Sorry, that's all I needed. Please stop the conversation.") > interrupted
    assert lines[-2:] == ["[conversation ended: user_request]", f"The assistant's audio is in {wav}"]
    with wave.open(str(wav), "rb") as reply:
        assert reply.getframerate() == 24000
        seconds = reply.getnframes() / 24000
    # Some of the answer was played before the user talked over it, not all ten seconds of it.
    assert 1.0 < seconds < 9.0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_text_conversation_example(backend: str) -> None:
    out = run_example("text_conversation", "--backend", backend)
    assert "[tool] get_weather -> success: The weather in Paris is sunny and 22°C" in out
    assert out.splitlines()[-2:] == ["[conversation ended: user_request]", "History: 8 messages"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_manual_start_stop_example(backend: str) -> None:
    out = run_example("manual_start_stop", "--backend", backend)
    assert out.strip() == "assistant: Python is a programming language that is easy to read and write."
