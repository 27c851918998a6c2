"""Voice and text together (the reference quickstart's "Adding Text I/O"):
audio in and out, and the transcripts printed as the model speaks.

The provider is played by the in-memory ScriptedModel (a synthetic voice: a
tone with its transcript); a scripted user says goodbye once the answer has
been heard, and the model ends the conversation with stop_conversation.

    python examples/voice_and_text.py [--wav OUT.wav] [--backend trio] [--debug]

--wav OUT.wav writes what the speakers would play to a WAV file instead.
"""

from __future__ import annotations

import argparse

from _runner import run
from _scripted_voice import ScriptedUser, exit_on_audio_error, scripted_model, speakers_or_wav, wav_option

from adapters.audio import BidiAudioIO
from adapters.text import BidiTextIO
from bidi_core import BidiAgent, stop_conversation


async def main(args: argparse.Namespace) -> None:
    agent = BidiAgent(
        model=scripted_model("Hi! You can hear me and read me at the same time.", 0.6, 330, farewell="Bye!"),
        tools=[stop_conversation],
        system_prompt="You are a helpful assistant.",
    )

    # Setup both audio and text I/O
    audio_io = BidiAudioIO(backend=speakers_or_wav(args.wav))
    text_io = BidiTextIO()

    with exit_on_audio_error():
        await agent.run(
            inputs=[audio_io.input(), ScriptedUser(audio_io.output(), echo=True)],
            outputs=[audio_io.output(), text_io.output()],  # Both audio and text
        )
    played = audio_io.output().stats.played_ms
    print(f"Played {played / 1000:.1f} s of audio." + (f" Wrote {args.wav}." if args.wav else ""))


if __name__ == "__main__":
    run(main, __doc__ or "", wav_option)
