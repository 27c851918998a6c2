"""A phone agent: callers to a Twilio number talk to an OpenAI Realtime voice agent, with barge-in.

Real calls (a Twilio number, a public HTTPS address for this server, e.g. a tunnel)::

    export TWILIO_AUTH_TOKEN=... OPENAI_API_KEY=...
    python examples/phone_agent.py --public-url https://phone.example.com --port 8080

and set the number's "A call comes in" webhook to ``https://phone.example.com/twilio/voice``
(HTTP POST). Ctrl+C or SIGTERM drains: new calls get a busy signal, calls in
progress have ``--drain`` seconds to finish.

Offline (no Twilio, no OpenAI account)::

    python examples/phone_agent.py --offline [--backend trio] [--wav heard.wav]

starts the OpenAI Realtime simulator as the model and places one call with the
carrier simulator: the caller says hello, talks over the long answer (the
bridge clears the line at once and tells the model what was heard), presses 1,
and hears the goodbye before the agent hangs up. What the caller heard goes
to ``--wav``. Everything between is the real bridge on a real server.
"""

from __future__ import annotations

import argparse
import os
import signal
import wave
from typing import Any

import anyio
from _runner import run

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.telephony import PhoneCall, TwilioBridge
from adapters.web import WebApp, WebConversation, WebLimits
from adapters.web.server import serving
from bidi_core import BidiAgent, stop_conversation
from ports.events import BidiInterruptionEvent, BidiOutputEvent, BidiTranscriptStreamEvent

SYSTEM_PROMPT = (
    "You answer the phone for a small bakery. Keep answers short. "
    "When the caller presses a key, say what it means; 1 means they are done: say goodbye and use stop_conversation."
)


def phone_app(model_factory: Any, public_url: str, auth_token: str, drain_s: float) -> WebApp:
    async def no_browser(conversation: WebConversation) -> None:
        await conversation.io.close(1008, "this server answers phone calls")

    async def run_call(call: PhoneCall) -> None:
        agent = BidiAgent(model=model_factory(), tools=[stop_conversation], system_prompt=SYSTEM_PROMPT)
        print(f"[call {call.call_sid}] answered")

        async def show(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiTranscriptStreamEvent) and event.is_final:
                print(f"[call] {event.role}: {event.text}")
            elif isinstance(event, BidiInterruptionEvent):
                print("[call] the caller talked over the agent: the line is cleared")

        await agent.run(inputs=[call.input()], outputs=[call.output(), show])
        print(f"[call {call.call_sid}] ended")

    app = WebApp(no_browser, limits=WebLimits(drain_s=drain_s), demo_page=False)
    TwilioBridge(app, run_call, public_url=public_url, auth_token=auth_token)
    return app


async def online(args: argparse.Namespace) -> None:
    token = os.environ.get("TWILIO_AUTH_TOKEN")
    if not token or not args.public_url:
        raise SystemExit("set TWILIO_AUTH_TOKEN and --public-url (or try --offline)")
    app = phone_app(lambda: BidiOpenAIRealtimeModel(), args.public_url, token, args.drain)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serving(app, host=args.host, port=args.port) as port:
            print(f"listening on {args.host}:{port}; webhook: {args.public_url.rstrip('/')}/twilio/voice")
            async for _ in signals:
                print("draining: new calls get a busy signal")
                break


async def offline(args: argparse.Namespace) -> None:
    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, ToolCall
    from adapters.testing.twilio_simulator import TwilioCarrierSimulator, tone_8k

    scenario = Scenario(
        rules=[
            Rule(
                spoken_turn=0,
                reply=Reply(say="Good morning, this is the bakery. Today we have rye, sourdough and...", audio_ms=3000),
            ),
            Rule(spoken_turn=1, reply=Reply(say="Sorry, go ahead.", audio_ms=700)),
            Rule(
                text_contains="pressed 1",
                reply=Reply(
                    say="Thank you for calling. Goodbye!", audio_ms=900, tool_calls=[ToolCall("stop_conversation")]
                ),
            ),
        ],
        transcripts=["hello, what bread do you have", "wait, do you open on Sundays"],
    )
    token = "offline-demo-auth-token"
    public = "https://phone.example.com"
    async with OpenAIRealtimeSimulator(api_key="sk-offline", scenario=scenario) as sim:

        def model() -> BidiOpenAIRealtimeModel:
            return BidiOpenAIRealtimeModel(
                api_key="sk-offline",
                base_url=sim.base_url,
                provider_config={"transcription": {"model": "gpt-4o-mini-transcribe"}},
            )

        app = phone_app(model, public, token, drain_s=5)
        async with serving(app) as port:
            carrier = TwilioCarrierSimulator(
                auth_token=token, voice_url=f"{public}/twilio/voice", connect=("127.0.0.1", port)
            )
            with anyio.fail_after(40):
                async with carrier.call(hang_up_on_exit=False) as call:
                    print("[caller] hello?")
                    call.say(tone_8k(500))
                    await call.wait_heard(800)
                    print("[caller] (talks over the answer)")
                    call.say(tone_8k(500))
                    await call.wait_clear()
                    heard = call.record.heard_ms
                    await call.wait_heard(heard + 690)
                    print("[caller] (presses 1)")
                    await call.press("1")
                    await call.wait_ended()
    record = call.record
    clear = record.clears[0]
    truncation = sim.truncations[0]
    print(
        f"[carrier] the caller heard {record.heard_ms:.0f} ms of speech; a clear discarded {clear.discarded_ms:.0f} ms"
    )
    print(f"[carrier] the model was told the caller heard {truncation.audio_end_ms} ms of its long answer")
    print(f"[carrier] at most {record.max_buffered_ms:.0f} ms were ever waiting at the carrier")
    print(f"[carrier] the {'agent' if record.closed_by_server else 'caller'} hung up")
    if args.wav:
        with wave.open(args.wav, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(record.heard_pcm())
        print(f"[carrier] what the caller heard is in {args.wav}")


async def main(args: argparse.Namespace) -> None:
    await (offline(args) if args.offline else online(args))


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="simulated carrier and model, one scripted call")
    parser.add_argument("--public-url", help="where Twilio reaches this server, e.g. https://phone.example.com")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (behind your tunnel or proxy)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--drain", type=float, default=30.0, help="seconds calls in progress get on shutdown")
    parser.add_argument("--wav", help="offline: write what the caller heard to this WAV file (8 kHz)")


if __name__ == "__main__":
    run(main, "A phone agent on Twilio Media Streams (or offline, simulated).", options)
