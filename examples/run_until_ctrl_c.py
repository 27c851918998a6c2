"""Run a conversation until Ctrl+C (the reference quickstart's "Controlling
Conversation Lifecycle" snippet), on asyncio or Trio.

``run()`` runs until the conversation ends or the task running it is
cancelled. Ctrl+C cancels it: every task, socket and audio stream of the
agent is closed before ``run()`` returns, so the ``finally`` block only has
``stop()`` to call, and ``stop()`` after ``run()`` is a no-op that is always
safe. With ``OPENAI_API_KEY`` set it talks to OpenAI Realtime by text (type a
line, get an answer); without one the bundled simulator answers a scripted
question, and the conversation then waits, like a real one, for Ctrl+C.

    python examples/run_until_ctrl_c.py [--backend trio] [--debug]
"""

from __future__ import annotations

import os

import anyio
from _runner import run

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.text import BidiTextIO
from bidi_core import BidiAgent, BidiTextInputEvent
from ports.io import AgentView

SYSTEM_PROMPT = "You are a helpful assistant. Keep answers short."


class OneQuestion:
    """A user who asks one thing, then stays quiet (the conversation goes on)."""

    def __init__(self, text: str) -> None:
        self._text: str | None = text

    async def start(self, agent: AgentView) -> None:
        pass

    async def __call__(self) -> BidiTextInputEvent:
        if self._text is None:
            await anyio.sleep_forever()
        text, self._text = self._text, None
        assert text is not None
        print(f"You: {text}", flush=True)
        return BidiTextInputEvent(text)

    async def stop(self) -> None:
        pass


async def converse(model: BidiOpenAIRealtimeModel, user: object) -> None:
    agent = BidiAgent(model=model, system_prompt=SYSTEM_PROMPT)
    text_io = BidiTextIO()
    try:
        # Runs until the conversation ends, or until Ctrl+C cancels it.
        await agent.run(inputs=[user], outputs=[text_io.output()])
    except (anyio.get_cancelled_exc_class(), KeyboardInterrupt):
        # asyncio turns Ctrl+C into a cancellation of the main task; Trio raises
        # KeyboardInterrupt in it. Either way, let it finish its way out.
        print("\nConversation cancelled by user", flush=True)
        raise
    finally:
        await agent.stop()  # after run() returns: always safe, nothing left to stop


async def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        print("Talking to OpenAI Realtime: type a line and press Enter; Ctrl+C ends the conversation.")
        await converse(BidiOpenAIRealtimeModel(provider_config={"output_modalities": ["text"]}), BidiTextIO().input())
        return

    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario

    scenario = Scenario(rules=[Rule(text_contains="capital", reply=Reply(say="Paris is the capital of France."))])
    async with OpenAIRealtimeSimulator(api_key="sk-offline-demo", scenario=scenario) as sim:
        print(f"No OPENAI_API_KEY: running offline against the bundled simulator at {sim.base_url}", flush=True)
        model = BidiOpenAIRealtimeModel(
            api_key="sk-offline-demo", base_url=sim.base_url, provider_config={"output_modalities": ["text"]}
        )
        await converse(model, OneQuestion("What is the capital of France?"))


if __name__ == "__main__":
    run(main, __doc__ or "", announce_cancel=False)
