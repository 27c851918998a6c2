"""bidi-core's pytest plugin: the fixtures our own tests use, for yours.

Installed with bidi-core (the ``pytest11`` entry point
``adapters.testing.pytest_plugin``); a project that runs from a checkout can
load it with ``pytest_plugins = ["adapters.testing.pytest_plugin"]`` in its
top ``conftest.py`` or ``-p adapters.testing.pytest_plugin``. The entry point
has the module's own name, so loading it both ways registers it once.

* ``anyio_backend``: every async test runs on asyncio and on Trio (Trio only
  when it is installed). The ini option ``bidi_core_backends`` chooses
  (``bidi_core_backends = asyncio``); a ``conftest.py`` fixture of the same
  name overrides it as usual.
* ``scripted_model``: a :class:`~adapters.testing.ScriptedModel` built from
  the test's ``@pytest.mark.script(*connections, **options)`` (none: an
  open-ended model that plays what the test pushes).
* ``openai_sim``, ``gemini_sim``, ``nova_sonic_sim``: each provider's
  simulator on a free port of 127.0.0.1, built with the keyword arguments of
  ``@pytest.mark.scenario(...)`` (``scenario=Scenario(...)`` and the
  simulator's options); after the test, the simulator must have refused
  nothing the client sent. ``openai_model``, ``gemini_model`` and
  ``nova_sonic_model`` are the matching models connected to them (the
  ``*_model_for(sim, **options)`` functions build others). They need the
  ``simulators`` extra and the provider's extra.
* ``fake_audio_device``: a :class:`~adapters.testing.FakeAudioDevice` built
  with ``@pytest.mark.fake_audio(...)``'s keyword arguments; a stream left
  open after the test fails it.

Nothing here imports the simulators, the providers or hypothesis until a
fixture needs them: the plugin loads in any project that has bidi-core.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

__all__ = [
    "GEMINI_TEST_KEY",
    "NOVA_TEST_ACCESS_KEY",
    "NOVA_TEST_SECRET_KEY",
    "OPENAI_TEST_KEY",
    "assert_gemini_simulator_clean",
    "assert_nova_sonic_simulator_clean",
    "assert_openai_simulator_clean",
    "fake_audio_device",
    "gemini_model",
    "gemini_model_for",
    "gemini_sim",
    "nova_sonic_model",
    "nova_sonic_model_for",
    "nova_sonic_sim",
    "openai_model",
    "openai_model_for",
    "openai_sim",
    "scripted_model",
]

OPENAI_TEST_KEY = "sk-test-not-a-real-key-0123456789"
GEMINI_TEST_KEY = "AIza-test-not-a-real-key-0123456789"
NOVA_TEST_ACCESS_KEY = "AKIDNOVATEST"
NOVA_TEST_SECRET_KEY = "nova-secret-key-0123456789abcdef"

_BACKENDS_PLUGIN = "adapters.testing._pytest_backends"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "bidi_core_backends",
        "the async backends the anyio_backend fixture of bidi-core runs tests on "
        "(default: asyncio, and trio when it is installed)",
        type="args",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(**kwargs): keyword arguments for a provider simulator fixture")
    config.addinivalue_line("markers", "script(*connections, **kwargs): the scripted_model fixture's ScriptedModel")
    config.addinivalue_line("markers", "fake_audio(**kwargs): keyword arguments for the fake_audio_device fixture")
    # The anyio_backend fixture lives in a module registered now, after every plugin loaded from the command
    # line and from entry points: among plugins the one registered last wins, so it overrides anyio's own.
    if not config.pluginmanager.has_plugin(_BACKENDS_PLUGIN):
        config.pluginmanager.import_plugin(_BACKENDS_PLUGIN)


def backends(config: pytest.Config) -> list[str]:
    """The backends ``anyio_backend`` runs tests on."""
    chosen = config.getini("bidi_core_backends")
    if chosen:
        return [str(b) for b in chosen]
    return ["asyncio", "trio"] if importlib.util.find_spec("trio") is not None else ["asyncio"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = backends(config)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("anyio_backend") if callspec is not None else None
        (dropped if isinstance(backend, str) and backend not in wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _marker(request: pytest.FixtureRequest, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    marker = request.node.get_closest_marker(name)
    return (tuple(marker.args), dict(marker.kwargs)) if marker is not None else ((), {})


# --------------------------------------------------------------------------- the scripted model and fake audio


@pytest.fixture
def scripted_model(request: pytest.FixtureRequest) -> Any:
    """A ScriptedModel from ``@pytest.mark.script(*connections, **options)``; open-ended if unmarked."""
    from adapters.testing.scripted import ScriptedModel

    args, kwargs = _marker(request, "script")
    if not args and "connections" not in kwargs:
        kwargs.setdefault("open_ended", True)
    connections = args[0] if len(args) == 1 else list(args)
    return ScriptedModel(connections, **kwargs) if args else ScriptedModel(**kwargs)


@pytest.fixture
def fake_audio_device(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A FakeAudioDevice from ``@pytest.mark.fake_audio(**options)``; every stream must be closed by the end."""
    from adapters.testing.fake_audio import FakeAudioDevice

    _, kwargs = _marker(request, "fake_audio")
    device = FakeAudioDevice(**kwargs)
    yield device
    left = device.open_streams()
    for stream in left:
        stream.close()
    assert not left, f"audio streams left open: {[s.kind for s in left]}"


