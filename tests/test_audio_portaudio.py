"""BidiAudioIO on real PortAudio streams, on ALSA devices that need no hardware.

An ``.asoundrc`` in a temporary HOME defines two ALSA ``file`` devices: a
speaker that writes every byte it plays to a file, and a microphone that
reads a file. PortAudio reads the ALSA configuration once, when it starts,
so each scenario runs in a subprocess with that HOME; the test process's own
PortAudio is never touched.

The ALSA ``null`` device under the ``file`` plugin keeps no time: PortAudio
calls the callbacks as fast as the CPU allows. Idle silence therefore fills
megabytes of the file in a fraction of a second, which is fine: the test
looks for the scripted response in it, byte for byte, with nothing but
silence around it (and inside it only where the output counted an underrun:
a device this fast can outrun the event loop).

Skipped (with the reason) only where libportaudio is not installed; CI
installs it (``.ci/run``).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")
HAS_PORTAUDIO = ctypes.util.find_library("portaudio") is not None

needs_alsa_portaudio = pytest.mark.skipif(
    not (LINUX and HAS_PORTAUDIO),
    reason="needs PortAudio with ALSA: Linux with libportaudio2 installed (apt-get install libportaudio2)",
)

MIC_FRAMES = 16000  # one second at the model's 16 kHz
RESPONSE_FRAMES = 7200  # 300 ms at the model's 24 kHz


def mic_pcm() -> bytes:
    return ((np.arange(MIC_FRAMES) % 1000) + 1).astype("<i2").tobytes()


def response_pcm() -> bytes:
    return ((np.arange(RESPONSE_FRAMES) % 2000) + 1).astype("<i2").tobytes()


def alsa_home(tmp_path: Path) -> Path:
    """A HOME whose .asoundrc has a file-backed speaker and microphone."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "mic.raw").write_bytes(mic_pcm())
    (home / ".asoundrc").write_text(
        f"""
pcm.bidi_speaker {{
    type file
    slave.pcm "null"
    file "{tmp_path / "played.raw"}"
    format "raw"
}}
pcm.bidi_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{tmp_path / "mic.raw"}"
    format "raw"
}}
ctl.!default {{
    type null
}}
"""
    )
    return home


def run_python(code: str, home: Path, *args: str, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------- the scripted conversation (runs in the subprocess)


def conversation_main(backend: str) -> None:
    """A voice conversation on the ALSA file devices; prints what it saw as JSON."""
    import faulthandler
    import threading

    import anyio

    from adapters.audio import BidiAudioIO
    from adapters.audio._portaudio import load_sounddevice
    from adapters.testing import ScriptedModel, Step
    from bidi_core import BidiAgent
    from ports.events import (
        BidiAudioInputEvent,
        BidiAudioStreamEvent,
        BidiResponseCompleteEvent,
        BidiResponseStartEvent,
    )

    faulthandler.dump_traceback_later(30, exit=True)  # a hang shows every thread's stack, not just a timeout
    load_sounddevice()  # PortAudio starts here, before the threads are counted

    def native_threads() -> set[str]:
        return set(os.listdir("/proc/self/task"))

    pcm = response_pcm()
    chunks = [pcm[i : i + 960] for i in range(0, len(pcm), 960)]
    model = ScriptedModel(
        [
            Step(
                emit=[
                    BidiResponseStartEvent("r1"),
                    *(BidiAudioStreamEvent(audio=c, sample_rate=24000, response_id="r1") for c in chunks),
                    BidiResponseCompleteEvent("r1", "complete"),
                ]
            )
        ]
    )
    # The null device keeps no time: the microphone delivers blocks as fast as the CPU allows,
    # so the buffers are made big enough that nothing of the first second is dropped.
    agent = BidiAgent(model=model, max_buffered_audio=1_000_000)
    io = BidiAudioIO(input_device="bidi_mic", output_device="bidi_speaker", input_buffer_size=1_000_000)

    def heard() -> bytes:
        return b"".join(e.audio for e in model.sent if isinstance(e, BidiAudioInputEvent))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, [io.input()], [io.output()])
            with anyio.fail_after(20):
                while len(heard()) < 2 * MIC_FRAMES or io.output().stats.played_ms < 300:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
            agent.request_stop()

    before = native_threads()
    anyio.run(main, backend=backend)
    ours = {str(t.native_id) for t in threading.enumerate()}  # Python threads: the event loop's worker pool
    out, inp = io.output(), io.input()
    report = {
        "mic_prefix_ok": heard()[: 2 * MIC_FRAMES] == mic_pcm(),
        "input_config": [inp.stream_config.sample_rate, inp.stream_config.channels] if inp.stream_config else None,
        "output_config": [out.stream_config.sample_rate, out.stream_config.channels] if out.stream_config else None,
        "dropped": inp.stats.dropped_blocks + agent.dropped_audio,
        "played_ms": out.stats.played_ms,
        "underruns": out.stats.underruns,
        "interruptions": out.stats.interruptions,
        "leftover_native_threads": sorted(native_threads() - before - ours),
        "phase": agent.phase.value,
    }
    print("REPORT " + json.dumps(report))


