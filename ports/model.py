"""The model port: what the core needs from a speech-to-speech provider.

A :class:`BidiModel` is configuration plus a factory. ``model.connect(request)``
is an async context manager that opens one connection and yields a
:class:`BidiModelSession`; leaving it closes the connection, whatever happened.
The core opens a new connection when one ends (a fault, the provider's time
limit, a ``goAway``), seeding it with the history or a resumption handle.

Adapters translate between the wire and these types and nothing else: no
policy. Whether a speech start interrupts, when to rotate a connection, what
to replay: the core decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias, runtime_checkable

import attrs

from ports.audio import AudioFormat
from ports.events import BidiInputEvent, BidiToolResultEvent, ModelEvent
from ports.messages import Message

__all__ = [
    "BidiModel",
    "BidiModelSession",
    "BidiSendNowait",
    "CancelResponse",
    "ConnectRequest",
    "ModelCapabilities",
    "ModelInput",
    "ToolSpec",
    "TruncateResponse",
]


@attrs.frozen
class ToolSpec:
    """A tool as the model is told about it: a name, what it does, a JSON schema."""

    name: str
    description: str
    input_schema: Mapping[str, Any] = attrs.field(hash=False)


@attrs.frozen
class ModelCapabilities:
    """What a provider can do; the core and the I/O adapters read it.

    ``cancels_on_speech``: the provider stops generating by itself when the
    user starts speaking, so the core sends no cancel. ``can_truncate``: the
    provider can forget the unplayed part of a response's audio.
    ``max_connection_s``: the provider closes a connection after this long;
    the core rotates before it.
    """

    input_audio: AudioFormat = AudioFormat(16000)
    output_audio: AudioFormat = AudioFormat(24000)
    can_truncate: bool = False
    cancels_on_speech: bool = True
    resumable: bool = False
    max_connection_s: float | None = None
    supports_images: bool = False


@attrs.frozen
class ConnectRequest:
    """What a new connection is opened with.

    ``history`` seeds a fresh session; ``resume_handle``, when the provider
    issued one, resumes the old session instead (the adapter decides which
    it can honour, and falls back to the history).
    """

    system_prompt: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    history: tuple[Message, ...] = ()
    resume_handle: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class CancelResponse:
    """Ask the provider to stop generating ``response_id``."""

    response_id: str


@attrs.frozen
class TruncateResponse:
    """Tell the provider the user heard only the first ``audio_end_ms`` of ``response_id``."""

    response_id: str
    audio_end_ms: int


ModelInput: TypeAlias = BidiInputEvent | BidiToolResultEvent | CancelResponse | TruncateResponse
"""What :meth:`BidiModelSession.send` accepts."""


@runtime_checkable
class BidiModelSession(Protocol):
    """One open connection to a provider."""

    @property
    def connection_id(self) -> str:
        """An identifier of this connection, for logs and events."""
        ...

    @property
    def capabilities(self) -> ModelCapabilities:
        """What this connection can do (may refine the model's static view)."""
        ...

    async def send(self, item: ModelInput) -> None:
        """Send one item to the provider.

        Called by one task at a time (the core's writer), concurrently with
        :meth:`receive`. A session whose receive path writes too (an answer
        the wire needs, such as OpenAI's ``response.create`` once a response
        is done) serialises its own writes, so that two writes never
        interleave inside one message. Raises ``anyio.EndOfStream`` when the
        service ended the session for good, as :meth:`receive` does (the
        reader reports that ending; a write that meets it first must not
        tell another story),
        :class:`~ports.errors.BidiConnectionError` when the connection is gone
        and :class:`~ports.errors.BidiUsageError` when the provider cannot
        take this kind of input (an image to a model without vision).
        """
        ...

    async def receive(self) -> ModelEvent:
        """The provider's next event, in order (anyio's stream style).

        Raises ``anyio.EndOfStream`` once the service ended the session for
        good (it will not continue it on another connection: the conversation
        then closes with ``"provider_closed"``), and again on every later
        call. An ending a new connection may continue (a connection limit, the
        service going away, a server error, a network fault) is a retryable
        :class:`~ports.errors.BidiConnectionError`: which is which is the
        adapter's translation of its provider's documented close signals.
        Raises :class:`~ports.errors.BidiConnectionError` on a transport fault,
        :class:`~ports.errors.BidiProviderError` when the provider refuses
        (``retryable`` tells whether a new connection may help) and
        :class:`~ports.errors.BidiProtocolError` for a message that cannot be
        understood at all. Unknown message types are logged and skipped.
        Called by one task at a time; nothing needs closing when that task
        stops calling it (a session that decodes several events from one
        message keeps the rest for the next calls).

        (``ports`` imports no async library: ``EndOfStream`` is anyio's, which
        the adapters and the core use.)
        """
        ...


@runtime_checkable
class BidiSendNowait(Protocol):
    """A session that can also write an item without waiting, when its connection allows it.

    Optional. The core calls :meth:`send_nowait` from the task that stepped
    the item (a microphone's, a tool's, the reader) while the writer task
    has nothing queued and is not writing, so one item a time still goes to
    the connection, in order; a microphone block then costs no wake-up of
    the writer. Anything that would have to wait (a full socket buffer, a
    write in progress, a transport that cannot write synchronously) is the
    writer's: return False and :meth:`BidiModelSession.send` gets the item.
    """

    def send_nowait(self, item: ModelInput) -> bool:
        """Write ``item`` now, whole, and return True; or write nothing of it and return False.

        Never waits. May raise what :meth:`BidiModelSession.send` raises for
        the same item, having written nothing; the core then hands the item
        to ``send`` as usual, which raises it there.
        """
        ...


@runtime_checkable
class BidiModel(Protocol):
    """A configured provider: a factory of connections."""

    @property
    def model_id(self) -> str:
        """The provider's model name, e.g. ``gpt-realtime``."""
        ...

    @property
    def capabilities(self) -> ModelCapabilities:
        """What connections of this model can do, known before connecting."""
        ...

    def connect(self, request: ConnectRequest) -> AbstractAsyncContextManager[BidiModelSession]:
        """Open a connection; leaving the context closes it.

        Entering raises :class:`~ports.errors.BidiConnectionError` when the
        provider cannot be reached and :class:`~ports.errors.BidiProviderError`
        when it refuses (bad credentials: ``retryable`` False).
        """
        ...
