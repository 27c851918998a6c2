"""The transition table, exhaustively: every phase x every event type.

In the spirit of h2's ``test_state_machines.py``: for each pair, a state in
that phase (reached through legal steps only) meets an event of that type.
A pair in :data:`TRANSITIONS` must step to a new :class:`Conversation` and a
tuple of effects, in a phase the table and its settling rules account for;
any other pair must raise :class:`IllegalTransition` and leave the state
exactly as it was.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import attrs
import pytest

from bidi_core.conversation import (
    LIVE_PHASES,
    OFFLINE_PHASES,
    SETTLING_RULES,
    TRANSITIONS,
    Conversation,
    IllegalTransition,
    Phase,
    step,
)
from bidi_core.effects import Effect
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    HookFailed,
    InvalidInput,
    PlaybackProgress,
    Started,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    ToolRefused,
    UserInput,
    Written,
)
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    ModelEvent,
)
from ports.model import ModelCapabilities
from tests.conversation_samples import (
    SHELL_EVENT_TYPES,
    all_event_types,
    representative_event,
    representative_state,
    sample_events,
    sample_states,
)

ROOT = Path(__file__).resolve().parents[1]
EVENT_TYPES = all_event_types()
PAIRS = list(itertools.product(Phase, EVENT_TYPES))


def _pair_id(pair: tuple[Phase, type]) -> str:
    return f"{pair[0].name}-{pair[1].__name__}"


def _assert_untouched(state: Conversation, snapshot: Conversation) -> None:
    """``state`` equals the copy taken before, field by field and object by object."""
    assert state == snapshot
    for field in attrs.fields(Conversation):
        assert getattr(state, field.name) is getattr(snapshot, field.name), field.name


def _reachable(phase: Phase, targets: frozenset[Phase]) -> set[Phase]:
    """The phases a step may end in: the handler's (stay or a declared target),
    then whatever the settling rules move those to, in their order."""
    ends = {phase} | set(targets)
    for rule in SETTLING_RULES:
        if rule.phase in ends:
            ends.add(rule.target)
    return ends


def test_event_types_cover_the_table_the_ports_and_the_shell() -> None:
    table_types = {t for (_, t) in TRANSITIONS}
    assert table_types <= set(EVENT_TYPES)
    assert set(SHELL_EVENT_TYPES) <= table_types
    for model_event in ModelEvent.__args__:
        assert model_event in table_types, model_event
    assert {BidiTextInputEvent, BidiAudioInputEvent, BidiToolResultEvent, BidiConnectionStartEvent} <= set(EVENT_TYPES)
    assert {phase for (phase, _) in TRANSITIONS} == set(Phase)


@pytest.mark.parametrize("pair", PAIRS, ids=[_pair_id(p) for p in PAIRS])
def test_every_phase_and_event_type(pair: tuple[Phase, type]) -> None:
    phase, event_type = pair
    legal = pair in TRANSITIONS
    for state_sample in sample_states(phase):
        state = state_sample.value
        assert isinstance(state, Conversation)
        for event_sample in sample_events(event_type, state):
            event = event_sample.value
            assert type(event) is event_type
            snapshot = attrs.evolve(state)
            where = f"{state_sample.label} / {event_sample.label}"
            if legal:
                result = step(state, event)
                assert isinstance(result, tuple), where
                assert len(result) == 2, where
                new, effects = result
                assert isinstance(new, Conversation), where
                assert isinstance(effects, tuple), where
                assert all(isinstance(e, Effect.__args__) for e in effects), (where, effects)  # type: ignore[attr-defined]
                # The table says where the event leads: nothing else may happen.
                assert new.phase in _reachable(phase, TRANSITIONS[pair].targets), (where, new.phase)
            else:
                with pytest.raises(IllegalTransition) as info:
                    step(state, event)
                assert info.value.phase is phase
                assert info.value.event is event
                assert event_type.__name__ in str(info.value)
                assert phase.value in str(info.value)
            _assert_untouched(state, snapshot)


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.LISTENING, Connected("c9", "m")),
        (Phase.RESPONDING, Connected("c9", "m")),
        (Phase.LISTENING, Started()),
        (Phase.RESTARTING, Started()),
        (Phase.CLOSED, Started()),
        (Phase.CLOSED, UserInput(BidiTextInputEvent("too late"))),
        (Phase.CLOSED, UserInput(BidiAudioInputEvent(b"\x00\x00"))),
        # Raw input events must be wrapped in UserInput by the shell.
        (Phase.LISTENING, BidiTextInputEvent("raw")),
        (Phase.CONNECTING, BidiTextInputEvent("raw")),
        # Output events are produced by the machine, never fed to it.
        (Phase.LISTENING, BidiConnectionStartEvent("c1", "m")),
        (Phase.LISTENING, BidiToolResultEvent("t1", "lookup", "success")),
    ],
    ids=lambda v: v.name if isinstance(v, Phase) else type(v).__name__,
)
def test_specific_pairs_are_illegal(phase: Phase, event: object) -> None:
    state = representative_state(phase)
    snapshot = attrs.evolve(state)
    with pytest.raises(IllegalTransition):
        step(state, event)
    _assert_untouched(state, snapshot)


def test_output_and_raw_input_events_are_illegal_everywhere() -> None:
    never = [t for t in EVENT_TYPES if t not in {t for (_, t) in TRANSITIONS}]
    assert BidiTextInputEvent in never
    assert BidiAudioStreamEvent not in never
    for phase, event_type in itertools.product(Phase, never):
        with pytest.raises(IllegalTransition):
            step(representative_state(phase), representative_event(event_type, representative_state(phase)))


def test_model_traffic_and_connected_are_legal_exactly_where_expected() -> None:
    for phase in Phase:
        # A connection opens while connecting or restarting; in CLOSED it is a straggler of the shutdown.
        assert ((phase, Connected) in TRANSITIONS) == (phase in OFFLINE_PHASES | {Phase.CLOSED}), phase
        assert ((phase, UserInput) in TRANSITIONS) == (phase is not Phase.CLOSED), phase
        assert ((phase, Started) in TRANSITIONS) == (phase is Phase.CONNECTING), phase
        assert (phase, StopRequested) in TRANSITIONS, phase
        for model_event in ModelEvent.__args__:
            # Every phase has an answer for the provider's traffic: handled while a
            # connection is open, a protocol error while there is none, ignored once closed.
            assert (phase, model_event) in TRANSITIONS, (phase, model_event)


@pytest.mark.parametrize("phase", sorted(OFFLINE_PHASES, key=lambda p: p.value), ids=lambda p: p.name)
def test_model_traffic_without_a_connection_is_reported_not_obeyed(phase: Phase) -> None:
    for event_type in ModelEvent.__args__:
        state = representative_state(phase)
        new, effects = step(state, representative_event(event_type, state))
        assert new == state
        assert len(effects) == 1
        (emitted,) = effects
        assert emitted.event.code == "protocol_error"  # type: ignore[union-attr]
        assert event_type.__name__ in emitted.event.message  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "event_type", sorted({t for (p, t) in TRANSITIONS if p is Phase.CLOSED}, key=str), ids=lambda t: t.__name__
)
def test_closed_never_leaves_closed(event_type: type) -> None:
    for state_sample in sample_states(Phase.CLOSED):
        state = state_sample.value
        assert isinstance(state, Conversation)
        for event_sample in sample_events(event_type, state):
            new, effects = step(state, event_sample.value)
            assert new.phase is Phase.CLOSED
            assert new == state
            assert effects == ()


def test_a_handler_leading_to_a_phase_its_entry_does_not_name_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is the documentation of what may happen: a handler that takes the conversation somewhere
    its entry does not declare is a bug in the table, reported with the pair and where it led."""
    conv = Conversation()
    entry = TRANSITIONS[(Phase.CONNECTING, StopRequested)]
    assert Phase.CLOSED in entry.targets
    monkeypatch.setitem(TRANSITIONS, (Phase.CONNECTING, StopRequested), attrs.evolve(entry, targets=frozenset()))
    with pytest.raises(AssertionError, match=r"^CONNECTING x StopRequested led to CLOSED, not in the table$"):
        step(conv, StopRequested())


