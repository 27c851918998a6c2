"""The Gemini Live simulator's turns: text and audio turns, function calls, interruptions.

Over real sockets (TLS and plain), on asyncio and Trio, driven by the raw client of ``client.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.testing.gemini_simulator import (
    GeminiLiveSimulator,
    loud,
    silence,
)
from tests.gemini_simulator.client import (
    SCENARIO,
    WEATHER_TOOL,
    RawClient,
    assert_oracle_clean,
    connect,
    kinds,
    pcm_of,
    transcript_of,
)

# ---------------------------------------------------------------------- turns (docs/protocols/gemini.md#turn-order)


@pytest.mark.parametrize("how", ["realtime_text", "client_content"])
async def test_text_turn_message_order(how: str, sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """A completed turn: modelTurn audio (24 kHz) with outputTranscription → generationComplete → turnComplete
    carrying usageMetadata; the last outputTranscription precedes generationComplete."""
    client = await connect(sim, clients)
    await client.setup(outputAudioTranscription={}, generationConfig={"responseModalities": ["AUDIO"]})
    if how == "realtime_text":
        await client.send({"realtimeInput": {"text": "hello"}})
    else:
        turns = [{"role": "user", "parts": [{"text": "hello"}]}]
        await client.send({"client_content": {"turns": turns, "turn_complete": True}})
    messages = await client.until_turn_complete()
    assert kinds(messages)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert set(kinds(messages)[:-2]) == {"serverContent.modelTurn", "serverContent.outputTranscription"}
    assert transcript_of(messages) == "You said: hello"
    parts = [p for m in messages for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])]
    assert {p["inlineData"]["mimeType"] for p in parts} == {"audio/pcm;rate=24000"}
    assert len(pcm_of(messages)) > 0 and len(pcm_of(messages)) % 2 == 0
    usage = messages[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"] > 0
    expected = ("text", "hello") if how == "realtime_text" else ("history", (("user", "hello"),))
    assert sim.user_inputs == [expected]


async def test_text_modality_answers_in_text_parts(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(generationConfig={"responseModalities": ["TEXT"]})
    await client.send({"realtimeInput": {"text": "hi"}})
    messages = await client.until_turn_complete()
    texts = [p["text"] for m in messages for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])]
    assert "".join(texts) == "You said: hi"
    assert kinds(messages) == [
        "serverContent.modelTurn",
        "serverContent.generationComplete",
        "serverContent.turnComplete",
    ]


async def test_audio_turn_by_server_vad(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """16 kHz PCM16 in (rate from the MIME type): speech then ~silence ends the turn; the transcript of spoken
    turn 0 comes as inputTranscription and the reply follows."""
    client = await connect(sim, clients)
    await client.setup(
        inputAudioTranscription={},
        outputAudioTranscription={},
        realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 300}},
    )
    pcm = silence(200) + loud(400) + silence(400)
    await client.audio(pcm)
    messages = await client.until_turn_complete()
    assert kinds(messages)[0] == "serverContent.inputTranscription"
    assert messages[0]["serverContent"]["inputTranscription"]["text"] == "hello there"
    assert transcript_of(messages) == "I heard you."
    assert kinds(messages)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert b"".join(v for k, v in sim.user_inputs if k == "audio") == pcm
    assert sim.sessions[0].spoken_turns == 1


async def test_audio_at_another_rate_and_quiet_noise(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """The rate comes from the MIME type (24 kHz here); silence alone is no turn."""
    client = await connect(sim, clients)
    await client.setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}})
    await client.audio(silence(600, rate=24000), rate=24000)
    await client.send({"realtimeInput": {"text": "ping"}})
    first = await client.until_turn_complete()
    assert transcript_of(first) == ""  # no transcription asked
    assert sim.sessions[0].spoken_turns == 0
    await client.audio(loud(300, rate=24000) + silence(300, rate=24000), rate=24000)
    await client.until_turn_complete()
    assert sim.sessions[0].spoken_turns == 1


async def test_audio_stream_end_ends_the_spoken_turn(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup()
    await client.audio(loud(300))
    await client.send({"realtimeInput": {"audioStreamEnd": True}})
    messages = await client.until_turn_complete()
    assert "serverContent.generationComplete" in kinds(messages)
    assert sim.sessions[0].spoken_turns == 1


async def test_manual_activity_signals(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """With automaticActivityDetection disabled, activityStart/activityEnd bound the turn; without, they are 1007."""
    client = await connect(sim, clients)
    await client.setup(realtimeInputConfig={"automaticActivityDetection": {"disabled": True}})
    await client.send({"realtimeInput": {"activityStart": {}}})
    await client.audio(silence(200))
    await client.send({"realtimeInput": {"activityEnd": {}}})
    messages = await client.until_turn_complete()
    assert "serverContent.generationComplete" in kinds(messages)
    other = await connect(sim, clients)
    await other.setup()
    await other.send({"realtimeInput": {"activityStart": {}}})
    assert (await other.expect_closed()).code == 1007


# ---------------------------------------------------------------------- tools (docs/protocols/gemini.md#tools)


async def test_several_function_calls_then_responses(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """One toolCall carries both functionCalls; the model answers after every response (id and name) arrived,
    in the same turn (no turnComplete before)."""
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL], outputAudioTranscription={})
    await client.send({"realtimeInput": {"text": "weather and time please"}})
    messages = await client.until(lambda m: "toolCall" in m)
    assert "serverContent.turnComplete" not in kinds(messages)
    calls = messages[-1]["toolCall"]["functionCalls"]
    assert [(c["name"], c["args"]) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
    ]
    assert len({c["id"] for c in calls}) == 2
    first, second = calls
    await client.send(
        {
            "toolResponse": {
                "functionResponses": [{"id": first["id"], "name": first["name"], "response": {"sky": "sun"}}]
            }
        }
    )
    await client.send(
        {"tool_response": {"function_responses": [{"id": second["id"], "name": second["name"], "response": {"t": 12}}]}}
    )
    answer = await client.until_turn_complete()
    assert transcript_of(answer) == "It is sunny in Paris at noon."
    assert kinds(answer)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert sim.user_inputs == [
        ("text", "weather and time please"),
        ("tool_response", first["id"]),
        ("tool_response", second["id"]),
    ]


@pytest.mark.parametrize(
    "response",
    [
        {"name": "get_weather", "response": {}},
        {"id": "CALL", "response": {}},
        {"id": "function-call-unknown", "name": "get_weather", "response": {}},
        {"id": "CALL", "name": "get_time", "response": {}},
    ],
    ids=["no id", "no name", "unknown id", "wrong name"],
)
async def test_bad_tool_responses_close_1007(
    response: dict[str, Any], sim: GeminiLiveSimulator, clients: list[RawClient]
) -> None:
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL])
    await client.send({"realtimeInput": {"text": "weather and time"}})
    (call, _) = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"]
    if response.get("id") == "CALL":
        response = {**response, "id": call["id"]}
    await client.send({"toolResponse": {"functionResponses": [response]}})
    assert (await client.expect_closed()).code == 1007
    assert ("tool_response", call["id"]) not in sim.user_inputs


async def test_undeclared_tool_is_spoken_about(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(outputAudioTranscription={})
    await client.send({"realtimeInput": {"text": "weather and time"}})
    messages = await client.until_turn_complete()
    assert "toolCall" not in kinds(messages)
    assert "no such tool is declared" in transcript_of(messages)


# ---------------------------------------------------------------------- interruptions
# docs/protocols/gemini.md#barge-in


async def test_speech_interrupts_a_reply(clients: list[RawClient]) -> None:
    """User speech during a reply: interrupted → turnComplete, no generationComplete, no audio after."""
    async with GeminiLiveSimulator(tls=False, scenario=SCENARIO, speedup=2.0) as sim:
        client = await connect(sim, clients)
        await client.setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}})
        await client.send({"realtimeInput": {"text": "long"}})
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.audio(loud(100))
        messages = await client.until(lambda m: m.get("serverContent", {}).get("interrupted"))
        after = await client.until_turn_complete()
        assert kinds(after) == ["serverContent.turnComplete"]
        assert "serverContent.generationComplete" not in kinds(messages)
        assert len(pcm_of(client.seen)) < 3000 * 48  # cut short of the 3 s answer
        await client.audio(silence(300))  # the user's turn ends: a new reply
        reply = await client.until_turn_complete()
        assert kinds(reply)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
        assert_oracle_clean(sim)


async def test_interruption_cancels_pending_tool_calls(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """Barge-in while the model waits for tools: interrupted, toolCallCancellation(ids), turnComplete; a late
    response to a cancelled call is ignored (not in the session state, the connection stays open)."""
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL])
    await client.send({"realtimeInput": {"text": "weather and time"}})
    calls = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"]
    await client.audio(loud(100))
    messages = await client.until_turn_complete()
    assert kinds(messages) == ["serverContent.interrupted", "toolCallCancellation", "serverContent.turnComplete"]
    assert messages[1]["toolCallCancellation"]["ids"] == [c["id"] for c in calls]
    late = {"id": calls[0]["id"], "name": calls[0]["name"], "response": {}}
    await client.send({"toolResponse": {"functionResponses": [late]}})
    await client.send({"realtimeInput": {"text": "still there?"}})
    await client.until_turn_complete()
    assert not [i for i in sim.user_inputs if i[0] == "tool_response"]


async def test_no_interruption_mode_answers_after_the_current_turn(clients: list[RawClient]) -> None:
    async with GeminiLiveSimulator(tls=False, scenario=SCENARIO, speedup=4.0) as sim:
        client = await connect(sim, clients)
        await client.setup(
            realtimeInputConfig={
                "activityHandling": "NO_INTERRUPTION",
                "automaticActivityDetection": {"silenceDurationMs": 100},
            }
        )
        await client.send({"realtimeInput": {"text": "long"}})
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.audio(loud(100) + silence(200))
        first = await client.until_turn_complete()
        second = await client.until_turn_complete()
        assert "serverContent.interrupted" not in kinds(first + second)
        assert (
            kinds(first)[-2:]
            == kinds(second)[-2:]
            == ["serverContent.generationComplete", "serverContent.turnComplete"]
        )
        assert_oracle_clean(sim)
