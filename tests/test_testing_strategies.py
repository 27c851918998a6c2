"""The harness's building blocks: strategies that draw valid events and scripts, tool arguments that are
valid (or invalid) exactly as the tool's schema says, and the ScriptedModel written as the test goes."""

from __future__ import annotations

import enum
from typing import Any, Literal

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.testing import End, ScriptedModel
from adapters.testing.json_schema import invalid_tool_arguments, schema_accepts, tool_arguments
from adapters.testing.strategies import input_events, output_events, scripted_models, tool_use_events
from bidi_core import BidiAgent, BidiConnectionError, BidiToolUseEvent, ReconnectPolicy, tool
from bidi_core.tools import ToolRegistry
from ports.errors import BidiUsageError
from ports.events import BidiAudioInputEvent, BidiResponseStartEvent, BidiTextInputEvent, event_from_dict
from tests.support import our_tasks

FAST = ReconnectPolicy(initial_backoff_s=0.001, max_backoff_s=0.002)
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- events


@settings(max_examples=60, deadline=None)
@given(event=input_events())
def test_input_events_are_valid_and_round_trip(event: Any) -> None:
    assert event_from_dict(event.to_dict()) == event
    if isinstance(event, BidiAudioInputEvent):
        assert len(event.audio) % (2 * event.channels) == 0 and event.audio


@settings(max_examples=60, deadline=None)
@given(event=output_events())
def test_output_events_are_valid_and_round_trip(event: Any) -> None:
    assert event_from_dict(event.to_dict()) == event


# ---------------------------------------------------------------- tool arguments


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@tool
def forecast(
    city: str,
    days: int,
    unit: Unit = Unit.CELSIUS,
    detail: Literal["brief", "full"] = "brief",
    hours: list[int] | None = None,
    weights: dict[str, float] | None = None,
    anything: Any = None,
) -> str:
    """A forecast.

    Args:
        city: Where.
        days: How many days.
        unit: Degrees in.
        detail: How much to say.
        hours: Which hours.
        weights: Per source.
        anything: Free-form.
    """
    return f"{city} {days} {unit.value} {detail}"


REGISTRY = ToolRegistry([forecast])


@EXAMPLES
@given(call=tool_use_events(forecast, valid=True))
async def test_valid_arguments_pass_the_registrys_checks(call: BidiToolUseEvent) -> None:
    assert schema_accepts(forecast.input_schema, dict(call.input))
    outcome = await REGISTRY.execute(call)
    assert outcome.result.status == "success", outcome.result.content


@EXAMPLES
@given(call=tool_use_events(forecast, valid=False))
async def test_invalid_arguments_are_refused_by_the_schema_and_the_registry(call: BidiToolUseEvent) -> None:
    assert not schema_accepts(forecast.input_schema, dict(call.input))
    outcome = await REGISTRY.execute(call)
    assert outcome.result.status == "error"


HAND_WRITTEN = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "minItems": 1, "maxItems": 3},
        "mode": {"enum": ["a", "b", 3]},
        "nested": {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]},
    },
    "required": ["code", "count"],
    "additionalProperties": False,
}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_hand_written_schemas_with_bounds_patterns_and_nesting(data: st.DataObject) -> None:
    assert schema_accepts(HAND_WRITTEN, data.draw(tool_arguments(HAND_WRITTEN)))
    assert not schema_accepts(HAND_WRITTEN, data.draw(invalid_tool_arguments(HAND_WRITTEN)))


def test_the_schema_is_read_from_the_tool_or_its_spec_and_unsupported_keywords_are_refused() -> None:
    tool_arguments(forecast.spec)  # a ToolSpec has .input_schema; a BidiTool has .spec.input_schema
    with pytest.raises(BidiUsageError, match="not supported"):
        tool_arguments({"type": "object", "properties": {"x": {"$ref": "#/defs/x"}}})
    with pytest.raises(BidiUsageError, match="accepts every object"):
        invalid_tool_arguments({"type": "object"})
    with pytest.raises(BidiUsageError, match="JSON schema"):
        tool_arguments(object())


# ---------------------------------------------------------------- scripted provider behaviour


@tool
async def lookup(query: str) -> str:
    """Look something up.

    Args:
        query: What.
    """
    return f"found {query}"


@EXAMPLES
@given(model=scripted_models(tools=[lookup]))
async def test_a_drawn_script_plays_to_the_end_and_leaves_nothing_running(model: ScriptedModel) -> None:
    agent = BidiAgent(model=model, tools=[lookup], reconnect=FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [], [])
        with anyio.fail_after(10):
            await model.consumed()
        agent.request_stop()
    model.assert_done()
    assert our_tasks() == set()
    assert model.open_connections == 0


# ---------------------------------------------------------------- ScriptedModel written as the test goes


async def test_push_hold_and_release() -> None:
    model = ScriptedModel(open_ended=True, match=())
    with pytest.raises(BidiUsageError, match="no scripted connection is open"):
        model.push(BidiResponseStartEvent("r1"))
    async with BidiAgent(model=model, reconnect=FAST) as agent:
        with anyio.fail_after(5):
            while model.session is None:
                await model.wait_for_activity()
            first = model.session
            model.hold_connections()
            first.push(BidiResponseStartEvent("r1"), end=End(BidiConnectionError("gone")))
            while not first.closed or len(model.requests) < 2:
                await model.wait_for_activity()
            assert model.session is None and model.connections_held  # the agent waits in connect()
            await agent.send("while the network is down")
            model.release_connections()
            while not any(isinstance(i, BidiTextInputEvent) for i in model.sent):
                await model.wait_for_activity()
    with pytest.raises(BidiUsageError, match="is over"):
        first.push(BidiResponseStartEvent("r2"))
    assert [i.text for i in model.sent if isinstance(i, BidiTextInputEvent)] == ["while the network is down"]
    assert model.sessions[1].sent == model.sent


async def test_a_cancelled_send_delivers_nothing() -> None:
    model = ScriptedModel(open_ended=True, match=())
    async with model.connect(_request()) as session:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await session.send(BidiTextInputEvent("never"))
        assert model.sent == []
        await session.send(BidiTextInputEvent("once"))
    assert [i.text for i in model.sent if isinstance(i, BidiTextInputEvent)] == ["once"]


def _request() -> Any:
    from ports.model import ConnectRequest

    return ConnectRequest()
