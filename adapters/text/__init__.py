"""Text I/O in a plain terminal: type to the model, read what it says.

``BidiTextIO(input_prompt="> ")`` gives an input (``.input()``) that turns
lines typed on stdin into :class:`~ports.events.BidiTextInputEvent` and an
output (``.output()``) that prints transcripts, tool calls, interruptions and
errors, the same shape as the reference's ``BidiTextIO``::

    text = BidiTextIO(input_prompt="> ")
    await agent.run(inputs=[text.input()], outputs=[text.output()])

Both halves share one view of the terminal, so the prompt, the assistant's
line being rewritten in place and the finished lines never end up on the same
line. No third-party terminal library is needed, and on POSIX nothing runs in
a thread: when the conversation ends, nothing of the input is left reading
stdin.
"""

from __future__ import annotations

from typing import TextIO

from adapters.text._console import Console
from adapters.text._input import BidiTextInput
from adapters.text._output import BidiTextOutput

__all__ = ["BidiTextIO", "BidiTextInput", "BidiTextOutput"]


class BidiTextIO:
    """A terminal's stdin and stdout as a conversation input and output.

    ``stdin`` is a text stream or a file descriptor (default: :data:`sys.stdin`
    when the conversation starts); ``stdout`` a text stream (default:
    :data:`sys.stdout` at each write, so output redirection keeps working).
    ``input_prompt`` is shown before waiting for a line, when not empty.

    :meth:`input` and :meth:`output` return the same objects on every call:
    two inputs reading one stdin would steal each other's lines.
    """

    def __init__(
        self,
        input_prompt: str = "",
        *,
        stdin: TextIO | int | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        console = Console(stdout)
        self._input = BidiTextInput(console, input_prompt, stdin)
        self._output = BidiTextOutput(console)

    def input(self) -> BidiTextInput:
        """The input: each call returns the next non-empty line typed."""
        return self._input

    def output(self) -> BidiTextOutput:
        """The output: prints conversation events as readable lines."""
        return self._output
