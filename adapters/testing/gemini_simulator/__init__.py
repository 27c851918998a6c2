"""A loopback Gemini Live (``BidiGenerateContent``) service for tests: ours and our users'.

Needs the ``simulators`` extra (wsproto, trustme, google-ai-generativelanguage).
It speaks the protocol of docs/protocols/gemini.md over a real WebSocket on 127.0.0.1, TLS (a CA made at
start-up with trustme) or plain ``ws://``; checks every client message against
the provider's published protobuf messages and closes 1007 as the service does;
checks every message it sends against the server-side messages; and plays a
:class:`Scenario` of data rules. It imports nothing from our client code, so it
cannot be tailored to it; the official ``google-genai`` client is tested against
it too (docs/protocols/gemini.md#official-client).

    from adapters.testing.gemini_simulator import GeminiLiveSimulator, Reply, Rule, Scenario

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with GeminiLiveSimulator(api_key="test-key", scenario=scenario, tls=False) as sim:
        ...  # connect to sim.url("v1beta") with the header x-goog-api-key: test-key

Behaviour the documentation leaves open, and how this simulator fills it in:

* Auth: a missing key closes 1008, a wrong key 1007 ("API key not valid. Please
  pass a valid API key.", the REST INVALID_ARGUMENT text), after the upgrade and
  the first client message (``server.py`` says why); a wrong path is HTTP 404.
* The lifetime close after ``goAway`` defaults to 1011 "Deadline expired before
  operation could complete." (``lifetime_close=(1000, "")`` for a clean one).
* A non-resumable ``sessionResumptionUpdate`` is ``{}`` (proto3 JSON omits the
  empty handle and ``resumable: false``); audio consumed while idle gets a handle
  at most every ``audio_handle_every_ms`` (1000) of audio, not one per chunk.
* ``sim.user_inputs`` holds one ``("audio", pcm)`` per ``realtimeInput.audio``
  message, one ``("tool_response", id)`` per function response, ``("history",
  ((role, text), ...))`` per ``clientContent``; it is the state of the session of
  the latest connection that completed its setup (``sim.sessions`` lists every
  state; a resumption forks one). The spoken-turn count (``transcripts[n]``) is
  session state too: resuming rolls it back to the handle's.
* A function response to a call the model is not waiting for closes 1007, except
  for calls it cancelled (ignored: the client cannot avoid that race).
* ``check_client_message(raw, transparent=False)`` returns ``(parsed, reason)``:
  ``reason`` is None when the service would accept the message.
* ``close_all`` sends the close frames and returns (each connection ends when its
  client answers); ``wait_until(predicate, limit_s=10.0)`` is bounded itself.
* Additions: ``sim.https_base_url`` (for ``genai.Client``), ``sim.go_away_all()``,
  ``sim.rejected``, ``speedup``, ``audio_handle_every_ms``, ``strict``; ``Reply.after_chunks`` (drop or
  close mid-reply);
  ``ConnectionRecord.closed_by``, ``.client_close_code``, ``.api_version``,
  ``.session_id``; ``OracleFailure.direction`` (``"client"`` or ``"server"``).
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
