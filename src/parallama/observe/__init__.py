"""What a fleet's runs look like from outside: Prometheus metrics (`metrics`) and OpenTelemetry traces (`traces`),
each a consumer that subscribes to a client's events; nothing in the core imports them.

This package's own module imports nothing heavy: `prometheus_client` loads when metrics are asked for, and
`opentelemetry` only when the standard environment variables ask for traces (`traces_wanted`).
"""

from __future__ import annotations

import os

METRICS_PATH = "/metrics"

TRACES_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
"Any of these set (and `OTEL_TRACES_EXPORTER` not `none`, `OTEL_SDK_DISABLED` not true) turns traces on."


def traces_wanted() -> bool:
    """Whether the environment asks for traces, read without importing OpenTelemetry."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return any(os.environ.get(name, "").strip() for name in TRACES_ENV)


__all__ = ["METRICS_PATH", "TRACES_ENV", "traces_wanted"]
