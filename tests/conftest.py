"""Our tests use bidi-core's own pytest plugin (every async test on asyncio and Trio, the simulator,
scripted-model and fake-audio fixtures), loaded here so that it works without installing the package;
installed, its entry point has the same name and pytest registers it once."""

from __future__ import annotations

pytest_plugins = ["adapters.testing.pytest_plugin"]
