"""A run followed for one response, the one way `serve` does it: `Feed` starts the run (or one agent's request),
turns each of its events into pieces with a renderer, and hands them out in batches, with a keepalive after a quiet
`keepalive_s`; `write_stream` writes them to a streamed response. The Ollama and OpenAI chats (a fleet run or one
agent alone) and the page's event stream are each a renderer and a way of writing pieces over these two.

    async with follower as feed:   # a Feed's subclass; 429 before anything is sent
        await write_stream(response, feed, write=..., keepalive=...)

Leaving the block before the end (the client went away) cancels the run: its requests are closed at once and their
slots freed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Generic, Protocol, TypeVar

from ..events import RunEnded

if TYPE_CHECKING:
    from aiohttp import web

    from ..client import FleetClient
    from ..events import Event, EventSink
    from ..fleet import Fleet
    from ..redact import Redactor
    from .models import Catalogue
    from .tool_turns import ToolTurns

log = logging.getLogger("parallama.serve")

F = TypeVar("F", bound="Feed[Any]")
P = TypeVar("P")
"One piece of a response, as its renderer makes it (a channel and its text; a view of the page)."


class Keepalive(Protocol):
    @property
    def keepalive_s(self) -> float: ...


class Runs(Protocol):
    """What a feed needs of the service that serves it (`runs.Service`): a place in its queue, its run's task
    started and settled, the keepalive."""

    @property
    def options(self) -> Keepalive: ...

    def admit(self, run_id: str, model: str) -> None: ...

    def launch(self, run: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]": ...

    async def settle(self, run_id: str, task: "asyncio.Task | None", completed: Callable[[], bool]) -> None: ...


class Serving(Runs, Protocol):
    """What a chat reply needs of the service (`service.Service`), beyond a place in its queue: the fleet and its
    client, what to mask, the model names, and the runs kept for a tool call's follow-up. Replies read the service
    through this, so that the service, which picks them, is the only one to know them both."""

    fleet: "Fleet"
    redact: "Redactor"
    catalogue: "Catalogue"
    tool_turns: "ToolTurns"

    @property
    def client(self) -> "FleetClient": ...


class Feed(Generic[P]):
    """One run, followed: `await next()` gives the pieces ready to send (`[]` after a quiet `keepalive_s`: time
    for a keepalive), then None once the run has ended and its task is settled.

    A response's follower says how to `start` the run, what pieces each event adds (`render`), which event is its
    last (`ends`), what of a batch is sent (`shape`: a progress mode, neighbours merged; nothing left to send does
    not count as sending) and what to send when the run's task raised (`crashed`)."""

    def __init__(self, service: Runs, model: str) -> None:
        self.service = service
        self.model = model
        "The name the client asked for (counted in `/api/ps`)."
        self.run_id = uuid.uuid4().hex[:12]
        self.crash: str | None = None
        "Why the run's task raised (a bug: a run never raises for a failed agent), once settled."
        self._pending: list[P] = []
        self._done = False
        self._settled = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_sent = 0.0

    # ---------------------------------------------------------------- what a follower says

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, Any]:
        """The run (a coroutine), sending its events to `on_event`."""
        raise NotImplementedError

    def render(self, event: "Event") -> list[P]:
        """The pieces one event adds (often none)."""
        raise NotImplementedError

    def ends(self, event: "Event") -> bool:
        """The event is the run's last."""
        return type(event) is RunEnded

    def shape(self, pieces: list[P]) -> list[P]:
        """What of a batch is sent."""
        return pieces

    def crashed(self, message: str) -> list[P]:  # noqa: ARG002 - a view that shows the crash overrides this
        """Pieces to send last when the run's task raised."""
        return []

    # ---------------------------------------------------------------- following

    async def __aenter__(self: F) -> F:
        self.service.admit(self.run_id, self.model)
        self._last_sent = asyncio.get_running_loop().time()
        self._task = self.service.launch(self.start(self._on_event))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.settle(self.run_id, self._task, self.completed)

    def completed(self) -> bool:
        """The run ended of itself (not cancelled, not crashed)."""
        task = self._task
        return task is not None and task.done() and not task.cancelled() and task.exception() is None

    def _on_event(self, event: "Event") -> None:
        pieces = self.render(event)
        if pieces:
            self._pending += pieces
            self._wake.set()
        if self.ends(event):
            self._done = True
            self._wake.set()

    def push(self, pieces: list[P]) -> None:
        """Pieces from outside the run's events (an opening line, a timed note), sent in order with the rest."""
        if pieces:
            self._pending += pieces
            self._wake.set()

    async def next(self) -> list[P] | None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self._done:
                wait = self._last_sent + self.service.options.keepalive_s - loop.time()
                if wait <= 0:
                    self._last_sent = loop.time()
                    return []
                self._wake.clear()
                timer = loop.call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                continue
            if not self._pending:
                if self._settled:
                    return None
                await self._settle()
                continue
            pieces, self._pending = self._pending, []
            shaped = self.shape(pieces)
            if shaped:
                self._last_sent = loop.time()
                return shaped

    async def collect(self) -> list[P]:
        """Every piece to the end, for an answer sent whole."""
        out: list[P] = []
        while (pieces := await self.next()) is not None:
            out += pieces
        return out

    async def _settle(self) -> None:
        """The run has ended: wait for its task, and say why it raised (the traceback goes to the log)."""
        self._settled = True
        assert self._task is not None
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise  # this response's own task is cancelled
            # The run was stopped (`FleetClient.stop`, the page's Stop): its last event said so.
        except Exception as exc:
            log.exception("run %s failed", self.run_id)
            self.crash = f"internal error in parallama: {type(exc).__name__}: {exc}"
            self._pending += self.crashed(self.crash)


async def write_stream(response: "web.StreamResponse", feed: Feed[P], write: Callable[[list[P]], bytes],
                       keepalive: Callable[[], bytes]) -> None:
    """Every batch of the feed as `write` puts it, and `keepalive()` in a quiet moment, until the run has ended."""
    while (pieces := await feed.next()) is not None:
        await response.write(write(pieces) if pieces else keepalive())
