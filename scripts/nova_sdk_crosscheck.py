"""Is the Nova Sonic simulator fair? The official AWS SDK drives it (docs/protocols/nova_sonic.md#official-sdk).

The simulator verifies SigV4 and the chunk-signature chain, and checks every
event against a hand-written schema. If it were tailored to our own client,
it could accept our mistakes. This script points the official
``aws-sdk-bedrock-runtime`` 0.12.0 (Python >= 3.12, asyncio only, CRT transport)
at it and holds a whole conversation: a typed turn, a spoken turn, a tool round
trip and a clean close. It passes only if every signature the official signer
made verifies, the schema refuses nothing, and the SDK parses every output
event and modeled exception the simulator sends. It also checks that a wrong
secret is refused, and that a modeled exception reaches the SDK as its typed error.

Run it in its own venv (the main suite never needs it):

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/nova-sdk-venv
    /tmp/nova-sdk-venv/bin/pip install "aws-sdk-bedrock-runtime[awscrt]==0.12.0" anyio h2 botocore trustme cattrs attrs
    PYTHONPATH=. /tmp/nova-sdk-venv/bin/python scripts/nova_sdk_crosscheck.py

Exit status 0 when every check passes; the report goes to stdout. On the
error paths the SDK's CRT transport prints its own shutdown complaints to stderr
("HTTP-stream has completed", "Task was destroyed but it is pending"): noise of
the SDK, not failures of the check (``2>/dev/null`` hides them). The CRT
client's TLS context is replaced through a private attribute (``_tls_ctx``) to
trust the simulator's throwaway CA: test-only, as docs/protocols/nova_sonic.md#official-sdk says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import uuid
from typing import Any

from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig
from aws_sdk_bedrock_runtime.models import (
    BidirectionalInputPayloadPart,
    InvokeModelWithBidirectionalStreamInputChunk,
    InvokeModelWithBidirectionalStreamOperationInput,
    ModelTimeoutException,
)
from awscrt.io import ClientTlsContext, TlsContextOptions
from smithy_aws_core.identity.static import StaticCredentialsResolver
from smithy_http.aio.crt import AWSCRTHTTPClient

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

AKID = "AKIDCROSSCHECK"
SECRET = "cross-check-secret"
MODEL = "amazon.nova-2-sonic-v1:0"
PROMPT = "prompt-sdk"
TIMEOUT_S = 30.0

SCENARIO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hello from the simulator.")),
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, "tool-1")])),
        Rule(tool_result_for="get_weather", reply=Reply(say="It is {result} in Paris.")),
        Rule(spoken_turn=0, reply=Reply(say="I heard you.")),
    ],
    transcripts=["this is a spoken turn"],
)


async def _quietly_close(closable: Any) -> None:
    """Close an SDK stream or client after an error; the SDK's own shutdown complaints are not ours to judge."""
    with contextlib.suppress(Exception):
        await closable.close()


def _client(sim: NovaSonicSimulator, config: AsyncBedrockRuntimeConfig) -> AsyncBedrockRuntimeClient:
    return AsyncBedrockRuntimeClient(config=config)


