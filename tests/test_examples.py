"""The README's main example and the foundation examples run and end by themselves.

Each runs in a subprocess, as a user would start it, on asyncio and on Trio.
The quickstart runs offline (no ``OPENAI_API_KEY``): the simulator, the real
adapter over a real WebSocket, a scripted voice, a tool call, a barge-in and
``stop_conversation``; its reply audio goes to a WAV file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from tests.support import run_quickstart_offline, with_default_sigint

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
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    run_quickstart_offline("quickstart", backend, tmp_path / "reply.wav", env)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_text_conversation_example(backend: str) -> None:
    out = run_example("text_conversation", "--backend", backend)
    assert "[tool] get_weather -> success: The weather in Paris is sunny and 22°C" in out
    assert out.splitlines()[-2:] == ["[conversation ended: user_request]", "History: 8 messages"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_manual_start_stop_example(backend: str) -> None:
    out = run_example("manual_start_stop", "--backend", backend)
    assert out.strip() == "assistant: Python is a programming language that is easy to read and write."


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_ends_a_running_conversation_cleanly(backend: str) -> None:
    """A real SIGINT, as Ctrl+C sends it, while run() is waiting for the user:
    the except/finally of the reference's snippet run and the process exits 0
    (no traceback, nothing left running to keep it alive)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    with subprocess.Popen(
        # Started as from a shell prompt, even when pytest itself inherited an ignored SIGINT.
        with_default_sigint([sys.executable, str(ROOT / "examples" / "run_until_ctrl_c.py"), "--backend", backend]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:  # the answer arrives, then the conversation waits for more
                lines.append(line.rstrip("\n"))
                if line.startswith("Assistant:"):
                    break
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:  # failed: leave no conversation running behind the test
                proc.kill()
    lines += out.splitlines()
    assert proc.returncode == 0, err[-3000:]
    assert "Assistant: Paris is the capital of France." in lines
    assert lines[-1] == "Conversation cancelled by user"
    assert lines.count("Conversation cancelled by user") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_handling_interruptions_example(backend: str) -> None:
    lines = run_example("handling_interruptions", "--backend", backend).splitlines()
    cut = next(i for i, line in enumerate(lines) if line.startswith("User interrupted: user_speech (response "))
    story = lines[cut].split("(response ")[1].split(" ")[0]
    assert f"[response {story}: interrupted]" in lines[cut:]
    assert lines[-2:] == ["assistant: Of course, I will stop the story.", lines[-1]]
    assert lines[-1].endswith(": complete]") and story not in lines[-1]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_phone_agent_example_takes_a_simulated_call_offline(backend: str, tmp_path: Path) -> None:
    wav = tmp_path / "heard.wav"
    out = run_example("phone_agent", "--offline", "--backend", backend, "--wav", str(wav))
    assert "[call] the caller talked over the agent: the line is cleared" in out
    assert "[call] assistant: Thank you for calling. Goodbye!" in out
    assert "[carrier] the agent hung up" in out
    with wave.open(str(wav), "rb") as heard:
        assert heard.getframerate() == 8000 and heard.getnframes() > 8000  # over a second of the agent's voice
