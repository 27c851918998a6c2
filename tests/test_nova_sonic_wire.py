"""Nova Sonic's wire pieces with no server: framing, signing, events, config.

The expected values are computed here from the formulas of docs/protocols/nova_sonic.md
(CRC-32 over the bytes, HMAC-SHA256 chains, SigV4's canonical
request), written out independently of the adapter's code, and decoded
with botocore's own parser.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import itertools
import json
import struct
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.nova_sonic import BidiNovaSonicModel, NovaSonicConfig, wire
from adapters.nova_sonic.config import parse_provider_config
from adapters.nova_sonic.errors import NovaSonicProviderError, error_for_exception, error_for_response
from adapters.nova_sonic.eventstream import EventStreamDecoder, encode_message
from adapters.nova_sonic.history import history_turns, split_utf8
from adapters.nova_sonic.signing import AwsCredentials, EventSigner, sign_request
from adapters.nova_sonic.wire import tool_configuration, tool_result_content
from ports.errors import BidiProtocolError, BidiUsageError
from ports.events import BidiToolResultEvent
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import ToolSpec

UTC = datetime.UTC
CREDS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-XYZ")


# ---------------------------------------------------------------- framing


def decode_with_botocore(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_encoder_round_trips_through_botocore_with_every_header_type() -> None:
    when = datetime.datetime(2026, 11, 24, 12, 57, 54, 123000, tzinfo=UTC)
    headers = {
        ":string": "héllo",
        ":bytes": b"\x00\x01\xff",
        ":true": True,
        ":false": False,
        ":int32": -7,
        ":int64": 2**40,
        ":date": when,
    }
    (message,) = decode_with_botocore(encode_message(headers, b'{"x": 1}'))
    assert message.payload == b'{"x": 1}'
    assert message.headers[":string"] == "héllo"
    assert message.headers[":bytes"] == b"\x00\x01\xff"
    assert message.headers[":true"] is True and message.headers[":false"] is False
    assert message.headers[":int32"] == -7 and message.headers[":int64"] == 2**40
    assert message.headers[":date"] == int(when.timestamp() * 1000)


def test_prelude_and_message_crcs_are_crc32_of_the_bytes_before_them() -> None:
    data = encode_message({":event-type": "chunk"}, b"payload")
    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])
    assert total == len(data)
    assert prelude_crc == binascii.crc32(data[:8])
    assert struct.unpack(">I", data[-4:])[0] == binascii.crc32(data[:-4])
    header_block = data[12 : 12 + headers_len]
    assert header_block == bytes([11]) + b":event-type" + bytes([7]) + struct.pack(">H", 5) + b"chunk"


def test_a_flipped_byte_fails_the_crc() -> None:
    data = bytearray(encode_message({":a": "b"}, b"hello"))
    data[-6] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode_with_botocore(bytes(data))
    with pytest.raises(BidiProtocolError, match="malformed"):
        EventStreamDecoder().feed(bytes(data))


@settings(max_examples=30, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_the_decoder_finds_messages_however_the_bytes_are_split(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_message({":message-type": "event", ":n": i}, p) for i, p in enumerate(payloads))
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = EventStreamDecoder()
    got = []
    for start, end in itertools.pairwise(points):
        got += decoder.feed(stream[start:end])
    assert [m.payload for m in got] == payloads
    assert [m.headers[":n"] for m in got] == list(range(len(payloads)))
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize("total", [0, 4, 15])
def test_impossible_lengths_are_a_protocol_error_not_a_hang(total: int) -> None:
    prelude = struct.pack(">II", total, 0)
    data = prelude + struct.pack(">I", binascii.crc32(prelude)) + b"\x00" * 8
    decoder = EventStreamDecoder()
    with pytest.raises(BidiProtocolError):
        decoder.feed(data)
    with pytest.raises(BidiProtocolError):  # stays broken: framing cannot be recovered
        decoder.feed(encode_message({}, b""))


# ---------------------------------------------------------------- signing


def hmac256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def k_signing(secret: str, date: str, region: str) -> bytes:
    return hmac256(hmac256(hmac256(hmac256(("AWS4" + secret).encode(), date), region), "bedrock"), "aws4_request")


def test_request_signature_matches_sigv4_computed_by_hand() -> None:
    now = datetime.datetime(2026, 11, 24, 12, 57, 54, tzinfo=UTC)
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
    signed = sign_request(CREDS, "us-east-1", url, now=now)
    headers = dict(signed.headers)
    assert headers["x-amz-content-sha256"] == "STREAMING-AWS4-HMAC-SHA256-EVENTS"
    assert headers["x-amz-date"] == "20261124T125754Z"
    assert headers["x-amz-security-token"] == "session-token-XYZ"
    signed_headers = "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
    canonical = "\n".join(
        [
            "POST",
            # SigV4 encodes the (already encoded) path once more for every service but S3.
            "/model/amazon.nova-2-sonic-v1%253A0/invoke-with-bidirectional-stream",
            "",
            "content-type:application/vnd.amazon.eventstream",
            "host:bedrock-runtime.us-east-1.amazonaws.com",
            "x-amz-content-sha256:STREAMING-AWS4-HMAC-SHA256-EVENTS",
            "x-amz-date:20261124T125754Z",
            "x-amz-security-token:session-token-XYZ",
            "",
            signed_headers,
            "STREAMING-AWS4-HMAC-SHA256-EVENTS",
        ]
    )
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            "20261124T125754Z",
            "20261124/us-east-1/bedrock/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    expected = hmac.new(k_signing(CREDS.secret_key, "20261124", "us-east-1"), sts.encode(), hashlib.sha256).hexdigest()
    assert signed.seed_signature == expected
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/bedrock/aws4_request, "
        f"SignedHeaders={signed_headers}, Signature={expected}"
    )


def date_header_block(when: datetime.datetime) -> bytes:
    """``:date`` as a timestamp header, byte by byte (docs/protocols/nova_sonic.md#event-stream-framing)."""
    millis = int(when.timestamp() * 1000)
    return bytes([5]) + b":date" + bytes([8]) + struct.pack(">q", millis)


def test_chunk_signatures_chain_as_the_formula_says() -> None:
    times = iter(
        [
            datetime.datetime(2026, 11, 24, 23, 59, 59, 999999, tzinfo=UTC),  # truncated to .999
            datetime.datetime(2026, 11, 25, 0, 0, 0, 500000, tzinfo=UTC),  # a new day: a new key
            datetime.datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC),
        ]
    )
    seed = "ab" * 32
    signer = EventSigner(CREDS, "eu-north-1", seed, clock=lambda: next(times))
    payloads = [wire.encode_chunk(b'{"event":{"sessionEnd":{}}}'), b"second", b""]
    messages = [signer.sign(p) for p in payloads]

    prior = seed
    expected_times = [
        datetime.datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC),
        datetime.datetime(2026, 11, 25, 0, 0, 0, 500000, tzinfo=UTC),
        datetime.datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC),
    ]
    for raw, payload, when in zip(messages, payloads, expected_times, strict=True):
        (message,) = decode_with_botocore(raw)
        assert message.payload == payload
        assert message.headers[":date"] == int(when.timestamp() * 1000)
        amz = when.strftime("%Y%m%dT%H%M%SZ")
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz,
                f"{amz[:8]}/eu-north-1/bedrock/aws4_request",
                prior,
                hashlib.sha256(date_header_block(when)).hexdigest(),
                hashlib.sha256(payload).hexdigest(),
            ]
        )
        signature = hmac.new(k_signing(CREDS.secret_key, amz[:8], "eu-north-1"), sts.encode(), hashlib.sha256).digest()
        assert message.headers[":chunk-signature"] == signature
        prior = signature.hex()


