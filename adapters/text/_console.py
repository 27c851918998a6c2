"""The terminal state shared by the text input and the text output.

The input writes a prompt and the output writes transcript lines to the same
stdout, often at the same time (the assistant speaks while the user types).
Lines only stay readable if one object knows where the cursor is: whether it
sits after a prompt, after a partial transcript that may still be rewritten in
place, or at the start of a fresh line. :class:`Console` is that object. Every
write is small and synchronous, which is fine for a terminal and keeps each
line whole: nothing else can run on the event loop in the middle of a write.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
from collections.abc import Hashable
from typing import TextIO

__all__ = ["Console"]

logger = logging.getLogger("bidi_core.adapters.text")

# Windows consoles only understand ANSI escapes when VT processing was turned
# on, which Python does not do; overwriting with spaces works everywhere.
_ANSI = sys.platform != "win32"
_CLEAR_LINE = "\r\x1b[K"
_MIN_COLUMNS = 20


class Console:
    """Where the cursor is on stdout, and how to write there without mixing lines.

    ``stdout=None`` means :data:`sys.stdout` as it is at each write, so
    ``contextlib.redirect_stdout`` and test capture keep working.
    """

    def __init__(self, stdout: TextIO | None = None) -> None:
        self._stdout = stdout
        # The cursor is not at column 0 (a prompt or a partial line is showing).
        self._mid_line = False
        # The partial transcript showing on the current line, if any: its key
        # (who speaks in which response) and its visible length.
        self._partial: Hashable | None = None
        self._partial_len = 0
        # The prompt of an input waiting for a line; shown again after each
        # output line so the user always sees where to type.
        self._prompt: str | None = None

    @property
    def stream(self) -> TextIO:
        return self._stdout if self._stdout is not None else sys.stdout

    def is_tty(self) -> bool:
        """Whether stdout is a terminal (partials are rewritten in place only then)."""
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):  # closed or odd stream
            return False

    # ------------------------------------------------------------------ output side

    def line(self, text: str, *, reprompt: bool = True) -> None:
        """Print a line that stays, on a line of its own."""
        self._write(self._break_line() + text + "\n" + (self._reprompt() if reprompt else ""))

    def partial(self, key: Hashable, prefix: str, text: str) -> None:
        """Show (or update in place) a transcript that is still growing.

        The caller checks :meth:`is_tty`: ``\\r`` only means "start of this line"
        on a terminal. Only the tail that fits the terminal's width is shown,
        because ``\\r`` cannot reach back onto a wrapped line.
        """
        shown = self._fit(prefix, text)
        head = self._clear_partial() if self._partial == key else self._break_line()
        self._write(head + shown)
        self._mid_line = True
        self._partial = key
        self._partial_len = len(shown)

    def final(self, key: Hashable, text: str) -> None:
        """Print a finished transcript, replacing its partial line if that is showing."""
        head = self._clear_partial() if self._partial == key else self._break_line()
        self._mid_line = False
        self._partial = None
        self._write(head + text + "\n" + self._reprompt())

    def finish(self) -> None:
        """End whatever line is in progress, so what follows starts cleanly."""
        self._prompt = None
        if self._mid_line:
            self._write("\n")
        self._mid_line = False
        self._partial = None

    # ------------------------------------------------------------------ input side

    def show_prompt(self, prompt: str) -> None:
        """Show an input's prompt before it waits, unless it is showing already."""
        if self._prompt is not None or not prompt:
            return
        self._prompt = prompt
        self._write(self._break_line() + prompt)
        self._mid_line = True

    def withdraw_prompt(self) -> None:
        """The input stopped waiting without a line: stop showing its prompt again."""
        self._prompt = None

    def input_received(self, *, echoed: bool) -> None:
        """The input got a line. ``echoed``: the terminal echoed it, newline included,
        onto this same stdout, so the cursor is back at column 0."""
        self._prompt = None
        if echoed:
            self._mid_line = False
            self._partial = None

    # ------------------------------------------------------------------ helpers

    def _break_line(self) -> str:
        """What to write so that the next text starts on a fresh line."""
        broken = "\n" if self._mid_line else ""
        self._mid_line = False
        self._partial = None
        return broken

    def _clear_partial(self) -> str:
        if _ANSI:
            return _CLEAR_LINE
        return "\r" + " " * self._partial_len + "\r"

    def _reprompt(self) -> str:
        if self._prompt is None:
            return ""
        self._mid_line = True
        return self._prompt

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
            columns = shutil.get_terminal_size().columns
        return max(columns, _MIN_COLUMNS)

    def _fit(self, prefix: str, text: str) -> str:
        flat = " ".join(text.split())
        room = self._columns() - 1 - len(prefix)
        if len(flat) > room:
            flat = "..." + flat[-max(room - 3, 1) :]
        return prefix + flat

    def _write(self, text: str) -> None:
        if not text:
            return
        stream = self.stream
        stream.write(text)
        stream.flush()
