"""OpenAI Realtime (GA) adapter: ``BidiOpenAIRealtimeModel``.

Needs the ``openai`` extra (``pip install "bidi-core[openai]"``).
"""

from adapters.connection import ConnectionOptions
from adapters.openai.config import OpenAIConfig
from adapters.openai.model import DEFAULT_BASE_URL, BidiOpenAIRealtimeModel

__all__ = ["DEFAULT_BASE_URL", "BidiOpenAIRealtimeModel", "ConnectionOptions", "OpenAIConfig"]