# --------------------------------------------------------------------------- OpenAI Realtime


def assert_openai_simulator_clean(sim: Any) -> None:
    """The simulator refused nothing the client sent, and sent only what the service would."""
    assert sim.client_errors == [], "our client sent messages the service would reject"
    assert sim.oracle_failures == []


def openai_model_for(sim: Any, **options: Any) -> Any:
    """A ``BidiOpenAIRealtimeModel`` connected to ``sim``."""
    from adapters.openai import BidiOpenAIRealtimeModel

    return BidiOpenAIRealtimeModel(api_key=OPENAI_TEST_KEY, base_url=sim.base_url, **options)


@pytest.fixture
async def openai_sim(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The OpenAI Realtime simulator, with ``@pytest.mark.scenario(...)``'s keyword arguments."""
    from adapters.testing.openai_simulator import OpenAIRealtimeSimulator

    _, kwargs = _marker(request, "scenario")
    kwargs.setdefault("api_key", OPENAI_TEST_KEY)
    async with OpenAIRealtimeSimulator(**kwargs) as sim:
        yield sim
        assert_openai_simulator_clean(sim)


@pytest.fixture
def openai_model(openai_sim: Any) -> Any:
    return openai_model_for(openai_sim)


# --------------------------------------------------------------------------- Gemini Live


def assert_gemini_simulator_clean(sim: Any) -> None:
    assert [f for f in sim.oracle_failures if f.direction == "client"] == [], "we sent what the service rejects"
    assert sim.oracle_failures == []


def gemini_model_for(sim: Any, **options: Any) -> Any:
    """A ``BidiGeminiLiveModel`` connected to ``sim`` (trusting its CA when it serves TLS)."""
    from adapters.gemini import BidiGeminiLiveModel

    if sim.tls and "ssl_context" not in options:
        options["ssl_context"] = sim.client_ssl_context()
    return BidiGeminiLiveModel(api_key=GEMINI_TEST_KEY, base_url=sim.ws_base_url, **options)


@pytest.fixture
async def gemini_sim(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The Gemini Live simulator, plain WebSocket unless the scenario marker says ``tls=True``."""
    from adapters.testing.gemini_simulator import GeminiLiveSimulator

    _, kwargs = _marker(request, "scenario")
    kwargs.setdefault("api_key", GEMINI_TEST_KEY)
    kwargs.setdefault("tls", False)
    async with GeminiLiveSimulator(**kwargs) as sim:
        yield sim
        assert_gemini_simulator_clean(sim)


@pytest.fixture
def gemini_model(gemini_sim: Any) -> Any:
    return gemini_model_for(gemini_sim)


# --------------------------------------------------------------------------- Nova Sonic


def assert_nova_sonic_simulator_clean(sim: Any) -> None:
    assert sim.schema_failures == [], "our client sent events the service would refuse"
    assert sim.signature_failures == [], "a chunk signature did not verify"


def nova_sonic_model_for(sim: Any, **options: Any) -> Any:
    """A ``BidiNovaSonicModel`` connected to ``sim``, signing with the test credentials."""
    from botocore.credentials import Credentials  # type: ignore[import-untyped]

    from adapters.nova_sonic import BidiNovaSonicModel

    options.setdefault("credentials", Credentials(NOVA_TEST_ACCESS_KEY, NOVA_TEST_SECRET_KEY))
    return BidiNovaSonicModel(endpoint_url=sim.endpoint_url, region="us-east-1", verify=sim.ca_cert_pem_path, **options)


@pytest.fixture
async def nova_sonic_sim(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The Nova Sonic simulator (TLS, HTTP/2), accepting the test credentials."""
    from adapters.testing.nova_sonic_simulator import NovaSonicSimulator

    _, kwargs = _marker(request, "scenario")
    kwargs.setdefault("credentials", {NOVA_TEST_ACCESS_KEY: NOVA_TEST_SECRET_KEY})
    async with NovaSonicSimulator(**kwargs) as sim:
        yield sim
        assert_nova_sonic_simulator_clean(sim)


@pytest.fixture
def nova_sonic_model(nova_sonic_sim: Any) -> Any:
    return nova_sonic_model_for(nova_sonic_sim)
