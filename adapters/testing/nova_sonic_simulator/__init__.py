"""A loopback Amazon Bedrock Nova Sonic service for tests: ``InvokeModelWithBidirectionalStream`` on 127.0.0.1.

Needs the ``simulators`` extra (h2, botocore, trustme, cattrs). It speaks the
protocol of docs/protocols/nova_sonic.md as the service does: HTTP/2 over TLS with ALPN
``h2``, SigV4 on the request (signing name ``bedrock``), a chain of chunk
signatures on every event, AWS event-stream framing both ways, a strict
hand-written schema for every input event (docs/protocols/nova_sonic.md#no-published-schema) plus the
event order, and modeled exceptions as event-stream exception messages. It
imports nothing from our client (``adapters.nova_sonic``): its framing,
signature checks and schema are written from the protocol description, so it
cannot be tailored to that client; ``scripts/nova_sdk_crosscheck.py`` drives it
with the official AWS SDK to prove that.

    from adapters.testing.nova_sonic_simulator import NovaSonicSimulator, Reply, Rule, Scenario, ToolUse, Fault

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with NovaSonicSimulator(credentials={"AKIDTEST": "secret-key"}, scenario=scenario) as sim:
        ...  # POST sim.endpoint_url + "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"

Records and options beyond the basics:
``sim.refused`` (requests answered with an HTTP error, e.g. a throttled one), and on
``StreamRecord``: ``sent`` (output events and exceptions), ``exception``,
``window_waits``, ``system_prompt``, ``request_index``. Options ``speedup`` (the
assistant's audio pace; None, the default, sends as fast as flow control allows, so
a barge-in test must pace it, e.g. ``speedup=1.0`` with a long ``Reply(audio_ms=...)``),
``audio_chunk_ms`` and ``data_frame_bytes`` (a cap on the DATA frames the simulator
sends). ``check_output_event`` (the output oracle), the 16 kHz test audio helpers
``loud``/``silence``, and ``python -m adapters.testing.nova_sonic_simulator`` (a demo server).
``Fault`` takes its kind positionally or by keyword: ``Fault("throttling", times=2)``.

Choices where AWS documents nothing (each also says so where it is made): a bad
chunk signature and the end of the stream's lifetime are ``validationException``
messages; the FINAL assistant text follows the audio; a typed user turn is not
echoed as a USER transcript (a spoken one is); the pause that ends a spoken turn
is 300/500/800 ms for HIGH/MEDIUM/LOW ``endpointingSensitivity``.
"""

from adapters.testing.nova_sonic_simulator.audio import loud, silence, tone
from adapters.testing.nova_sonic_simulator.errors import ServiceException, SimulatorBug
from adapters.testing.nova_sonic_simulator.output_schema import check_output_event
from adapters.testing.nova_sonic_simulator.records import RefusedRequest, SchemaFailure, SignatureFailure, StreamRecord
from adapters.testing.nova_sonic_simulator.scenario import (
    Fault,
    Reply,
    Rule,
    Scenario,
    ToolCall,
    ToolResult,
    ToolUse,
    TurnInput,
)
from adapters.testing.nova_sonic_simulator.schema import SchemaError, parse_event
from adapters.testing.nova_sonic_simulator.server import NovaSonicSimulator

__all__ = [
    "Fault",
    "NovaSonicSimulator",
    "RefusedRequest",
    "Reply",
    "Rule",
    "Scenario",
    "SchemaError",
    "SchemaFailure",
    "ServiceException",
    "SignatureFailure",
    "SimulatorBug",
    "StreamRecord",
    "ToolCall",
    "ToolResult",
    "ToolUse",
    "TurnInput",
    "check_output_event",
    "loud",
    "parse_event",
    "silence",
    "tone",
]
