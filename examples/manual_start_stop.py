"""Manual start, send, receive and stop (the reference quickstart's
"Manual Start and Stop" snippet), against the in-memory ScriptedModel.

    python examples/manual_start_stop.py [--backend trio]
"""

from __future__ import annotations

from _runner import run

from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiTranscriptStreamEvent,
)


def scripted_model() -> ScriptedModel:
    """Plays the part of a provider: answers one question."""
    answer = "Python is a programming language that is easy to read and write."
    words = answer.split(" ")
    deltas = [
        BidiTranscriptStreamEvent(
            delta=w + " ", text=" ".join(words[: i + 1]), role="assistant", is_final=False, response_id="resp-1"
        )
        for i, w in enumerate(words)
    ]
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="What is Python?"),
                emit=[
                    BidiResponseStartEvent("resp-1"),
                    *deltas,
                    BidiTranscriptStreamEvent(
                        delta="", text=answer, role="assistant", is_final=True, response_id="resp-1"
                    ),
                    BidiResponseCompleteEvent("resp-1", "complete"),
                ],
            )
        ],
        model_id="scripted-demo",
    )


async def main() -> None:
    agent = BidiAgent(model=scripted_model())

    # Manually start the agent
    await agent.start()
    try:
        await agent.send("What is Python?")
        async for event in agent.receive():
            if isinstance(event, BidiTranscriptStreamEvent) and event.is_final:
                print(f"{event.role}: {event.text}")
            if isinstance(event, BidiResponseCompleteEvent):
                break
    finally:
        # Always stop after exiting the receive loop (stopping inside it is safe too)
        await agent.stop()


if __name__ == "__main__":
    run(main, __doc__ or "")
