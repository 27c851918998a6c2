"""The Nova Sonic adapter end to end: BidiAgent -> adapter -> TLS HTTP/2 on
127.0.0.1 -> the Nova Sonic simulator, on asyncio and Trio.

The simulator verifies the request's SigV4 and every event's chunk signature
in chain, and checks every input event against a strict schema and the order
rules; the ``simulator`` fixture fails a test whose client sent anything the
service would refuse.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from botocore.credentials import Credentials, RefreshableCredentials

from adapters.nova_sonic import BidiNovaSonicModel, NovaSonicProviderError
from adapters.testing.nova_sonic_simulator import (
    Fault,
    NovaSonicSimulator,
    Reply,
    Rule,
    Scenario,
    ToolUse,
    loud,
    silence,
)
from adapters.testing.pytest_plugin import (
    NOVA_TEST_ACCESS_KEY,
    NOVA_TEST_SECRET_KEY,
    assert_nova_sonic_simulator_clean,
    nova_sonic_model_for,
)
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiProviderError,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ReconnectPolicy,
    tool,
)
from ports.events import BidiAudioInputEvent, BidiOutputEvent
from ports.messages import TextMessage
from ports.model import ConnectRequest
from tests.support import (
    RecordingOutput,
    Texts,
    assert_no_aws_secret,
    finals,
    our_tasks,
    run_quickstart_offline,
    run_until,
)

AKID = NOVA_TEST_ACCESS_KEY
SECRET = NOVA_TEST_SECRET_KEY
FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def simulator(nova_sonic_sim: NovaSonicSimulator) -> NovaSonicSimulator:
    """The plugin's simulator (``@pytest.mark.scenario(...)``, credentials ``AKID``/``SECRET`` unless given);
    it must refuse nothing our client sends."""
    return nova_sonic_sim


assert_clean = assert_nova_sonic_simulator_clean


def model_for(sim: NovaSonicSimulator, **kwargs: Any) -> BidiNovaSonicModel:
    model: BidiNovaSonicModel = nova_sonic_model_for(sim, **kwargs)
    return model


def inputs_of(sim: NovaSonicSimulator, kind: str) -> list[tuple[Any, ...]]:
    return [i for i in sim.user_inputs if i[0] == kind]


# ---------------------------------------------------------------- turns


async def test_text_turn_is_one_response(simulator: NovaSonicSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), system_prompt="Be brief.")
    out = RecordingOutput()
    texts = Texts(["hello there"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiUsageEvent)))
    assert isinstance(out.events[0], BidiConnectionStartEvent)
    (start,) = out.of(BidiResponseStartEvent)
    (complete,) = out.of(BidiResponseCompleteEvent)
    assert complete.response_id == start.response_id and complete.stop_reason == "complete"
    audio = out.of(BidiAudioStreamEvent)
    assert audio and {a.sample_rate for a in audio} == {24000}
    assert {a.response_id for a in audio} == {start.response_id}
    speculative = [t for t in out.of(BidiTranscriptStreamEvent) if not t.is_final]
    assert [t.text for t in speculative] == ["You said: hello there"]
    final = [t for t in out.of(BidiTranscriptStreamEvent) if t.is_final]
    assert [(t.role, t.text, t.response_id) for t in final] == [
        ("assistant", "You said: hello there", start.response_id)
    ]
    assert out.of(BidiUsageEvent)[0].total_tokens > 0
    (stream,) = simulator.streams
    assert stream.system_prompt == "Be brief."
    assert inputs_of(simulator, "text") == [("text", "hello there")]
    assert stream.ended_by == "client"
    names = stream.event_names()
    assert names[:3] == ["sessionStart", "promptStart", "contentStart"]
    assert names[-2:] == ["promptEnd", "sessionEnd"]
    assert stream.signatures_verified == len(names) + 1  # every event, and the signed empty frame
    assert our_tasks() == set()


async def test_the_wait_ends_when_the_output_it_reads_takes_the_last_event_after_the_others(
    simulator: NovaSonicSimulator,
) -> None:
    """``run_until`` ends when the output its condition reads takes the last event of a turn
    after the other outputs did. Each output has a task and a queue of its own, so nothing
    orders them; on Trio (whose scheduler shuffles each batch of runnable tasks once
    Hypothesis is imported, as it is in the full suite) the recording output took the usage
    event after ``run_until``'s own output had woken it to look, and the conversation then
    stayed quiet: ``test_text_turn_is_one_response`` waited its 15 s out. Here the recording
    output takes that usage event only once every other task waits, which forces that order."""

    class TakesUsageLast(RecordingOutput):
        async def __call__(self, event: BidiOutputEvent) -> None:
            if isinstance(event, BidiUsageEvent):
                await anyio.wait_all_tasks_blocked()
            await super().__call__(event)

    agent = BidiAgent(model=model_for(simulator))
    out = TakesUsageLast()
    texts = Texts(["hello there"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiUsageEvent)), limit_s=5)
    assert out.of(BidiUsageEvent)[0].total_tokens > 0


@pytest.mark.scenario(
    scenario=Scenario(transcripts=["what time is it"], rules=[Rule(spoken_turn=0, reply=Reply(say="Noon."))])
)
async def test_audio_turn_in_32_ms_frames(simulator: NovaSonicSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    speech = loud(600) + silence(900)

    class Mic:
        sent = False

        async def __call__(self) -> BidiAudioInputEvent:
            if Mic.sent:
                await anyio.sleep_forever()
            Mic.sent = True
            return BidiAudioInputEvent(speech, sample_rate=16000)

    await run_until(agent, [Mic()], [out], lambda: "Noon." in finals(out, "assistant"))
    assert ("user", "what time is it") in [(t.role, t.text) for t in out.of(BidiTranscriptStreamEvent) if t.is_final]
    audio = [i[1] for i in inputs_of(simulator, "audio")]
    assert b"".join(audio) == speech
    assert {len(a) for a in audio[:-1]} == {1024}  # 32 ms at 16 kHz (the last frame: what is left)
    starts = [e for e in simulator.streams[0].events if "contentStart" in e["event"]]
    assert [s["event"]["contentStart"]["type"] for s in starts] == ["TEXT", "AUDIO"]  # one audio container
    assert out.of(BidiInterruptionEvent) == []  # speech with nothing playing interrupts nothing


# ---------------------------------------------------------------- rotation and faults


def numbered_block(n: int) -> bytes:
    """32 ms of near-silence whose samples spell ``n`` (below the simulator's VAD)."""
    return struct.pack("<512h", *([n % 50] * 511 + [n // 50 % 50]))


class PacedMic:
    """A microphone: numbered 32 ms blocks at about real time, forever."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def __call__(self) -> BidiAudioInputEvent:
        await anyio.sleep(0.032)
        block = numbered_block(len(self.sent))
        self.sent.append(block)
        return BidiAudioInputEvent(block, sample_rate=16000)


@pytest.mark.scenario(stream_lifetime_s=1.5)
async def test_rotation_before_the_limit_loses_no_audio_and_seeds_history(simulator: NovaSonicSimulator) -> None:
    texts = Texts(["first question"])
    agent = BidiAgent(model=model_for(simulator, max_stream_s=1.0), reconnect=FAST_RETRY)
    out = RecordingOutput()
    mic = PacedMic()
    await run_until(agent, [texts, mic], [out, texts.observe], lambda: len(out.of(BidiConnectionStartEvent)) >= 3)
    assert [r.reason for r in out.of(BidiConnectionRestartEvent)][:2] == ["expiring", "expiring"]
    assert len(simulator.streams) >= 3
    # The core rotated before the service's limit: every stream was closed by us, none by the service.
    assert all(s.ended_by == "client" for s in simulator.streams[:2])
    received = [i[1] for i in inputs_of(simulator, "audio")]
    assert received == mic.sent[: len(received)]  # in order, none lost, none twice
    assert len(received) >= len(mic.sent) - 5  # at most what was still queued when we stopped
    assert ("history", "USER", "first question") in simulator.user_inputs


@pytest.mark.scenario(silence_timeout_s=0.5)
async def test_silence_timeout_restarts_seeded_with_history(simulator: NovaSonicSimulator) -> None:
    texts = Texts(["remember me"])
    agent = BidiAgent(model=model_for(simulator), reconnect=FAST_RETRY)
    out = RecordingOutput()
    await run_until(agent, [texts], [out, texts.observe], lambda: len(out.of(BidiConnectionStartEvent)) >= 2)
    restart = out.of(BidiConnectionRestartEvent)[0]
    assert restart.reason == "connection_lost" and "531" in (restart.details or "")
    assert simulator.streams[0].exception is not None
    assert ("history", "USER", "remember me") in simulator.user_inputs


@pytest.mark.scenario(silence_timeout_s=0.3)
async def test_an_idle_user_is_never_hung_up_on(simulator: NovaSonicSimulator) -> None:
    """Nova ends a stream nobody talks on; a fresh stream says nothing until the
    user does. Stream after idle stream, far more than ``max_attempts``, the
    conversation stays open: the quiet streams lived, they did not fail."""
    policy = ReconnectPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.05, stable_after_s=0.1)
    agent = BidiAgent(model=model_for(simulator), reconnect=policy)
    out = RecordingOutput()
    await run_until(agent, [], [out], lambda: len(out.of(BidiConnectionStartEvent)) >= 5)
    assert [e.reason for e in out.of(BidiConnectionCloseEvent)] == ["client_disconnect"]
    assert all("531" in (r.details or "") for r in out.of(BidiConnectionRestartEvent))


@pytest.mark.parametrize(
    "kind", ["model_timeout", "throttling", "unavailable", "internal", "model_stream_error", "rst", "goaway"]
)
async def test_transient_faults_restart_the_stream(kind: str) -> None:
    async with NovaSonicSimulator(credentials={AKID: SECRET}, faults=[Fault(kind=kind, after_events=8)]) as sim:  # type: ignore[arg-type]
        texts = Texts(["one", "two"])
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()

        def done() -> bool:
            return any("two" in f for f in finals(out, "assistant"))

        starts = 0

        async def release_after_restart(event: BidiOutputEvent) -> None:
            nonlocal starts  # counted here: each output sees events at its own pace
            if isinstance(event, BidiConnectionStartEvent):
                starts += 1
                if starts >= 2:
                    texts.ready.set()  # the first turn died with its stream; the user goes on

        await run_until(agent, [texts], [out, texts.observe, release_after_restart], done)
        assert out.of(BidiConnectionRestartEvent)[0].reason == "connection_lost"
        assert len(sim.streams) >= 2
        assert [i[1] for i in inputs_of(sim, "text")].count("two") == 1
        assert_clean(sim)


async def test_validation_error_ends_the_conversation_with_aws_message() -> None:
    fault = Fault(kind="validation", after_events=8, message="Invalid input request, please fix your input.")
    async with NovaSonicSimulator(credentials={AKID: SECRET}, faults=[fault]) as sim:
        out = RecordingOutput()
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        with pytest.raises(BidiProviderError) as caught, anyio.fail_after(15):
            await agent.run([Texts(["hello", "again"])], [out])
        assert len(sim.streams) == 1  # not retried
        assert_clean(sim)  # the fault was injected: nothing we sent was wrong
    error = caught.value
    assert isinstance(error, NovaSonicProviderError)
    assert error.code == "ValidationException" and not error.retryable
    assert "Invalid input request" in str(error)
    assert error.request_id and error.request_id in str(error)  # the stream's x-amzn-requestid, for AWS support
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)


async def test_throttled_requests_are_retried_with_backoff() -> None:
    async with NovaSonicSimulator(credentials={AKID: SECRET}, faults=[Fault(kind="throttling", times=2)]) as sim:
        texts = Texts(["hi"])
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()
        await run_until(agent, [texts], [out, texts.observe], lambda: finals(out, "assistant") != [])
        assert [r.status for r in sim.refused] == [429, 429]
        assert len(out.of(BidiConnectionStartEvent)) == 1
        assert_clean(sim)


async def test_unknown_model_is_refused_with_a_typed_error() -> None:
    async with NovaSonicSimulator(credentials={AKID: SECRET}) as sim:
        model = model_for(sim)
        model._model_id = "amazon.nova-3-sonic-v9:0"  # what a typo in model_id sends
        with pytest.raises(BidiProviderError) as caught, anyio.fail_after(15):
            await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])
        assert [r.status for r in sim.refused] == [400]
        assert_clean(sim)
    assert caught.value.code == "ValidationException" and not caught.value.retryable


async def test_a_result_for_a_call_of_an_earlier_stream_goes_in_as_text() -> None:
    """The stream is replaced while a tool runs (the age limit hits mid-turn). The new
    stream never issued that toolUseId, so the service would refuse a TOOL content
    for it: the result reaches the model as the user's text instead."""
    second_stream = anyio.Event()

    @tool
    async def slow_lookup(city: str) -> str:
        """Looks slowly.

        Args:
            city: A city.
        """
        await second_stream.wait()
        return f"foggy in {city}"

    scenario = Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("slow_lookup", {"city": "Oslo"}, "tu-9")]))
        ]
    )
    async with NovaSonicSimulator(credentials={AKID: SECRET}, scenario=scenario) as sim:
        agent = BidiAgent(model=model_for(sim, max_stream_s=1.0), tools=[slow_lookup], reconnect=FAST_RETRY)
        out = RecordingOutput()
        starts = 0

        async def on_start(event: BidiOutputEvent) -> None:
            nonlocal starts
            if isinstance(event, BidiConnectionStartEvent):
                starts += 1
                if starts == 2:
                    second_stream.set()

        await run_until(
            agent,
            [Texts(["what's the weather"])],
            [out, on_start],
            lambda: any("foggy in Oslo" in f for f in finals(out, "assistant")),
        )
        assert inputs_of(sim, "tool_result") == []
        texts = [i[1] for i in inputs_of(sim, "text")]
        assert texts[0] == "what's the weather"
        assert any("foggy in Oslo" in t for t in texts[1:])
        history = [i for i in sim.user_inputs if i[0] == "history"]
        assert any("slow_lookup" in i[2] for i in history)  # the call, as an assistant note
        assert_clean(sim)


