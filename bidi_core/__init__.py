"""bidi-core: real-time, bidirectional voice and text conversations with AI
models, on asyncio and Trio.

The front door: the agent, tools, every event type and every error.
"""

from bidi_core.agent import BidiAgent, ReconnectPolicy
from bidi_core.conversation import Phase
from bidi_core.hooks import Allow, Hooks, Refuse
from bidi_core.tools import BidiTool, stop_conversation, tool
from bidi_core.usage import Prices, Usage
from ports.errors import (
    BidiConnectionError,
    BidiError,
    BidiProtocolError,
    BidiProviderError,
    BidiResumptionRejectedError,
    BidiToolError,
    BidiUsageError,
)
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    event_from_dict,
)
from ports.io import BidiInput, BidiOutput, PlaybackReport

__all__ = [
    "Allow",
    "BidiAgent",
    "BidiAudioInputEvent",
    "BidiAudioStreamEvent",
    "BidiConnectionCloseEvent",
    "BidiConnectionError",
    "BidiConnectionRestartEvent",
    "BidiConnectionStartEvent",
    "BidiError",
    "BidiErrorEvent",
    "BidiImageInputEvent",
    "BidiInput",
    "BidiInputEvent",
    "BidiInterruptionEvent",
    "BidiOutput",
    "BidiOutputEvent",
    "BidiProtocolError",
    "BidiProviderError",
    "BidiResumptionRejectedError",
    "BidiResponseCompleteEvent",
    "BidiResponseStartEvent",
    "BidiTextInputEvent",
    "BidiTool",
    "BidiToolError",
    "BidiToolResultEvent",
    "BidiToolUseEvent",
    "BidiTranscriptStreamEvent",
    "BidiUsageError",
    "BidiUsageEvent",
    "Hooks",
    "Phase",
    "PlaybackReport",
    "Prices",
    "ReconnectPolicy",
    "Refuse",
    "Usage",
    "event_from_dict",
    "stop_conversation",
    "tool",
]
