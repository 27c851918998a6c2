"""``python -m adapters.web`` as a user runs it: hypercorn workers (asyncio or Trio, the test's backend),
SIGTERM drains 20 live conversations and exits 0, and no secret reaches its logs."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.web_support import Closed, Rejected, WsClient, _close_clients, http_get, server_process, wait_ready

__all__ = ["_close_clients"]

TOKEN = "tok-5e3c1b9a7d2f4e6a"


async def wait_exit(proc: Any, within_s: float) -> int:
    return int(await anyio.to_thread.run_sync(lambda: proc.wait(timeout=within_s)))


@pytest.mark.timeout(180)
async def test_sigterm_drains_twenty_live_conversations_and_exits_0(anyio_backend: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    args = ["--worker-class", anyio_backend, "--workers", "2", "--drain", "3", "--max-conversations", "20"]
    with server_process(*args, log=log) as (proc, port):
        with anyio.fail_after(90):
            await wait_ready(port)
            clients: list[WsClient] = []
            for _ in range(20):  # each worker takes up to 20: none is refused, whichever worker accepts
                client = await WsClient.connect(port)
                assert isinstance(client, WsClient), client
                await client.start()
                clients.append(client)
            for client in clients:  # every conversation is live: the model answers each
                await client.send_json({"type": "bidi_text_input", "text": "hello"})
            for client in clients:
                await client.until(lambda m: m["type"] == "bidi_response_start")
            proc.send_signal(signal.SIGTERM)
            results: list[tuple[Closed, list[Any]]] = []
            for client in clients:
                seen: list[Any] = []
                results.append((await client.until_closed(seen), seen))
            code = await wait_exit(proc, 60)
    text = log.read_text()
    assert code == 0, text
    for closed, seen in results:
        messages = [m for m in seen if isinstance(m, dict)]
        assert closed.code == 1001, (closed, messages[-3:])
        assert any(m["type"] == "draining" for m in messages)
        assert {"type": "closing", "reason": "drain"} in messages
        assert messages[-1]["type"] == "bidi_connection_close"  # the agent stopped before the socket closed
    assert "Traceback" not in text, text


@pytest.mark.timeout(120)
async def test_no_secret_in_any_log_line_even_with_access_logs_and_debug(anyio_backend: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    wrong = "tok-wrong-0a1b2c3d4e5f"
    env = {"BIDI_WEB_TOKEN": TOKEN}
    args = ["--worker-class", anyio_backend, "--access-log", "--log-level", "debug", "--drain", "1"]
    with server_process(*args, env=env, log=log) as (proc, port):
        with anyio.fail_after(60):
            await wait_ready(port)
            for secret, ok in [(wrong, False), (TOKEN, True)]:
                for attempt in [
                    {"headers": [("Authorization", f"Bearer {secret}")]},
                    {"subprotocols": [f"bidi-token.{secret}"]},
                    {"path": f"/ws?token={secret}"},
                ]:
                    client = await WsClient.connect(port, **attempt)  # type: ignore[arg-type]
                    if not ok:
                        assert isinstance(client, Rejected) and client.status == 401
                        continue
                    assert isinstance(client, WsClient)
                    await client.start()
                    await client.send_json({"type": "bidi_text_input", "text": "hello"})
                    await client.until(lambda m: m["type"] == "bidi_response_complete")
                    await client.close()
                assert (await http_get(port, f"/?token={secret}"))[0] == 200
            proc.send_signal(signal.SIGTERM)
            code = await wait_exit(proc, 30)
    text = log.read_text()
    assert code == 0, text
    assert "GET /ws" in text and "GET /" in text  # the access log did log those requests
    assert "<redacted>" in text or "token=" not in text
    for line in text.splitlines():
        assert TOKEN not in line and wrong not in line, line