# ---------------------------------------------------------------- framing and flow control


async def big_result(size: int) -> str:
    return "x" * size


@tool
async def fetch_report(pages: int) -> str:
    """A long report.

    Args:
        pages: How many pages.
    """
    return ("lorem ipsum " * 100) * pages


@pytest.mark.scenario(
    scenario=Scenario(
        rules=[
            Rule(text_contains="report", reply=Reply(tool_calls=[ToolUse("fetch_report", {"pages": 80})])),
            Rule(tool_result_for="fetch_report", reply=Reply(say="Done.")),
        ]
    ),
    max_frame_size=16384,
    initial_window_size=4096,
)
async def test_large_tool_result_crosses_frames_and_a_small_window(simulator: NovaSonicSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), tools=[fetch_report], system_prompt="s" * 30_000)
    out = RecordingOutput()
    texts = Texts(["the report please"])
    await run_until(agent, [texts], [out, texts.observe], lambda: "Done." in finals(out, "assistant"))
    (result,) = inputs_of(simulator, "tool_result")
    assert ("lorem ipsum " * 100) * 80 in result[2]  # 96 kB in one event: many frames, many window updates
    assert simulator.streams[0].system_prompt == "s" * 30_000


@pytest.mark.scenario(
    scenario=Scenario(rules=[Rule(text_contains="long", reply=Reply(say="A long answer.", audio_ms=30_000))]),
)
async def test_a_slow_reader_holds_the_service_back(simulator: NovaSonicSimulator) -> None:
    """Flow control on the way in: received data is acknowledged only as it is
    consumed, so a stalled output stalls the service instead of our memory."""
    agent = BidiAgent(model=model_for(simulator), output_queue_size=1)
    gate = anyio.Event()
    out = RecordingOutput()

    async def slow(event: BidiOutputEvent) -> None:
        if isinstance(event, BidiAudioStreamEvent):
            await gate.wait()

    async def open_gate_when_stalled() -> None:
        # The simulator counts its waits for our WINDOW_UPDATE without notifying: poll the count.
        with anyio.fail_after(8):
            while not (simulator.streams and simulator.streams[0].window_waits > 0):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        gate.set()

    texts = Texts(["a long one"])
    async with anyio.create_task_group() as tg:
        tg.start_soon(open_gate_when_stalled)
        await run_until(agent, [texts], [out, slow, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    total_ms = sum(a.duration_ms for a in out.of(BidiAudioStreamEvent))
    assert total_ms == pytest.approx(30_000, abs=1)


async def test_a_long_history_is_split_and_trimmed_as_nova_takes_it(simulator: NovaSonicSimulator) -> None:
    """AWS: one history textInput holds at most 1 KB, the whole history at most 40 KB
    (the simulator refuses either). 40 messages of 3 KB: the newest fit, each in pieces."""
    history = tuple(TextMessage("user" if i % 2 == 0 else "assistant", f"m{i} " + "é" * 1500) for i in range(40))
    async with model_for(simulator).connect(ConnectRequest(history=history)):
        pass
    kept = inputs_of(simulator, "history")
    assert kept[-1] == ("history", "ASSISTANT", history[-1].text)
    assert kept[0][1] == "USER" and 10 <= len(kept) < 40
    assert sum(len(text.encode()) for _, _, text in kept) <= 40 * 1024


# ---------------------------------------------------------------- credentials


async def test_credentials_are_refreshed_for_every_stream() -> None:
    """A botocore refreshable credential (as STS, SSO and instance roles give) that
    hands out new keys at every refresh: each stream is signed with fresh ones."""
    keys = {f"AKIDROTATED{n}": f"rotated-secret-{n}-000000000" for n in range(1, 6)}
    tokens = {akid: f"token-{akid}" for akid in keys}
    issued = iter(keys.items())

    def refresh() -> dict[str, str]:
        akid, secret = next(issued)
        # Valid for five minutes, inside botocore's ten-minute mandatory refresh window: every use refreshes.
        expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)).isoformat()
        return {"access_key": akid, "secret_key": secret, "token": tokens[akid], "expiry_time": expiry}

    stale = {"access_key": "AKIDSTALE", "secret_key": "stale", "token": "stale", "expiry_time": "2000-01-01T00:00:00Z"}
    credentials = RefreshableCredentials.create_from_metadata(stale, refresh, "test-provider")
    async with NovaSonicSimulator(credentials=keys, session_tokens=tokens, stream_lifetime_s=5.0) as sim:
        agent = BidiAgent(model=model_for(sim, credentials=credentials, max_stream_s=0.6), reconnect=FAST_RETRY)
        out = RecordingOutput()
        await run_until(agent, [], [out], lambda: len(out.of(BidiConnectionStartEvent)) >= 2)
        assert [s.access_key_id for s in sim.streams[:2]] == ["AKIDROTATED1", "AKIDROTATED2"]
        assert sim.refused == []
        assert_clean(sim)


