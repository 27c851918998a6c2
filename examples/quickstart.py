"""The quickstart: a voice conversation with OpenAI Realtime, a tool and a barge-in.

With ``OPENAI_API_KEY`` set, it talks to the real service through your
microphone and speakers (say "stop the conversation" to end it, or press
Ctrl+C). Without one it runs offline: the bundled OpenAI Realtime simulator
starts on 127.0.0.1, a scripted voice asks about the weather and then talks
over the answer, and the reply audio goes to your speakers, or to
``quickstart-reply.wav`` when there are none. Everything between is the real
adapter on a real WebSocket.

    python examples/quickstart.py [--backend trio] [--wav reply.wav] [--debug]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import wave
from pathlib import Path

import anyio

from adapters.audio import AudioUnavailableError, BidiAudioIO, PortAudioDevice, WavFileDevice
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.text import BidiTextIO
from bidi_core import BidiAgent, stop_conversation, tool

SYSTEM_PROMPT = "You are a helpful voice assistant. Keep answers short. Use stop_conversation when asked to stop."


@tool
def get_weather(location: str) -> str:
    """Get the current weather for a location.

    Args:
        location: City name or location
    """
    return f"sunny and 22 degrees in {location}"


def speakers_available() -> bool:
    try:
        return any(d.max_output_channels > 0 for d in PortAudioDevice().devices())
    except AudioUnavailableError:
        return False


async def online(wav: str | None) -> None:
    """The real service, the real microphone, speakers (or a WAV file)."""
    model = BidiOpenAIRealtimeModel(provider_config={"audio": {"voice": "marin"}})
    agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
    mic = BidiAudioIO()
    speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else mic
    print("Talking to OpenAI Realtime: ask about the weather, say 'stop the conversation' to end.")
    await agent.run(inputs=[mic.input()], outputs=[speakers.output(), BidiTextIO().output()])


def scripted_voice(path: Path) -> None:
    """A user who asks a question, waits, then talks over the answer (24 kHz PCM)."""
    from adapters.testing.openai_simulator import loud, silence

    speech = silence(300) + loud(900) + silence(2800) + loud(900) + silence(4000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24000)
        out.writeframes(speech)


async def offline(wav: str | None) -> None:
    """The bundled simulator plays the service; a scripted voice plays the user."""
    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, ToolCall

    scenario = Scenario(
        transcripts=["What's the weather like in Paris?", "Sorry, that's all I needed. Please stop the conversation."],
        rules=[
            Rule(spoken_turn=0, reply=Reply(tool_calls=[ToolCall("get_weather", {"location": "Paris"})])),
            Rule(
                tool_result_for="get_weather",
                reply=Reply(
                    say="It is {result}. Expect a light breeze this afternoon, clear skies tonight and a cooler "
                    "morning tomorrow, so take a jacket if you go out early."
                ),
            ),
            Rule(spoken_turn=1, reply=Reply(tool_calls=[ToolCall("stop_conversation")])),
        ],
    )
    if wav is None and not speakers_available():
        wav = "quickstart-reply.wav"
    with tempfile.TemporaryDirectory() as tmp:
        voice = Path(tmp) / "user.wav"
        scripted_voice(voice)
        async with OpenAIRealtimeSimulator(api_key="sk-offline-demo", scenario=scenario) as sim:
            print(f"No OPENAI_API_KEY: running offline against the bundled simulator at {sim.base_url}")
            model = BidiOpenAIRealtimeModel(
                api_key="sk-offline-demo",
                base_url=sim.base_url,
                provider_config={"audio": {"voice": "marin"}, "transcription": {"model": "gpt-4o-mini-transcribe"}},
            )
            agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
            user = BidiAudioIO(backend=WavFileDevice(input=voice))
            speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else BidiAudioIO()
            await agent.run(inputs=[user.input()], outputs=[speakers.output(), BidiTextIO().output()])
    if wav:
        print(f"The assistant's audio is in {wav}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--wav", help="write the assistant's audio to this WAV file instead of the speakers")
    parser.add_argument("--debug", action="store_true", help="show bidi_core's debug logs")
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s")
        logging.getLogger("bidi_core").setLevel(logging.DEBUG)
    run = online if os.environ.get("OPENAI_API_KEY") else offline
    try:
        anyio.run(run, args.wav, backend=args.backend)
    except KeyboardInterrupt:
        print("\nConversation cancelled by user")


if __name__ == "__main__":
    main()
