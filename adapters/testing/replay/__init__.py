"""Replaying recorded sessions offline, and reading them (``docs/recording.md``).

A model with ``ConnectionOptions(record_to=path)`` records every frame of a
call (``adapters/recording.py``). :class:`ReplayModel` plays the provider's
side of such a recording back to an unchanged agent and checks that the client
sends what it sent then; ``python -m adapters.testing.replay FILE`` prints the
call's timeline (``--png`` draws it, with matplotlib).
"""

from adapters.testing.replay.connection import ReplayMismatch
from adapters.testing.replay.model import ReplayModel
from adapters.testing.replay.recording_file import ConnectionScript, RecordingFile, load_recording

__all__ = ["ConnectionScript", "RecordingFile", "ReplayMismatch", "ReplayModel", "load_recording"]
