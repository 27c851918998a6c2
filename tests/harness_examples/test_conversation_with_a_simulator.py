"""A whole conversation against the OpenAI Realtime simulator, with bidi-core's pytest fixtures."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from adapters.testing.openai_simulator import Reply, Rule, Scenario, ToolCall
from bidi_core import BidiAgent, BidiToolResultEvent, BidiTranscriptStreamEvent, tool


@tool
async def get_weather(location: str) -> str:
    """The weather in a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


WEATHER = Scenario(
    rules=[
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"location": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.")),
    ]
)


@pytest.mark.scenario(scenario=WEATHER)
async def test_the_assistant_looks_the_weather_up(openai_model: Any) -> None:
    agent = BidiAgent(model=openai_model, tools=[get_weather])
    results, said = [], []
    with anyio.fail_after(10):
        async with agent:
            await agent.send("What's the weather in Paris?")
            async for event in agent.receive():
                if isinstance(event, BidiToolResultEvent):
                    results.append(event.content)
                if isinstance(event, BidiTranscriptStreamEvent) and event.is_final and event.role == "assistant":
                    said.append(event.text)
                    break
    assert results == ["sunny in Paris"]
    assert said == ["It is sunny in Paris."]
