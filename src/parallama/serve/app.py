"""The `serve` web app: Ollama's API at `/api/…`, OpenAI's at `/v1/…`, the web page at `/ui/`, `GET /` for a health
check (a browser is sent on to the page); every error in the shape of the API that was called; an API key when
asked."""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.web_log import AccessLogger

from ..observe import METRICS_PATH
from ..urls import http_url
from ..redact import Redactor
from . import ollama_api, openai_api, origins, ui
from .connections import BODY_TIMEOUT, CAP, CappedSite, ConnectionCap, default_max_connections
from .errors import ApiError
from .observed import Observed
from .service import SERVICE, Service, ServeOptions
from .wire import MAX_BODY_BYTES

if TYPE_CHECKING:
    from ..fleet import Fleet

DEFAULT_PORT = 11400
"Outside Ollama's 11434 (and the guide's 11435–11436, where the workers live) and llama.cpp's 8080."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in the shape of the API that was called: unknown paths and methods too."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response(openai=is_openai_path(request.path))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {404: f"{request.method} {request.path}: no such endpoint here (parallama serves /api/chat, "
                         "/api/generate, /api/tags, /api/show, /api/ps, /api/version, /v1/chat/completions, "
                         "/v1/models, /metrics, and the web page at /ui/)",
                    405: f"{request.method} is not allowed on {request.path}",
                    413: f"the request body is larger than {MAX_BODY_BYTES // 2**20} MiB, the most this server reads"}
        error = ApiError(exc.status, messages.get(exc.status, exc.reason))
        return error.response(openai=is_openai_path(request.path))


def require_key(key: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """`Authorization: Bearer <key>` on every endpoint but `GET /` (the health check) and the web page's own files
    (the page asks for the key, and sends it with every request it makes)."""
    expected = key.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path == "/" or request.path in ui.PUBLIC_PATHS
        if not public or request.method not in ("GET", "HEAD"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                raise ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <key>")
        return await handler(request)

    return check


async def root(request: web.Request) -> web.Response:
    """A browser (asking for HTML) is sent on to the web page; a health check gets the text Ollama answers with."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    return web.Response(text="parallama is running")


def create_app(fleet: "Fleet", options: ServeOptions | None = None) -> web.Application:
    """The app for `fleet`: its fleet client opens when the app starts and closes when it stops."""
    options = options or ServeOptions()
    cap = ConnectionCap(options.max_connections or default_max_connections())
    observed = Observed(options)
    middlewares: list[Any] = [cap.track, *observed.middlewares(), api_errors, origins.rebinding_guard(keyed=options.api_key is not None),
                              origins.cross_origin(options.allow_origins), ui.same_origin]
    if options.api_key:
        middlewares.append(require_key(options.api_key))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[BODY_TIMEOUT] = options.body_timeout_s
    app[CAP] = cap
    app.on_response_prepare.append(origins.cors_headers(options.allow_origins, keyed=options.api_key is not None))
    service = app[SERVICE] = Service(fleet, options)

    async def serving(_app: web.Application) -> AsyncIterator[None]:
        async with service:  # the fleet client and the history, open while the app runs
            yield

    app.cleanup_ctx.append(serving)
    observed.attach(app, service)
    app.router.add_get("/", root)
    ollama_api.add_routes(app)
    openai_api.add_routes(app)
    ui.add_routes(app)
    return app


class AccessLog(AccessLogger):
    """aiohttp's access log as `ADDRESS "METHOD PATH HTTP/1.1" STATUS SECONDS s`, less the web page's polls of the
    servers' load (one a second per open page) and Prometheus's scrapes.

    What a client sends can hold a secret (`?key=…`, a key pasted into a path): no headers are logged, the query
    string is left out (a `?…` marks that there was one), and the fleet's keys and URL passwords and serve's own key
    are masked in the path, as everywhere else."""

    redact: Redactor = Redactor(())
    "Set per server (see `start`)."

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in (ui.LOAD_PATH, METRICS_PATH) and response.status == 200:
            return
        self.logger.info('%s "%s" %s %.6f s', request.remote or "-", self.request_line(request), response.status,
                         time)

    def request_line(self, request: web.BaseRequest) -> str:
        path = json.dumps(self.redact(request.path), ensure_ascii=False)[1:-1]  # no line breaks into the log
        query = "?…" if request.query_string else ""
        return f"{request.method} {path}{query} HTTP/{request.version.major}.{request.version.minor}"


@dataclass
class Running:
    """A started server: where it listens, and how to stop it."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def service(self) -> Service:
        return self.runner.app[SERVICE]

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(fleet: "Fleet", options: ServeOptions | None = None, *, host: str = "127.0.0.1",
                port: int = DEFAULT_PORT, access_log: logging.Logger | None = None) -> Running:
    """Serve `fleet` on host:port (port 0: any free one) until `close()`."""
    app = create_app(fleet, options)

    class Log(AccessLog):
        redact = app[SERVICE].page_redact

    # handler_cancellation: a client that goes away cancels its handler, and with it the run and its requests.
    options = app[SERVICE].options
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=access_log,
                           access_log_class=Log, keepalive_timeout=options.idle_timeout_s)
    await runner.setup()
    site = CappedSite(runner, host, port, cap=app[CAP])
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Running(runner, host, site.port)
