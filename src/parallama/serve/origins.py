"""Which web pages may call the Ollama and OpenAI APIs from a browser, as Ollama's `OLLAMA_ORIGINS` decides.

Programs (Open WebUI's backend, Continue, the official clients, curl) send no `Origin` and are not concerned. A
browser sends one: a page on this machine (localhost, 127.0.0.1, [::1], 0.0.0.0, any port) or an app shell
(`app://`, `file://`, `tauri://`, `vscode-webview://`, `vscode-file://`) may call, like Ollama's defaults; any
other site is refused with 403 unless `--allow-origin` names it — otherwise any page the user opens could make
this machine run the fleet. Allowed origins get CORS headers, and their preflight `OPTIONS` an answer.
"""

from __future__ import annotations

import fnmatch
from typing import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
APP_SCHEMES = ("app", "file", "tauri", "vscode-webview", "vscode-file")
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, User-Agent, X-Requested-With, OpenAI-Organization, " \
                  "OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, " \
                  "X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout"


def origin_allowed(origin: str, host: str, extra: Sequence[str]) -> bool:
    """Whether a browser page at `origin` may call this server (reached as `host`)."""
    parts = urlsplit(origin)
    if parts.scheme in APP_SCHEMES:
        return True
    if parts.scheme in ("http", "https") and ((parts.hostname or "") in LOCAL_HOSTS or parts.netloc == host):
        return True
    return any(pattern == "*" or fnmatch.fnmatchcase(origin, pattern) for pattern in extra)


def cross_origin(extra: Sequence[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware for everything but the web page's own API (which takes only its own page)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or request.path.startswith("/ui/"):
            return await handler(request)
        if not origin_allowed(origin, request.host, extra):
            raise ApiError(403, f"refused a browser request from {origin}: only pages on this machine may call "
                                "this server; start it with --allow-origin to let that site in")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, POST, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600"})
        return await handler(request)

    return check


def cors_headers(extra: Sequence[str]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """For `on_response_prepare` (a streamed answer's headers go out before its handler returns): an allowed
    browser origin is told it may read the answer."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and not request.path.startswith("/ui/") and origin_allowed(origin, request.host, extra):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    return add
