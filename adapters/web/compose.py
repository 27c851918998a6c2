"""The server command's composition root: settings in, a :class:`~adapters.web.app.WebApp` out.

The one module of ``adapters`` that imports the core (``BidiAgent``): the
command must build agents, and this is where the hexagon is assembled, as
``examples/`` do. The import-linter contract names it as the exception; the
app, the I/O and everything else in ``adapters/web`` never import the core.
With ``--twilio-public-url`` it also mounts the phone bridge
(``adapters.telephony``), the other exception it is allowed.

Provider ``auto`` is OpenAI Realtime when ``OPENAI_API_KEY`` is set and the
bundled OpenAI simulator otherwise (each worker starts its own on 127.0.0.1),
so the demo page works offline, like the quickstart.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from adapters.web.app import WebApp, WebConversation
from adapters.web.auth import AuthHook, token_auth
from adapters.web.settings import ServerSettings, SettingsError
from bidi_core import BidiAgent, stop_conversation, tool
from ports.model import BidiModel

__all__ = ["DEMO_SYSTEM_PROMPT", "build_app", "demo_scenario", "get_weather", "load_attribute", "resolve_provider"]

logger = logging.getLogger("bidi_core.adapters.web")

DEMO_SYSTEM_PROMPT = "You are a helpful voice assistant. Keep answers short."
SIMULATOR_KEY = "sk-bidi-web-offline-demo"


@tool
def get_weather(location: str) -> str:
    """Get the current weather for a location.

    Args:
        location: City name or location
    """
    return f"sunny and 22 degrees in {location}"


def load_attribute(spec: str) -> Any:
    """``module:attribute`` (the attribute may be dotted) imported and returned."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SettingsError(f"{spec!r}: expected module:attribute")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"{spec!r}: cannot import {module_name}: {exc}") from exc
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise SettingsError(f"{spec!r}: {module_name} has no attribute {attr}") from None
    return value


def load_tools(specs: Iterable[str]) -> list[Any]:
    tools: list[Any] = []
    for spec in specs:
        value = load_attribute(spec)
        tools.extend(value if isinstance(value, list | tuple) else [value])
    return tools


def resolve_provider(settings: ServerSettings, environ: Mapping[str, str]) -> str:
    if settings.provider != "auto":
        return settings.provider
    return "openai" if environ.get("OPENAI_API_KEY") else "simulator"


def demo_scenario() -> Any:
    """What the offline simulator says: every spoken turn gets a long answer (to interrupt), typed
    weather questions call ``get_weather``."""
    from adapters.testing.openai_simulator import Reply, Rule, Scenario, ToolCall

    return Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"location": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.")),
            Rule(
                reply=Reply(
                    say="I heard you. This is the offline simulator of bidi-core answering at length, so that you "
                    "can talk over me and hear me stop at once.",
                    audio_ms=10000,
                )
            ),
        ],
    )


def _model_factory(settings: ServerSettings, provider: str, base_url: str | None) -> Callable[[], BidiModel]:
    voice = {"audio": {"voice": settings.voice}} if settings.voice else None
    if provider in ("openai", "simulator"):
        from adapters.openai import BidiOpenAIRealtimeModel

        key = SIMULATOR_KEY if provider == "simulator" else None
        config: dict[str, Any] = dict(voice or {})
        if provider == "simulator":
            config["transcription"] = {"model": "gpt-4o-mini-transcribe"}
        model_id = settings.model or "gpt-realtime"
        return lambda: BidiOpenAIRealtimeModel(model_id, api_key=key, base_url=base_url, provider_config=config)
    if provider == "gemini":
        from adapters.gemini import BidiGeminiLiveModel

        kwargs: dict[str, Any] = {"base_url": base_url, "provider_config": voice}
        if settings.model:
            kwargs["model_id"] = settings.model
        return lambda: BidiGeminiLiveModel(**kwargs)
    from adapters.nova_sonic import BidiNovaSonicModel

    nova: dict[str, Any] = {"endpoint_url": base_url, "provider_config": voice}
    if settings.model:
        nova["model_id"] = settings.model
    return lambda: BidiNovaSonicModel(**nova)


def build_app(settings: ServerSettings, environ: Mapping[str, str] | None = None) -> WebApp:
    """The app a worker serves, from its settings (and the environment, for secrets)."""
    env = os.environ if environ is None else environ
    provider = resolve_provider(settings, env)
    tools = load_tools(settings.tools)
    if provider == "simulator" and not settings.tools:
        tools = [get_weather, stop_conversation]
    prompt = settings.system_prompt or DEMO_SYSTEM_PROMPT
    auth: AuthHook | None = None
    if settings.auth is not None:
        auth = load_attribute(settings.auth)
        if not callable(auth):
            raise SettingsError(f"--auth {settings.auth}: not callable")
    elif env.get(settings.token_env):
        auth = token_auth(env[settings.token_env])

    async def run_conversation(conversation: WebConversation) -> None:
        model = make_model()
        agent = BidiAgent(model=model, tools=tools, system_prompt=prompt)
        await agent.run(inputs=[conversation.input()], outputs=[conversation.output()])

    make_model = _model_factory(settings, provider, settings.base_url)
    lifespan = None
    if provider == "simulator":

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            nonlocal make_model
            from adapters.testing.openai_simulator import OpenAIRealtimeSimulator

            async with OpenAIRealtimeSimulator(api_key=SIMULATOR_KEY, scenario=demo_scenario(), strict=False) as sim:
                make_model = _model_factory(settings, provider, sim.base_url)
                logger.info("no provider credentials: conversations go to the bundled simulator at %s", sim.base_url)
                yield

    app = WebApp(
        run_conversation,
        limits=settings.limits,
        auth=auth,
        allowed_origins=settings.allowed_origins,
        lifespan=lifespan,
    )
    if settings.twilio_public_url is not None:
        # Phone calls on the same app: the one place the web command reaches into adapters.telephony.
        from adapters.telephony import PhoneCall, TwilioBridge

        async def run_call(call: PhoneCall) -> None:
            agent = BidiAgent(model=make_model(), tools=tools, system_prompt=prompt)
            await agent.run(inputs=[call.input()], outputs=[call.output()])

        TwilioBridge(app, run_call, public_url=settings.twilio_public_url, auth_token=env.get("TWILIO_AUTH_TOKEN"))
    return app
