"""A carrier simulator for phone bridges: Twilio's side of a call, from Twilio's documentation.

Needs the ``simulators`` extra (wsproto). It posts the voice webhook as Twilio
does (``X-Twilio-Signature``), follows the TwiML's ``<Connect><Stream>``, and
plays the Media Stream (docs/protocols/twilio.md): the caller's audio as
mu-law frames at real-time pace, the server's audio played at real-time pace,
marks echoed once the audio before them has played, ``clear`` honoured, keys
and hanging up on cue, everything recorded. It imports nothing of our bridge
(its mu-law is its own, :mod:`~.g711`), so it cannot be tailored to it.
"""

from adapters.testing.twilio_simulator.call import CallRecord, Clear, SimulatedCall, Speech
from adapters.testing.twilio_simulator.carrier import TwilioCarrierSimulator
from adapters.testing.twilio_simulator.g711 import decode as mulaw_decode
from adapters.testing.twilio_simulator.g711 import encode as mulaw_encode
from adapters.testing.twilio_simulator.transport import twilio_signature
from adapters.testing.twilio_simulator.voice import read_wav_8k, tone_8k

__all__ = [
    "CallRecord",
    "Clear",
    "SimulatedCall",
    "Speech",
    "TwilioCarrierSimulator",
    "mulaw_decode",
    "mulaw_encode",
    "read_wav_8k",
    "tone_8k",
    "twilio_signature",
]
