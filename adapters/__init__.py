"""bidi-core's adapters: providers, audio, text and test doubles around the ports.

This package belongs to the ``bidi-core`` distribution; the name is generic,
so check ``adapters.__file__`` if another distribution might also install one.
"""

DISTRIBUTION = "bidi-core"
