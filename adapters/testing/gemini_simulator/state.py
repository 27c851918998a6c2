"""Session state that outlives a connection, and the resumption handles that name it.

A Gemini Live *session* is the conversation the model remembers; a connection
carries it for about ten minutes, and a new connection continues it when its
setup names a handle from ``sessionResumptionUpdate`` (docs/protocols/gemini.md#session-resumption). A
handle names the state *as of the moment it was issued*: inputs the service
consumed after that are not in the resumed state. We model that exactly: a
:class:`SessionState` only grows, a handle is ``(state, how many inputs, spoken
turns)``, and resuming forks a new state from that prefix. Tests read
``inputs`` to check exactly-once delivery across reconnects.
"""

from __future__ import annotations

import itertools
import secrets

import anyio
import attrs

from adapters.testing.gemini_simulator.records import UserInput

__all__ = ["Handles", "SessionState", "Snapshot"]


@attrs.define
class SessionState:
    """What the model remembers: every consumed input in order, and how many spoken turns it heard."""

    session_id: int
    model: str
    inputs: list[UserInput] = attrs.field(factory=list)
    spoken_turns: int = 0
    resumed_from: str | None = None


@attrs.frozen
class Snapshot:
    """A state as of a handle's issue."""

    state: SessionState
    inputs: int
    spoken_turns: int
    issued_at: float

    def restore(self, handle: str) -> SessionState:
        """A new state continuing the same session from this point (the original is left as it is)."""
        return SessionState(
            session_id=self.state.session_id,
            model=self.state.model,
            inputs=self.state.inputs[: self.inputs],
            spoken_turns=self.spoken_turns,
            resumed_from=handle,
        )


class Handles:
    """Every handle this simulator issued; stale after ``ttl_s`` seconds (None: never)."""

    def __init__(self, ttl_s: float | None) -> None:
        self.ttl_s = ttl_s
        self._issued: dict[str, Snapshot] = {}
        self._ids = itertools.count(1)
        self._session_ids = itertools.count()

    def new_session(self, model: str) -> SessionState:
        return SessionState(next(self._session_ids), model)

    def issue(self, state: SessionState) -> str:
        handle = f"sim-handle-{next(self._ids)}-{secrets.token_hex(6)}"
        self._issued[handle] = Snapshot(state, len(state.inputs), state.spoken_turns, anyio.current_time())
        return handle

    def resolve(self, handle: str) -> Snapshot | None:
        """The snapshot a handle names, or None when it is unknown or stale."""
        snapshot = self._issued.get(handle)
        if snapshot is None:
            return None
        if self.ttl_s is not None and anyio.current_time() - snapshot.issued_at > self.ttl_s:
            return None
        return snapshot
