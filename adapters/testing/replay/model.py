"""ReplayModel: a recorded call's provider side, played back to the real adapter, as a ``BidiModel``.

The recording's header names the provider and the settings its model had;
the replay builds that model again (without credentials) and opens each of
its sessions over a replayed transport instead of a socket (each model's
``open_session``, the second half of its ``connect()``). So the application,
the agent and the provider's adapter run exactly as they did on the call; only
the bytes come from the file, and what the client writes is checked against
what it wrote then.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Literal

import anyio
import attrs

from adapters.recording import AudioFields, FrameCodec, JsonFrames
from adapters.testing.replay.connection import (
    ReplayConnection,
    ReplayMismatch,
    ReplaySocket,
    ReplayStream,
    error_from_record,
)
from adapters.testing.replay.recording_file import RecordingFile, load_recording
from ports.errors import BidiError, BidiUsageError
from ports.model import BidiModelSession, ConnectRequest, ModelCapabilities

__all__ = ["ReplayModel", "provider_events"]


@attrs.frozen
class _Provider:
    """How to rebuild one provider's model and open its session over a replayed connection."""

    model: Callable[[str, Any], Any]  # (model_id, settings) -> the provider's model, offline
    codec: Callable[[], FrameCodec]
    audio_fields: AudioFields
    session: Callable[[Any, ReplayConnection, str, ConnectRequest], AbstractAsyncContextManager[BidiModelSession]]


def _openai() -> _Provider:
    from adapters.openai import BidiOpenAIRealtimeModel
    from adapters.openai.wire import recorded_audio

    return _Provider(
        model=BidiOpenAIRealtimeModel.for_replay,
        codec=JsonFrames,
        audio_fields=recorded_audio,
        session=lambda model, conn, cid, request: model.open_session(ReplaySocket(conn), cid, request),
    )


def _gemini() -> _Provider:
    from adapters.gemini import BidiGeminiLiveModel
    from adapters.gemini.wire import recorded_audio

    return _Provider(
        model=BidiGeminiLiveModel.for_replay,
        codec=JsonFrames,
        audio_fields=recorded_audio,
        session=lambda model, conn, cid, request: model.open_session(ReplaySocket(conn), cid, request),
    )


def _nova_sonic() -> _Provider:
    from adapters.nova_sonic import BidiNovaSonicModel
    from adapters.nova_sonic.frames import NovaFrames
    from adapters.nova_sonic.wire import recorded_audio

    return _Provider(
        model=BidiNovaSonicModel.for_replay,
        codec=NovaFrames,
        audio_fields=recorded_audio,
        session=lambda model, conn, cid, request: model.open_session(
            ReplayStream(conn), model.replay_signer(), cid, request
        ),
    )


_PROVIDERS: dict[str, Callable[[], _Provider]] = {"openai": _openai, "gemini": _gemini, "nova_sonic": _nova_sonic}


async def provider_events(recording: RecordingFile) -> list[tuple[int, float, Any]]:
    """Every event the provider's adapter made of the recording, as ``(connection, t, event)``.

    Each connection's frames go through the real session (as in a replay, but
    nothing is checked or waited for); ``t`` is when the frame that produced
    the event was recorded. The timeline is drawn from these.
    """
    make = _PROVIDERS.get(recording.provider)
    if make is None:
        raise BidiUsageError(f"cannot read a recording of provider {recording.provider!r}")
    provider = make()
    model = provider.model(recording.model_id, recording.header.get("settings") or {})
    found: list[tuple[int, float, Any]] = []
    for script in recording.connections:
        if script.refused:
            continue
        connection = ReplayConnection(
            script,
            provider.codec(),
            audio_fields=provider.audio_fields,
            speed=None,
            match_audio="length",
            ignore_keys=(),
            wait_timeout_s=0,
            raise_mismatch=False,
            mismatches=[],
            lenient=True,
        )
        with anyio.CancelScope() as scope, suppress(anyio.EndOfStream, BidiError):
            async with provider.session(model, connection, script.connection_id, ConnectRequest()) as session:
                try:
                    while True:
                        event = await session.receive()
                        found.append((script.number, connection.last_t, event))
                except (anyio.EndOfStream, BidiError):
                    pass
                scope.cancel()  # before leaving the session: Nova's then skips its goodbye
    return found


