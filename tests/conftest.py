"""Our tests use bidi-core's own pytest plugin (every async test on asyncio and Trio, the simulator,
scripted-model and fake-audio fixtures), loaded here so that it works without installing the package;
installed, its entry point has the same name and pytest registers it once."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = ["adapters.testing.pytest_plugin"]

# No example may fail for taking long: hypothesis's deadline (200 ms by default) and its "too slow"
# health check are timing assertions, and the suite must pass on a machine busy with other work (a
# sync tool's worker thread alone took 310 ms under load). Hangs are caught by pytest-timeout.
settings.register_profile("bidi-core", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bidi-core")
