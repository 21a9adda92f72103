"""Which web pages may call the Ollama and OpenAI APIs from a browser, as Ollama's `OLLAMA_ORIGINS` decides.

Programs (Open WebUI's backend, Continue, the official clients, curl) send no `Origin` and are not concerned. A
browser sends one: a page on this machine (localhost, 127.0.0.0/8, [::1], 0.0.0.0, any port) or an app shell
(`app://`, `file://`, `tauri://`, `vscode-webview://`, `vscode-file://`) may call, like Ollama's defaults; any
other site is refused with 403 unless `--allow-origin` names it — otherwise any page the user opens could make
this machine run the fleet. Allowed origins get CORS headers, and their preflight `OPTIONS` an answer.

A page can also come in under its own name: DNS rebinding points `evil.example` at 127.0.0.1, and the browser then
treats this server as that site's own. So, as Ollama does, a request that reaches a loopback address of a server
with no API key must name it as an IP address, `localhost`, a `*.localhost` name or this machine's host name in
its `Host`; any other name is refused, on every route and the preflight too.
"""

from __future__ import annotations

import re
import socket
from functools import lru_cache
from typing import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from ..urls import is_ip_address, is_loopback, is_this_machine
from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

APP_SCHEMES = ("app", "file", "tauri", "vscode-webview", "vscode-file")
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, User-Agent, X-Requested-With, OpenAI-Organization, " \
                  "OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, " \
                  "X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout"


def local_name(host: str) -> bool:
    """Whether a `Host` header (with or without a port) names this server in a way no other site can: an IP
    address, `localhost`, `*.localhost` (browsers resolve those to loopback themselves), or this machine's name."""
    name = (urlsplit(f"//{host}").hostname or "").rstrip(".").lower() if host else ""
    return name == "localhost" or name.endswith(".localhost") or name == _machine_name() or is_ip_address(name)


@lru_cache(maxsize=1)
def _machine_name() -> str:
    return socket.gethostname().lower()


def rebinding_guard(keyed: bool) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware that refuses a name other than the server's own on a keyless loopback connection."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not keyed and host_refused(request):
            host = request.headers.get("Host", "")
            raise ApiError(403, f"this server was reached as {host!r}: with no API key it answers on "
                                "loopback only at an IP address or localhost (or *.localhost): another name may be "
                                "a site rebound to this machine; use http://127.0.0.1:PORT, or serve with "
                                "--api-key-env")
        return await handler(request)

    return check


def host_refused(request: web.Request) -> bool:
    """Whether a keyless server must refuse this request for the name it was reached by (see the module's doc)."""
    host = request.headers.get("Host", "")
    return bool(host) and not local_name(host) and _on_loopback(request)


def _on_loopback(request: web.Request) -> bool:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not sockname:
        return True  # the connection is gone: nothing is lost by refusing
    return is_loopback(str(sockname[0]))


def origin_allowed(origin: str, host: str, extra: Sequence[str]) -> bool:
    """Whether a browser page at `origin` may call this server (reached as `host`)."""
    parts = urlsplit(origin)
    if parts.scheme in APP_SCHEMES:
        return True
    if parts.scheme in ("http", "https") and (is_this_machine(parts.hostname or "") or parts.netloc == host):
        return True
    return any(pattern == "*" or _pattern(pattern).fullmatch(origin) for pattern in extra)


@lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    """An `--allow-origin` pattern: each `*` stands for part of one host label or of the port (never a `.`, `/`,
    `:`, `?`, `#` or `@`), everything else for itself; so `https://*.example.com` lets in `https://app.example.com`,
    not `https://evil.com/.example.com` nor `https://a.b.example.com`."""
    return re.compile("[^./:?#@]*".join(re.escape(part) for part in pattern.split("*")))


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


def cors_headers(extra: Sequence[str], *, keyed: bool) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """For `on_response_prepare` (a streamed answer's headers go out before its handler returns): an allowed
    browser origin is told it may read the answer (not a rebound name's refusal)."""

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if (origin is not None and not request.path.startswith("/ui/") and origin_allowed(origin, request.host, extra)
                and (keyed or not host_refused(request))):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    return add
