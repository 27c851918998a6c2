"""ScriptedModel: an in-memory BidiModel driven by a script.

For tests (ours and users'): a conversation is a list of connections, each a
list of :class:`Step`. A step may wait for the client to send something that
matches :class:`Expect`, then emit model events, then end the connection (a
clean close, or an error such as a network fault). Anything the client sends
that no step expects raises :class:`UnexpectedSend`; steps left over when the
test ends are reported by :meth:`ScriptedModel.assert_done`
(:class:`UnconsumedSteps`). The OpenAI Agents SDK's ``ScriptedRealtimeModel``
is the model for this shape.

Audio input is not matched by default (a microphone sends hundreds of blocks);
it is recorded in :attr:`ScriptedModel.sent` like everything else.

A script can also be written as the test goes (the property-test harness,
:mod:`adapters.testing.agent_machine`, does): :meth:`ScriptedModel.push` adds
events (and optionally the end of the connection) to the open connection,
``open_ended=True`` gives every connection beyond the scripted ones an empty
script to push to, and :meth:`ScriptedModel.hold_connections` makes
``connect()`` wait, as if the network were down, until
:meth:`ScriptedModel.release_connections`.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from ports.errors import BidiConnectionError, BidiUsageError
from ports.events import BidiAudioInputEvent, ModelEvent
from ports.model import ConnectRequest, ModelCapabilities, ModelInput

__all__ = ["End", "Expect", "ScriptedModel", "ScriptedSession", "Step", "UnconsumedSteps", "UnexpectedSend"]

logger = logging.getLogger("bidi_core.adapters.testing")


class UnexpectedSend(AssertionError):
    """The client sent something the script did not expect at this point."""


class UnconsumedSteps(AssertionError):
    """The test ended with steps of the script never reached."""


@attrs.frozen(init=False)
class Expect:
    """Matches one item the client sends: its type and, optionally, field values
    (``Expect(BidiTextInputEvent, text="hi")``) or a predicate."""

    kind: type
    fields: dict[str, Any] = attrs.field(factory=dict)
    where: Callable[[Any], bool] | None = None

    def __init__(self, kind: type, where: Callable[[Any], bool] | None = None, **fields: Any) -> None:
        self.__attrs_init__(kind, fields, where)

    def matches(self, item: object) -> bool:
        if not isinstance(item, self.kind):
            return False
        if any(getattr(item, k, attrs.NOTHING) != v for k, v in self.fields.items()):
            return False
        return self.where is None or self.where(item)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"{self.kind.__name__}({extra})"


@attrs.frozen
class End:
    """How a connection ends: cleanly (``error=None``: ``receive()`` raises
    ``anyio.EndOfStream``) or with ``error`` raised from ``receive()`` (e.g. a
    :class:`BidiConnectionError`)."""

    error: BaseException | None = None


@attrs.frozen
class Step:
    """Wait for ``expect`` (if given), then emit ``emit``, then ``end`` (if given).

    ``expect`` may be a list: every item must arrive, in any order (results of
    tools that run concurrently, say).
    """

    expect: Expect | Sequence[Expect] | None = None
    emit: Sequence[ModelEvent] = ()
    end: End | None = None


Connection = Sequence[Step] | BaseException
"""A connection's script, or an error that ``connect()`` raises instead."""


class _Wake:
    """Put in a session's inbox by :meth:`ScriptedSession.push`: look at the script again."""


_WAKE = _Wake()


