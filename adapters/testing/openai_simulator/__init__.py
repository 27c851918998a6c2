"""A loopback OpenAI Realtime (GA) service for tests: ours and our users'.

Needs the ``simulators`` extra (wsproto, openai, pydantic). It speaks the wire
protocol of docs/protocols/openai.md over a real WebSocket on 127.0.0.1, validates every
client message with the provider's own types (docs/protocols/openai.md#schema-oracle) and every event it sends
with the server-side types, and plays a :class:`Scenario` of data rules. It
imports nothing from our client code, so it cannot be tailored to it; the
official ``openai`` client is tested against it too (docs/protocols/openai.md#official-client).

    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with OpenAIRealtimeSimulator(api_key="sk-test", scenario=scenario) as sim:
        ...  # connect to sim.base_url + "/realtime?model=gpt-realtime"

Run ``python -m adapters.testing.openai_simulator --port 8765`` for a demo server.
"""

from adapters.testing.openai_simulator.audio import loud, silence, tone
from adapters.testing.openai_simulator.errors import ServiceError, SimulatorBug
from adapters.testing.openai_simulator.oracle import (
    CLIENT_ORACLE,
    SERVER_ORACLE,
    check_client_event,
    check_server_event,
)
from adapters.testing.openai_simulator.records import (
    ClientError,
    ConnectionRecord,
    OracleFailure,
    ReceivedMessage,
    RejectedHandshake,
    Truncation,
)
from adapters.testing.openai_simulator.scenario import (
    ErrorOn,
    Reply,
    Rule,
    Scenario,
    ToolCall,
    ToolOutput,
    ToolResult,
    TurnInput,
)
from adapters.testing.openai_simulator.server import OpenAIRealtimeSimulator

__all__ = [
    "CLIENT_ORACLE",
    "SERVER_ORACLE",
    "ClientError",
    "ConnectionRecord",
    "ErrorOn",
    "OpenAIRealtimeSimulator",
    "OracleFailure",
    "ReceivedMessage",
    "RejectedHandshake",
    "Reply",
    "Rule",
    "Scenario",
    "ServiceError",
    "SimulatorBug",
    "ToolCall",
    "ToolOutput",
    "ToolResult",
    "Truncation",
    "TurnInput",
    "check_client_event",
    "check_server_event",
    "loud",
    "silence",
    "tone",
]