async def test_no_credentials_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with NovaSonicSimulator(credentials={AKID: SECRET}) as sim:
        model = BidiNovaSonicModel(endpoint_url=sim.endpoint_url, verify=sim.ca_cert_pem_path)  # botocore's chain
        with pytest.raises(BidiProviderError, match="no AWS credentials found") as caught, anyio.fail_after(15):
            await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])
        assert sim.streams == [] and sim.refused == []  # nothing was sent
    assert caught.value.code == "NoCredentials" and not caught.value.retryable


async def test_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async with NovaSonicSimulator(credentials={AKID: SECRET}) as sim:
        monkeypatch.setenv("AWS_CA_BUNDLE", sim.ca_cert_pem_path)
        model = BidiNovaSonicModel(endpoint_url=sim.endpoint_url, credentials=Credentials(AKID, SECRET))
        texts = Texts(["hi"])
        out = RecordingOutput()
        await run_until(BidiAgent(model=model), [texts], [out, texts.observe], lambda: finals(out, "assistant") != [])
        monkeypatch.delenv("AWS_CA_BUNDLE")
        untrusting = BidiNovaSonicModel(endpoint_url=sim.endpoint_url, credentials=Credentials(AKID, SECRET))
        with pytest.raises(Exception, match="not trusted"), anyio.fail_after(15):
            await BidiAgent(model=untrusting, reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])
        assert_clean(sim)


