"""A ready hypothesis state machine that tests *your* agent: :class:`AgentMachine`.

Subclass it (or call :meth:`AgentMachine.configure`) with your agent factory,
your tools, inputs and outputs. Each example runs one event loop (a blocking
portal on the class's ``backend``, ``"asyncio"`` or ``"trio"``), runs your
agent over an open-ended :class:`~adapters.testing.ScriptedModel`, and plays
a random script of steps against it: the user types and talks, the model
speaks, calls your tools (with arguments drawn from their schemas) and
withdraws calls, the user barges in, usage and in-band errors arrive, the
connection drops, hits its time limit or the network goes down for a while,
time passes for a slow output and a speaker, the user hangs up, the provider
fails for good, and the conversation is cancelled at a random point. After
every step the conversation is left to settle (every task waits, every tool
call has its result), then the library's guarantees are checked:

* **no audio after an interruption**: no output receives audio of a response
  after that response's interruption reached it, and the :class:`Speaker`
  your outputs play into plays none once the interruption reached them all;
* **every tool call settled**: a result event for each tool use event, unless
  the model withdrew the call; at most one result per call reaches the model,
  none after a withdrawal;
* **input delivered once**: what the user typed and said reaches the model
  exactly once, in order (all of it once the connection is back);
* **nothing left running** when a conversation ends (hang-up, cancellation,
  a fatal error, the end of the example): no task that was not there before
  it started, no thread running code, no connection open.

Your own invariants are ordinary hypothesis ``@invariant()`` methods; they
run between steps, when the conversation is quiet (``self.speaker``,
``self.user``, ``self.model``, ``self.agent``, ``self.events`` are there to
look at; ``self.portal.call`` runs async code in the example's loop). A
failure shrinks to a short script of steps whose names read as a story.

The adapters never import the core, so the agent comes from you::

    from bidi_core import BidiAgent, ReconnectPolicy

    class MyAgentMachine(AgentMachine):
        tools = [get_weather]

        def make_agent(self, model):
            return BidiAgent(model=model, tools=self.tools, reconnect=ReconnectPolicy(initial_backoff_s=0.01))

    TestMyAgent = MyAgentMachine.TestCase
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.from_thread
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from adapters.testing._conversation import (
    Conversation,
    Observer,
    SlowOutput,
    check_delivery,
    check_outputs,
    check_tools,
    unsettled,
)
from adapters.testing.harness import (
    ScriptedUser,
    Speaker,
    WatchedOutput,
    busy_threads,
    checkpoints,
    make_audio_input,
    running_tasks,
    tagged_audio,
    wait_quiet,
    watch,
)
from adapters.testing.json_schema import invalid_tool_arguments, tool_arguments
from adapters.testing.scripted import End, ScriptedModel
from adapters.testing.strategies import tool_name
from ports.errors import BidiConnectionError, BidiProviderError, BidiUsageError
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiToolCancelEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.model import ModelCapabilities

__all__ = ["DEFAULT_SETTINGS", "AgentMachine"]

DEFAULT_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""What every :class:`AgentMachine` subclass runs with unless decorated with its own ``@settings``."""

WORDS = st.lists(st.sampled_from(["hi", "weather", "paris", "stop", "thanks"]), min_size=1, max_size=3).map(" ".join)
STEP_MS = 1
"""Real time each step takes: the speaker plays that much, the slow output gets through that much."""
AUDIO_TAG_BASE = 20000
"""User audio blocks are tagged from here on (model audio: a response's number)."""


