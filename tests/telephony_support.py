"""Helpers of the phone tests: the web app with the Twilio bridge on a real hypercorn in the test's loop,
talking to the OpenAI simulator, and the carrier simulator pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.telephony import PhoneCall, TwilioBridge
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from adapters.testing.twilio_simulator import TwilioCarrierSimulator
from adapters.web import WebApp, WebLimits
from bidi_core import BidiAgent
from ports.events import BidiOutputEvent
from tests.web_support import SIM_KEY, serve

AUTH_TOKEN = "twilio-test-auth-token-0123456789"
PUBLIC = "https://phone.example.test"


@attrs.define
class Served:
    """The app, the bridge, the carrier pointed at it and what the calls' agents did."""

    app: WebApp
    bridge: TwilioBridge
    carrier: TwilioCarrierSimulator
    port: int
    events: list[BidiOutputEvent] = attrs.field(factory=list)
    agents: list[BidiAgent] = attrs.field(factory=list)
    calls: list[PhoneCall] = attrs.field(factory=list)


@asynccontextmanager
async def phone_server(
    sim: OpenAIRealtimeSimulator,
    backend: str,
    *,
    limits: WebLimits | None = None,
    tools: Sequence[Any] = (),
    lead_ms: float = 100.0,
    runner: Callable[[Served, PhoneCall], Any] | None = None,
    **bridge_options: Any,
) -> AsyncIterator[Served]:
    """The app and its bridge on hypercorn; each call runs a BidiAgent on the OpenAI simulator."""
    served: Served | None = None

    async def run_call(call: PhoneCall) -> None:
        assert served is not None
        served.calls.append(call)
        if runner is not None:
            await runner(served, call)
            return
        model = BidiOpenAIRealtimeModel(
            api_key=SIM_KEY,
            base_url=sim.base_url,
            provider_config={"transcription": {"model": "gpt-4o-mini-transcribe"}},
        )
        agent = BidiAgent(model=model, tools=list(tools), system_prompt="You answer the phone.")
        served.agents.append(agent)

        async def watch(event: BidiOutputEvent) -> None:
            served.events.append(event)

        await agent.run(inputs=[call.input()], outputs=[call.output(), watch])

    async def no_browsers(conversation: Any) -> None:
        raise AssertionError("no browser conversation in the phone tests")

    app = WebApp(no_browsers, limits=limits, demo_page=False)
    bridge = TwilioBridge(app, run_call, public_url=PUBLIC, auth_token=AUTH_TOKEN, lead_ms=lead_ms, **bridge_options)
    async with serve(app, backend) as port:
        carrier = TwilioCarrierSimulator(
            auth_token=AUTH_TOKEN, voice_url=f"{PUBLIC}/twilio/voice", connect=("127.0.0.1", port)
        )
        served = Served(app, bridge, carrier, port)
        yield served
