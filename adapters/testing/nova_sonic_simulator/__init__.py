"""A loopback Amazon Bedrock Nova Sonic service for tests: ``InvokeModelWithBidirectionalStream`` on 127.0.0.1.

Needs the ``simulators`` extra (h2, botocore, trustme, cattrs). It speaks the
protocol of PROTOCOLS.md §3 as the service does: HTTP/2 over TLS with ALPN
``h2``, SigV4 on the request (signing name ``bedrock``), a chain of chunk
signatures on every event, AWS event-stream framing both ways, a strict
hand-written schema for every input event (§4.3: none is published) plus the
event order, and modeled exceptions as event-stream exception messages. It
imports nothing from our client (``adapters.nova_sonic``): its framing,
signature checks and schema are written from the protocol description, so it
cannot be tailored to that client; ``scripts/nova_sdk_crosscheck.py`` drives it
with the official AWS SDK to prove that.

    from adapters.testing.nova_sonic_simulator import NovaSonicSimulator, Reply, Rule, Scenario, ToolUse, Fault

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with NovaSonicSimulator(credentials={"AKIDTEST": "secret-key"}, scenario=scenario) as sim:
        ...  # POST sim.endpoint_url + "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"

Additions to the contract in /tmp/nova-sim-api.md (no deviations in names or meaning):
``sim.refused`` (requests answered with an HTTP error), ``StreamRecord.sent`` (the
output events), ``StreamRecord.window_waits``, ``StreamRecord.exception``, the options
``speedup`` (assistant audio pace; None = as fast as flow control allows, so barge-in
tests must pace it, e.g. ``speedup=1.0`` and a long ``Reply(audio_ms=...)``),
``audio_chunk_ms`` and ``data_frame_bytes`` (cap on the DATA frames the simulator
sends), and the 16 kHz test audio helpers ``loud``/``silence``.
"""

from adapters.testing.nova_sonic_simulator.audio import loud, silence, tone
from adapters.testing.nova_sonic_simulator.errors import ServiceException, SimulatorBug
from adapters.testing.nova_sonic_simulator.output_schema import check_output_event
from adapters.testing.nova_sonic_simulator.records import RefusedRequest, SchemaFailure, SignatureFailure, StreamRecord
from adapters.testing.nova_sonic_simulator.scenario import Fault, Reply, Rule, Scenario, ToolUse, TurnInput
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
    "ToolUse",
    "TurnInput",
    "check_output_event",
    "loud",
    "parse_event",
    "silence",
    "tone",
]