def test_secrets_are_in_no_repr() -> None:
    signer = EventSigner(CREDS, "us-east-1", "cd" * 32)
    signed = sign_request(CREDS, "us-east-1", "https://example.com/model/x/invoke-with-bidirectional-stream")
    for text in (repr(CREDS), repr(signer), repr(signed)):
        assert CREDS.secret_key not in text
        assert "session-token-XYZ" not in text
        assert signed.seed_signature not in text


# ---------------------------------------------------------------- events


def event(data: bytes) -> dict[str, Any]:
    return json.loads(data)  # type: ignore[no-any-return]


def test_input_events_have_the_documented_shape() -> None:
    start = wire.ContentStart(
        prompt_name="p",
        content_name="c",
        type="AUDIO",
        interactive=True,
        role="USER",
        audio_input_configuration={"mediaType": "audio/lpcm", "sampleRateHertz": 16000},
    )
    assert event(wire.encode_event(start)) == {
        "event": {
            "contentStart": {
                "promptName": "p",
                "contentName": "c",
                "type": "AUDIO",
                "interactive": True,
                "role": "USER",
                "audioInputConfiguration": {"mediaType": "audio/lpcm", "sampleRateHertz": 16000},
            }
        }
    }
    assert event(wire.encode_event(wire.SessionEnd())) == {"event": {"sessionEnd": {}}}
    assert event(wire.encode_event(wire.SessionStart({"maxTokens": 5}))) == {
        "event": {"sessionStart": {"inferenceConfiguration": {"maxTokens": 5}}}
    }
    fast = event(wire.audio_input_json("p", "c", b"\x01\x02"))
    assert fast == event(wire.encode_event(wire.AudioInput("p", "c", base64.b64encode(b"\x01\x02").decode())))