class ReplayModel:
    """A :class:`~ports.model.BidiModel` that plays a recording's provider side (``docs/recording.md``).

    ``speed``: ``None`` (the default) hands the provider's frames over as fast
    as the client takes them; ``1.0`` at the recorded pace; ``2.0`` twice as
    fast. Either way a provider frame waits until the client has sent what it
    had sent before it on the call. ``match_audio``: ``"bytes"`` compares the
    client's audio byte for byte when the recording kept audio, ``"length"``
    only its length. ``ignore_keys`` are message keys left out of the
    comparison wherever they appear. ``wait_timeout_s`` bounds how long the
    provider waits for a client frame the recording has it wait for.

    The first client frame that differs raises :class:`ReplayMismatch` from
    the session's ``send()`` (the agent ends with it); with
    ``on_mismatch="report"`` it is only recorded and the replay goes on. Every
    mismatch is kept in :attr:`mismatches`; :meth:`check` raises the first, or
    one for connections the client never opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | RecordingFile,
        *,
        speed: float | None = None,
        match_audio: Literal["bytes", "length"] = "bytes",
        ignore_keys: Collection[str] = (),
        wait_timeout_s: float = 10.0,
        on_mismatch: Literal["raise", "report"] = "raise",
    ) -> None:
        self.recording = path if isinstance(path, RecordingFile) else load_recording(path)
        make = _PROVIDERS.get(self.recording.provider)
        if make is None:
            raise BidiUsageError(f"cannot replay a recording of provider {self.recording.provider!r}")
        if speed is not None and not speed > 0:
            raise BidiUsageError(f"speed must be positive or None, got {speed!r}")
        if match_audio not in ("bytes", "length") or on_mismatch not in ("raise", "report"):
            raise BidiUsageError("match_audio is 'bytes' or 'length'; on_mismatch is 'raise' or 'report'")
        self._provider = make()
        self._model = self._provider.model(self.recording.model_id, self.recording.header.get("settings") or {})
        self._speed = speed
        self._match_audio = match_audio
        self._ignore = frozenset(ignore_keys)
        self._wait_timeout_s = wait_timeout_s
        self._raise = on_mismatch == "raise"
        self.mismatches: list[ReplayMismatch] = []
        self.connections: list[ReplayConnection] = []

    def __repr__(self) -> str:
        return f"ReplayModel({self.recording.path!r}, provider={self.recording.provider!r})"

    @property
    def model_id(self) -> str:
        return self.recording.model_id

    @property
    def capabilities(self) -> ModelCapabilities:
        capabilities: ModelCapabilities = self._model.capabilities
        return capabilities

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[BidiModelSession]:
        number = len(self.connections) + 1
        if number > len(self.recording.connections):
            mismatch = ReplayMismatch(
                "the client opened a connection the recording does not have "
                f"(it has {len(self.recording.connections)})",
                connection=number,
            )
            self.mismatches.append(mismatch)
            raise mismatch
        script = self.recording.connections[number - 1]
        connection = ReplayConnection(
            script,
            self._provider.codec(),
            audio_fields=self._provider.audio_fields,
            speed=self._speed,
            match_audio=self._match_audio,
            ignore_keys=self._ignore,
            wait_timeout_s=self._wait_timeout_s,
            raise_mismatch=self._raise,
            mismatches=self.mismatches,
        )
        self.connections.append(connection)
        if script.refused:
            connection.closed = True
            raise error_from_record((script.end or {}).get("error") or {})
        try:
            async with self._provider.session(self._model, connection, script.connection_id, request) as session:
                yield session
        finally:
            connection.client_closed()

    def check(self) -> None:
        """Raise the first :class:`ReplayMismatch`, if any, or one for a recorded connection never opened."""
        if self.mismatches:
            raise self.mismatches[0]
        if len(self.connections) < len(self.recording.connections):
            raise ReplayMismatch(
                f"the recording has {len(self.recording.connections)} connections; the client opened "
                f"{len(self.connections)}",
                connection=len(self.connections) + 1,
            )
