"""BidiTextInput: lines typed on stdin, as user text events.

Why not ``await anyio.to_thread.run_sync(sys.stdin.readline)``: a thread
blocked in ``readline`` cannot be cancelled. It would outlive the
conversation, holding the interpreter open at exit and stealing the next line
someone types. On POSIX the input therefore never uses a thread: it waits for
the file descriptor with :func:`anyio.wait_readable` (epoll/kqueue through
asyncio's or Trio's own loop, cancellable like any other wait), then takes what
is there with one ``os.read``. The descriptor stays in blocking mode: switching
it to non-blocking would change it for every process sharing the terminal, and
a crash before restoring it would break the user's shell.
"""

from __future__ import annotations

import codecs
import collections
import io
import logging
import os
import stat
import sys
from typing import TextIO

import anyio
import anyio.lowlevel
import anyio.to_thread

from adapters.text._console import Console
from ports.events import BidiTextInputEvent
from ports.io import AgentView

__all__ = ["BidiTextInput"]

logger = logging.getLogger("bidi_core.adapters.text")

_READ_SIZE = 65536
# Windows has no readiness notification for pipes and consoles: there the
# input blocks in a worker thread instead (see BidiTextInput's caveat).
_USE_THREAD = sys.platform == "win32"


class BidiTextInput:
    """Each call returns the next non-empty line of stdin, stripped.

    Blank lines are skipped: an empty message to the model is never what the
    user meant. Lines that arrive while nobody is waiting are kept for the next
    calls, bytes are decoded incrementally (a UTF-8 character split across two
    reads survives), and a last line without a newline is still delivered. End
    of file raises :class:`EOFError`, which the agent reads as "this input is
    done" while the conversation goes on.

    If the input prompt is not empty it is shown on stdout before waiting, and
    shown again after each line the output prints, so the user always sees
    where to type.

    Caveats:

    * On Windows, and for a stream without a file descriptor (``io.StringIO``),
      the line is read in a worker thread (``abandon_on_cancel=True``).
      Cancelling the call returns at once, but the thread stays blocked until
      a line or end of file arrives, and that line is lost.
    * Text already buffered inside ``sys.stdin`` (someone called ``input()``
      before the conversation) is not seen: the input reads the descriptor.
    * Two readers of the same descriptor race: if another one takes the data
      between "readable" and ``os.read``, the read blocks until more arrives.

    Made by :meth:`BidiTextIO.input`.
    """

    def __init__(self, console: Console, input_prompt: str = "", stdin: TextIO | int | None = None) -> None:
        self._console = console
        self._prompt = input_prompt
        self._stdin = stdin
        self._opened = False
        self._fd: int | None = None
        self._stream: TextIO | None = None
        self._tty = False
        self._always_ready = False
        self._decoder: codecs.IncrementalDecoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_line = ""
        self._lines: collections.deque[str] = collections.deque()
        self._eof = False

    async def start(self, agent: AgentView) -> None:
        """Find stdin's descriptor and how to wait on it. Nothing about it is changed."""
        self._open()

    async def __call__(self) -> BidiTextInputEvent:
        """Wait for the next non-empty line without blocking the event loop."""
        self._open()
        while True:
            if self._lines:
                self._console.input_received(echoed=self._tty and self._console.is_tty())
                return BidiTextInputEvent(text=self._lines.popleft())
            if self._eof:
                raise EOFError("end of stdin")
            self._console.show_prompt(self._prompt)
            try:
                chunk = await self._read_chunk()
            except BaseException:
                self._console.withdraw_prompt()
                raise
            if chunk is None:
                continue
            if not chunk:
                self._end_of_file()
            else:
                self._feed(chunk if isinstance(chunk, str) else self._decoder.decode(chunk))

    async def stop(self) -> None:
        """Stop prompting. The descriptor was never modified, so nothing needs restoring."""
        self._console.withdraw_prompt()
        logger.debug("text input stopped")

    # ------------------------------------------------------------------ reading

    def _open(self) -> None:
        """Resolve stdin once, at start (or the first call if start was skipped).

        Resolving late lets ``stdin=None`` follow whatever :data:`sys.stdin` is
        when the conversation starts.
        """
        if self._opened:
            return
        self._opened = True
        source: TextIO | int | None = sys.stdin if self._stdin is None else self._stdin
        if source is None:  # pythonw and some service managers have no stdin at all
            logger.warning("there is no stdin; the text input has nothing to read")
            self._eof = True
            return
        if isinstance(source, int):
            self._fd = source
        else:
            self._stream = source
            try:
                self._fd = source.fileno()
            except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
                self._fd = None  # an in-memory stream: read it through its own readline
            encoding = getattr(source, "encoding", None)
            if isinstance(encoding, str) and encoding:
                try:
                    self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
                except LookupError:
                    logger.warning("unknown stdin encoding %r, decoding as UTF-8", encoding)
        if self._fd is not None:
            try:
                self._tty = os.isatty(self._fd)
                # epoll refuses regular files (stdin redirected from a file),
                # which are always readable anyway.
                self._always_ready = stat.S_ISREG(os.fstat(self._fd).st_mode)
            except OSError:
                pass  # a closed descriptor: the first read reports it
        elif self._stream is not None:
            try:
                self._tty = bool(self._stream.isatty())
            except (ValueError, OSError):
                self._tty = False
        logger.debug(
            "text input on %s (tty=%s, %s)",
            f"fd {self._fd}" if self._fd is not None else type(self._stream).__name__,
            self._tty,
            "worker thread" if self._uses_thread() else "readiness polling",
        )

    def _uses_thread(self) -> bool:
        return _USE_THREAD or self._fd is None

    async def _read_chunk(self) -> bytes | str | None:
        """The next piece of stdin; empty at end of file, None to just try again."""
        if self._uses_thread():
            return await anyio.to_thread.run_sync(self._blocking_read, abandon_on_cancel=True)
        fd = self._fd
        assert fd is not None
        if self._always_ready:
            await anyio.lowlevel.checkpoint()
        else:
            try:
                await anyio.wait_readable(fd)
            except PermissionError:
                # Not pollable (e.g. /dev/null): such files never block.
                logger.debug("fd %d cannot be polled; reading it directly", fd)
                self._always_ready = True
        try:
            return os.read(fd, _READ_SIZE)
        except BlockingIOError:
            # Someone else made the descriptor non-blocking and took the data first.
            return None

    def _blocking_read(self) -> bytes | str:
        """Runs in a worker thread, only where readiness polling is not possible."""
        if self._stream is not None:
            return self._stream.readline()
        assert self._fd is not None
        return os.read(self._fd, _READ_SIZE)

    def _feed(self, text: str) -> None:
        """Split decoded text into complete lines, keeping the unfinished tail."""
        if "\n" not in text:
            self._partial_line += text
            return
        pieces = text.split("\n")
        pieces[0] = self._partial_line + pieces[0]
        self._partial_line = pieces.pop()
        self._lines.extend(line for piece in pieces if (line := piece.strip()))

    def _end_of_file(self) -> None:
        tail = (self._partial_line + self._decoder.decode(b"", final=True)).strip()
        self._partial_line = ""
        if tail:
            self._lines.append(tail)
        self._eof = True
        logger.debug("end of stdin")