def test_closed_accepts_only_shutdown_stragglers() -> None:
    closed_types = {t for (p, t) in TRANSITIONS if p is Phase.CLOSED}
    assert closed_types == {
        ToolFinished,
        ToolCancelled,
        ToolRefused,
        HookFailed,
        PlaybackProgress,
        TimerFired,
        StopRequested,
        ConnectionEnded,
        ConnectFailed,
        Written,
        InvalidInput,
        # A connection that opened while the conversation was closing, and what it said.
        Connected,
        *ModelEvent.__args__,
    }
    assert UserInput not in closed_types
    assert Started not in closed_types


def test_a_connection_opening_after_the_close_is_ignored() -> None:
    for state_sample in sample_states(Phase.CLOSED):
        state = state_sample.value
        assert isinstance(state, Conversation)
        snapshot = attrs.evolve(state)
        for event in (
            Connected("c9", "m"),
            Connected("c9", "m", ModelCapabilities(max_connection_s=600.0)),
        ):
            new, effects = step(state, event)
            assert effects == (), state_sample.label
            assert new == state, state_sample.label
            assert new.connection_id == state.connection_id
        _assert_untouched(state, snapshot)


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_state_diagram", ROOT / "scripts" / "render_state_diagram.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_state_diagram_is_up_to_date() -> None:
    renderer = _load_renderer()
    assert renderer.main(["--check"]) == 0, "docs/state-diagram.md is stale: run python scripts/render_state_diagram.py"


