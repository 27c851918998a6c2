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


@attrs.frozen
class Expect:
    """Matches one item the client sends: its type and, optionally, field values
    (``Expect(BidiTextInputEvent, text="hi")``) or a predicate."""

    kind: type
    fields: dict[str, Any] = attrs.field(factory=dict)
    where: Callable[[Any], bool] | None = None

    def __init__(self, kind: type, where: Callable[[Any], bool] | None = None, **fields: Any) -> None:
        self.__attrs_init__(kind, fields, where)  # type: ignore[attr-defined]

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
        send, receive = anyio.create_memory_object_stream[ModelInput](max_buffer_size=float("inf"))
        self._inbox_send = send
        self._inbox = receive
        self._emitting: deque[ModelEvent] = deque()  # the current step's events not yet received
        self._finishing: Step | None = None  # the step whose events are being received
        self._ended = False

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

    async def send(self, item: ModelInput) -> None:
        # The checkpoint comes first: like a real transport's, the write is the last
        # thing send() does, so once the item has reached the connection, send() returns
        # and the caller learns that before the model can answer it.
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise BidiConnectionError("scripted connection is closed")
        self._model.sent.append(item)
        if self._model.matches_sends(item):
            self._inbox_send.send_nowait(item)

    async def receive(self) -> ModelEvent:
        while not self._emitting:
            if self._finishing is not None:
                # The previous step's events were all taken: it is done.
                step, self._finishing = self._finishing, None
                self.position += 1
                self._model._check_consumed()
                if step.end is not None:
                    self._ended = True
                    if step.end.error is not None:
                        raise step.end.error
            if self._ended:
                raise anyio.EndOfStream
            if self.position >= len(self._steps):
                # Script done: the connection stays open; anything matched that arrives now is unexpected.
                item = await self._next_sent()
                raise UnexpectedSend(f"connection {self._connection_id}: script finished, but the client sent {item!r}")
            step = self._steps[self.position]
            waiting = [step.expect] if isinstance(step.expect, Expect) else list(step.expect or ())
            while waiting:
                item = await self._next_sent()
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

    async def _next_sent(self) -> ModelInput:
        """The next item the client sent that steps match; the end of the connection once it is closed."""
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
    (everything but audio by default).
    """

    def __init__(
        self,
        connections: Sequence[Connection] | Sequence[Step],
        *,
        model_id: str = "scripted",
        capabilities: ModelCapabilities | None = None,
        match: tuple[type, ...] | None = None,
    ) -> None:
        scripts: list[Connection] = []
        if connections and all(isinstance(c, Step) for c in connections):
            scripts = [[c for c in connections if isinstance(c, Step)]]
        else:
            for c in connections:
                if isinstance(c, Step) or (
                    not isinstance(c, BaseException) and not all(isinstance(s, Step) for s in c)
                ):
                    raise BidiUsageError("each connection must be a list of Step or an exception")
                scripts.append(c)
        self._scripts = scripts
        self._model_id = model_id
        self._capabilities = capabilities or ModelCapabilities()
        self._match = match
        self._ids = itertools.count(1)
        self.sent: list[ModelInput] = []
        self.requests: list[ConnectRequest] = []
        self.sessions: list[ScriptedSession] = []
        self.open_connections = 0
        self._consumed = anyio.Event()

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
        if not self._scripts:
            raise BidiConnectionError("the script has no more connections", retryable=False)
        script = self._scripts.pop(0)
        if isinstance(script, BaseException):
            raise script
        session = ScriptedSession(self, f"scripted-{next(self._ids)}", script, request)
        self.sessions.append(session)
        self.open_connections += 1
        logger.debug("scripted connection %s opened", session.connection_id)
        try:
            yield session
        finally:
            session.close()
            self.open_connections -= 1
            logger.debug("scripted connection %s closed", session.connection_id)

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