class ScriptedSession:
    """One scripted connection."""

    def __init__(
        self, model: ScriptedModel, connection_id: str, steps: Sequence[Step], request: ConnectRequest
    ) -> None:
        self._model = model
        self._connection_id = connection_id
        self._steps = list(steps)
        self.request = request
        self.position = 0
        self.closed = False
        self.sent: list[ModelInput] = []
        """What the client sent on this connection, in order (:attr:`ScriptedModel.sent` holds every connection's)."""
        self.received = 0
        """How many events the client has received from this connection."""
        send, receive = anyio.create_memory_object_stream[ModelInput | _Wake](max_buffer_size=float("inf"))
        self._inbox_send = send
        self._inbox = receive
        self._emitting: deque[ModelEvent] = deque()  # the current step's events not yet received
        self._finishing: Step | None = None  # the step whose events are being received
        self._ended = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "ended" if self._ended else "open"
        return f"<ScriptedSession {self._connection_id} {state}, step {self.position}/{len(self._steps)}>"

    @property
    def connection_id(self) -> str:
        return self._connection_id

    def close(self) -> None:
        self.closed = True
        self._inbox_send.close()
        self._inbox.close()

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._model.capabilities

    @property
    def remaining(self) -> list[Step]:
        return self._steps[self.position :]

    @property
    def idle(self) -> bool:
        """Every step so far was played and the client came back for more (or the connection is over)."""
        finished = not self._emitting and self._finishing is None and self.position >= len(self._steps)
        return finished or self.closed

    @property
    def ended(self) -> bool:
        """The script ended this connection (or the client closed it)."""
        return self._ended or self.closed

    def push(self, *events: ModelEvent, end: End | None = None) -> None:
        """Add a step that emits ``events`` (then ends the connection, with ``end``) to this connection's script.

        For scripts written as the test goes; raises :class:`BidiUsageError` once the connection is over.
        """
        if self.ended:
            raise BidiUsageError(f"connection {self._connection_id} is over: nothing can be pushed to it")
        self._steps.append(Step(emit=events, end=end))
        self._inbox_send.send_nowait(_WAKE)
        self._model._touch()

    async def send(self, item: ModelInput) -> None:
        # The cancellation point comes first, as in a real transport: a send that was cancelled
        # delivered nothing (what the core assumes of every adapter), one that returned delivered
        # its item, once, and the caller learns that before the model can answer it.
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise BidiConnectionError("scripted connection is closed")
        self._model.sent.append(item)
        self.sent.append(item)
        self._model._touch()
        if self._model.matches_sends(item):
            self._inbox_send.send_nowait(item)

    async def receive(self) -> ModelEvent:
        event = await self._receive()
        self.received += 1
        self._model._touch()
        return event

    async def _receive(self) -> ModelEvent:
        while not self._emitting:
            if self._finishing is not None:
                # The previous step's events were all taken: it is done.
                step, self._finishing = self._finishing, None
                self.position += 1
                self._model._check_consumed()
                if step.end is not None:
                    self._ended = True
                    self._model._touch()
                    if step.end.error is not None:
                        raise step.end.error
            if self._ended:
                raise anyio.EndOfStream
            if self.position >= len(self._steps):
                # Script done: the connection stays open; anything matched that arrives now is unexpected.
                item = await self._next_sent()
                if isinstance(item, _Wake):
                    continue  # a step was pushed
                raise UnexpectedSend(f"connection {self._connection_id}: script finished, but the client sent {item!r}")
            step = self._steps[self.position]
            waiting = [step.expect] if isinstance(step.expect, Expect) else list(step.expect or ())
            while waiting:
                item = await self._next_sent()
                if isinstance(item, _Wake):
                    continue
                match = next((e for e in waiting if e.matches(item)), None)
                if match is None:
                    wanted = " or ".join(e.describe() for e in waiting)
                    raise UnexpectedSend(
                        f"connection {self._connection_id}, step {self.position}: expected {wanted}, got {item!r}"
                    )
                waiting.remove(match)
            self._emitting.extend(step.emit)
            self._finishing = step
        return self._emitting.popleft()

    async def _next_sent(self) -> ModelInput | _Wake:
        """The next item the client sent that steps match (or a wake-up); the end of the connection once closed."""
        try:
            return await self._inbox.receive()
        except (anyio.ClosedResourceError, anyio.EndOfStream):
            self._ended = True
            raise anyio.EndOfStream from None


