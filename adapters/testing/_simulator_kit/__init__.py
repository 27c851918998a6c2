"""What the provider simulators share, because it is the same logic at every provider.

Each simulator (``openai_simulator``, ``gemini_simulator``, ``nova_sonic_simulator``)
keeps what is its service's own (rates, thresholds, defaults, wire formats) and
passes it to these helpers; its public names stay where they were. Like the
simulators, the kit never imports our client adapters: a simulator that shared
code with the client it tests would share its bugs.

* :mod:`.audio`: PCM16 tones, silence and energy turn detection at any rate.
* :mod:`.cli`: running a demo simulator from the command line.
* :mod:`.listener`: the loopback listener's lifecycle, and waking tests when records change.
* :mod:`.scenario`: the scenario language (rules, replies, tool calls) and which rule fires.
* :mod:`.tcp`: transport faults on the TCP connection (a reset).
* :mod:`.tls`: a throwaway CA and server certificate for the WebSocket simulators' TLS.
* :mod:`.websocket_server`: the WebSocket server loop of the OpenAI and Gemini simulators (wsproto on AnyIO).
"""
