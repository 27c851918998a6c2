"""Handling interruptions in a ``receive()`` loop (the reference quickstart's
"Handling Interruptions" snippet).

The user asks for a story and talks over the answer. The provider hears the
speech; bidi-core then clears every queued block of the answer's audio, tells
the provider how much of it was heard, and delivers a
``BidiInterruptionEvent`` naming the response it cut short. Audio of that
response arriving late is dropped, and the next response starts clean.

Offline (no ``OPENAI_API_KEY``), the bundled simulator plays OpenAI Realtime
and the "voice" is synthetic: 20 ms blocks of a loud tone its voice activity
detection takes for speech, sent with ``agent.send()``. With a key, the same
loop runs against the service with your microphone.

    python examples/handling_interruptions.py [--backend trio] [--debug]
"""

from __future__ import annotations

import os

import anyio
from _runner import run

from adapters.openai import BidiOpenAIRealtimeModel
from bidi_core import (
    BidiAgent,
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiTranscriptStreamEvent,
)

RATE = 24000


async def talk_over(agent: BidiAgent, pcm: bytes) -> None:
    """Send ``pcm`` in 20 ms blocks at the pace a microphone would."""
    block = RATE * 2 * 20 // 1000
    for i in range(0, len(pcm), block):
        await agent.send(BidiAudioInputEvent(pcm[i : i + block], sample_rate=RATE))
        await anyio.sleep(0.02)


async def receive_loop(agent: BidiAgent, interrupt_with: bytes | None) -> None:
    interrupted = False
    async with anyio.create_task_group() as tg:
        async for event in agent.receive():
            if isinstance(event, BidiInterruptionEvent):
                print(f"User interrupted: {event.reason} (response {event.response_id} cut short)")
                # Audio output already cleared; the model stopped generating; ready for new input.
                interrupted = True
            elif isinstance(event, BidiTranscriptStreamEvent) and event.is_final:
                print(f"{event.role}: {event.text}")
            elif isinstance(event, BidiAudioStreamEvent) and interrupt_with is not None:
                tg.start_soon(talk_over, agent, interrupt_with)  # the story has begun: talk over it
                interrupt_with = None
            elif isinstance(event, BidiResponseCompleteEvent):
                print(f"[response {event.response_id}: {event.stop_reason}]")
                if interrupted and event.stop_reason == "complete":
                    break  # the answer to the interruption: enough for a demo


async def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        from adapters.audio import BidiAudioIO

        audio_io = BidiAudioIO()
        agent = BidiAgent(model=BidiOpenAIRealtimeModel())
        print("Ask for a long story, then talk over it. Ctrl+C ends the conversation.")
        # With a microphone and speakers, run() wires them; interruptions reach outputs as events.
        await agent.run(inputs=[audio_io.input()], outputs=[audio_io.output(), print_interruptions])
        return

    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, loud, silence

    scenario = Scenario(
        rules=[
            Rule(text_contains="story", reply=Reply(say="Once upon a time, in a quiet village...", audio_ms=6000)),
            Rule(spoken_turn=0, reply=Reply(say="Of course, I will stop the story.")),
        ],
        transcripts=["Actually, please stop."],
    )
    # speedup=1: the simulated model speaks in real time, so the user talks over it mid-answer,
    # however busy the machine is.
    async with OpenAIRealtimeSimulator(api_key="sk-offline-demo", scenario=scenario, speedup=1.0) as sim:
        model = BidiOpenAIRealtimeModel(api_key="sk-offline-demo", base_url=sim.base_url)
        async with BidiAgent(model=model) as agent:
            await agent.send("Tell me a long story.")
            with anyio.fail_after(30):
                await receive_loop(agent, interrupt_with=loud(600) + silence(700))
        # stop() ran when the `async with` block ended, after the receive loop.


async def print_interruptions(event: object) -> None:
    if isinstance(event, BidiInterruptionEvent):
        print(f"User interrupted: {event.reason}")


if __name__ == "__main__":
    run(main, __doc__ or "")
