"""A text conversation with a tool and stop_conversation.

The provider is played by the in-memory ScriptedModel and the user by a
scripted input, so this runs anywhere, offline, and ends by itself. Swap in a
real model (and ``BidiTextIO().input()`` for the keyboard) and nothing else
changes.

    python examples/text_conversation.py [--backend trio] [--debug]
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
from _runner import run

from adapters.testing import Expect, ScriptedModel, Step
from adapters.text import BidiTextIO
from bidi_core import (
    BidiAgent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    stop_conversation,
    tool,
)
from ports.io import AgentView


@tool
def get_weather(location: str) -> str:
    """Get the current weather for a location.

    Args:
        location: City name or location
    """
    return f"The weather in {location} is sunny and 22°C"


@tool
def current_time(timezone_name: str = "UTC") -> str:
    """Tell the current time.

    Args:
        timezone_name: Only UTC is known to this example.
    """
    return datetime.now(UTC).strftime("%H:%M UTC")


def say(rid: str, text: str) -> list[object]:
    """The model speaking one sentence: partial transcripts, then the final one."""
    words = text.split(" ")
    partial = [
        BidiTranscriptStreamEvent(
            delta=w + " ", text=" ".join(words[: i + 1]), role="assistant", is_final=False, response_id=rid
        )
        for i, w in enumerate(words)
    ]
    final = BidiTranscriptStreamEvent(delta="", text=text, role="assistant", is_final=True, response_id=rid)
    return [*partial, final]


def scripted_model() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="What's the weather in Paris?"),
                emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("call-1", "get_weather", {"location": "Paris"})],
            ),
            Step(
                expect=Expect(BidiToolResultEvent, tool_use_id="call-1"),
                emit=[
                    BidiResponseCompleteEvent("r1", "tool_use"),
                    BidiResponseStartEvent("r2"),
                    *say("r2", "It is sunny and 22 degrees in Paris."),
                    BidiResponseCompleteEvent("r2", "complete"),
                ],
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Thanks, that's all. Stop the conversation."),
                emit=[
                    BidiResponseStartEvent("r3"),
                    *say("r3", "You're welcome, goodbye!"),
                    BidiToolUseEvent("call-2", "stop_conversation", {}),
                    BidiResponseCompleteEvent("r3", "tool_use"),
                ],
            ),
        ],
        model_id="scripted-demo",
    )


class ScriptedUser:
    """Types two lines, each once the assistant has finished its previous turn."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = list(lines)
        self._turn_done = anyio.Event()
        self._turn_done.set()

    async def start(self, agent: AgentView) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self) -> str:
        if not self._lines:
            await anyio.sleep_forever()
        await self._turn_done.wait()
        self._turn_done = anyio.Event()
        line = self._lines.pop(0)
        print(f"You: {line}")
        return line

    async def observe(self, event: object) -> None:
        """An output too: a finished answer lets the user speak again."""
        if isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "complete":
            self._turn_done.set()


async def main() -> None:
    agent = BidiAgent(
        model=scripted_model(),
        tools=[get_weather, current_time, stop_conversation],
        system_prompt="You are a helpful assistant. When the user says 'stop conversation', use stop_conversation.",
    )
    user = ScriptedUser(["What's the weather in Paris?", "Thanks, that's all. Stop the conversation."])
    text_io = BidiTextIO()
    await agent.run(inputs=[user], outputs=[text_io.output(), user.observe])
    print(f"History: {len(agent.messages)} messages")


if __name__ == "__main__":
    run(main, __doc__ or "")
