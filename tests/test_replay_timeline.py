"""The timeline printer (``python -m adapters.testing.replay FILE``) on a small recording written here, line by line.

One typed line, an answer whose first audio comes 250 ms after it, and the user
speaking over the answer (OpenAI's wire): the printed timeline is checked whole.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.testing.replay import load_recording
from adapters.testing.replay.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _audio(ms: int, rate: int = 24000) -> str:
    return base64.b64encode(bytes(rate * 2 * ms // 1000)).decode("ascii")


def _frame(t: float, direction: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"record": "frame", "t": t, "connection": 1, "dir": direction, "kind": "text", "message": message}


RECORDS: list[dict[str, Any]] = [
    {
        "record": "recording",
        "format": "bidi-core-recording",
        "version": 1,
        "provider": "openai",
        "model_id": "gpt-realtime",
        "settings": {"provider_config": {}, "max_connection_s": 3600.0},
        "audio": "kept",
        "started": "2025-01-01T00:00:00.000+00:00",
    },
    {
        "record": "open",
        "t": 0.0,
        "connection": 1,
        "connection_id": "openai-1",
        "url": "wss://api.openai.com/v1/realtime",
    },
    _frame(0.005, "in", {"type": "session.created", "session": {}}),  # the service's first event, always
    _frame(0.010, "out", {"type": "session.update", "session": {"type": "realtime"}}),
    _frame(
        0.100,
        "out",
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        },
    ),
    _frame(0.101, "out", {"type": "response.create"}),
    _frame(0.300, "in", {"type": "response.created", "response": {"id": "resp_1"}}),
    _frame(
        0.350,
        "in",
        {"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "delta": _audio(100)},
    ),
    _frame(
        0.360,
        "in",
        {
            "type": "response.output_audio_transcript.done",
            "response_id": "resp_1",
            "item_id": "item_1",
            "transcript": "Hi there",
        },
    ),
    _frame(0.400, "out", {"type": "input_audio_buffer.append", "audio": _audio(200)}),
    _frame(0.420, "out", {"type": "input_audio_buffer.append", "audio": _audio(200)}),
    _frame(0.450, "in", {"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_2"}),
    _frame(0.460, "in", {"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}),
    {"record": "end", "t": 0.5, "connection": 1, "by": "client"},
]

EXPECTED = """\
openai gpt-realtime: 1 connection(s), 0.500 s, audio kept, recorded 2025-01-01T00:00:00.000+00:00

   0.000           #1  conn   connection 1 opens (openai-1)
   0.100           #1  user   says "hello"
   0.300           #1  model  response resp_1 starts
   0.350           #1  model  first audio of resp_1 (250 ms after the user's last input)
   0.360           #1  model  says "Hi there"
   0.400-   0.420  #1  user   audio, 400 ms sent
   0.450           #1  model  hears the user start speaking (barge-in)
   0.460           #1  model  response resp_1 ends: interrupted, 100 ms of audio
   0.500           #1  conn   connection closed by the client

time to first audio: 1 response(s), median 250 ms, max 250 ms
"""


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "call.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def test_the_timeline_of_a_known_recording(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(recording)]) == 0
    assert capsys.readouterr().out == EXPECTED


def test_the_command_prints_it_and_draws_a_png(recording: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the plot extra; the timeline itself needs nothing
    png = tmp_path / "timeline.png"
    done = subprocess.run(
        [sys.executable, "-m", "adapters.testing.replay", str(recording), "--png", str(png)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_file_that_is_not_a_recording_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n')
    assert main([str(path)]) == 2
    assert "not a bidi-core recording" in capsys.readouterr().err


def test_a_recording_cut_off_mid_line_is_read_up_to_the_cut(recording: Path) -> None:
    text = recording.read_text()
    recording.write_text(text[: text.rindex('{"record": "end"') + 20])  # a crash while writing the last line
    loaded = load_recording(recording)
    assert loaded.connections[0].end is None
    assert len(loaded.connections[0].frames) == len(RECORDS) - 3
