"""BidiAgent: the shell that runs the conversation state machine.

Everything here is I/O and scheduling; every decision is made by
:func:`bidi_core.conversation.step`. The shell turns what happens (a model
event, an input, a connection opening or failing, an item written, a tool
ending, a timer) into events for it, and carries out the effects it returns,
choosing nothing: when to connect, whether to retry, what joins the history,
which error events to emit are the core's. Applying effects never awaits: an
effect appends to a queue, starts or cancels a task, or sets an event. That
keeps effects in step order without a lock, on asyncio and on Trio alike.

Task tree (one task group, owned by the agent, entered by ``start()`` and
left by ``stop()``)::

    BidiAgent task group
    ├─ supervisor        opens each connection the core asks for; owns its scope
    │   ├─ reader        session.receive() -> step()
    │   └─ writer        send FIFO -> session.send() -> step(Written)
    ├─ tool tasks        one cancel scope per call
    └─ timers            one cancel scope per timer

``run()`` adds its own task group around that for one task per input and one
per output, each output with its own bounded queue.

Exceptions: ``run()`` raises what ended the conversation. One failure (an
input, an output, a fatal provider error) is raised as itself; several
independent failures at once are raised together as an ``ExceptionGroup``.
Cancellation (Ctrl+C, a cancel scope, a timeout) propagates unchanged after
everything of ours has stopped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, assert_never

import anyio
import anyio.abc

from bidi_core.conversation import Conversation, ConversationConfig, IllegalTransition, Phase, step
from bidi_core.effects import (
    AppendHistory,
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    CloseConnection,
    Effect,
    Emit,
    OpenConnection,
    RetractHistory,
    RunTool,
    SendToModel,
    StartTimer,
)
from bidi_core.history import coerce_messages
from bidi_core.hooks import HookRunner, Hooks, run_call
from bidi_core.inputs_outputs import (
    InputLike,
    OutputLike,
    adapt_input,
    adapt_output,
    coerce_input,
    inline_offer,
    reports_playback,
)
from bidi_core.observation import SIGNALS, Observation
from bidi_core.queues import OutputQueue, SendFifo
from bidi_core.receiver import Receiver, unwrap
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    Event,
    InvalidInput,
    PlaybackProgress,
    Started,
    StopRequested,
    TimerFired,
    ToolCancelled,
    UserInput,
    Written,
)
from bidi_core.tools import BidiTool, ToolRegistry
from bidi_core.usage import Usage
from ports.errors import BidiError, BidiUsageError
from ports.events import BidiAudioStreamEvent, BidiInputEvent, BidiOutputEvent, BidiToolUseEvent
from ports.io import PlaybackReport
from ports.messages import Message
from ports.model import BidiModel, BidiModelSession, BidiSendNowait, ConnectRequest, ModelCapabilities, ModelInput
from ports.observer import ConversationInfo, ConversationObserver

__all__ = ["BidiAgent", "ReconnectPolicy"]

logger = logging.getLogger("bidi_core.agent")

_CONTROL_ITEMS = 256
"""Room in the send FIFO beside the core's send window, for the cancels and
truncates barge-ins send (they belong to the connection, not the outbox)."""


class BidiAgent:
    """A real-time conversation with a speech-to-speech model.

    ``async with BidiAgent(model=...) as agent:`` starts it; ``send()`` talks,
    ``receive()`` listens, leaving the block stops it. ``run(inputs, outputs)``
    does all of that for a set of inputs and outputs. ``start()``/``stop()``
    exist for the reference's manual style and must be called from the same
    task.

    After ``run()`` returns, ``stop()`` finishes or the caller is cancelled,
    nothing of the agent's is left running: no task, no connection, no timer.
    """

    def __init__(
        self,
        model: BidiModel,
        tools: Iterable[BidiTool | Callable[..., Any]] | None = None,
        system_prompt: str | None = None,
        messages: Iterable[Message | Mapping[str, Any]] | None = None,
        *,
        reconnect: ReconnectPolicy | None = None,
        output_queue_size: int = 1024,
        max_buffered_audio: int = 1500,
        drain_timeout_s: float = 5.0,
        shutdown_timeout_s: float = 5.0,
        observers: Iterable[ConversationObserver] = (),
    ) -> None:
        """``observers`` watch the conversation (``adapters.otel`` exports it to
        OpenTelemetry; see :mod:`ports.observer`)."""
        for attr in ("connect", "model_id", "capabilities"):
            if not hasattr(model, attr):
                raise BidiUsageError(f"model must be a BidiModel (with .{attr}), got {type(model).__name__}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise BidiUsageError(f"system_prompt must be a str, got {type(system_prompt).__name__}")
        if output_queue_size < 1 or max_buffered_audio < 1:
            raise BidiUsageError("output_queue_size and max_buffered_audio must be at least 1")
        self.model = model
        self.system_prompt = system_prompt
        self.tool_registry = ToolRegistry(tools or ())
        self.messages: list[Message] = coerce_messages(messages)
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self._output_queue_size = output_queue_size
        self._drain_timeout_s = drain_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        config = ConversationConfig(
            max_buffered_audio=max_buffered_audio,
            reconnect=self.reconnect_policy,
            interruptible_tools=self.tool_registry.interruptible,
        )
        self._conv = Conversation(config=config)
        self._lifecycle = "new"  # new -> running -> stopped
        self._owner: anyio.TaskInfo | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._outputs: list[OutputQueue] = []
        self._receiver: OutputQueue | None = None
        self._fifo = SendFifo(0)
        self._send_nowait: Callable[[ModelInput], bool] | None = None  # the open session's, if it has one
        self._open_order: OpenConnection | None = None
        self._open_requested = anyio.Event()
        self._connection_done = anyio.Event()
        self._closed = anyio.Event()
        self._supervisor_done = anyio.Event()
        self._run_done = anyio.Event()  # run() has stopped its inputs and outputs too
        self._live_tasks = 0  # supervisor, tools and timers running in our task group
        self._idle = anyio.Event()  # set when the last of them ended (only after the close)
        self._close_error: BaseException | None = None
        self._error_raised = False
        self._tool_scopes: dict[str, anyio.CancelScope] = {}
        self._timer_scopes: dict[str, anyio.CancelScope] = {}
        self._dispatching = False
        self._tools_unstarted = 0
        self._deferred: deque[Event] = deque()
        self._sends: list[SendToModel] = []  # the step's items for the connection, sent after its effects
        self._watch = Observation(observers)
        self.hooks = Hooks()
        self._hook_runner = HookRunner(self.hooks, self._dispatch)

    def __repr__(self) -> str:
        tools = sorted(self.tool_registry.names)
        return f"<BidiAgent model={self.model.model_id!r} phase={self._conv.phase.value} tools={tools}>"

    # ------------------------------------------------------------------ what I/O sees (ports.io.AgentView)

    @property
    def capabilities(self) -> ModelCapabilities:
        """The model's capabilities (of the open connection once there is one)."""
        return self._conv.capabilities if self._conv.connection_id else self.model.capabilities

    @property
    def phase(self) -> Phase:
        """Where the conversation is now (listening, responding, ...)."""
        return self._conv.phase

    @property
    def conversation(self) -> Conversation:
        """The state machine's current state (read-only snapshot)."""
        return self._conv

    @property
    def dropped_audio(self) -> int:
        """User audio blocks dropped because the connection could not take them."""
        return self._conv.outbox.dropped_audio

    @property
    def usage(self) -> Usage:
        """Tokens the provider reported, by kind, summed over every connection
        of this conversation (``agent.usage.cost(Prices(...))`` prices them)."""
        return self._conv.usage

    def report_playback(self, report: PlaybackReport) -> None:
        """Called by outputs that play audio: how much of a response was heard."""
        if self._lifecycle == "running":
            self._dispatch(PlaybackProgress(report))
            self._watch.played(report)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown(raise_error=exc is None)

    async def start(self) -> None:
        """Open the conversation: connect to the model in the background.

        Returns at once; input sent before the connection is open is
        buffered. Raises :class:`BidiUsageError` if already started.
        """
        self._start(manual=True)
        stack = AsyncExitStack()
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        self._spawn(self._supervise, name="bidi_core supervisor")
        self._spawn(self._hook_runner.run, name="bidi_core hooks")
        self._dispatch(Started(outputs_report_playback=None))

    def _start(self, *, manual: bool) -> None:
        if self._lifecycle != "new":
            raise BidiUsageError(f"this agent was already started ({self._lifecycle}); create a new BidiAgent")
        self._lifecycle = "running"
        self._owner = anyio.get_current_task()
        if manual:
            self._receiver = OutputQueue(self._output_queue_size, "receive()")
            self._outputs.append(self._receiver)
        logger.debug("starting agent for model %s", self.model.model_id)
        provider = getattr(self.model, "provider_name", None) or type(self.model).__name__
        self._watch.start(ConversationInfo(str(provider), self.model.model_id, tuple(sorted(self.tool_registry.names))))

    async def stop(self) -> None:
        """End the conversation and wait until everything of ours has stopped.

        Safe to call twice, before ``start()`` (a no-op), from inside a
        ``receive()`` loop (a pending ``receive()`` ends) and from any task:
        a signal handler, a watchdog, a web request that ends the call.

        From the task that started the agent (``start()``, ``async with``,
        ``run()``) it also leaves the agent's task group. From another task it
        asks for the end and waits until the conversation has closed and no
        task, connection or timer of ours is left; under ``run()`` also until
        ``run()`` has stopped its inputs and outputs. The one thing another
        task cannot do is leave the task group ``start()`` entered (a task
        group belongs to the task that entered it): with ``start()``, the
        starting task still calls ``stop()`` or leaves ``async with``, which
        then finds nothing left to do.
        """
        if self._lifecycle == "running" and not self._is_owner():
            await self._stop_from_elsewhere()
            return
        await self._shutdown(raise_error=False)

    def _is_owner(self) -> bool:
        return self._owner is None or anyio.get_current_task().id == self._owner.id

    async def _stop_from_elsewhere(self) -> None:
        self.request_stop()
        with anyio.move_on_after(self._shutdown_timeout_s):
            await self._supervisor_done.wait()
        if not self._supervisor_done.is_set() and self._tg is not None:
            self._tg.cancel_scope.cancel()  # the polite close took too long
        if self._receiver is None:
            await self._run_done.wait()  # run(): its inputs and outputs stop too
        else:
            await self._idle.wait()

    async def _shutdown(self, *, raise_error: bool) -> None:
        if self._lifecycle != "running":
            return
        self.request_stop()
        stack, self._stack = self._stack, None
        try:
            # Let the supervisor close the connection politely, then cancel whatever is left.
            # (The task group is left outside the shield: scopes must exit in the order they were entered.)
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._shutdown_timeout_s):
                await self._supervisor_done.wait()
                await self._hook_runner.done.wait()  # the hooks of the last events, the close's included
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            if stack is not None:
                await stack.aclose()
        finally:
            self._lifecycle = "stopped"
            logger.debug("agent stopped")
            self._watch.end()
        if raise_error:
            self._raise_close_error()

    def request_stop(self, reason: str = "client_disconnect") -> None:
        """Ask the conversation to end, from any task of the event loop. Never blocks."""
        if self._lifecycle == "running":
            self._dispatch(StopRequested(reason))

    def _raise_close_error(self) -> None:
        if self._close_error is not None and not self._error_raised:
            self._error_raised = True
            raise self._close_error

    # ------------------------------------------------------------------ manual API

    async def send(self, event: BidiInputEvent | Mapping[str, Any] | str) -> None:
        """Say something to the model: a str, an input event or its dict form.

        Raises :class:`BidiUsageError` for anything else, before ``start()``
        and after the conversation closed.
        """
        if self._lifecycle == "new":
            raise BidiUsageError("call start() (or use `async with agent`) before send()")
        item = coerce_input(event)
        if self._lifecycle != "running":
            raise BidiUsageError("the conversation is closed; send() is no longer possible")
        self._dispatch(UserInput(item))
        self._watch.took(item)
        await anyio.lowlevel.checkpoint()

    def receive(self) -> AsyncIterator[BidiOutputEvent]:
        """Every output event, in order, until the conversation closes.

        The last event is a ``BidiConnectionCloseEvent``. If the conversation
        ended because of an error (a fatal provider error), that error is
        raised after the close event. Only in the manual style: with ``run()``
        events go to the outputs. Leaving the loop early (``break``) is fine:
        this is a plain iterator, not a generator that needs closing.
        """
        if self._lifecycle == "new":
            raise BidiUsageError("call start() (or use `async with agent`) before receive()")
        if self._receiver is None:
            raise BidiUsageError("receive() is not available inside run(); pass an output to run() instead")
        return Receiver(self._receiver, self._raise_close_error)

    # ------------------------------------------------------------------ run()

    async def run(self, inputs: Sequence[InputLike] = (), outputs: Sequence[OutputLike] = ()) -> None:
        """Run the conversation with these inputs and outputs until it closes.

        Each input and each output gets its own task; each output its own
        bounded queue, so a slow output does not stall the others. Returns when
        the conversation closes (``stop_conversation``, :meth:`request_stop`,
        the provider closing for good). If an input or output raises,
        everything is cancelled and that error is raised (several at once: an
        ``ExceptionGroup``). An input that raises ``EOFError`` or
        ``StopAsyncIteration`` has simply ended; the others go on.
        """
        ins = [adapt_input(x) for x in inputs]
        outs = [adapt_output(x) for x in outputs]
        if self._lifecycle != "new":
            raise BidiUsageError("run() needs a fresh agent; it starts and stops the conversation itself")
        queues = [OutputQueue(self._output_queue_size, type(o).__name__, inline_offer(o)) for o in outs]
        try:
            async with AsyncExitStack() as io_stack:
                for io in (*outs, *ins):
                    await io.start(self)
                    io_stack.push_async_callback(self._stop_io, io)
                self._start(manual=False)
                self._outputs.extend(queues)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self._spawn(self._supervise, name="bidi_core supervisor")
                    self._spawn(self._hook_runner.run, name="bidi_core hooks")
                    self._dispatch(Started(outputs_report_playback=any(reports_playback(o) for o in outs)))
                    async with anyio.create_task_group() as io_tg:
                        outputs_done = [anyio.Event() for _ in outs]
                        for out, queue, done in zip(outs, queues, outputs_done, strict=True):
                            io_tg.start_soon(self._output_loop, out, queue, done, name=f"output {queue.name}")
                        for inp in ins:
                            io_tg.start_soon(self._input_loop, inp, name=f"input {type(inp).__name__}")
                        await self._closed.wait()
                        with anyio.move_on_after(self._drain_timeout_s):
                            for done in outputs_done:
                                await done.wait()
                        io_tg.cancel_scope.cancel()
                    await self._shutdown(raise_error=False)
        except BaseExceptionGroup as group:
            error = unwrap(group)
            if error is group:
                raise
            raise error from None
        finally:
            if self._lifecycle == "running":
                with anyio.CancelScope(shield=True):
                    await self._shutdown(raise_error=False)
            self._run_done.set()
        self._raise_close_error()

    async def _stop_io(self, io: Any) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._shutdown_timeout_s):
            await io.stop()

    async def _input_loop(self, inp: Any) -> None:
        while True:
            try:
                raw = await inp()
            except (EOFError, StopAsyncIteration):
                logger.debug("input %s ended", type(inp).__name__)
                return
            try:
                item = coerce_input(raw)
            except BidiUsageError as exc:
                logger.warning("input %s produced an invalid item: %s", type(inp).__name__, exc)
                self._dispatch(InvalidInput(str(exc)))
                continue
            try:
                self._dispatch(UserInput(item))
            except BidiUsageError:
                return  # the conversation is over
            self._watch.took(item)

    async def _output_loop(self, out: Any, queue: OutputQueue, done: anyio.Event) -> None:
        try:
            while (event := await queue.get()) is not None:
                await out(event)
                queue.task_done()
        finally:
            done.set()

    # ------------------------------------------------------------------ the state machine

    def _dispatch(self, event: Event) -> None:
        """Step the conversation and apply the effects, synchronously.

        Run to completion: an event that arrives while effects are being
        applied (an inline output's ``offer`` calling ``request_stop()`` or
        ``report_playback()``) is stepped after them, never in their middle,
        so every step's effects are carried out together and in order."""
        if self._dispatching:
            self._deferred.append(event)
            return
        self._dispatching = True
        try:
            self._step(event)
            while self._deferred:
                self._step(self._deferred.popleft())
        finally:
            self._dispatching = False
            self._deferred.clear()

    def _step(self, event: Event) -> None:
        try:
            self._conv, effects = step(self._conv, event)
        except IllegalTransition as exc:
            if isinstance(event, UserInput):
                raise BidiUsageError("the conversation is closed; input is no longer accepted") from exc
            raise
        try:
            for effect in effects:
                self._apply(effect)
        finally:
            if self._sends:
                self._send_step_items()

    def _apply(self, effect: Effect) -> None:
        if isinstance(effect, Emit):
            self._emit(effect.event)
        elif isinstance(effect, SendToModel):
            self._sends.append(effect)  # after the step's other effects: _send_step_items
        elif isinstance(effect, RunTool):
            self._start_tool(effect.call)
        elif isinstance(effect, CancelTool):
            scope = self._tool_scopes.get(effect.tool_use_id)
            if scope is not None:
                logger.debug("cancelling tool call %s", effect.tool_use_id)
                scope.cancel()
        elif isinstance(effect, ClearPlayback):
            dropped = sum(q.discard_audio() for q in self._outputs)
            logger.debug("interrupted %s: discarded %d queued audio blocks", effect.response_id, dropped)
        elif isinstance(effect, StartTimer):
            self._start_timer(effect.name, effect.seconds)
        elif isinstance(effect, CancelTimer):
            timer = self._timer_scopes.pop(effect.name, None)
            if timer is not None:
                timer.cancel()
        elif isinstance(effect, OpenConnection):
            self._open_order = effect
            self._open_requested.set()
        elif isinstance(effect, CloseConnection):
            logger.debug("leaving the connection: %s", effect.reason)
            self._leave_connection()
        elif isinstance(effect, AppendHistory):
            self.messages.append(effect.message)
        elif isinstance(effect, RetractHistory):
            for index in range(len(self.messages) - 1, -1, -1):
                if self.messages[index] == effect.message:
                    del self.messages[index]
                    break
        elif isinstance(effect, Close):
            self._close(effect)
        else:  # pragma: no cover - the effect union is closed
            assert_never(effect)

    def _send_step_items(self) -> None:
        """Hand the step's items to the connection, in order, once its other effects are applied:
        a step that also leaves the connection (a rotation settling as a tool ends) has closed the
        send FIFO by then, so nothing goes to the connection being left; the outbox hands the items
        to the next one. Each is written at once by this task while the writer has nothing and the
        session takes it without waiting (ports.model.BidiSendNowait): no wake-up of the writer
        per microphone block. The rest goes through the FIFO and the writer, as everything behind
        the first that does."""
        sends, self._sends = self._sends, []
        for effect in sends:
            if self._fifo.idle and self._sent_at_once(effect.item):
                if effect.seq is not None:
                    self._dispatch(Written(effect.seq))  # stepped right after this step
            else:
                self._fifo.put(effect.item, effect.seq)

    def _sent_at_once(self, item: ModelInput) -> bool:
        send_nowait = self._send_nowait
        if send_nowait is None:
            return False
        try:
            return send_nowait(item)
        except Exception as exc:  # what send() raises too: the writer's send() raises it where it is handled
            logger.debug("writing %s at once failed (%r): the writer sends it", type(item).__name__, exc)
            return False

    def _emit(self, event: BidiOutputEvent) -> None:
        watch = self._watch
        # The hottest path, an audio chunk nobody needs to see, skips the watchers (no hook takes audio).
        if type(event) is not BidiAudioStreamEvent or watch.audio_observers or watch.awaiting_audio:
            event = watch.emitted(event)  # a completion gets its timing
            if self.hooks.wants(event):
                self._hook_runner.put(event)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("event %r", event)  # audio shows as its size: see the events' repr
        for queue in self._outputs:
            queue.put(event)

    def _close(self, effect: Close) -> None:
        logger.debug("conversation closed: %s", effect.reason)
        if effect.error is not None and self._close_error is None:
            self._close_error = effect.error
        for queue in self._outputs:
            queue.close()
        self._hook_runner.close()
        self._closed.set()
        self._leave_connection()
        self._open_requested.set()  # wakes the supervisor, which sees the end

    def _leave_connection(self) -> None:
        self._fifo.close()
        self._connection_done.set()

    # ------------------------------------------------------------------ tools and timers

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any, name: str) -> None:
        """Start a task in the agent's group, counted, so that another task's
        ``stop()`` can tell when none is left."""
        assert self._tg is not None
        self._live_tasks += 1

        async def counted() -> None:
            try:
                await fn(*args)
            finally:
                self._live_tasks -= 1
                if self._live_tasks == 0:
                    self._idle.set()

        self._tg.start_soon(counted, name=name)

    def _start_tool(self, call: BidiToolUseEvent) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        self._tool_scopes[call.tool_use_id] = scope
        # It goes first (_let_tools_run), unless it ends the conversation: its burst is stepped first.
        found = self.tool_registry.get(call.name)
        first = found is None or not found.ends_conversation
        if first:
            self._tools_unstarted += 1
        self._spawn(self._run_tool, call, scope, first, name=f"tool {call.name} {call.tool_use_id}")

    async def _run_tool(self, call: BidiToolUseEvent, scope: anyio.CancelScope, first: bool) -> None:
        if first:
            self._tools_unstarted -= 1
        logger.debug("running tool %s (%s)", call.name, call.tool_use_id)
        ended = None
        try:
            with scope:
                ended = await run_call(self.tool_registry, self.hooks, call)
        finally:
            self._tool_scopes.pop(call.tool_use_id, None)
        if ended is None:
            logger.debug("tool %s (%s) cancelled", call.name, call.tool_use_id)
            self._dispatch(ToolCancelled(call.tool_use_id))
            return
        for event in ended:
            self._dispatch(event)

    def _start_timer(self, name: str, seconds: float) -> None:
        assert self._tg is not None
        old = self._timer_scopes.pop(name, None)
        if old is not None:
            old.cancel()
        scope = anyio.CancelScope()
        self._timer_scopes[name] = scope
        self._spawn(self._timer, name, seconds, scope, name=f"timer {name}")

    async def _timer(self, name: str, seconds: float, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(seconds)
            if self._timer_scopes.get(name) is scope:
                del self._timer_scopes[name]
                self._dispatch(TimerFired(name))

    # ------------------------------------------------------------------ the connection

    async def _supervise(self) -> None:
        """Open each connection the core asks for, one at a time, while the conversation lives."""
        try:
            while True:
                await self._open_requested.wait()
                self._open_requested = anyio.Event()
                order, self._open_order = self._open_order, None
                if self._closed.is_set():
                    return
                if order is not None:
                    await self._connection(order)
        finally:
            self._supervisor_done.set()

    async def _connection(self, order: OpenConnection) -> None:
        """Open one connection, serve it until it ends or the core leaves it, close it."""
        request = ConnectRequest(
            system_prompt=self.system_prompt,
            tools=self.tool_registry.specs,
            history=tuple(self.messages),
            resume_handle=order.resume_handle,
        )
        self._connection_done = anyio.Event()
        connection_id: str | None = None
        try:
            async with self.model.connect(request) as session:
                connection_id = session.connection_id
                logger.debug("connected: %s", connection_id)
                config = self._conv.config
                self._fifo = SendFifo(config.send_window + _CONTROL_ITEMS)
                self._send_nowait = session.send_nowait if isinstance(session, BidiSendNowait) else None
                try:
                    self._dispatch(Connected(connection_id, self.model.model_id, session.capabilities))
                    await self._serve(session, connection_id)
                finally:
                    self._send_nowait = None  # the session is not kept past its connection
            logger.debug("connection %s closed", connection_id)
        except Exception as exc:
            if connection_id is None:
                logger.debug("connecting failed: %r", exc)
                self._dispatch(ConnectFailed(exc))
            else:
                logger.debug("connection %s failed while closing: %r", connection_id, exc)
                self._dispatch(ConnectionEnded(connection_id, exc))

    async def _serve(self, session: BidiModelSession, connection_id: str) -> None:
        """Read and write one connection until it ends or the core moves on."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reader, session, connection_id, name="bidi_core reader")
            tg.start_soon(self._writer, session, self._fifo, connection_id, name="bidi_core writer")
            await self._connection_done.wait()
            tg.cancel_scope.cancel()

    async def _reader(self, session: BidiModelSession, connection_id: str) -> None:
        try:
            while True:
                event = await session.receive()
                for queue in self._outputs:
                    if queue.full:
                        await queue.wait_for_room()
                if self._connection_done.is_set():
                    return  # the core left this connection while we waited
                self._dispatch(event)
                if type(event) in SIGNALS:
                    self._watch.took(event)
                if self._tools_unstarted:
                    await self._let_tools_run()
        except anyio.EndOfStream:
            pass  # the provider ended the connection normally
        except Exception as exc:
            if not isinstance(exc, BidiError):
                logger.exception("model session failed unexpectedly")
            # Handed on from here, never kept in a local: the error's traceback holds this frame,
            # so a local holding it would be a reference cycle, and the whole connection it reaches
            # (socket, parser, buffers) would wait for the garbage collector's rare full pass.
            self._dispatch(ConnectionEnded(connection_id, exc))
            return
        self._dispatch(ConnectionEnded(connection_id, None))

    async def _let_tools_run(self) -> None:
        """Step aside (at most three checkpoints: Trio runs a round's tasks in either order) until
        the tools just started have begun and the writer took what it was handed: an instant
        tool's result then goes out before the reader steps the rest of the provider's burst."""
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
            if not self._tools_unstarted and not len(self._fifo):
                return

    async def _writer(self, session: BidiModelSession, fifo: SendFifo, connection_id: str) -> None:
        try:
            while (pair := await fifo.get()) is not None:
                item, seq = pair
                await session.send(item)
                fifo.task_done()  # before Written: what that step hands out may go at once
                if seq is not None:
                    self._dispatch(Written(seq))
        except anyio.EndOfStream:
            pass  # the provider ended the connection normally: the reader reports that
        except Exception as exc:
            if not isinstance(exc, BidiError):
                logger.exception("sending to the model failed unexpectedly")
            self._dispatch(ConnectionEnded(connection_id, exc))
