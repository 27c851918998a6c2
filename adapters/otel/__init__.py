"""OpenTelemetry for bidi-core conversations (the ``otel`` extra: ``opentelemetry-api`` only).

``BidiAgent(..., observers=[telemetry.observer()])`` with
``telemetry = BidiTelemetry()`` exports each conversation's spans and metrics
to whatever SDK the application configured; with none, nothing happens.
See :mod:`adapters.otel.observer` for what is recorded.
"""

from adapters.otel.observer import BidiTelemetry, OpenTelemetryObserver

__all__ = ["BidiTelemetry", "OpenTelemetryObserver"]
