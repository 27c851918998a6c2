"""Your first voice conversation (the reference quickstart's "Your First Voice
Conversation"): the microphone goes to the model, the model's voice to the
speakers.

The provider is played by the in-memory ScriptedModel: it greets you with a
short synthetic voice (a tone, with its transcript). Once the greeting has
been heard, a scripted user says goodbye and the model ends the conversation
with stop_conversation, so this ends by itself. Swap in a real model (and
drop the scripted user) and nothing else changes.

    python examples/voice_conversation.py [--wav OUT.wav] [--backend trio] [--debug]

--wav OUT.wav writes what the speakers would play to a WAV file instead (for
machines without speakers); the microphone then hears silence.
"""

from __future__ import annotations

import argparse

from _runner import run
from _scripted_voice import ScriptedUser, exit_on_audio_error, scripted_model, speakers_or_wav, wav_option

from adapters.audio import BidiAudioIO
from bidi_core import BidiAgent, stop_conversation
from ports.events import BidiAudioInputEvent
from ports.messages import TextMessage


async def main(args: argparse.Namespace) -> None:
    model = scripted_model("Hello! This is what a voice conversation sounds like.", 0.8, 440)
    agent = BidiAgent(
        model=model,
        tools=[stop_conversation],
        system_prompt="You are a helpful voice assistant. Keep responses concise and natural.",
    )

    # Setup audio I/O for microphone and speakers
    audio_io = BidiAudioIO(backend=speakers_or_wav(args.wav))

    with exit_on_audio_error():
        await agent.run(
            inputs=[audio_io.input(), ScriptedUser(audio_io.output())],
            outputs=[audio_io.output()],
        )

    said = " ".join(m.text for m in agent.messages if isinstance(m, TextMessage) and m.role == "assistant")
    mic = sum(1 for e in model.sent if isinstance(e, BidiAudioInputEvent))
    played = audio_io.output().stats
    print(f"Assistant said: {said}")
    print(
        f"Played {played.played_ms / 1000:.1f} s of the assistant's voice ({played.underruns} underruns); "
        f"sent {mic} blocks of microphone audio to the model." + (f" Wrote {args.wav}." if args.wav else "")
    )


if __name__ == "__main__":
    run(main, __doc__ or "", wav_option)
