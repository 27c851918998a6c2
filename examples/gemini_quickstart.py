"""The quickstart on Gemini Live: a voice conversation with a tool and a barge-in.

With ``GOOGLE_API_KEY`` (or ``GEMINI_API_KEY``) set, it talks to the Gemini
Live API through your microphone and speakers (say "stop the conversation" to
end it, or press Ctrl+C). Without one it runs offline: the bundled Gemini Live
simulator starts on 127.0.0.1, a scripted voice asks about the weather and
then talks over the answer, and the reply audio goes to your speakers, or to
``gemini-quickstart-reply.wav`` when there are none. Everything between is the
real adapter on a real WebSocket, speaking the Live API's protocol.

The microphone runs at 16 kHz (the model's ``capabilities.input_audio``);
Gemini answers at 24 kHz.

    python examples/gemini_quickstart.py [--backend trio] [--wav reply.wav] [--debug]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import wave
from pathlib import Path

from _runner import run
from _scripted_voice import wav_option
from quickstart import SYSTEM_PROMPT, get_weather, speakers_available

from adapters.audio import BidiAudioIO, WavFileDevice
from adapters.gemini import BidiGeminiLiveModel
from adapters.text import BidiTextIO
from bidi_core import BidiAgent, stop_conversation

VOICE = "Kore"


async def online(wav: str | None) -> None:
    """The real service, the real microphone, speakers (or a WAV file)."""
    model = BidiGeminiLiveModel(provider_config={"audio": {"voice": VOICE}})
    agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
    mic = BidiAudioIO()
    speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else mic
    print("Talking to Gemini Live: ask about the weather, say 'stop the conversation' to end.")
    await agent.run(inputs=[mic.input()], outputs=[speakers.output(), BidiTextIO().output()])


def scripted_voice(path: Path) -> None:
    """A user who asks a question, waits, then talks over the answer (16 kHz PCM, Gemini's native input rate)."""
    from adapters.testing.gemini_simulator import loud, silence

    speech = silence(300) + loud(900) + silence(2800) + loud(900) + silence(4000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(speech)


async def offline(wav: str | None) -> None:
    """The bundled simulator plays the service; a scripted voice plays the user."""
    from adapters.testing.gemini_simulator import GeminiLiveSimulator, Reply, Rule, Scenario, ToolCall

    scenario = Scenario(
        transcripts=["What's the weather like in Paris?", "Sorry, that's all I needed. Please stop the conversation."],
        rules=[
            Rule(spoken_turn=0, reply=Reply(tool_calls=[ToolCall("get_weather", {"location": "Paris"})])),
            Rule(
                tool_result_for="get_weather",
                reply=Reply(
                    say="It is sunny and 22 degrees in Paris. Expect a light breeze this afternoon, clear skies "
                    "tonight and a cooler morning tomorrow, so take a jacket if you go out early."
                ),
            ),
            Rule(spoken_turn=1, reply=Reply(tool_calls=[ToolCall("stop_conversation")])),
        ],
    )
    if wav is None and not speakers_available():
        wav = "gemini-quickstart-reply.wav"
    with tempfile.TemporaryDirectory() as tmp:
        voice = Path(tmp) / "user.wav"
        scripted_voice(voice)
        # speedup=1: the simulated model speaks in real time, so the user's second sentence lands while the
        # answer is still being generated, which is when Gemini reports a barge-in.
        async with GeminiLiveSimulator(api_key="offline-demo-key", scenario=scenario, tls=False, speedup=1.0) as sim:
            print(f"No GOOGLE_API_KEY: running offline against the bundled Gemini Live simulator at {sim.ws_base_url}")
            model = BidiGeminiLiveModel(
                api_key="offline-demo-key", base_url=sim.ws_base_url, provider_config={"audio": {"voice": VOICE}}
            )
            agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
            user = BidiAudioIO(backend=WavFileDevice(input=voice))
            speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else BidiAudioIO()
            await agent.run(inputs=[user.input()], outputs=[speakers.output(), BidiTextIO().output()])
    if wav:
        print(f"The assistant's audio is in {wav}")


async def main(args: argparse.Namespace) -> None:
    has_key = os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
    await (online if has_key else offline)(args.wav)


if __name__ == "__main__":
    run(main, __doc__ or "", wav_option)
