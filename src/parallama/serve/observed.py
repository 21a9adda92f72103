"""What `serve` is watched with: `GET /metrics` (unless `--no-metrics`) and, when the OpenTelemetry environment asks,
traces of each chat request and the run it makes. Both are consumers of the service's client, attached once it is
open; neither library is imported when not used."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiohttp import web

from ..observe import traces_wanted

if TYPE_CHECKING:
    from ..observe.metrics import FleetMetrics
    from ..observe.traces import Tracing
    from .service import Service, ServeOptions

log = logging.getLogger("parallama.serve")


class Observed:
    """serve's metrics and tracing, as its options and the environment ask."""

    def __init__(self, options: "ServeOptions") -> None:
        self.metrics: FleetMetrics | None = None
        self.tracing: Tracing | None = None
        if options.metrics:
            from ..observe.metrics import FleetMetrics

            self.metrics = FleetMetrics()
        if traces_wanted():
            from ..observe.traces import tracing_from_env

            self.tracing = tracing_from_env(log.warning)

    def middlewares(self) -> list[Any]:
        """The HTTP request's span, the parent of its run (first, so that it sees every answer's status)."""
        if self.tracing is None:
            return []
        from ..observe.traces import http_spans

        return [http_spans(self.tracing.tracer)]

    def attach(self, app: web.Application, service: "Service") -> None:
        """The `/metrics` route, and the subscribers, which follow the client from when it opens (this cleanup
        context runs after the one that opens it) until it closes; the spans left are sent once it has."""
        app[OBSERVED] = self
        if self.metrics is not None:
            from ..observe.endpoint import add_metrics_route

            add_metrics_route(app, self.metrics)
        if self.metrics is None and self.tracing is None:
            return

        async def watching(_app: web.Application) -> AsyncIterator[None]:
            if self.metrics is not None:
                self.metrics.watch(service.client)
            if self.tracing is not None:
                service.client.subscribe(self.tracing.sink())
            yield  # still subscribed while the service closes: the runs it stops end in the metrics and traces

        async def last_spans(_app: web.Application) -> None:
            if self.tracing is not None:
                await self.tracing.shutdown()

        app.cleanup_ctx.append(watching)
        app.on_cleanup.append(last_spans)  # after every cleanup context (the service's too): nothing ends later

OBSERVED = web.AppKey("parallama.observed", Observed)
"Where the app keeps what it is watched with."
