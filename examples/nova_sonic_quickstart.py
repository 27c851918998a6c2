"""The quickstart on Amazon Nova Sonic: a voice conversation with a tool and a barge-in.

With AWS credentials (environment, profile, SSO, role: botocore's usual chain)
it talks to Nova 2 Sonic on Amazon Bedrock through your microphone and
speakers (say "stop the conversation" to end it, or press Ctrl+C); the region
is your profile's, or ``AWS_DEFAULT_REGION``, or us-east-1. Without credentials
it runs offline: the bundled Nova Sonic simulator starts on 127.0.0.1 (TLS,
HTTP/2), a scripted voice asks about the weather and then talks over the
answer, and the reply audio goes to your speakers, or to
``nova-sonic-quickstart-reply.wav`` when there are none. Everything between
is the real adapter: SigV4, signed events, event-stream framing over h2.

The microphone runs at 16 kHz (the model's ``capabilities.input_audio``);
Nova answers at 24 kHz.

    python examples/nova_sonic_quickstart.py [--backend trio] [--wav reply.wav] [--debug]
"""

from __future__ import annotations

import argparse
import tempfile
import wave
from pathlib import Path

from _runner import run
from _scripted_voice import wav_option
from quickstart import SYSTEM_PROMPT, get_weather, speakers_available

from adapters.audio import BidiAudioIO, WavFileDevice
from adapters.nova_sonic import NOVA_2_SONIC, BidiNovaSonicModel
from adapters.text import BidiTextIO
from bidi_core import BidiAgent, stop_conversation

VOICE = "matthew"


def aws_credentials_available() -> bool:
    """Whether botocore's default chain finds credentials (env, profile, SSO, role)."""
    import botocore.session

    try:
        return botocore.session.get_session().get_credentials() is not None
    except Exception:  # a broken profile: treat as none, the offline demo still runs
        return False


async def online(wav: str | None) -> None:
    """The real service, the real microphone, speakers (or a WAV file)."""
    model = BidiNovaSonicModel(NOVA_2_SONIC, provider_config={"audio": {"voice": VOICE}})
    agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
    mic = BidiAudioIO()
    speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else mic
    print(f"Talking to {NOVA_2_SONIC} in {model.region}: ask about the weather, say 'stop the conversation' to end.")
    await agent.run(inputs=[mic.input()], outputs=[speakers.output(), BidiTextIO().output()])


def scripted_voice(path: Path) -> None:
    """A user who asks a question, waits, then talks over the answer (16 kHz PCM, Nova's input rate)."""
    from adapters.testing.nova_sonic_simulator import loud, silence

    speech = silence(300) + loud(900) + silence(2800) + loud(900) + silence(4000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(speech)


async def offline(wav: str | None) -> None:
    """The bundled simulator plays the service; a scripted voice plays the user."""
    from botocore.credentials import Credentials

    from adapters.testing.nova_sonic_simulator import NovaSonicSimulator, Reply, Rule, Scenario, ToolUse

    scenario = Scenario(
        transcripts=["What's the weather like in Paris?", "Sorry, that's all I needed. Please stop the conversation."],
        rules=[
            Rule(spoken_turn=0, reply=Reply(tool_calls=[ToolUse("get_weather", {"location": "Paris"})])),
            Rule(
                tool_result_for="get_weather",
                reply=Reply(
                    say="It is sunny and 22 degrees in Paris. Expect a light breeze this afternoon, clear skies "
                    "tonight and a cooler morning tomorrow, so take a jacket if you go out early."
                ),
            ),
            Rule(spoken_turn=1, reply=Reply(tool_calls=[ToolUse("stop_conversation")])),
        ],
    )
    if wav is None and not speakers_available():
        wav = "nova-sonic-quickstart-reply.wav"
    demo_key, demo_secret = "AKIDOFFLINEDEMO", "offline-demo-secret-key"
    with tempfile.TemporaryDirectory() as tmp:
        voice = Path(tmp) / "user.wav"
        scripted_voice(voice)
        # speedup=1: the simulated model speaks in real time, so the user's second sentence lands while
        # the answer is still being spoken, which is when Nova reports a barge-in.
        async with NovaSonicSimulator(credentials={demo_key: demo_secret}, scenario=scenario, speedup=1.0) as sim:
            print(f"No AWS credentials: running offline against the bundled Nova Sonic simulator at {sim.endpoint_url}")
            model = BidiNovaSonicModel(
                NOVA_2_SONIC,
                region="us-east-1",
                endpoint_url=sim.endpoint_url,
                credentials=Credentials(demo_key, demo_secret),
                verify=sim.ca_cert_pem_path,  # the simulator's throwaway CA, as AWS_CA_BUNDLE would name it
                provider_config={"audio": {"voice": VOICE}},
            )
            agent = BidiAgent(model=model, tools=[get_weather, stop_conversation], system_prompt=SYSTEM_PROMPT)
            user = BidiAudioIO(backend=WavFileDevice(input=voice))
            speakers = BidiAudioIO(backend=WavFileDevice(output=wav)) if wav else BidiAudioIO()
            await agent.run(inputs=[user.input()], outputs=[speakers.output(), BidiTextIO().output()])
    if wav:
        print(f"The assistant's audio is in {wav}")


async def main(args: argparse.Namespace) -> None:
    await (online if aws_credentials_available() else offline)(args.wav)


if __name__ == "__main__":
    run(main, __doc__ or "", wav_option)