class AgentMachine(RuleBasedStateMachine):
    """Drives your agent over a scripted model with random steps; checks the library's guarantees.

    Override :meth:`make_agent` (required), and :meth:`make_inputs` /
    :meth:`make_outputs` to test your own inputs and outputs. Class
    attributes: ``backend`` (``"asyncio"`` or ``"trio"``), ``tools`` (the
    tools the model calls: ``BidiTool``-like objects, read by duck typing;
    tools that end the conversation are never called), ``capabilities``
    (the scripted model's), ``slow_output`` (add an output that plays audio
    only as fast as time passes), ``invalid_tool_arguments`` (the model
    sometimes gets a tool's arguments wrong), ``settle_timeout_s`` (how long
    a step may take to settle: your slowest tool), ``step_ms`` (real time
    every step takes besides ``time_passes``; 0 lets time pass only there, so
    what a slow output has played at each step is exactly known). Outputs with
    an ``offer`` method keep it under the harness's watch (their inline path
    is tested). Give the agent a fast
    ``ReconnectPolicy`` and a short ``drain_timeout_s``.
    """

    backend: ClassVar[str] = "asyncio"
    tools: ClassVar[Sequence[Any]] = ()
    capabilities: ClassVar[ModelCapabilities] = ModelCapabilities()
    slow_output: ClassVar[bool] = True
    invalid_tool_arguments: ClassVar[bool] = True
    settle_timeout_s: ClassVar[float] = 5.0
    step_ms: ClassVar[float] = STEP_MS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The parent's settings (DEFAULT_SETTINGS for a direct subclass); ``@settings(...)`` on the class
        # replaces them (hypothesis keeps one TestCase, and its settings, per class).
        base = next(b for b in cls.__mro__[1:] if issubclass(b, AgentMachine))
        cls.TestCase.settings = DEFAULT_SETTINGS if base is AgentMachine else base.TestCase.settings

    # ------------------------------------------------------------------ what users provide

    def make_agent(self, model: ScriptedModel) -> Any:
        """Your agent over ``model``, e.g. ``BidiAgent(model=model, tools=self.tools)``."""
        raise NotImplementedError("override make_agent(model) to build your agent over the scripted model")

    def make_inputs(self, user: ScriptedUser) -> Sequence[Any]:
        """The inputs ``run()`` gets; they read what the user does from ``user``."""
        return [user.input()]

    def make_outputs(self, speaker: Speaker) -> Sequence[Any]:
        """Your outputs (made after the inputs: an object that is both can be kept from
        :meth:`make_inputs`); an output that plays audio writes it to ``speaker``."""
        return []

    @classmethod
    def configure(
        cls,
        name: str = "ConfiguredAgentMachine",
        *,
        agent: Callable[[ScriptedModel], Any],
        inputs: Callable[[ScriptedUser], Sequence[Any]] | None = None,
        outputs: Callable[[Speaker], Sequence[Any]] | None = None,
        **attributes: Any,
    ) -> type[AgentMachine]:
        """A subclass with these factories and class attributes (``tools=``, ``backend=``, ...)."""
        body: dict[str, Any] = dict(attributes)
        body["make_agent"] = lambda self, model: agent(model)
        if inputs is not None:
            body["make_inputs"] = lambda self, user: inputs(user)
        if outputs is not None:
            body["make_outputs"] = lambda self, speaker: outputs(speaker)
        return type(name, (cls,), body)

    # ------------------------------------------------------------------ the example's event loop

    def __init__(self) -> None:
        super().__init__()
        if self.backend not in ("asyncio", "trio"):
            raise BidiUsageError(f"backend must be 'asyncio' or 'trio', got {self.backend!r}")
        self._stack = contextlib.ExitStack()
        self.portal: anyio.from_thread.BlockingPortal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend)
        )
        self._failed = False
        self._cancel_in: int | None = None
        self._conversations = 0
        try:
            self.conv: Conversation = self._start()
        except BaseException:
            self._close_portal()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def agent(self) -> Any:
        return self.conv.agent

    @property
    def model(self) -> ScriptedModel:
        return self.conv.model

    @property
    def user(self) -> ScriptedUser:
        return self.conv.user

    @property
    def speaker(self) -> Speaker:
        return self.conv.speaker

    @property
    def events(self) -> list[BidiOutputEvent]:
        """Every event the current conversation emitted so far."""
        return self.conv.events

    def teardown(self) -> None:
        try:
            if not self._failed:
                self.portal.call(self._end, "end of the example")
        finally:
            with contextlib.suppress(Exception):
                self.portal.call(self._abandon)
            self._close_portal()

    def _close_portal(self) -> None:
        with contextlib.suppress(Exception):
            self.portal.call(self.portal.stop, True)
        self._stack.close()

    # ------------------------------------------------------------------ steps

    def _step(self, action: Callable[[Conversation], None]) -> None:
        """Run ``action`` in the example's event loop, let the conversation settle, check the guarantees;
        if the conversation ended, check nothing of it is left running and start a new one."""
        try:
            ended = self.portal.call(self._run_step, action)
            if ended:
                self.conv = self._start()
        except BaseException:
            self._failed = True
            raise

    async def _run_step(self, action: Callable[[Conversation], None]) -> bool:
        conv = self.conv
        cancel_in, self._cancel_in = self._cancel_in, None
        async with anyio.create_task_group() as tg:
            if cancel_in is not None:
                tg.start_soon(self._cancel_after, conv, cancel_in)
            if self.step_ms:
                self._tick(conv, self.step_ms)  # time passed since the last step
            action(conv)
            await self._settle(conv)
            tg.cancel_scope.cancel()
        if conv.done.is_set():
            await self._finished(conv)
            return True
        self._check(conv)
        return False

    async def _cancel_after(self, conv: Conversation, count: int) -> None:
        await checkpoints(count)
        conv.ending = conv.ending or "cancelled"
        conv.cancelled = True
        conv.scope.cancel()

    # ------------------------------------------------------------------ a conversation's life

    def _start(self) -> Conversation:
        """A new conversation: the agent's ``run()`` in a task of the portal, then settled."""
        prepared: tuple[Conversation, list[Any], list[Any]] = self.portal.call(self._prepare)
        conv, inputs, outputs = prepared
        self.portal.start_task_soon(self._run, conv, inputs, outputs, name="harness conversation")
        self.portal.call(self._settle, conv)
        return conv

    async def _prepare(self) -> tuple[Conversation, list[Any], list[Any]]:
        self._conversations += 1
        conv = Conversation(self.capabilities, self._conversations)
        conv.agent = self.make_agent(conv.model)
        inputs = list(self.make_inputs(conv.user))
        for index, output in enumerate(self.make_outputs(conv.speaker)):
            conv.user_outputs.append(watch(output, f"{_name(output)} #{index + 1}"))
        conv.outputs = list(conv.user_outputs)
        if self.slow_output:
            conv.outputs.append(WatchedOutput(SlowOutput(conv), "slow output"))
        conv.tasks_before = running_tasks()
        conv.threads_before = threading.enumerate()
        return conv, inputs, [*conv.outputs, Observer(conv)]

    async def _run(self, conv: Conversation, inputs: list[Any], outputs: list[Any]) -> None:
        try:
            with conv.scope:
                await conv.agent.run(inputs, outputs)
        except Exception as exc:
            conv.error = exc
        finally:
            conv.done.set()

    async def _end(self, why: str) -> None:
        """End the conversation politely (network back, time free), after checking it settled."""
        conv = self.conv
        if self._cancel_in is not None:
            self._cancel_in = None
            conv.ending = "cancelled"
            conv.cancelled = True
            conv.scope.cancel()
        else:
            self._free(conv)
            await self._settle(conv)
            if not conv.done.is_set():
                self._check(conv)
                conv.ending = why
                conv.agent.request_stop()
        with anyio.fail_after(self.settle_timeout_s + 10):
            await conv.done.wait()
        await self._finished(conv)

    async def _abandon(self) -> None:
        """After a failure: stop whatever runs, quietly."""
        conv = self.conv
        conv.ending = "abandoned"
        conv.scope.cancel()
        with anyio.move_on_after(self.settle_timeout_s):
            await conv.done.wait()

    def _free(self, conv: Conversation) -> None:
        conv.model.release_connections()
        conv.network_up = True
        conv.free_running = True
        conv.budget_changed.set()

    async def _finished(self, conv: Conversation) -> None:
        """The conversation is over: it ended as the harness asked, and nothing of it is left running."""
        if conv.ending is None:
            raise AssertionError(f"the conversation ended by itself: run() raised {conv.error!r}") from conv.error
        expected = conv.expected_error
        if expected is not None and not (isinstance(conv.error, expected) or (conv.cancelled and conv.error is None)):
            raise AssertionError(f"run() should have raised {expected.__name__}, not {conv.error!r}") from conv.error
        if expected is None and conv.error is not None:
            raise AssertionError(f"the conversation ended with an error: {conv.error!r}") from conv.error
        left = {i: n for i, n in running_tasks().items() if i not in conv.tasks_before}
        me = anyio.get_current_task().id
        left.pop(me, None)
        assert not left, f"tasks left running after the conversation ended ({conv.ending}): {sorted(left.values())}"
        threads = busy_threads(conv.threads_before)
        assert not threads, f"threads still running after the conversation ended ({conv.ending}): {threads}"
        assert conv.model.open_connections == 0, "a connection was left open after the conversation ended"
        check_outputs(conv)

    # ------------------------------------------------------------------ settling and checking

    async def _settle(self, conv: Conversation) -> None:
        """Wait until every task waits and nothing the harness started is still on its way."""
        try:
            with anyio.fail_after(self.settle_timeout_s):
                while True:
                    await wait_quiet(self.backend)
                    if unsettled(conv) is None:
                        return
                    async with anyio.create_task_group() as tg:
                        for wait in (conv.model.wait_for_activity, conv.seen.wait, conv.done.wait):
                            tg.start_soon(_then_cancel, wait, tg.cancel_scope)
        except TimeoutError:
            raise AssertionError(
                f"the conversation did not settle within {self.settle_timeout_s} s: {unsettled(conv)}"
            ) from None

    def _check(self, conv: Conversation) -> None:
        """The guarantees while the conversation runs (checked after every step)."""
        check_outputs(conv)
        check_delivery(conv)
        check_tools(conv)

    # ------------------------------------------------------------------ what the model does

    def _new_response(self, conv: Conversation) -> str:
        conv.responses += 1
        rid = f"r{conv.responses}"
        conv.speaker.names[conv.responses] = rid
        conv.model.push(BidiResponseStartEvent(rid))
        conv.open_response = rid
        return rid

    def _audio(self, conv: Conversation, rid: str, chunks: int) -> list[BidiAudioStreamEvent]:
        fmt = self.capabilities.output_audio
        tag = int(rid[1:])
        frames = fmt.sample_rate * 20 // 1000
        audio = tagged_audio(tag, frames, fmt.channels)
        return [
            BidiAudioStreamEvent(audio, sample_rate=fmt.sample_rate, channels=fmt.channels, response_id=rid)
            for _ in range(chunks)
        ]

    def _connected(self) -> bool:
        conv = self.conv
        return conv.network_up and conv.model.session is not None and not conv.done.is_set()

    def _droppable(self) -> bool:
        """The connection may end now without ending the conversation: it said something (the agent
        replaces it at once), or the connections lost before saying anything in a row stay below the
        reconnect policy's ``max_attempts`` (the agent backs off, then tries again)."""
        session = self.conv.model.session
        if not self._connected() or session is None:
            return False
        policy = getattr(self.conv.agent, "reconnect_policy", None)
        attempts = int(getattr(policy, "max_attempts", 1))
        return session.received > 0 or self.conv.failures + 1 < attempts

    def _drop(self, conv: Conversation, end: End) -> None:
        session = conv.model.session
        conv.failures = 0 if session is not None and session.received > 0 else conv.failures + 1
        conv.model.push(end=end)
        conv.open_response = None

    def _withdrawable(self) -> list[str]:
        conv = self.conv
        session = conv.model.session
        return [i for i, (_, s) in conv.calls.items() if s is session and i not in conv.withdrawn]

    def _callable_tools(self) -> list[Any]:
        return [t for t in self.tools if not getattr(t, "ends_conversation", False)]

    @precondition(_connected)
    @rule(chunks=st.integers(1, 4), text=WORDS)
    def model_speaks(self, chunks: int, text: str) -> None:
        """The model says ``text`` in ``chunks`` audio chunks of 20 ms (starting a response if none is open)."""

        def act(conv: Conversation) -> None:
            rid = conv.open_response or self._new_response(conv)
            transcript = BidiTranscriptStreamEvent(text, text, "assistant", False, rid)
            conv.model.push(*self._audio(conv, rid, chunks), transcript)

        self._step(act)

    @precondition(lambda self: self._connected() and self.conv.open_response is not None)
    @rule(usage=st.booleans())
    def model_finishes_response(self, usage: bool) -> None:
        def act(conv: Conversation) -> None:
            rid = conv.open_response
            assert rid is not None
            extra = [BidiUsageEvent(10, 20, 30)] if usage else []
            conv.model.push(*extra, BidiResponseCompleteEvent(rid, "complete"))
            conv.open_response = None

        self._step(act)

    @precondition(lambda self: self._connected() and self.conv.open_response is not None)
    @rule(late_chunks=st.integers(0, 2))
    def user_barges_in(self, late_chunks: int) -> None:
        """The provider hears the user speak while it answers: the response is cut short (its late
        audio arrives after, then its ``interrupted`` completion)."""
        self._step(lambda conv: self._hears_speech(conv, late_chunks))

    def _hears_speech(self, conv: Conversation, late_chunks: int = 0) -> None:
        rid = conv.open_response
        late = [] if rid is None else [*self._audio(conv, rid, late_chunks)]
        completion = [] if rid is None else [BidiResponseCompleteEvent(rid, "interrupted")]
        conv.model.push(BidiSpeechStartedEvent(), *late, *completion)
        conv.open_response = None

    @precondition(lambda self: self._connected() and bool(self._callable_tools()))
    @rule(call=st.runner().flatmap(lambda machine: machine._calls()))
    def model_calls_tool(self, call: tuple[str, dict[str, Any]]) -> None:
        """The model calls a tool (``(name, arguments)``, arguments drawn from its schema)."""

        def act(conv: Conversation) -> None:
            name, arguments = call
            rid = conv.open_response or self._new_response(conv)
            call_id = f"call_{len(conv.calls) + 1}"
            conv.calls[call_id] = (name, conv.model.session)
            conv.model.push(BidiToolUseEvent(call_id, name, arguments), BidiResponseCompleteEvent(rid, "tool_use"))
            conv.open_response = None

        self._step(act)

    @precondition(lambda self: self._connected() and bool(self._withdrawable()))
    @rule()
    def model_withdraws_tool_call(self) -> None:
        """The provider withdraws its latest call on this connection (as Gemini does on barge-in)."""

        def act(conv: Conversation) -> None:
            call_id = self._withdrawable()[-1]
            conv.withdrawn[call_id] = len(conv.model.sent)
            conv.model.push(BidiToolCancelEvent((call_id,)))

        self._step(act)

    @precondition(_connected)
    @rule(what=st.sampled_from(["usage", "an error"]))
    def model_reports(self, what: str) -> None:
        """Token usage, or an in-band error (the provider complains; the conversation goes on)."""
        event = BidiUsageEvent(5, 7, 12) if what == "usage" else BidiErrorEvent("rate limited", code="rate_limited")
        self._step(lambda conv: conv.model.push(event))

    @precondition(_droppable)
    @rule()
    def connection_drops(self) -> None:
        """The connection fails (a network error): the agent reconnects (at once if the connection had
        said something, after a backoff if not)."""
        self._step(lambda conv: self._drop(conv, End(BidiConnectionError("connection reset"))))

    @precondition(_droppable)
    @rule()
    def network_goes_down(self) -> None:
        """The connection drops, and new ones hang until the network comes back."""

        def act(conv: Conversation) -> None:
            conv.model.hold_connections()
            self._drop(conv, End(BidiConnectionError("network unreachable")))
            conv.network_up = False

        self._step(act)

    @precondition(lambda self: self._connected() and self.conv.model.session is not self.conv.expiring)
    @rule()
    def connection_expires(self) -> None:
        """The provider warns the connection ends in a minute: the agent rotates at the next turn boundary."""

        def act(conv: Conversation) -> None:
            conv.expiring = conv.model.session
            conv.model.push(BidiConnectionExpiringEvent(time_left_s=60.0))

        self._step(act)

    @precondition(lambda self: not self.conv.network_up)
    @rule()
    def network_comes_back(self) -> None:
        def act(conv: Conversation) -> None:
            conv.model.release_connections()
            conv.network_up = True

        self._step(act)

    # ------------------------------------------------------------------ what the user does

    @rule(text=WORDS)
    def user_types(self, text: str) -> None:
        self._step(lambda conv: conv.user.type(text))

    @rule(text=WORDS)
    def user_speaks(self, text: str) -> None:
        """The user says ``text`` into the microphone (a 20 ms block a word, in the model's input
        format); a connected provider hears speech start, which cuts short a response it is giving."""

        def act(conv: Conversation) -> None:
            rate = self.capabilities.input_audio.sample_rate
            for _ in text.split():
                conv.audio_blocks += 1
                conv.user.say(make_audio_input(AUDIO_TAG_BASE + conv.audio_blocks, rate))
            if self._connected():
                self._hears_speech(conv)

        self._step(act)

    @rule(ms=st.sampled_from([60, 200, 1000]))
    def time_passes(self, ms: int) -> None:
        """``ms`` more of real time (every step takes ``STEP_MS`` anyway): the speaker plays,
        the slow output gets through that much audio."""
        self._step(lambda conv: self._tick(conv, ms))

    def _tick(self, conv: Conversation, ms: float) -> None:
        outputs = conv.user_outputs
        muted = set.intersection(*(o.fenced for o in outputs)) if outputs else set()
        conv.speaker.muted = {int(rid[1:]) for rid in muted}
        conv.speaker.play(ms)
        conv.slow_budget_ms += ms
        conv.budget_changed.set()

    @rule(how=st.sampled_from(["the user hangs up", "the provider fails for good", "the provider ends the session"]))
    def conversation_ends(self, how: str) -> None:
        """The user hangs up (``request_stop()``), a fatal provider error (an account suspended) ends it
        and ``run()`` must raise it, or the provider ends the session cleanly and ``run()`` returns.
        Nothing of it may be left running; a new one starts."""

        def act(conv: Conversation) -> None:
            self._free(conv)  # no output holds run() up for its drain timeout: not what is tested here
            conv.ending = how
            if how == "the user hangs up" or conv.model.session is None:
                conv.agent.request_stop()
            elif how == "the provider fails for good":
                conv.expected_error = BidiProviderError
                conv.model.push(end=End(BidiProviderError("account suspended", code="forbidden")))
            else:
                conv.model.push(end=End())

        self._step(act)

    @precondition(lambda self: self._cancel_in is None)
    @rule(checkpoints=st.integers(0, 60))
    def cancel_during_next_step(self, checkpoints: int) -> None:
        """Cancel ``run()`` (a cancel scope, as a timeout or Ctrl+C does) after ``checkpoints`` turns
        of the event loop into the next step; a new conversation starts."""
        self._cancel_in = checkpoints

    def _calls(self) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        """How the model calls the tools: a name and arguments from its schema (sometimes wrong ones)."""
        cached = type(self).__dict__.get("_calls_strategy")
        if cached is None:
            cached = _calls(tuple(self._callable_tools()), self.invalid_tool_arguments)
            type(self)._calls_strategy = cached
        return cached


async def _then_cancel(wait: Callable[[], Any], scope: anyio.CancelScope) -> None:
    await wait()
    scope.cancel()


def _name(output: Any) -> str:
    return str(getattr(output, "__qualname__", None) or type(output).__name__)


def _calls(tools: tuple[Any, ...], invalid: bool) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    options = []
    for tool in tools:
        name = tool_name(tool)
        arguments = tool_arguments(tool)
        if invalid:
            with contextlib.suppress(BidiUsageError):
                arguments = arguments | invalid_tool_arguments(tool)
        options.append(st.tuples(st.just(name), arguments))
    return st.one_of(options)
