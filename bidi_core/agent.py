"""BidiAgent: the shell that runs the conversation state machine.

Everything here is I/O and scheduling; every decision is made by
:func:`bidi_core.conversation.step`. The shell feeds it events (from the model,
the inputs, the tools, the outputs, its timers) and applies the effects it
returns. Applying effects never awaits: an effect appends to a queue, starts
or cancels a task, or sets an event. That keeps effects in step order without
a lock, on asyncio and on Trio alike.

Task tree (one task group, owned by the agent, entered by ``start()`` and
left by ``stop()``)::

    BidiAgent task group
    ├─ supervisor        connect / reconnect; owns each connection's scope
    │   ├─ reader        session.receive() -> step()
    │   └─ writer        send queue -> session.send()
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
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self, assert_never

import anyio
import anyio.abc
import attrs

from bidi_core.channels import InputLike, OutputLike, adapt_input, adapt_output, coerce_input
from bidi_core.conversation import (
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    ConfirmDelivery,
    Connected,
    ConnectionLost,
    Conversation,
    Effect,
    Emit,
    IllegalTransition,
    Phase,
    PlaybackProgress,
    Reconnect,
    Record,
    ResumptionRejected,
    RunTool,
    SendToModel,
    StartTimer,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    UserInput,
    step,
)
from bidi_core.history import coerce_messages
from bidi_core.queues import OutputQueue, SendQueue
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.tools import BidiTool, ToolRegistry
from ports.errors import (
    BidiConnectionError,
    BidiError,
    BidiProtocolError,
    BidiProviderError,
    BidiResumptionRejectedError,
    BidiUsageError,
)
from ports.events import (
    BidiErrorEvent,
    BidiInputEvent,
    BidiOutputEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
)
from ports.io import PlaybackReport
from ports.messages import Message, TextMessage, ToolResultMessage
from ports.model import BidiModel, BidiModelSession, ConnectRequest, ModelCapabilities, ModelInput

__all__ = ["BidiAgent", "ReconnectPolicy"]

logger = logging.getLogger("bidi_core.agent")


class _Receiver:
    """The iterator ``receive()`` returns."""

    def __init__(self, agent: BidiAgent, queue: OutputQueue) -> None:
        self._agent = agent
        self._queue = queue

    def __aiter__(self) -> _Receiver:
        return self

    async def __anext__(self) -> BidiOutputEvent:
        event = await self._queue.get()
        if event is None:
            self._agent._raise_close_error()
            raise StopAsyncIteration
        return event


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """One real failure: that failure. Several: one flat group of them."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1:
        return leaves[0]
    errors = [leaf for leaf in leaves if isinstance(leaf, Exception)]
    if leaves and len(errors) == len(leaves):
        return ExceptionGroup("several inputs or outputs failed", errors)
    return group


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
    ) -> None:
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
        self._max_buffered_audio = max_buffered_audio
        self._drain_timeout_s = drain_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._conv = Conversation(
            interruptible_tools=self.tool_registry.interruptible, max_pending_audio_chunks=max_buffered_audio
        )
        self._lifecycle = "new"  # new -> running -> stopped
        self._owner: anyio.TaskInfo | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._outputs: list[OutputQueue] = []
        self._receiver: OutputQueue | None = None
        self._send_queue = SendQueue(max_audio=max_buffered_audio)
        self._connection_done = anyio.Event()
        self._closed = anyio.Event()
        self._supervisor_done = anyio.Event()
        self._close_error: BaseException | None = None
        self._error_raised = False
        self._tool_scopes: dict[str, anyio.CancelScope] = {}
        self._timer_scopes: dict[str, anyio.CancelScope] = {}
        self._events_on_connection = 0

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
        return self._send_queue.dropped_audio + self._conv.dropped_audio_chunks

    def report_playback(self, report: PlaybackReport) -> None:
        """Called by outputs that play audio: how much of a response was heard."""
        if self._lifecycle == "running":
            self._dispatch(PlaybackProgress(report))

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
        self._tg.start_soon(self._supervise, name="bidi_core supervisor")

    def _start(self, *, manual: bool) -> None:
        if self._lifecycle != "new":
            raise BidiUsageError(f"this agent was already started ({self._lifecycle}); create a new BidiAgent")
        self._lifecycle = "running"
        self._owner = anyio.get_current_task()
        if manual:
            self._receiver = OutputQueue(self._output_queue_size, "receive()")
            self._outputs.append(self._receiver)
        logger.debug("starting agent for model %s", self.model.model_id)

    async def stop(self) -> None:
        """End the conversation and wait until everything of ours has stopped.

        Safe to call twice, before ``start()`` (a no-op) and from inside a
        ``receive()`` loop; a pending ``receive()`` ends. Must be called from
        the task that called ``start()``.
        """
        await self._shutdown(raise_error=False)

    async def _shutdown(self, *, raise_error: bool) -> None:
        if self._lifecycle != "running":
            return
        owner = self._owner
        if owner is not None and anyio.get_current_task().id != owner.id:
            raise BidiUsageError(
                "stop() must be called from the task that called start() (task groups are owned by one task); "
                "to end the conversation from elsewhere, call request_stop()"
            )
        self.request_stop()
        stack, self._stack = self._stack, None
        try:
            # Let the supervisor close the connection politely, then cancel whatever is left.
            # (The task group is left outside the shield: scopes must exit in the order they were entered.)
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._shutdown_timeout_s):
                await self._supervisor_done.wait()
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            if stack is not None:
                await stack.aclose()
        finally:
            self._lifecycle = "stopped"
            logger.debug("agent stopped")
        if raise_error:
            self._raise_close_error()

    def request_stop(self, reason: str = "client_disconnect") -> None:
        """Ask the conversation to end, from any task of the event loop. Never blocks."""
        if self._conv.phase is not Phase.CLOSED and self._lifecycle == "running":
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
        if self._lifecycle != "running" or self._conv.phase is Phase.CLOSED:
            raise BidiUsageError("the conversation is closed; send() is no longer possible")
        self._dispatch(UserInput(item))
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
        return _Receiver(self, self._receiver)

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
        if any(getattr(o, "reports_playback", False) for o in outs):
            self._conv = attrs.evolve(self._conv, tracks_playback=True)
        else:
            self._conv = attrs.evolve(self._conv, audio_unobserved=True)
        queues = [OutputQueue(self._output_queue_size, type(o).__name__) for o in outs]
        try:
            async with AsyncExitStack() as io_stack:
                for io in (*outs, *ins):
                    await io.start(self)
                    io_stack.push_async_callback(self._stop_io, io)
                self._start(manual=False)
                self._outputs.extend(queues)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._supervise, name="bidi_core supervisor")
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
            error = _unwrap(group)
            if error is group:
                raise
            raise error from None
        finally:
            if self._lifecycle == "running":
                with anyio.CancelScope(shield=True):
                    await self._shutdown(raise_error=False)
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
                # A bad message from a client (say, a browser socket) must not end the conversation.
                logger.warning("input %s produced an invalid item: %s", type(inp).__name__, exc)
                self._emit(BidiErrorEvent(message=str(exc), code="invalid_input"))
                continue
            if self._conv.phase is Phase.CLOSED:
                return
            self._dispatch(UserInput(item))

    async def _output_loop(self, out: Any, queue: OutputQueue, done: anyio.Event) -> None:
        try:
            while (event := await queue.get()) is not None:
                await out(event)
        finally:
            done.set()

    # ------------------------------------------------------------------ the state machine

    def _dispatch(self, event: object) -> None:
        """Step the conversation and apply the effects, synchronously."""
        try:
            self._conv, effects = step(self._conv, event)
        except IllegalTransition as exc:
            if isinstance(event, UserInput):
                raise BidiUsageError("the conversation is closed; input is no longer accepted") from exc
            # A provider event that makes no sense now: report it, keep the conversation.
            logger.warning("ignored: %s", exc)
            self._emit(BidiErrorEvent(message=f"unexpected provider event: {exc}", code="protocol_error"))
            return
        for effect in effects:
            self._apply(effect)

    def _apply(self, effect: Effect) -> None:
        if isinstance(effect, Emit):
            self._emit(effect.event)
        elif isinstance(effect, SendToModel):
            self._send_queue.put(effect.item)
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
        elif isinstance(effect, Reconnect):
            logger.debug("reconnecting: %s", effect.reason)
            self._connection_done.set()
        elif isinstance(effect, Record):
            self.messages.append(effect.message)
        elif isinstance(effect, ConfirmDelivery):
            self._send_queue.confirm(effect.inputs_included)
        elif isinstance(effect, Close):
            self._close(effect)
        else:  # pragma: no cover - the effect union is closed
            assert_never(effect)

    def _emit(self, event: BidiOutputEvent) -> None:
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
        self._send_queue.close()
        self._closed.set()
        self._connection_done.set()

    # ------------------------------------------------------------------ tools and timers

    def _start_tool(self, call: BidiToolUseEvent) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        self._tool_scopes[call.tool_use_id] = scope
        self._tg.start_soon(self._run_tool, call, scope, name=f"tool {call.name} {call.tool_use_id}")

    async def _run_tool(self, call: BidiToolUseEvent, scope: anyio.CancelScope) -> None:
        logger.debug("running tool %s (%s)", call.name, call.tool_use_id)
        outcome = None
        try:
            with scope:
                outcome = await self.tool_registry.execute(call)
        finally:
            self._tool_scopes.pop(call.tool_use_id, None)
        if outcome is None:
            logger.debug("tool %s (%s) cancelled", call.name, call.tool_use_id)
            if self._lifecycle == "running":
                self._dispatch(ToolCancelled(call.tool_use_id))
            return
        if outcome.error is not None:
            self._emit(
                BidiErrorEvent(
                    message=str(outcome.result.content),
                    code="tool_error",
                    details=type(outcome.error).__name__,
                )
            )
        self._dispatch(ToolFinished(outcome.result, ends_conversation=outcome.ends_conversation))

    def _start_timer(self, name: str, seconds: float) -> None:
        assert self._tg is not None
        old = self._timer_scopes.pop(name, None)
        if old is not None:
            old.cancel()
        scope = anyio.CancelScope()
        self._timer_scopes[name] = scope
        self._tg.start_soon(self._timer, name, seconds, scope, name=f"timer {name}")

    async def _timer(self, name: str, seconds: float, scope: anyio.CancelScope) -> None:
        with scope:
            await anyio.sleep(seconds)
            if self._timer_scopes.get(name) is scope:
                del self._timer_scopes[name]
                self._dispatch(TimerFired(name))

    # ------------------------------------------------------------------ the connection

    def _connect_request(self) -> ConnectRequest:
        return ConnectRequest(
            system_prompt=self.system_prompt,
            tools=self.tool_registry.specs,
            history=tuple(self.messages),
            resume_handle=self._conv.resume_handle,
        )

    async def _supervise(self) -> None:
        """Keep a connection open while the conversation lives."""
        failures = 0
        try:
            while not self._closed.is_set():
                self._connection_done = anyio.Event()
                request = self._connect_request()
                replayed = self._send_queue.begin_connection(
                    resuming=request.resume_handle is not None, keep_ledger=self.model.capabilities.resumable
                )
                if replayed:
                    logger.debug("resuming: sending again %d item(s) the provider had not confirmed", replayed)
                try:
                    async with self.model.connect(request) as session:
                        logger.debug("connected: %s", session.connection_id)
                        self._events_on_connection = 0
                        opened_at = anyio.current_time()
                        self._dispatch(Connected(session.connection_id, self.model.model_id, session.capabilities))
                        await self._serve(session)
                    logger.debug("connection closed")
                    lasted = anyio.current_time() - opened_at
                    if self._events_on_connection or lasted >= self.reconnect_policy.stable_after_s:
                        failures = 0
                    elif not self._closed.is_set():
                        # Lost at once, before the provider said anything: back off as for a failed connect.
                        failures += 1
                        if failures >= self.reconnect_policy.max_attempts:
                            error = BidiConnectionError(f"the connection failed {failures} times in a row")
                            self._dispatch(ConnectionLost(reason=str(error), retryable=False, error=error))
                            break
                        await anyio.sleep(self.reconnect_policy.delay(failures))
                except BidiResumptionRejectedError as exc:
                    if self._closed.is_set():
                        break
                    # Not a failure: the provider is there, it only forgot the session. The
                    # next attempt (at once) opens a fresh one seeded with the history.
                    logger.debug("resumption refused (%s); starting a fresh session", exc)
                    self._dispatch(ResumptionRejected(str(exc)))
                except Exception as exc:
                    if self._closed.is_set():
                        logger.debug("error while closing the connection", exc_info=True)
                        break
                    failures += 1
                    retryable = isinstance(exc, BidiConnectionError | BidiProviderError) and exc.retryable
                    if not retryable or failures >= self.reconnect_policy.max_attempts:
                        logger.debug("giving up after %d attempt(s): %r", failures, exc)
                        self._dispatch(ConnectionLost(reason=str(exc), retryable=False, error=exc))
                        break
                    delay = self.reconnect_policy.delay(failures)
                    logger.debug("connection attempt %d failed (%r); retrying in %.2fs", failures, exc, delay)
                    await anyio.sleep(delay)
        finally:
            self._supervisor_done.set()

    async def _serve(self, session: BidiModelSession) -> None:
        """Read and write one connection until it ends or the core moves on."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reader, session, name="bidi_core reader")
            tg.start_soon(self._writer, session, name="bidi_core writer")
            await self._connection_done.wait()
            tg.cancel_scope.cancel()

    async def _reader(self, session: BidiModelSession) -> None:
        events = session.receive()
        try:
            async for event in events:
                self._events_on_connection += 1
                for queue in self._outputs:
                    if queue.full:
                        await queue.wait_for_room()
                if self._connection_done.is_set():
                    return
                self._dispatch(event)
        except BidiError as exc:
            self._connection_failed(exc)
            return
        except Exception as exc:
            # A bug in an adapter: end the conversation with it rather than hide it.
            logger.exception("model session failed unexpectedly")
            self._connection_failed(exc, retryable=False)
            return
        finally:
            # Adapters often write receive() as an async generator: close it here, in
            # this task, rather than leave it to the garbage collector.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        self._connection_failed(BidiConnectionError("the provider closed the connection"))

    async def _writer(self, session: BidiModelSession) -> None:
        queue = self._send_queue
        try:
            while (item := await queue.peek()) is not None:
                # Remembered before the write so the history keeps the order things happened in;
                # forgotten again if the write fails (the item goes to the next connection instead).
                remembered = self._remember_sent(item)
                try:
                    await session.send(item)
                except BaseException:
                    if remembered is not None:
                        self.messages.remove(remembered)
                    raise
                queue.done(item)
        except BidiError as exc:
            self._connection_failed(exc)
        except Exception as exc:
            logger.exception("sending to the model failed unexpectedly")
            self._connection_failed(exc, retryable=False)

    def _remember_sent(self, item: ModelInput) -> Message | None:
        """User text and tool results join the history as they are written to a connection."""
        message: Message
        if self._send_queue.is_replay(item):
            return None  # the history got it when it was first written
        if isinstance(item, BidiTextInputEvent):
            message = TextMessage(role="user", text=item.text)
        elif isinstance(item, BidiToolResultEvent):
            message = ToolResultMessage(item.tool_use_id, item.name, item.status, item.content)
        else:
            return None
        self.messages.append(message)
        return message

    def _connection_failed(self, exc: BaseException, *, retryable: bool | None = None) -> None:
        if self._connection_done.is_set() or self._conv.phase is Phase.CLOSED:
            return  # we were already leaving this connection
        if retryable is None:
            retryable = bool(getattr(exc, "retryable", False)) or isinstance(exc, BidiProtocolError)
        if isinstance(exc, BidiProviderError) and not exc.retryable:
            retryable = False
        logger.debug("connection failed (retryable=%s): %r", retryable, exc)
        self._dispatch(ConnectionLost(reason=str(exc), retryable=retryable, error=exc))
