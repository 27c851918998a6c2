"""The Nova Sonic simulator's turns: spoken and typed turns, tool uses, barge-in, turn detection, how streams end.

Driven by the independent client of ``client.py``; each test names the source it follows.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import anyio
import anyio.abc
import pytest

from adapters.testing.nova_sonic_simulator import (
    NovaSonicSimulator,
    Reply,
    Rule,
    Scenario,
    ToolUse,
    check_output_event,
    loud,
    silence,
)
from tests.nova_sonic_simulator.client import (
    PROMPT_START,
    SPOKEN_REPLY,
    _frame,
    _header,
    _open_and_start,
    connect,
    stages,
)

# ---------------------------------------------------------------------------- turns


async def test_audio_turn_gets_a_user_transcript_then_the_reply() -> None:
    """A spoken turn (found by turn detection on 16 kHz input) is echoed as USER TEXT FINAL, then answered
    (docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(transcripts=["what time is it"], rules=[Rule(spoken_turn=0, reply=Reply(say="Noon."))])
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        audio = await client.audio_start()
        spoken = loud(400) + silence(800)
        await client.audio(audio, spoken)
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert stages(client) == [
            "completionStart",
            "contentStart/TEXT/USER/FINAL",
            "textOutput",
            "contentEnd/TEXT/END_TURN",
            *SPOKEN_REPLY,
            "usageEvent",
        ]
        assert [b["content"] for b in client.bodies("textOutput")] == ["what time is it", "Noon.", "Noon."]
        assert client.bodies("textOutput")[0]["role"] == "USER"
        assert b"".join(i[1] for i in sim.user_inputs if i[0] == "audio") == spoken
        usage = client.bodies("usageEvent")[0]
        assert usage["totalTokens"] == usage["totalInputTokens"] + usage["totalOutputTokens"] > 0
        await client.close(audio=audio)
        await client.wait_for(lambda: client.ended)
        assert sim.streams[0].ended_by == "client"


async def test_tool_use_round_trip() -> None:
    """toolUse then contentEnd TOOL_USE; the client's TOOL result continues the turn
    (docs/protocols/nova_sonic.md#tool-results, docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, "tu-1")])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.")),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start(tools=["get_weather"])
        await client.text_content("USER", "weather in Paris?")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert stages(client) == [
            "completionStart",
            "contentStart/TOOL/TOOL",
            "toolUse",
            "contentEnd/TOOL/TOOL_USE",
            "usageEvent",
        ]
        use = client.bodies("toolUse")[0]
        assert (use["toolName"], use["toolUseId"], json.loads(use["content"])) == (
            "get_weather",
            "tu-1",
            {"city": "Paris"},
        )
        await client.tool_result("tu-1", '"sunny"')
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[-1]["content"] == 'It is "sunny".'
        assert sim.user_inputs[-1] == ("tool_result", "tu-1", '"sunny"')
        await client.tool_result("tu-1", "again")  # answered already
        await client.wait_for(lambda: client.ended)
        assert "does not match a tool use" in client.exceptions[0][1]


async def test_barge_in_interrupts_the_audio() -> None:
    """User speech while the assistant's audio goes out => textOutput interrupted and INTERRUPTED
    (docs/protocols/nova_sonic.md#barge-in)."""
    scenario = Scenario(
        rules=[
            Rule(spoken_turn=0, reply=Reply(say="A very long story.", audio_ms=20_000)),
            Rule(spoken_turn=1, reply=Reply(say="Yes?", audio_ms=100)),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario, speedup=1.0) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        audio = await client.audio_start()
        await client.audio(audio, loud(300) + silence(600))
        await client.wait_for(lambda: client.count("audioOutput") >= 1)
        await client.audio(audio, loud(300) + silence(600))
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        first_turn = stages(client)[: stages(client).index("usageEvent")]
        assert first_turn[-5:] == [
            "audioOutput",
            "contentEnd/AUDIO/INTERRUPTED",
            "contentStart/TEXT/ASSISTANT/FINAL",
            "textOutput",
            "contentEnd/TEXT/INTERRUPTED",
        ]
        assert '{ "interrupted" : true }' in [b["content"] for b in client.bodies("textOutput")]
        assert client.count("audioOutput") < 200  # 100 ms each: far less than the 20 s reply
        assert not sim.schema_failures


async def test_user_inputs_accumulate_across_streams() -> None:
    """A rotation replays history on a new stream: ``sim.user_inputs`` keeps everything, in order."""
    async with NovaSonicSimulator() as sim:
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "one")
            await client.wait_for(lambda: client.count("usageEvent") == 1)
            await client.close()
            await client.wait_for(lambda: client.ended)
        async with connect(sim) as client:
            await _open_and_start(client)
            await client.text_content("USER", "one", interactive=False)
            await client.text_content("ASSISTANT", "You said: one", interactive=False)
            await client.text_content("USER", "two")
            await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert sim.user_inputs == [
            ("text", "one"),
            ("history", "USER", "one"),
            ("history", "ASSISTANT", "You said: one"),
            ("text", "two"),
        ]
        assert [r.index for r in sim.streams] == [0, 1]


# ---------------------------------------------------------------------------- more behaviour


def test_output_schema_rejects_what_the_service_never_sends() -> None:
    """The simulator checks its own output against the output events; these are the mistakes it must catch
    (docs/protocols/nova_sonic.md#output-events)."""
    ids = {"sessionId": "s", "promptName": "p", "completionId": "c", "contentId": "x"}
    good_text = {**ids, "type": "TEXT", "role": "ASSISTANT", "textOutputConfiguration": {"mediaType": "text/plain"}}
    assert (
        check_output_event(
            {"event": {"contentStart": {**good_text, "additionalModelFields": '{"generationStage":"FINAL"}'}}}
        )
        is None
    )
    bad: list[dict[str, Any]] = [
        {"event": {"contentStart": good_text}},  # no generationStage
        {"event": {"contentStart": {**good_text, "additionalModelFields": '{"generationStage":"DRAFT"}'}}},
        {"event": {"contentEnd": {**ids, "type": "TEXT", "stopReason": "DONE"}}},
        {"event": {"audioOutput": {**ids, "content": "not base64!"}}},
        {"event": {"toolUse": {**ids, "toolName": "t", "toolUseId": "u", "content": "{not json"}}},
        {"event": {"connectionEnd": {}}},
        {"event": {"completionStart": {"sessionId": "s"}}},
    ]
    for event in bad:
        assert check_output_event(event) is not None, event


async def test_typed_text_while_the_audio_content_is_open() -> None:
    """Nova 2 cross-modal input: a USER text content while the audio content stays open
    (docs/protocols/nova_sonic.md#audio-input)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await _open_and_start(client)
        audio = await client.audio_start()
        await client.audio(audio, silence(96))
        await client.text_content("USER", "typed")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert client.bodies("textOutput")[-1]["content"] == "You said: typed"
        await client.close(audio=audio)
        await client.wait_for(lambda: client.ended)
        assert [i[0] for i in sim.user_inputs] == ["audio", "audio", "audio", "text"]
        assert sim.streams[0].ended_by == "client"


async def test_several_tool_uses_wait_for_every_result_and_undeclared_tools_are_not_called() -> None:
    """A model only calls declared tools; the turn continues once every tool use has its result."""
    scenario = Scenario(
        rules=[
            Rule(
                text_contains="both",
                reply=Reply(tool_calls=[ToolUse("a", {}, "id-a"), ToolUse("b", {}, "id-b"), ToolUse("nope")]),
            ),
            Rule(tool_result_for="b", reply=Reply(say="Got {result}.")),
        ]
    )
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await _open_and_start(client, tools=["a", "b"])
        await client.text_content("USER", "both please")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert [b["toolName"] for b in client.bodies("toolUse")] == ["a", "b"]
        assert "would call nope" in client.bodies("textOutput")[0]["content"]
        await client.tool_result("id-a", "A")
        await client.tool_result("id-b", "B")
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[-1]["content"] == "Got A; B."
        assert not sim.schema_failures


async def test_endpointing_sensitivity_sets_the_pause_that_ends_a_turn() -> None:
    """Nova 2 ``turnDetectionConfiguration``: LOW waits longer than HIGH before ending a spoken turn."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send(
            "sessionStart",
            {"inferenceConfiguration": {}, "turnDetectionConfiguration": {"endpointingSensitivity": "LOW"}},
        )
        await client.send("promptStart", PROMPT_START)
        await client.text_content("SYSTEM", "sys", interactive=False)
        audio = await client.audio_start()
        await client.audio(audio, loud(300) + silence(400))  # enough for HIGH (300 ms), not for LOW
        await client.text_content("USER", "probe")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert [b["role"] for b in client.bodies("textOutput")] == ["ASSISTANT", "ASSISTANT"]
        await client.audio(audio, silence(500))
        await client.wait_for(lambda: client.count("usageEvent") == 2)
        assert client.bodies("textOutput")[2]["role"] == "USER"
        assert not sim.schema_failures


async def test_audio_input_keeps_the_silence_timer_at_bay() -> None:
    """The 531 timeout counts time without input events, so a client streaming audio is never timed out."""
    async with NovaSonicSimulator(silence_timeout_s=1.0) as sim, connect(sim) as client:
        await _open_and_start(client)
        audio = await client.audio_start()
        for _ in range(12):  # 1.2 s of real-time-ish streaming, one 100 ms frame at a time
            await client.audio(audio, silence(100), frame_ms=100)
            await anyio.sleep(0.1)
        assert not client.exceptions and not client.ended
        await client.wait_for(lambda: client.ended)
        assert "InternalErrorCode=531" in client.exceptions[0][1]
        assert sim.streams[0].ended_by == "exception"


async def test_how_streams_end_is_recorded() -> None:
    """``ended_by`` tells a client's RST_STREAM from a dropped connection."""
    async with NovaSonicSimulator() as sim:
        async with connect(sim) as client:
            await _open_and_start(client)
            client.h2.reset_stream(client.sid, 8)  # CANCEL
            await client.flush()
            await sim.wait_until(lambda: sim.streams[0].ended_by is not None)
        async with connect(sim) as client:
            await _open_and_start(client)
        await sim.wait_until(lambda: sim.streams[1].ended_by is not None)
    assert [r.ended_by for r in sim.streams] == ["client_reset", "connection_lost"]


@pytest.mark.parametrize(
    ("raw", "failure"),
    [
        (_frame(b"", b"x")[:-1] + b"\x00", "schema"),  # a message CRC that does not match
        (_frame(_header(":date", 8, struct.pack("!q", 0)), b""), "signature"),  # no :chunk-signature
    ],
)
async def test_malformed_frames_are_refused(raw: bytes, failure: str) -> None:
    """CRCs are checked and the outer message must carry ``:date`` and ``:chunk-signature``
    (docs/protocols/nova_sonic.md#message-envelopes)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send_data(raw)
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert len(sim.schema_failures if failure == "schema" else sim.signature_failures) == 1
