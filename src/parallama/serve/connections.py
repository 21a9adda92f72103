"""How long `serve` waits on a client and how many connections it keeps open, so that slow or greedy clients
cannot take its file descriptors from everyone else.

- A connection must send a request's headers within `idle_timeout_s` of opening, or of its previous answer
  ending; that is also how long an idle keep-alive connection stays open (aiohttp's `keepalive_timeout` is both).
- A request body must keep coming: `body_timeout_s` without a byte is a 408.
- At most `max_connections` are open at once. Beyond that, the oldest connections with no request in progress
  (idle, or still sending their headers) are closed, checked after each burst of accepts; a new connection is one
  of those until its headers are in, so when every older connection has a request in progress, the new one is
  closed before anything is read from it. So one client holding many half-sent requests cannot lock others out. The default is half the process's open-file limit,
  less room for the connections accepted at one wake-up (the other half is for the model servers' connections,
  the history and the logs), at most 4,096: 448 under the common limit of 1,024.

For comparison: Ollama (Go's `http.Server` with no timeouts set) has none of these; nginx closes after 60 s without
a header or a body byte and keeps idle connections 75 s; uvicorn keeps them 5 s.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from aiohttp import web

IDLE_TIMEOUT_S = 30.0
"Headers within this long of a connection opening or its last answer ending; idle keep-alive as long."
BODY_TIMEOUT_S = 30.0
"A request body that sends nothing for this long is given up on (408)."
MAX_CONNECTIONS_CEILING = 4096
ACCEPT_BURST = 64
"""The listening socket's backlog, which is also how many connections asyncio accepts at one wake-up: before the cap
can close any of them, they hold a file each (twice over, while the ones closed for room are still closing)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_TIMEOUT = web.AppKey("parallama.body_timeout_s", float)
"Where the app keeps its body timeout, for the request parser."



def default_max_connections() -> int:
    """Half the open-file limit less two bursts of accepts (at least 16, at most 4,096): 448 under the common
    limit of 1,024; 1,024 where the limit cannot be read."""
    try:
        import resource
    except ImportError:  # Windows
        return 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, (soft - 2 * ACCEPT_BURST) // 2))


class ConnectionCap:
    """Counts the requests in progress on each connection (a middleware), and closes connections over the cap."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._busy: dict[Any, int] = {}  # connection (aiohttp's RequestHandler) → requests in progress on it
        self._opened: dict[Any, float] = {}
        self._check_due = False

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = request.protocol
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            return await handler(request)
        finally:
            if (left := self._busy.pop(connection, 1) - 1) > 0:
                self._busy[connection] = left

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for the listening socket: aiohttp's, with a check of the cap after each burst."""
        loop = asyncio.get_running_loop()

        def connection() -> asyncio.Protocol:
            handler = server()
            self._opened[handler] = loop.time()
            # Room at once, as each new connection is made: while bursts of accepts pile up, waiting for each burst
            # to count would let several bursts hold files before any is closed.
            self._evict(server.connections)
            if not self._check_due:
                # asyncio accepts a burst of connections, then makes their protocols, then tells each it is
                # connected (one wake-up after another): check again once they all count.
                self._check_due = True
                loop.call_soon(loop.call_soon, self._check, server)
            return handler

        return connection

    def _check(self, server: web.Server) -> None:
        self._check_due = False
        open_now = server.connections
        still = set(open_now)
        now = asyncio.get_running_loop().time()
        self._opened = {c: t for c, t in self._opened.items() if c in still or now - t < 5.0}
        self._evict(open_now)

    def _evict(self, connected: Any) -> None:
        """Close the oldest of the `connected` with no request in progress, as many as run over the cap."""
        still = [c for c in connected if c.transport is not None]  # not those closed already, still closing
        excess = len(still) - self.max_connections
        if excess <= 0:
            return
        idle = sorted((c for c in still if not self._busy.get(c)), key=lambda c: self._opened.get(c, 0.0))
        for connection in idle[:excess]:
            connection.force_close()


CAP = web.AppKey("parallama.connection_cap", ConnectionCap)
"Where the app keeps its ConnectionCap, for the site that listens."


class CappedSite(web.BaseSite):
    """aiohttp's TCP site, with a cap on the connections open at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, cap: ConnectionCap) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.cap = cap

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The port listened on (the one picked when asked for 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(self.cap.factory(server), self._host,
                                                                      self._port, reuse_address=True,
                                                                      backlog=ACCEPT_BURST)
