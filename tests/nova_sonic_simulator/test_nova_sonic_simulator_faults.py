"""The Nova Sonic simulator's limits and faults, HTTP/2 framing and flow control, and the demo server.

Driven by the independent client of ``client.py``; each test names the source it follows.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc
import pytest

from adapters.testing.nova_sonic_simulator import (
    Fault,
    NovaSonicSimulator,
    Reply,
    Scenario,
)
from tests.nova_sonic_simulator.client import (
    TIMEOUT,
    _open_and_start,
    connect,
)

# ---------------------------------------------------------------------------- limits and faults


async def test_stream_limit_ends_the_stream() -> None:
    """botocore's model: the stream stays open 8 minutes (scaled down here); then the service ends it."""
    async with NovaSonicSimulator(stream_lifetime_s=0.3) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.exceptions[0][0] == "modelTimeoutException"  # what users report at the limit
        assert client.exceptions[0][1] == "Model has timed out in processing the request. Try your request again."
        assert sim.streams[0].ended_by == "exception"


async def test_silence_timeout_mentions_531() -> None:
    """No input for ~175 s (scaled down) => ValidationException with InternalErrorCode=531
    (docs/protocols/nova_sonic.md#limits)."""
    async with NovaSonicSimulator(silence_timeout_s=0.3) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.exceptions[0][0] == "validationException"
        assert "InternalErrorCode=531" in client.exceptions[0][1]
        assert sim.streams[0].exception == {"type": "validationException", "message": client.exceptions[0][1]}


async def test_throttling_refuses_requests_then_recovers() -> None:
    """A throttled request gets HTTP 429 ThrottlingException; the next one is served."""
    async with NovaSonicSimulator(faults=[Fault(kind="throttling", times=1)]) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.wait_for(lambda: client.ended)
            assert (client.status, client.response_headers["x-amzn-errortype"]) == (429, "ThrottlingException")
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "hi")
            await client.wait_for(lambda: client.count("usageEvent") == 1)


@pytest.mark.parametrize(
    ("kind", "exception_type"),
    [
        ("model_timeout", "modelTimeoutException"),
        ("throttling", "throttlingException"),
        ("validation", "validationException"),
        ("internal", "internalServerException"),
    ],
)
async def test_exception_fault_after_events(kind: Any, exception_type: str) -> None:
    """Modeled exceptions arrive as event-stream exception messages with a message
    (docs/protocols/nova_sonic.md#exceptions)."""
    async with NovaSonicSimulator(faults=[Fault(kind=kind, after_events=3)]) as sim, connect(sim) as client:
        await _open_and_start(client)
        await client.wait_for(lambda: client.ended)
        assert client.status == 200
        assert client.exceptions[0][0] == exception_type and client.exceptions[0][1]
        assert len(sim.streams[0].events) == 3


async def test_rst_stream_fault() -> None:
    """RST_STREAM mid-stream (docs/protocols/nova_sonic.md#http2-transport: clients must handle StreamReset)."""
    async with NovaSonicSimulator(faults=[Fault(kind="rst", after_events=1)]) as sim, connect(sim) as client:
        await client.open()
        await client.send("sessionStart", {"inferenceConfiguration": {}})
        await client.wait_for(lambda: client.reset_code is not None)
        assert client.reset_code == 2
        assert sim.streams[0].ended_by == "rst"


async def test_goaway_fault() -> None:
    """GOAWAY then the connection closes (docs/protocols/nova_sonic.md#http2-transport)."""
    async with NovaSonicSimulator(faults=[Fault(kind="goaway", after_events=1, error_code=0)]) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.send("sessionStart", {"inferenceConfiguration": {}})
            await client.wait_for(lambda: client.goaway_code is not None and client.ended)
            assert client.goaway_code == 0
        assert sim.streams[0].ended_by == "goaway"


# ---------------------------------------------------------------------------- framing and flow control