async def _config(sim: NovaSonicSimulator, secret: str, token: str | None = None) -> AsyncBedrockRuntimeConfig:
    transport = AWSCRTHTTPClient()
    options = TlsContextOptions()
    options.override_default_trust_store_from_path(ca_filepath=sim.ca_cert_pem_path)
    # test-only: trust the simulator's CA (docs/protocols/nova_sonic.md#official-sdk)
    transport._tls_ctx = ClientTlsContext(options)
    return await AsyncBedrockRuntimeConfig.resolve(
        endpoint_uri=sim.endpoint_url,
        region="us-east-1",
        transport=transport,
        aws_credentials_identity_resolver=StaticCredentialsResolver(),
        aws_access_key_id=AKID,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


class Conversation:
    """One SDK stream: send events as JSON, collect the decoded output events."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.received: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.changed = asyncio.Event()

    async def send(self, name: str, body: dict[str, Any]) -> None:
        data = json.dumps({"event": {name: body}}).encode()
        chunk = InvokeModelWithBidirectionalStreamInputChunk(value=BidirectionalInputPayloadPart(bytes_=data))
        await self.stream.input_stream.send(chunk)

    async def read(self) -> None:
        try:
            _, output = await self.stream.await_output()
            async for event in output:
                self.received.append(json.loads(event.value.bytes_))
                self.changed.set()
        except Exception as exc:  # the SDK's typed exceptions are what the negative checks look for
            self.error = exc
        finally:
            self.changed.set()

    async def wait_for(self, predicate: Any) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def count(self, name: str) -> int:
        return sum(1 for e in self.received if name in e.get("event", {}))

    async def text(self, role: str, text: str, *, interactive: bool) -> None:
        name = str(uuid.uuid4())
        await self.send(
            "contentStart",
            {
                "promptName": PROMPT,
                "contentName": name,
                "type": "TEXT",
                "interactive": interactive,
                "role": role,
                "textInputConfiguration": {"mediaType": "text/plain"},
            },
        )
        await self.send("textInput", {"promptName": PROMPT, "contentName": name, "content": text})
        await self.send("contentEnd", {"promptName": PROMPT, "contentName": name})

    async def start(self) -> None:
        await self.send(
            "sessionStart", {"inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}}
        )
        await self.send(
            "promptStart",
            {
                "promptName": PROMPT,
                "textOutputConfiguration": {"mediaType": "text/plain"},
                "audioOutputConfiguration": {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": 24000,
                    "sampleSizeBits": 16,
                    "channelCount": 1,
                    "voiceId": "matthew",
                    "encoding": "base64",
                    "audioType": "SPEECH",
                },
                "toolUseOutputConfiguration": {"mediaType": "application/json"},
                "toolConfiguration": {
                    "tools": [
                        {
                            "toolSpec": {
                                "name": "get_weather",
                                "description": "The weather in a city.",
                                "inputSchema": {"json": json.dumps({"type": "object"})},
                            }
                        }
                    ]
                },
            },
        )
        await self.text("SYSTEM", "You are the SDK cross-check.", interactive=False)


async def happy_path(sim: NovaSonicSimulator, report: list[str]) -> bool:
    client = _client(sim, await _config(sim, SECRET))
    stream = await client.invoke_model_with_bidirectional_stream(
        input=InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL)
    )
    talk = Conversation(stream)
    reader = asyncio.create_task(talk.read())
    await talk.start()
    await talk.text("USER", "earlier", interactive=False)
    await talk.text("ASSISTANT", "noted", interactive=False)
    audio = str(uuid.uuid4())
    await talk.send(
        "contentStart",
        {
            "promptName": PROMPT,
            "contentName": audio,
            "type": "AUDIO",
            "interactive": True,
            "role": "USER",
            "audioInputConfiguration": {
                "mediaType": "audio/lpcm",
                "sampleRateHertz": 16000,
                "sampleSizeBits": 16,
                "channelCount": 1,
                "audioType": "SPEECH",
                "encoding": "base64",
            },
        },
    )
    await talk.text("USER", "hello", interactive=True)
    await talk.wait_for(lambda: talk.count("usageEvent") >= 1)
    pcm = loud(400) + silence(700)
    for i in range(0, len(pcm), 1024):  # 32 ms frames, as AWS recommends
        content = base64.b64encode(pcm[i : i + 1024]).decode()
        await talk.send("audioInput", {"promptName": PROMPT, "contentName": audio, "content": content})
    await talk.wait_for(lambda: talk.count("usageEvent") >= 2)
    await talk.text("USER", "what's the weather?", interactive=True)
    await talk.wait_for(lambda: talk.count("toolUse") >= 1)
    tool_content = str(uuid.uuid4())
    await talk.send(
        "contentStart",
        {
            "promptName": PROMPT,
            "contentName": tool_content,
            "interactive": False,
            "type": "TOOL",
            "role": "TOOL",
            "toolResultInputConfiguration": {
                "toolUseId": "tool-1",
                "type": "TEXT",
                "textInputConfiguration": {"mediaType": "text/plain"},
            },
        },
    )
    await talk.send("toolResult", {"promptName": PROMPT, "contentName": tool_content, "content": '"sunny"'})
    await talk.send("contentEnd", {"promptName": PROMPT, "contentName": tool_content})
    await talk.wait_for(lambda: talk.count("usageEvent") >= 4)
    await talk.send("contentEnd", {"promptName": PROMPT, "contentName": audio})
    await talk.send("promptEnd", {"promptName": PROMPT})
    await talk.send("sessionEnd", {})
    await stream.input_stream.close()  # the SDK's signed empty frame and END_STREAM
    async with asyncio.timeout(TIMEOUT_S):
        await reader
        await sim.wait_until(lambda: sim.streams[0].ended_by is not None)
    await _quietly_close(client)
    record = sim.streams[0]
    texts = [e["event"]["textOutput"]["content"] for e in talk.received if "textOutput" in e["event"]]
    checks = {
        "the SDK's request signature and every chunk signature verified": not sim.signature_failures
        and record.signatures_verified == len(record.events) + 1,
        "the strict schema refused nothing the SDK sent": not sim.schema_failures,
        "the stream ended cleanly by the client": record.ended_by == "client" and talk.error is None,
        "the SDK parsed every output event": len(talk.received) == len(record.sent),
        "typed, spoken and tool turns were answered": "Hello from the simulator." in texts
        and "this is a spoken turn" in texts
        and 'It is "sunny" in Paris.' in texts,
        "history and inputs were recorded": sim.user_inputs[:2]
        == [("history", "USER", "earlier"), ("history", "ASSISTANT", "noted")]
        and ("tool_result", "tool-1", '"sunny"') in sim.user_inputs,
    }
    report.append(
        f"happy path: {len(record.events)} events, {record.signatures_verified} signatures verified, "
        f"{len(talk.received)} output events parsed by the SDK"
    )
    for name, ok in checks.items():
        report.append(f"  [{'ok' if ok else 'FAIL'}] {name}")
    for failure in [*sim.signature_failures, *sim.schema_failures]:
        report.append(f"  failure: {failure}")
    return all(checks.values())


async def wrong_secret(sim: NovaSonicSimulator, report: list[str]) -> bool:
    client = _client(sim, await _config(sim, "not-the-secret"))
    refused_before = len(sim.refused)
    error: BaseException | None = None
    try:
        stream = await client.invoke_model_with_bidirectional_stream(
            input=InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL)
        )
        talk = Conversation(stream)
        reader = asyncio.create_task(talk.read())
        await talk.send("sessionStart", {"inferenceConfiguration": {}})
        async with asyncio.timeout(TIMEOUT_S):
            await reader
        error = talk.error
        await _quietly_close(stream)
    except Exception as exc:
        error = exc
    await _quietly_close(client)
    refused = sim.refused[refused_before:]
    ok = error is not None and [r.error_type for r in refused] == ["InvalidSignatureException"]
    report.append(f"  [{'ok' if ok else 'FAIL'}] a wrong secret is refused (SDK raised {type(error).__name__})")
    return ok


async def modeled_exception(report: list[str]) -> bool:
    async with NovaSonicSimulator(
        credentials={AKID: SECRET}, faults=[Fault(kind="model_timeout", after_events=2)]
    ) as sim:
        client = _client(sim, await _config(sim, SECRET))
        stream = await client.invoke_model_with_bidirectional_stream(
            input=InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL)
        )
        talk = Conversation(stream)
        reader = asyncio.create_task(talk.read())
        await talk.start()
        async with asyncio.timeout(TIMEOUT_S):
            await reader
        await _quietly_close(stream)
        await _quietly_close(client)
        ok = isinstance(talk.error, ModelTimeoutException)
        report.append(
            f"  [{'ok' if ok else 'FAIL'}] modelTimeoutException reaches the SDK as {type(talk.error).__name__}"
        )
        return ok


async def session_token(report: list[str]) -> bool:
    async with NovaSonicSimulator(credentials={AKID: SECRET}, session_tokens={AKID: "session-token"}) as sim:
        client = _client(sim, await _config(sim, SECRET, "session-token"))
        stream = await client.invoke_model_with_bidirectional_stream(
            input=InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL)
        )
        talk = Conversation(stream)
        reader = asyncio.create_task(talk.read())
        await talk.start()
        await talk.send("promptEnd", {"promptName": PROMPT})
        await talk.send("sessionEnd", {})
        await stream.input_stream.close()
        async with asyncio.timeout(TIMEOUT_S):
            await reader
            await sim.wait_until(lambda: bool(sim.streams) and sim.streams[0].ended_by is not None)
        await _quietly_close(client)
        record = sim.streams[0]
        ok = (
            record.ended_by == "client"
            and record.signatures_verified == len(record.events) + 1
            and not sim.signature_failures
            and record.headers.get("x-amz-security-token") == "<redacted>"
        )
        report.append(f"  [{'ok' if ok else 'FAIL'}] temporary credentials: the signed session token verifies")
        return ok


async def main() -> int:
    report: list[str] = []
    async with NovaSonicSimulator(credentials={AKID: SECRET}, scenario=SCENARIO) as sim:
        results = [await happy_path(sim, report), await wrong_secret(sim, report)]
    results.append(await session_token(report))
    results.append(await modeled_exception(report))
    print("\n".join(report))
    print("SDK cross-check:", "PASSED" if all(results) else "FAILED")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