def test_state_diagram_check_detects_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    renderer = _load_renderer()
    target = tmp_path / "diagram.md"
    assert renderer.main(["--check", "--output", str(target)]) == 1
    assert renderer.main(["--output", str(target)]) == 0
    assert renderer.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8").replace("RESPONDING", "TALKING"), encoding="utf-8")
    assert renderer.main(["--check", "--output", str(target)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_diagram_edges_match_the_documented_phases() -> None:
    moves = {(src, dst) for (src, _), entry in TRANSITIONS.items() for dst in entry.targets}
    moves |= {(rule.phase, rule.target) for rule in SETTLING_RULES}
    # The settling rules take a conversation that lands in LISTENING on to TOOL_CALLING.
    moves |= {(src, Phase.TOOL_CALLING) for (src, dst) in set(moves) if dst is Phase.LISTENING}
    # CONNECTING -> LISTENING <-> RESPONDING -> INTERRUPTED -> LISTENING
    assert {
        (Phase.CONNECTING, Phase.LISTENING),
        (Phase.LISTENING, Phase.RESPONDING),
        (Phase.RESPONDING, Phase.LISTENING),
        (Phase.RESPONDING, Phase.INTERRUPTED),
        (Phase.INTERRUPTED, Phase.LISTENING),
    } <= moves
    # RESPONDING/LISTENING -> TOOL_CALLING -> RESPONDING | LISTENING
    assert {
        (Phase.RESPONDING, Phase.TOOL_CALLING),
        (Phase.LISTENING, Phase.TOOL_CALLING),
        (Phase.TOOL_CALLING, Phase.RESPONDING),
        (Phase.TOOL_CALLING, Phase.LISTENING),
    } <= moves
    # any live phase -> RESTARTING -> LISTENING | TOOL_CALLING
    assert {(p, Phase.RESTARTING) for p in LIVE_PHASES} <= moves
    assert {(Phase.RESTARTING, Phase.LISTENING), (Phase.RESTARTING, Phase.TOOL_CALLING)} <= moves
    assert {dst for (src, dst) in moves if src is Phase.RESTARTING} <= {
        Phase.LISTENING,
        Phase.TOOL_CALLING,
        Phase.CLOSED,
    }
    # any phase -> CLOSED (absorbing)
    assert {(p, Phase.CLOSED) for p in Phase if p is not Phase.CLOSED} <= moves
    assert not {dst for (src, dst) in moves if src is Phase.CLOSED}
    # Nothing ever goes back to CONNECTING.
    assert not {src for (src, dst) in moves if dst is Phase.CONNECTING}