def test_chunks_carry_the_event_base64_in_bytes() -> None:
    raw = wire.encode_chunk(b'{"event":{"sessionEnd":{}}}')
    (message,) = decode_with_botocore(raw)
    assert message.headers == {":message-type": "event", ":event-type": "chunk", ":content-type": "application/json"}
    assert wire.decode_chunk(message.payload) == {"event": {"sessionEnd": {}}}
    for bad in (b"[]", b'{"bytes": 5}', b'{"bytes": "!!"}', b'{"bytes": "' + base64.b64encode(b"[1]") + b'"}'):
        with pytest.raises(ValueError):
            wire.decode_chunk(bad)


def test_tool_schemas_travel_as_json_strings() -> None:
    spec = ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})
    (tool,) = tool_configuration((spec,))["tools"]
    assert isinstance(tool["toolSpec"]["inputSchema"]["json"], str)
    assert json.loads(tool["toolSpec"]["inputSchema"]["json"]) == spec.input_schema


def test_output_events_parse_and_unknown_ones_are_kept() -> None:
    start = wire.parse_output_event(
        {
            "event": {
                "contentStart": {
                    "contentId": "c1",
                    "type": "TEXT",
                    "role": "ASSISTANT",
                    "additionalModelFields": '{"generationStage":"SPECULATIVE"}',
                    "sessionId": "s",
                    "brandNewField": 1,
                }
            }
        }
    )
    assert isinstance(start, wire.OutputContentStart) and start.generation_stage == "SPECULATIVE"
    unknown = wire.parse_output_event({"event": {"somethingNew": {"a": 1}}})
    assert unknown == wire.UnknownOutputEvent("somethingNew", {"a": 1})
    with pytest.raises(wire.MalformedOutputEvent, match="contentEnd"):
        wire.parse_output_event({"event": {"contentEnd": {"stopReason": "END_TURN"}}})
    with pytest.raises(wire.MalformedOutputEvent, match="usageEvent"):
        wire.parse_output_event({"event": {"usageEvent": {"totalInputTokens": "7"}}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{ "interrupted" : true }', True), ('{"interrupted":true}', True), ("interrupted", False), ("{ oops", False)],
)
def test_the_barge_in_marker(text: str, expected: bool) -> None:
    assert wire.is_interruption(text) is expected


def test_history_is_user_first_alternating_text_within_40_kb() -> None:
    history = (
        TextMessage("assistant", "Hello, I am a bot."),  # dropped: the first must be USER
        TextMessage("user", "Weather in Paris?"),
        ToolCallMessage("t1", "get_weather", {"city": "Paris"}),
        ToolResultMessage("t1", "get_weather", "success", "sunny"),
        TextMessage("assistant", "It is sunny."),
        TextMessage("user", "Thanks."),
    )
    turns = history_turns(history)
    assert [role for role, _ in turns] == ["USER", "ASSISTANT", "USER"]
    assistant = turns[1][1]
    assert "get_weather" in assistant and "sunny" in assistant and assistant.endswith("It is sunny.")
    long = tuple(TextMessage("user" if i % 2 == 0 else "assistant", "x" * 1000) for i in range(100))
    kept = history_turns(long)
    assert sum(len(t.encode()) for _, t in kept) <= 40 * 1024
    assert kept[0][0] == "USER" and len(kept) < 100


def test_one_long_message_is_cut_to_its_end_not_dropped_with_all_the_history() -> None:
    """A user who pasted a long text and got an answer: after a rotation the new
    stream still knows the end of that text and the answer (40 KB in all)."""
    pasted = "é" * 30_000 + " what do you think?"  # 60 kB of UTF-8
    history = (TextMessage("user", pasted), TextMessage("assistant", "It is long."))
    turns = history_turns(history)
    assert [role for role, _ in turns] == ["USER", "ASSISTANT"]
    assert turns[0][1].endswith(" what do you think?") and turns[1][1] == "It is long."
    assert sum(len(t.encode()) for _, t in turns) in (40 * 1024, 40 * 1024 - 1)  # a cut é is dropped
    (alone,) = history_turns((TextMessage("user", pasted),))
    assert alone[0] == "USER" and alone[1].endswith("think?") and len(alone[1].encode()) <= 40 * 1024


def test_text_is_split_into_1_kb_pieces_without_breaking_characters() -> None:
    text = "é" * 700 + "abc"
    pieces = split_utf8(text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 1024 for p in pieces)


def test_tool_results_are_json_object_strings() -> None:
    ok = BidiToolResultEvent("t1", "f", "success", "sunny")
    assert json.loads(tool_result_content(ok)) == {"result": "sunny"}
    assert json.loads(tool_result_content(BidiToolResultEvent("t1", "f", "success", {"a": 1}))) == {"a": 1}
    assert "error" in json.loads(tool_result_content(BidiToolResultEvent("t1", "f", "error", "boom")))
    assert json.loads(tool_result_content(BidiToolResultEvent("t1", "f", "cancelled", "x")))["cancelled"] is True


# ---------------------------------------------------------------- errors


def test_silence_timeout_and_throttling_are_retryable_other_validation_is_not() -> None:
    silence = error_for_exception("validationException", "Timed out waiting for input (InternalErrorCode=531)", "r-1")
    assert silence.retryable and silence.code == "ValidationException" and "r-1" in str(silence)
    assert error_for_exception("modelTimeoutException", "Model has timed out", None).retryable
    assert error_for_exception("throttlingException", "slow down", None).retryable
    bad = error_for_exception("validationException", "Invalid input request", "r-2")
    assert not bad.retryable and "Invalid input request" in str(bad)


def test_refusals_before_the_stream_are_typed_and_carry_the_request_id() -> None:
    headers = {"x-amzn-requestid": "req-9", "x-amzn-errortype": "InvalidSignatureException:http://internal/"}
    error = error_for_response(403, headers, b'{"message": "The request signature we calculated does not match"}')
    assert isinstance(error, NovaSonicProviderError)
    assert error.code == "InvalidSignatureException" and not error.retryable
    assert error.request_id == "req-9" and "does not match" in str(error) and "req-9" in str(error)
    assert error_for_response(429, {}, b"").retryable
    assert not error_for_response(400, {"x-amzn-errortype": "ValidationException"}, b"{}").retryable
    secret = error_for_response(
        403, {}, b'{"message": "bad key wJalrXUtnFEMI/K7MDENG"}', secrets=("wJalrXUtnFEMI/K7MDENG",)
    )
    assert "wJalrXUtnFEMI" not in str(secret)


@pytest.mark.parametrize(
    ("error_type", "body", "says"),
    [
        (
            "InvalidSignatureException",
            b'{"message": "The request signature we calculated does not match"}',
            "HTTP 403 (the AWS credentials were not accepted): The request signature",
        ),
        (
            "UnrecognizedClientException",
            b'{"message": "The security token included in the request is invalid."}',
            "HTTP 403 (the AWS credentials were not accepted): The security token",
        ),
        (
            "AccessDeniedException",
            b'{"message": "You don\'t have access to the model with the specified model ID."}',
            "HTTP 403 (the AWS credentials may not do this): You don't have access",
        ),
        ("", b"", "HTTP 403 (the AWS credentials were not accepted): the request was refused"),
    ],
)
def test_a_refused_request_names_the_credential(error_type: str, body: bytes, says: str) -> None:
    """Before: "HTTP 403: You don't have access to the model ..." and, from a gateway with no body,
    "HTTP 403: the request was refused": nothing said the AWS credentials were the matter."""
    headers = {"x-amzn-errortype": error_type} if error_type else {}
    error = error_for_response(403, headers, body)
    assert says in str(error) and not error.retryable


def test_a_secret_where_a_raw_body_is_cut_is_not_quoted_in_part() -> None:
    """A body that is not JSON is quoted only in part; the cut must not split a secret
    past the redaction (the service quotes the session token in its canonical request)."""
    token = "FwoGZXIvYXdzEBEaDSessionToken0123456789abcdef"
    body = ("<html>" + "x" * 280 + token + "</html>").encode()
    error = error_for_response(403, {}, body, secrets=(token,))
    assert token[:8] not in str(error) and "***" in str(error)
    in_stream = error_for_exception("validationException", "y" * 290 + token, None, (token,), max_length=300)
    assert token[:8] not in str(in_stream)


# ---------------------------------------------------------------- config


def test_config_defaults_and_aliases() -> None:
    assert parse_provider_config(None, "amazon.nova-2-sonic-v1:0") == NovaSonicConfig()
    config = parse_provider_config(
        {
            "audio": {"input_rate": 16000, "output_rate": 16000, "voice": "tiffany"},
            "inference": {"max_tokens": 100, "topP": 0.5, "temperature": 0.1},
            "turn_detection": {"endpointingSensitivity": "LOW"},
        },
        "amazon.nova-2-sonic-v1:0",
    )
    assert (config.output_rate, config.voice, config.max_tokens, config.top_p) == (16000, "tiffany", 100, 0.5)
    assert config.endpointing_sensitivity == "LOW"


@pytest.mark.parametrize(
    ("provider_config", "match"),
    [
        ({"audio": {"output_rate": 44100}}, "not supported"),
        ({"audio": {"voice": ""}}, "voice"),
        ({"inference": {"maxTokens": 0}}, "maxTokens"),
        ({"inference": {"temperature": 1.5}}, "temperature"),
        ({"inference": {"topP": True}}, "topP"),
        ({"turn_detection": {"endpointingSensitivity": "EXTREME"}}, "endpointingSensitivity"),
    ],
)
def test_bad_config_is_refused_before_connecting(provider_config: Any, match: str) -> None:
    with pytest.raises(BidiUsageError, match=match):
        BidiNovaSonicModel(provider_config=provider_config, region="us-east-1", credentials=_Static())


def test_turn_detection_needs_nova_2() -> None:
    with pytest.raises(BidiUsageError, match="Nova 2"):
        parse_provider_config({"turn_detection": {"endpointingSensitivity": "HIGH"}}, "amazon.nova-sonic-v1:0")


class _Static:
    """The smallest credentials object botocore's chain returns."""

    def get_frozen_credentials(self) -> Any:
        from botocore.credentials import ReadOnlyCredentials

        return ReadOnlyCredentials("AKIDSTATIC", "static-secret-key-0000", None)


def test_model_settings_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    model = BidiNovaSonicModel(region="eu-north-1", credentials=_Static())
    assert model.endpoint_url == "https://bedrock-runtime.eu-north-1.amazonaws.com"
    assert model.path == "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
    caps = model.capabilities
    assert (caps.input_audio.sample_rate, caps.output_audio.sample_rate) == (16000, 24000)
    assert caps.cancels_on_speech and not caps.can_truncate and not caps.resumable
    assert caps.max_connection_s == 480.0
    assert BidiNovaSonicModel(credentials=_Static(), max_stream_s=12).capabilities.max_connection_s == 12
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "https://vpce.example.com:8443")
    assert BidiNovaSonicModel(region="us-west-2", credentials=_Static()).endpoint_url == "https://vpce.example.com:8443"
    with pytest.raises(BidiUsageError, match="https"):
        BidiNovaSonicModel(credentials=_Static(), endpoint_url="http://127.0.0.1:1")
    with pytest.raises(BidiUsageError, match="CA bundle"):
        BidiNovaSonicModel(credentials=_Static(), verify="/nonexistent/ca.pem")
    with pytest.raises(BidiUsageError, match="credentials"):
        BidiNovaSonicModel(credentials="AKID:secret")
    assert "static-secret" not in repr(model)


def test_region_from_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    session = boto3.Session(aws_access_key_id="AKIDB3", aws_secret_access_key="b3-secret", region_name="ap-south-1")
    assert BidiNovaSonicModel(boto_session=session).region == "ap-south-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert BidiNovaSonicModel().region == "ca-central-1"
