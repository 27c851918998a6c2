"""Amazon Nova Sonic adapter: ``BidiNovaSonicModel``.

HTTP/2 over TLS with the ``h2`` library on AnyIO (asyncio and Trio, Python
3.11, no AWS SDK for Python 3.12+ needed), SigV4 and the credential chain
from botocore, per-event chunk signatures and event-stream framing of our
own. Needs the ``nova`` extra (``pip install "bidi-core[nova]"``).
"""

from adapters.connection import ConnectionOptions
from adapters.nova_sonic.config import NOVA_2_SONIC, NOVA_SONIC, NovaSonicConfig
from adapters.nova_sonic.errors import NovaSonicProviderError
from adapters.nova_sonic.model import DEFAULT_SYSTEM_PROMPT, STREAM_LIMIT_S, BidiNovaSonicModel

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "NOVA_2_SONIC",
    "NOVA_SONIC",
    "STREAM_LIMIT_S",
    "BidiNovaSonicModel",
    "ConnectionOptions",
    "NovaSonicConfig",
    "NovaSonicProviderError",
]