_ASSUMED = ("AKIDASSUMEDROLE", "assumed-secret-0123456789abcdef", "assumed-session-token-0123456789")
_STS_ANSWER = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>{_ASSUMED[0]}</AccessKeyId><SecretAccessKey>{_ASSUMED[1]}</SecretAccessKey>
<SessionToken>{_ASSUMED[2]}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/nova/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId>
</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>sts-1</RequestId></ResponseMetadata>
</AssumeRoleResponse>""".encode()


async def _fake_sts(listener: anyio.abc.SocketListener) -> None:
    """Answers one AssumeRole call (HTTP/1.1 on 127.0.0.1) as STS does."""
    async with await listener.accept() as conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await conn.receive()
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += await conn.receive()
        await conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nx-amzn-RequestId: sts-1\r\n"
            + f"Content-Length: {len(_STS_ANSWER)}\r\nConnection: close\r\n\r\n".encode()
            + _STS_ANSWER
        )


async def test_botocore_debug_logs_of_an_assume_role_keep_no_credential(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials from a role (botocore's chain calls STS, as for SSO and web identity):
    botocore logs that call at DEBUG (its signature, and STS's answer with the new
    secret key and token), and the call runs because we resolve credentials."""
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(name)
    base_secret = "base-secret-0123456789abcdef"
    (tmp_path / "credentials").write_text(
        f"[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = {base_secret}\n"
    )
    (tmp_path / "config").write_text(
        "[profile nova]\nrole_arn = arn:aws:iam::123456789012:role/nova\nsource_profile = base\nregion = us-east-1\n"
    )
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    for name, value in {
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_PROFILE": "nova",
        "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    akid, secret, token = _ASSUMED
    async with (
        listener,
        NovaSonicSimulator(credentials={akid: secret}, session_tokens={akid: token}) as sim,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(_fake_sts, listener.listeners[0])
        model = BidiNovaSonicModel(endpoint_url=sim.endpoint_url, verify=sim.ca_cert_pem_path)  # botocore's chain
        with anyio.fail_after(15):
            async with model.connect(ConnectRequest(system_prompt="hi")):
                pass
        assert [s.access_key_id for s in sim.streams] == [akid]  # signed with the role's keys
        assert_clean(sim)
    assert any(r.name.startswith("botocore") for r in caplog.records)  # botocore did log at DEBUG
    assert_no_aws_secret(caplog, secret, token, base_secret)


# ---------------------------------------------------------------- the example


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_nova_sonic_quickstart_runs_offline(backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        # No credentials anywhere botocore looks, and no instance-metadata probe.
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    lines = run_quickstart_offline("nova_sonic_quickstart", backend, tmp_path / "reply.wav", env)
    assert any(line.startswith("No AWS credentials") for line in lines)