class ScriptedModel:
    """A :class:`ports.model.BidiModel` that plays scripts, one per connection.

    ``connections`` is a list of connection scripts (a list of steps, or an
    exception that ``connect()`` raises). A single list of steps is taken as
    one connection. ``match`` lists the input types that steps match against
    (everything but audio by default; ``()``: nothing, every send is only
    recorded). ``open_ended=True``: once the scripted connections are used
    up, every further ``connect()`` opens a connection with an empty script
    that :meth:`push` writes as the test goes (without it, such a
    ``connect()`` fails for good).
    """

    def __init__(
        self,
        connections: Sequence[Connection] | Sequence[Step] = (),
        *,
        model_id: str = "scripted",
        capabilities: ModelCapabilities | None = None,
        match: tuple[type, ...] | None = None,
        open_ended: bool = False,
    ) -> None:
        scripts: list[Connection] = []
        if connections and all(isinstance(c, Step) for c in connections):
            scripts = [[c for c in connections if isinstance(c, Step)]]
        else:
            scripts = [_checked(c) for c in connections]
        self._scripts = scripts
        self._model_id = model_id
        self._capabilities = capabilities or ModelCapabilities()
        self._match = match
        self._open_ended = open_ended
        self._ids = itertools.count(1)
        self.sent: list[ModelInput] = []
        self.requests: list[ConnectRequest] = []
        self.sessions: list[ScriptedSession] = []
        self.open_connections = 0
        self._consumed = anyio.Event()
        self._activity = anyio.Event()
        self._network: anyio.Event | None = None  # set while connections are held

    def __repr__(self) -> str:
        return f"<ScriptedModel {self._model_id!r}: {len(self.sessions)} connection(s), {len(self.sent)} sent>"

    @property
    def provider_name(self) -> str:
        return "scripted"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    def matches_sends(self, item: ModelInput) -> bool:
        if self._match is None:
            return not isinstance(item, BidiAudioInputEvent)
        return isinstance(item, self._match)

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[ScriptedSession]:
        self.requests.append(request)
        self._touch()
        while self._network is not None:
            await self._network.wait()
        if not self._scripts and not self._open_ended:
            raise BidiConnectionError("the script has no more connections", retryable=False)
        script = self._scripts.pop(0) if self._scripts else []
        if isinstance(script, BaseException):
            raise script
        session = ScriptedSession(self, f"scripted-{next(self._ids)}", script, request)
        self.sessions.append(session)
        self.open_connections += 1
        self._touch()
        self._check_consumed()  # the last connection, with no steps: the whole script was played
        logger.debug("scripted connection %s opened", session.connection_id)
        try:
            yield session
        finally:
            session.close()
            self.open_connections -= 1
            self._touch()
            logger.debug("scripted connection %s closed", session.connection_id)

    # ------------------------------------------------------------------ writing the script as the test goes

    @property
    def session(self) -> ScriptedSession | None:
        """The open connection, if there is one."""
        return next((s for s in reversed(self.sessions) if not s.closed), None)

    def push(self, *events: ModelEvent, end: End | None = None) -> None:
        """Have the open connection emit ``events`` next (then end, with ``end``); see :meth:`ScriptedSession.push`.

        Raises :class:`BidiUsageError` when no connection is open.
        """
        session = self.session
        if session is None:
            raise BidiUsageError("no scripted connection is open: nothing can be pushed")
        session.push(*events, end=end)

    def add_connection(self, connection: Connection) -> None:
        """Script one more connection (steps, or an exception ``connect()`` raises) after those already scripted."""
        self._scripts.append(_checked(connection))

    def hold_connections(self) -> None:
        """From now on ``connect()`` waits (as if the network were down) until :meth:`release_connections`."""
        if self._network is None:
            self._network = anyio.Event()

    def release_connections(self) -> None:
        """Let every ``connect()`` held by :meth:`hold_connections` go on."""
        network, self._network = self._network, None
        if network is not None:
            network.set()

    @property
    def connections_held(self) -> bool:
        return self._network is not None

    async def wait_for_activity(self) -> None:
        """Return after the next thing that happens here: a send, a received event, a push, a connection
        opening, closing or asked for."""
        await self._activity.wait()

    def _touch(self) -> None:
        activity, self._activity = self._activity, anyio.Event()
        activity.set()

    # ------------------------------------------------------------------ checking the script was played

    def _check_consumed(self) -> None:
        if not self._scripts and all(not s.remaining for s in self.sessions):
            self._consumed.set()

    async def consumed(self) -> None:
        """Wait until every connection was opened and every step reached."""
        await self._consumed.wait()

    def assert_done(self) -> None:
        """Raise :class:`UnconsumedSteps` if any connection or step was never reached."""
        left = [f"{s.connection_id}: {len(s.remaining)} step(s)" for s in self.sessions if s.remaining]
        if self._scripts:
            left.append(f"{len(self._scripts)} connection(s) never opened")
        if left:
            raise UnconsumedSteps("; ".join(left))


def _checked(connection: object) -> Connection:
    if isinstance(connection, BaseException):
        return connection
    if isinstance(connection, Step) or not isinstance(connection, Sequence):
        raise BidiUsageError("each connection must be a list of Step or an exception")
    if not all(isinstance(s, Step) for s in connection):
        raise BidiUsageError("each connection must be a list of Step or an exception")
    return connection
