"""How long `serve` waits on a client and how many connections it keeps open, so that slow or greedy clients
cannot take its file descriptors from everyone else.

- A connection must send a request's headers within `idle_timeout_s` of opening, or of its previous answer
  ending; that is also how long an idle keep-alive connection stays open (aiohttp's `keepalive_timeout` is both).
- A request body must keep coming: `body_timeout_s` without a byte is a 408.
- At most `max_connections` are open at once. serve takes connections from the listening socket one at a time
  (not asyncio's bursts of up to a backlog at one wake-up, which held a file each before anything could count
  them), and before it takes one past the cap it closes the oldest connection with no request in progress (idle,
  or still sending its headers), whose file is gone before the next is taken. When every connection has a
  request in progress, the new one is closed before anything is read from it. So one client holding many
  half-sent requests cannot lock others out, and a flood of them never takes more than the cap's files. The
  default is half the process's open-file limit less 128 (the other half and the 128 are for the model servers'
  connections, the history and the logs), at most 4,096: 448 under the common limit of 1,024.
- Out of open files all the same (the model servers' connections took them, or a cap set above the limit), serve
  says so in one line (again at most once a minute), closes an idle connection if it has one and otherwise waits
  a moment before it takes the next: not a traceback per accept.

For comparison: Ollama (Go's `http.Server` with no timeouts set) has none of these; nginx closes after 60 s without
a header or a body byte and keeps idle connections 75 s; uvicorn keeps them 5 s.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

IDLE_TIMEOUT_S = 30.0
"Headers within this long of a connection opening or its last answer ending; idle keep-alive as long."
BODY_TIMEOUT_S = 30.0
"A request body that sends nothing for this long is given up on (408)."
MAX_CONNECTIONS_CEILING = 4096
KEPT_FILES = 128
"Files kept from the clients' half of the limit: the model servers' connections, the history, the logs."
BACKLOG = 128
"Connections the kernel holds for serve to take (aiohttp's default): waiting there, they hold none of its files."
OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RETRY_S = 0.1
"How long taking connections pauses when the process is out of files and no idle connection can be closed."
WARN_EVERY_S = 60.0
"Out of files for a while: said again at most this often."
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_TIMEOUT = web.AppKey("parallama.body_timeout_s", float)
"Where the app keeps its body timeout, for the request parser."

log = logging.getLogger("parallama.serve")


def default_max_connections() -> int:
    """Half the open-file limit less 128 (at least 16, at most 4,096): 448 under the common limit of 1,024;
    1,024 where the limit cannot be read."""
    try:
        import resource
    except ImportError:  # Windows
        return 1024
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, (soft - KEPT_FILES) // 2))


class ConnectionCap:
    """Counts the requests in progress on each connection (a middleware), and takes connections from a listening
    socket one at a time, closing the oldest idle one to make room past the cap."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._busy: dict[Any, int] = {}  # connection (aiohttp's RequestHandler) → requests in progress on it
        self._warned_at: float | None = None

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = request.protocol
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            return await handler(request)
        finally:
            if (left := self._busy.pop(connection, 1) - 1) > 0:
                self._busy[connection] = left

    async def accept(self, listening: socket.socket, server: web.Server) -> None:
        """Take the connections coming to `listening` for aiohttp's `server`, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(listening)
            except ConnectionAbortedError:  # gone before it was taken
                continue
            except OSError as exc:
                await self._short_of(exc, server)
                continue
            if not self._make_room(server.connections):
                connection.close()  # every connection has a request in progress: this one waits for none
                continue
            # The ones closed for room are closed in callbacks already queued: after this turn their files are gone.
            await asyncio.sleep(0)
            try:
                await loop.connect_accepted_socket(server, connection)
            except OSError:  # reset before it could be set up
                connection.close()

    def _make_room(self, connections: list[Any]) -> bool:
        """Close the oldest of `connections` (aiohttp lists them as they were made) with no request in progress, as
        many as one more would run over the cap; False when there are not enough of them to close."""
        still = [c for c in connections if c.transport is not None]  # not those closed already, still closing
        excess = len(still) + 1 - self.max_connections
        if excess <= 0:
            return True
        idle = self._idle(still)[:excess]
        for connection in idle:
            close_now(connection)
        return len(idle) == excess

    def _idle(self, connections: Iterable[Any]) -> list[Any]:
        """Those of `connections` with no request in progress, in their order (oldest first)."""
        return [c for c in connections if not self._busy.get(c)]

    async def _short_of(self, exc: OSError, server: web.Server) -> None:
        """The listening socket could not hand a connection over: out of files, or another fault of the system."""
        now = asyncio.get_running_loop().time()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            cause = "out of open files" if exc.errno in OUT_OF_FILES else (exc.strerror or str(exc)).lower()
            log.warning("warning: serve cannot take a new connection (%s, with %d connections open of the %d "
                        "allowed): it closes idle ones to make room%s", cause, len(server.connections),
                        self.max_connections,
                        " — raise the limit with `ulimit -n` or lower max_connections"
                        if exc.errno in OUT_OF_FILES else "")
        idle = self._idle(c for c in server.connections if c.transport is not None)
        if idle:
            close_now(idle[0])
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(RETRY_S)


def close_now(connection: Any) -> None:
    """Close an aiohttp connection at once: what it has not sent yet is dropped, so its file goes at the next turn
    of the loop even when the client reads nothing."""
    transport = connection.transport
    connection.force_close()
    if transport is not None:
        transport.abort()


async def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """A bound, listening, non-blocking socket per address of `host` (as asyncio's `create_server` makes them)."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


CAP = web.AppKey("parallama.connection_cap", ConnectionCap)
"Where the app keeps its ConnectionCap, for the site that listens."


class CappedSite(web.BaseSite):
    """aiohttp's TCP site, with a cap on the connections open at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, cap: ConnectionCap) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.cap = cap
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The port listened on (the one picked when asked for 0)."""
        return int(self._sockets[0].getsockname()[1])

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._sockets = await listening_sockets(self._host, self._port)
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self.cap.accept(sock, server)) for sock in self._sockets]

    async def stop(self) -> None:
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        await super().stop()