# ---------------------------------------------------------------- tests


@needs_alsa_portaudio
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_scripted_conversation_plays_byte_for_byte_to_an_alsa_file_device(tmp_path: Path, backend: str) -> None:
    home = alsa_home(tmp_path)
    code = "import sys; from tests.test_audio_portaudio import conversation_main; conversation_main(sys.argv[1])"
    result = run_python(code, home, backend)
    assert result.returncode == 0, result.stderr[-5000:]
    report: dict[str, Any] = json.loads(result.stdout.split("REPORT ", 1)[1])
    # Real PortAudio streams opened at the model's formats (the file device takes any rate).
    assert report["input_config"] == [16000, 1]
    assert report["output_config"] == [24000, 1]
    # The microphone's first second reached the model, byte for byte.
    assert report["dropped"] == 0
    assert report["mic_prefix_ok"] is True
    # The speaker played the response, byte for byte, with only silence around it. (Every
    # sample of the response is non-zero.) The null device keeps no time, so it may have
    # asked for audio faster than the loop delivered it: silence inside the response is
    # allowed only if the output counted underruns.
    played = np.fromfile(tmp_path / "played.raw", dtype="<i2")
    sound = played[played != 0]
    assert sound.tobytes() == response_pcm()
    audible = np.nonzero(played)[0]
    gaps = int(np.count_nonzero(played[audible[0] : audible[-1] + 1] == 0))
    assert gaps == 0 or report["underruns"] > 0, (gaps, report["underruns"])
    assert report["played_ms"] == 300.0
    # After run() returned, no PortAudio stream thread was left behind.
    assert report["leftover_native_threads"] == []
    assert report["phase"] == "closed"


@needs_alsa_portaudio
def test_python_m_adapters_audio_lists_the_devices(tmp_path: Path) -> None:
    home = alsa_home(tmp_path)
    result = run_python("import runpy; runpy.run_module('adapters.audio', run_name='__main__')", home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Input devices:"
    assert "index  name" in lines[1]
    assert any(" bidi_mic " in line and "ALSA" in line and " Hz" in line for line in lines)
    assert any(" bidi_speaker " in line for line in lines[lines.index("Output devices:") :])
    assert "BidiAudioIO(input_device=<index>)" in result.stdout


@needs_alsa_portaudio
def test_no_devices_gives_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    code = """
import anyio
from adapters.audio import BidiAudioIO, AudioUnavailableError, list_devices
from adapters.testing import ScriptedModel
from bidi_core import BidiAgent
if list_devices():
    print("HAS DEVICES")
    raise SystemExit(0)
io = BidiAudioIO()
try:
    anyio.run(lambda: BidiAgent(model=ScriptedModel([])).run(inputs=[io.input()], outputs=[io.output()]))
except AudioUnavailableError as exc:
    print("ERROR", exc)
"""
    result = run_python(code, home)
    if "HAS DEVICES" in result.stdout:
        pytest.skip("this machine has audio devices, so 'no devices' cannot be shown here")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR no audio output device found")
    assert "WavFileDevice" in result.stdout
    listing = run_python("import runpy; runpy.run_module('adapters.audio', run_name='__main__')", home)
    assert listing.returncode == 1
    assert listing.stderr.startswith("No audio devices found")
    assert "Traceback" not in listing.stderr


@pytest.mark.skipif(not LINUX, reason="sounddevice bundles PortAudio on macOS and Windows: it cannot be missing there")
def test_missing_portaudio_says_what_to_install(tmp_path: Path) -> None:
    # What a machine without libportaudio2 looks like to sounddevice: ctypes finds no library.
    missing = "import ctypes.util; ctypes.util.find_library = lambda name: None\n"
    code = (
        missing
        + """
import anyio
from adapters.audio import BidiAudioIO, AudioUnavailableError
from adapters.testing import ScriptedModel
from bidi_core import BidiAgent
io = BidiAudioIO()
try:
    anyio.run(lambda: BidiAgent(model=ScriptedModel([])).run(inputs=[io.input()], outputs=[io.output()]))
except AudioUnavailableError as exc:
    print("ERROR", exc)
"""
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR PortAudio is not installed")
    assert "apt-get install libportaudio2" in result.stdout
    assert "brew install portaudio" in result.stdout
    listing = run_python(missing + "import runpy; runpy.run_module('adapters.audio', run_name='__main__')", tmp_path)
    assert listing.returncode == 1
    assert "libportaudio2" in listing.stderr
    assert "Traceback" not in listing.stderr
    # Importing the package needs no PortAudio.
    assert run_python(missing + "import adapters.audio", tmp_path).returncode == 0
