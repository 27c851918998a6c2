"""The bridge's parts on their own: mu-law against the carrier simulator's independent G.711, the reply's
chunking, Twilio's request signature (the official library's test vector), and the carrier's messages."""

from __future__ import annotations

import base64
import json
from array import array

import pytest

from adapters.telephony import twilio_wire as wire
from adapters.telephony.codec import ReplyAudio, mulaw_to_pcm16, pcm16_to_mulaw
from adapters.telephony.signature import call_token, compute_signature, signature_valid, stream_signature_auth
from adapters.testing.twilio_simulator import mulaw_decode, mulaw_encode, twilio_signature
from adapters.web.auth import Accept, Handshake, Refuse
from ports.audio import AudioFormat

EVERY_SAMPLE = array("h", range(-32768, 32768)).tobytes()


def test_mulaw_matches_an_independent_g711_on_every_sample_and_every_byte() -> None:
    assert pcm16_to_mulaw(EVERY_SAMPLE) == mulaw_encode(EVERY_SAMPLE)
    assert mulaw_to_pcm16(bytes(range(256))) == mulaw_decode(bytes(range(256)))


def test_the_reply_is_cut_into_whole_chunks_and_keeps_its_length_across_any_event_sizes() -> None:
    encoder = ReplyAudio(chunk_ms=20)
    pcm = array("h", (int(8000 * ((i // 30) % 2 * 2 - 1)) for i in range(24000))).tobytes()  # 1 s at 24 kHz
    chunks: list[bytes] = []
    for start, size in zip(range(0, len(pcm), 2222), [2222] * 100, strict=False):
        chunks += encoder.feed(pcm[start : start + size], AudioFormat(24000))
    chunks += encoder.flush()
    assert all(len(c) == 160 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 160
    assert abs(sum(map(len, chunks)) - 8000) <= 1  # 1 s at 8 kHz, one byte a sample
    assert encoder.flush() == []


# The official Python library's unit test: token "12345", this URL and these parameters sign to this value.
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


def test_the_signature_is_twilios_and_the_simulators() -> None:
    assert compute_signature("12345", URL, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", URL, PARAMS.items()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, PARAMS)
    # Twilio may sign the URL with or without the scheme's default port: both are accepted, nothing else.
    assert signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL.replace(".com", ".com:443"), PARAMS)
    assert signature_valid("12345", "kvajT1Ptam85bY51eRf/AJRuM3w=", URL, PARAMS)
    assert not signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL.replace(".com", ".com:8443"), PARAMS)
    assert not signature_valid("12346", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, PARAMS)
    assert not signature_valid("12345", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", URL, {**PARAMS, "Digits": "1235"})
    assert not signature_valid("12345", None, URL, PARAMS)
    assert not signature_valid("12345", "", URL, PARAMS)


def test_the_stream_hook_wants_twilios_signature_of_the_stream_url() -> None:
    hook = stream_signature_auth("12345", "wss://phone.example/twilio/stream")

    def handshake(signature: str | None) -> Handshake:
        headers = {} if signature is None else {"x-twilio-signature": signature}
        return Handshake(path="/twilio/stream", headers=headers, query={}, subprotocols=())

    assert hook(handshake(compute_signature("12345", "wss://phone.example/twilio/stream"))) == Accept("twilio")
    assert hook(handshake(compute_signature("12345", "https://phone.example/twilio/stream"))) == Accept("twilio")
    assert hook(handshake(compute_signature("12345", "wss://other.example/twilio/stream"))) == Refuse(
        403, "twilio_signature"
    )
    assert hook(handshake(None)) == Refuse(403, "twilio_signature")
    assert call_token("12345", "CA1") != call_token("12345", "CA2") != call_token("12346", "CA2")


def _start(**changes: object) -> str:
    start = {
        "streamSid": "MZ1",
        "accountSid": "AC1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"a": "b"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    start.update(changes)
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": "MZ1"})


def test_the_carriers_messages_parse() -> None:
    assert wire.parse('{"event": "connected", "protocol": "Call", "version": "1.0.0"}') == wire.Connected(
        "Call", "1.0.0"
    )
    start = wire.parse(_start())
    assert isinstance(start, wire.Start)
    assert (start.stream_sid, start.call_sid, start.sample_rate, dict(start.custom_parameters)) == (
        "MZ1",
        "CA1",
        8000,
        {"a": "b"},
    )
    media = {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": base64.b64encode(b"\xff" * 160).decode()}
    parsed = wire.parse(json.dumps({"event": "media", "streamSid": "MZ1", "media": media}))
    assert parsed == wire.Media(b"\xff" * 160, "inbound", "2", "5")
    assert wire.parse('{"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "#"}}') == wire.Dtmf(
        "#", "inbound_track"
    )
    assert wire.parse('{"event": "mark", "mark": {"name": "3.7"}}') == wire.Mark("3.7")
    assert wire.parse('{"event": "stop", "stop": {"accountSid": "AC1", "callSid": "CA1"}}') == wire.Stop("CA1")
    assert wire.parse('{"event": "something-new"}') is None
    ours = json.loads(wire.media_message("MZ1", b"\x01\x02"))
    assert ours == {"event": "media", "streamSid": "MZ1", "media": {"payload": "AQI="}}
    assert json.loads(wire.mark_message("MZ1", "n")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "n"}}
    assert json.loads(wire.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"no": "event"}',
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "media", "media": {"payload": 5}}',
        '{"event": "mark", "mark": {}}',
        '{"event": "dtmf", "dtmf": {"digit": 1}}',
        '{"event": "start", "start": {"streamSid": "MZ"}}',
        _start(customParameters=["x"]),
        _start(mediaFormat={"sampleRate": "fast"}),
        _start(tracks="inbound"),
    ],
)
def test_a_frame_we_cannot_use_is_a_typed_error(frame: str) -> None:
    with pytest.raises(wire.CarrierProtocolError):
        wire.parse(frame)
