"""`GET /metrics` as an aiohttp route (for `serve`'s app), and `observing`, what `run` and `batch` wrap their
client in: metrics on `--metrics-port` when asked, traces when the environment asks."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from aiohttp import web

from ..errors import SetupError
from ..urls import http_url, is_loopback
from . import METRICS_PATH, traces_wanted

if TYPE_CHECKING:
    from ..client import FleetClient
    from .metrics import FleetMetrics

METRICS = web.AppKey("parallama.metrics", object)
"Where an app keeps its FleetMetrics."


async def scrape(request: web.Request) -> web.Response:
    """The metrics page, in the format the scraper accepts (Prometheus text, or OpenMetrics)."""
    metrics: FleetMetrics = request.app[METRICS]  # type: ignore[assignment]
    body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_metrics_route(app: web.Application, metrics: "FleetMetrics") -> None:
    app[METRICS] = metrics
    app.router.add_get(METRICS_PATH, scrape)


def exposure_warning(host: str, port: int) -> str | None:
    """What to say when the metrics listen beyond this machine (they name the fleet's servers, agents, models)."""
    if is_loopback(host):
        return None
    return (f"metrics on {http_url(host, port)}{METRICS_PATH} reach other machines, with no key: anyone who can "
            "reach it reads the fleet's servers, agents and models (bind 127.0.0.1, the default, to keep it here)")


@asynccontextmanager
async def serve_metrics(client: "FleetClient", host: str, port: int,
                        say: Callable[[str], None]) -> AsyncIterator[int]:
    """`client`'s metrics at http://host:port/metrics until the block ends; yields the port (0: a free one)."""
    from .metrics import FleetMetrics

    metrics = FleetMetrics()
    unwatch = metrics.watch(client)
    app = web.Application()
    add_metrics_route(app, metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise SetupError(f"cannot serve metrics on {http_url(host, port)}: {exc.strerror or exc} (choose another "
                             "--metrics-port, or 0 for any free one)") from exc
        bound = runner.addresses[0][1]
        say(f"metrics: {http_url(host, bound)}{METRICS_PATH}")
        warning = exposure_warning(host, bound)
        if warning:
            say(f"warning: {warning}")
        yield bound
    finally:
        unwatch()
        await runner.cleanup()


@asynccontextmanager
async def observing(client: "FleetClient", *, metrics_at: "tuple[str, int] | None",
                    say: Callable[[str], None]) -> AsyncIterator[None]:
    """What `run` and `batch` attach to their client: metrics at `metrics_at` (host, port) when given, traces when
    the OpenTelemetry environment variables ask (`traces_wanted`). Neither library is imported otherwise."""
    async with AsyncExitStack() as stack:
        if metrics_at is not None:
            await stack.enter_async_context(serve_metrics(client, *metrics_at, say))
        if traces_wanted():
            from .traces import tracing_from_env

            tracing = tracing_from_env(say)
            if tracing is not None:
                stack.push_async_callback(tracing.shutdown)
                stack.callback(client.subscribe(tracing.sink()))
                stack.enter_context(parent_from_env())
        yield


@contextmanager
def parent_from_env() -> Iterator[None]:
    """The runs' parent span from `TRACEPARENT` (and `TRACESTATE`) in the environment, as OpenTelemetry's
    environment carriers pass a trace on to a command (a CI job, a script that traces itself)."""
    carrier = {name.lower(): os.environ[name] for name in ("TRACEPARENT", "TRACESTATE") if os.environ.get(name)}
    if "traceparent" not in carrier:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
