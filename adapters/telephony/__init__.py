"""Phone calls: Twilio Media Streams as a conversation input and output, on the web app's server.

Needs the ``telephony`` extra (the ``web`` extra, soxr and numpy, and
``audioop-lts`` on Python 3.13+). The wire facts are docs/protocols/twilio.md.

* :class:`TwilioBridge`: mounts Twilio's voice webhook (signature checked,
  answered with ``<Connect><Stream>``) and the Media Stream WebSocket on a
  :class:`~adapters.web.WebApp`, whose admission, auth, metrics and drain
  apply to calls as to browsers; each call goes to the application's runner
  as a :class:`PhoneCall`;
* :class:`TwilioMediaStream`: one stream as an input (the caller's audio in
  the model's format, key presses) and an output (the model's audio, paced at
  play speed with a small lead; Twilio's mark echoes are its playback report,
  so a barge-in truncates at what the caller heard);
* :mod:`~adapters.telephony.signature`: ``X-Twilio-Signature``.
"""

from adapters.telephony.bridge import TOKEN_PARAMETER, CallRunner, PhoneCall, TwilioBridge
from adapters.telephony.signature import call_token, compute_signature, signature_valid, stream_signature_auth
from adapters.telephony.stream import (
    DEFAULT_DTMF_TEXT,
    CallEnded,
    DtmfDigit,
    TwilioMediaStream,
    TwilioStreamInput,
    TwilioStreamOutput,
)

__all__ = [
    "DEFAULT_DTMF_TEXT",
    "TOKEN_PARAMETER",
    "CallEnded",
    "CallRunner",
    "DtmfDigit",
    "PhoneCall",
    "TwilioBridge",
    "TwilioMediaStream",
    "TwilioStreamInput",
    "TwilioStreamOutput",
    "call_token",
    "compute_signature",
    "signature_valid",
    "stream_signature_auth",
]