@pytest.mark.parametrize("data_frame_bytes", [None, 100])
async def test_output_messages_split_across_data_frames(data_frame_bytes: int | None) -> None:
    """Messages straddle DATA frames; a 500 ms audio chunk (~43 KB) exceeds the 16 KiB frame
    (docs/protocols/nova_sonic.md#http2-transport)."""
    scenario = Scenario(default=Reply(say="Long.", audio_ms=1000))
    sim = NovaSonicSimulator(scenario=scenario, audio_chunk_ms=500, data_frame_bytes=data_frame_bytes)
    async with sim, connect(sim) as client:
        await _open_and_start(client)
        await client.text_content("USER", "hi")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert client.count("audioOutput") == 2
        assert len(base64.b64decode(client.bodies("audioOutput")[0]["content"])) == 24_000
        assert client.data_frames >= len(client.received) + 4  # each audio message took three or more frames
        if data_frame_bytes is not None:
            assert client.data_frames > 43_000 * 2 // 100


async def test_small_server_window_makes_the_client_wait() -> None:
    """The simulator grants a small window and updates it lazily: the client must wait for WINDOW_UPDATE."""
    big = "x" * 20_000
    async with NovaSonicSimulator(initial_window_size=4096) as sim, connect(sim) as client:
        await client.open()
        await client.wait_for(lambda: client.h2.remote_settings.initial_window_size == 4096)
        await client.start(system=big)
        await sim.wait_until(lambda: sim.streams[0].system_prompt is not None)
        assert sim.streams[0].system_prompt == big
        assert client.window_waits > 0


async def test_simulator_respects_the_client_window() -> None:
    """A client with a 2 KiB receive window: the simulator waits for its WINDOW_UPDATEs and loses nothing."""
    scenario = Scenario(default=Reply(say="Some audio.", audio_ms=1000))
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim, receive_window=2048) as client:
        await _open_and_start(client)
        await client.text_content("USER", "hi")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        pcm = b"".join(base64.b64decode(b["content"]) for b in client.bodies("audioOutput"))
        assert len(pcm) == 48_000
        assert sim.streams[0].window_waits > 0


async def test_connection_without_h2_alpn_is_closed() -> None:
    """The endpoint speaks HTTP/2 only (ALPN ``h2``, docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator() as sim:
        ctx = sim.client_ssl_context()
        ctx.set_alpn_protocols(["http/1.1"])
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
            stream = await anyio.connect_tcp("127.0.0.1", sim.port, tls=True, ssl_context=ctx, tls_hostname="127.0.0.1")
            async with stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with anyio.fail_after(TIMEOUT):
                    await stream.receive()


class _Remote:
    """A simulator in another process, as :func:`connect` needs it: a port and a TLS context."""

    def __init__(self, port: int, ca_path: str) -> None:
        self.port = port
        self.ca_path = ca_path

    def client_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_path)
        ctx.set_alpn_protocols(["h2"])
        return ctx


async def test_demo_server_runs_as_a_module() -> None:
    """``python -m adapters.testing.nova_sonic_simulator`` serves the demo scenario and says how to reach it."""
    command = [sys.executable, "-m", "adapters.testing.nova_sonic_simulator", "--port", "0", "--speedup", "100"]
    async with await anyio.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        try:
            assert process.stdout is not None
            lines: list[str] = []
            with anyio.fail_after(TIMEOUT):
                async for chunk in process.stdout:
                    lines += chunk.decode().splitlines()
                    if any(line.startswith("credentials:") for line in lines):
                        break
            endpoint = next(line.split()[3] for line in lines if line.startswith("Nova Sonic simulator:"))
            ca_path = next(line.split(": ", 1)[1] for line in lines if line.startswith("CA certificate:"))
            remote = _Remote(int(endpoint.rsplit(":", 1)[1]), ca_path)
            async with connect(remote) as client:
                await _open_and_start(client)
                await client.text_content("USER", "hello")
                await client.wait_for(lambda: client.count("usageEvent") == 1)
                assert client.bodies("textOutput")[-1]["content"].startswith("Hello! I am the bidi-core Nova")
        finally:
            process.terminate()
            await process.wait()
