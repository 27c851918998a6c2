"""Gemini Live adapter: ``BidiGeminiLiveModel`` (Gemini API and Vertex AI).

Needs the ``gemini`` extra (``pip install "bidi-core[gemini]"``).
"""

from adapters.connection import ConnectionOptions
from adapters.gemini.config import GeminiConfig
from adapters.gemini.model import DEFAULT_BASE_URL, DEFAULT_MODEL, BidiGeminiLiveModel

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "BidiGeminiLiveModel", "ConnectionOptions", "GeminiConfig"]
