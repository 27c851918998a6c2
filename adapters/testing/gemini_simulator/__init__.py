"""A loopback Gemini Live (``BidiGenerateContent``) service for tests: ours and our users'.

Needs the ``simulators`` extra (wsproto, trustme, google-ai-generativelanguage).
It speaks PROTOCOLS.md §2 over a real WebSocket on 127.0.0.1, TLS (a CA made at
start-up with trustme) or plain ``ws://``; checks every client message against
the provider's published protobuf messages and closes 1007 as the service does;
checks every message it sends against the server-side messages; and plays a
:class:`Scenario` of data rules. It imports nothing from our client code, so it
cannot be tailored to it; the official ``google-genai`` client is tested against
it too (PROTOCOLS.md §5).

    from adapters.testing.gemini_simulator import GeminiLiveSimulator, Reply, Rule, Scenario

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with GeminiLiveSimulator(api_key="test-key", scenario=scenario, tls=False) as sim:
        ...  # connect to sim.url("v1beta") with the header x-goog-api-key: test-key

Choices where the contract (``/tmp/gemini-sim-api.md``) left room, and additions:

* A missing key closes 1008, a wrong key 1007, after the upgrade and the first
  client message (see ``server.py`` for why); a wrong path is HTTP 404.
* The lifetime close after ``goAway`` is 1011 "Deadline expired before operation
  could complete." by default (``lifetime_close`` changes it).
* A non-resumable ``sessionResumptionUpdate`` is ``{}`` (proto3 JSON omits the
  empty handle and ``resumable: false``).
* ``sim.user_inputs`` is the state of the session of the latest connection that
  completed its setup; ``sim.sessions`` lists every state (a resumption forks one).
* Records add ``ConnectionRecord.closed_by`` and ``.api_version``; ``sim.rejected``
  (HTTP refusals), ``sim.close_all``, ``sim.go_away_all``; ``OracleFailure.direction``
  tells a client's invalid message from a simulator bug.
"""

from adapters.testing.gemini_simulator.audio import loud, silence, tone
from adapters.testing.gemini_simulator.oracle import SimulatorBug, check_client_message, check_server_message
from adapters.testing.gemini_simulator.records import ConnectionRecord, OracleFailure, RejectedHandshake, UserInput
from adapters.testing.gemini_simulator.scenario import Reply, Rule, Scenario, ToolCall, ToolResult, TurnInput
from adapters.testing.gemini_simulator.server import GeminiLiveSimulator
from adapters.testing.gemini_simulator.state import SessionState

__all__ = [
    "ConnectionRecord",
    "GeminiLiveSimulator",
    "OracleFailure",
    "RejectedHandshake",
    "Reply",
    "Rule",
    "Scenario",
    "SessionState",
    "SimulatorBug",
    "ToolCall",
    "ToolResult",
    "TurnInput",
    "UserInput",
    "check_client_message",
    "check_server_message",
    "loud",
    "silence",
    "tone",
]
