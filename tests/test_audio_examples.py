"""The audio examples run, end by themselves, and play the right sound.

Each voice example runs on asyncio and on Trio with ``--wav``, which writes
what the speakers would play to a WAV file at the pace of real time; the test
finds the scripted answer's tone in it and checks its pitch and length (a
wrong rate would change both). They all start at once, since each mostly
waits for its audio clock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKENDS = ("asyncio", "trio")

# example -> (seconds of tone the scripted model speaks, its pitch in Hz, extra arguments)
VOICE_EXAMPLES: dict[str, tuple[float, float, list[str]]] = {
    "voice_conversation": (0.8, 440, []),
    "voice_and_text": (0.6, 330, []),
    "audio_buffer_sizes": (1.2, 392, []),
    "audio_device_selection": (0.5, 523, ["--input-device", "0", "--output-device", "wav output"]),
}


def env(home: Path | None = None) -> dict[str, str]:
    variables = {**os.environ, "PYTHONPATH": str(ROOT)}
    if home is not None:
        variables["HOME"] = str(home)
    return variables


@pytest.fixture(scope="module")
def voice_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[int, str, Path]]:
    """Start every voice example on both backends at once; collect (exit code, output, wav)."""
    tmp = tmp_path_factory.mktemp("examples")
    started = {}
    for name, (_, _, extra) in VOICE_EXAMPLES.items():
        for backend in BACKENDS:
            wav = tmp / f"{name}-{backend}.wav"
            command = [sys.executable, str(EXAMPLES / f"{name}.py"), "--wav", str(wav), "--backend", backend, *extra]
            process = subprocess.Popen(
                command, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            started[name, backend] = (process, wav)
    results = {}
    try:
        for key, (process, wav) in started.items():
            output, _ = process.communicate(timeout=45)
            results[key] = (process.returncode, output, wav)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VOICE_EXAMPLES)
def test_voice_example_plays_its_answer_at_the_right_speed(
    voice_runs: dict[tuple[str, str], tuple[int, str, Path]], name: str, backend: str
) -> None:
    code, output, wav = voice_runs[name, backend]
    assert code == 0, output
    assert "Traceback" not in output
    seconds, pitch, _ = VOICE_EXAMPLES[name]
    with wave.open(str(wav), "rb") as recording:
        assert (recording.getframerate(), recording.getnchannels(), recording.getsampwidth()) == (24000, 1, 2)
        played = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    audible = np.nonzero(played)[0]
    tone = played[audible[0] : audible[-1] + 1].astype(float)
    assert len(tone) / 24000 == pytest.approx(seconds, abs=0.002)
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone))))
    assert np.fft.rfftfreq(len(tone), 1 / 24000)[int(np.argmax(spectrum))] == pytest.approx(pitch, abs=3)


def test_voice_examples_report_what_they_did(voice_runs: dict[tuple[str, str], tuple[int, str, Path]]) -> None:
    assert "Assistant said: Hello!" in voice_runs["voice_conversation", "trio"][1]
    assert "Played 0.8 s of the assistant's voice (0 underruns)" in voice_runs["voice_conversation", "asyncio"][1]
    text = voice_runs["voice_and_text", "asyncio"][1]
    assert "Assistant: Hi! You can hear me and read me at the same time." in text
    assert "[conversation ended: user_request]" in text
    sizes = voice_runs["audio_buffer_sizes", "trio"][1]
    assert "microphone: 48000 Hz x 1, 512 frames per block" in sizes  # the model's 48 kHz input
    assert "speakers: played 1200 ms, 0 underruns, waited for room" in sizes
    chosen = voice_runs["audio_device_selection", "asyncio"][1]
    assert "Played to 1: 'WAV output (audio_device_selection-asyncio.wav)'." in chosen


def test_device_selection_names_the_devices_when_the_choice_is_wrong(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLES / "audio_device_selection.py"), "--wav", str(tmp_path / "x.wav")]
    result = subprocess.run(
        [*command, "--output-device", "hdmi"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=45
    )
    assert result.returncode == 1
    assert "error: no output device is called 'hdmi'; output devices: 1: 'WAV output (x.wav)'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_audio_devices_lists_or_says_what_is_missing(tmp_path: Path, backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "list_audio_devices.py"), "--backend", backend],
        cwd=ROOT,
        env=env(tmp_path),  # an empty HOME: no ALSA configuration of the user's
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert "Traceback" not in result.stderr
    if result.returncode == 0:  # a machine with audio devices
        assert result.stdout.startswith("Input devices:")
        assert "BidiAudioIO(input_device_index=1, output_device_index=2)" in result.stdout
    else:
        assert result.returncode == 1
        assert "No audio devices found" in result.stdout or "install PortAudio" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses an ALSA configuration")
def test_list_audio_devices_shows_alsa_devices(tmp_path: Path) -> None:
    import ctypes.util

    if ctypes.util.find_library("portaudio") is None:
        pytest.skip("libportaudio2 is not installed (apt-get install libportaudio2)")
    (tmp_path / ".asoundrc").write_text(
        'pcm.bidi_speaker {\n type file\n slave.pcm "null"\n file "/dev/null"\n format "raw"\n}\n'
        "ctl.!default {\n type null\n}\n"
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "list_audio_devices.py"), "--backend", "trio"],
        cwd=ROOT,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert result.returncode == 0, result.stderr
    output_section = result.stdout.split("Output devices:")[1]
    assert " bidi_speaker " in output_section
    assert "Hz  ALSA" in output_section
