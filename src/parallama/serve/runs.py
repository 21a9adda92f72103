"""The runs `serve` makes: one fleet client shared by every request, a bound on how many runs may wait, and each
request's run followed as pieces to send (`Reply`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar

from aiohttp import web

from ..events import Queued
from ..redact import Redactor
from .conversation import TagGuard
from .connections import BODY_TIMEOUT_S, IDLE_TIMEOUT_S
from .errors import ApiError, no_answer_note
from .models import Catalogue
from .feed import Feed
from .narration import CONTENT, REASONING, Narrator, Piece, split_channels

T = TypeVar("T")

if TYPE_CHECKING:
    from ..backends import Message
    from ..client import FleetClient
    from ..fleet import Agent, Fleet
    from ..events import Event, EventSink
    from ..history import History
    from ..result import RunResult
    from .wire import ProgressMode

log = logging.getLogger("parallama.serve")

WAITING_AFTER_S = 0.25
"A request still waiting for its slot this long after it was queued is listed as waiting in the progress."

RETRY_AFTER_MAX_S = 60.0
"""openai-python (as every Stainless SDK) sleeps as long as a Retry-After says only up to 60 s in its older releases
(two minutes in newer ones); past that it backs off on its own: serve never asks for more."""


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` behaves (the CLI's flags)."""

    progress: "ProgressMode" = "thinking"
    "thinking: progress as Ollama `thinking` / OpenAI `reasoning_content`; think-tags: inside <think>…</think> in the content; none."
    max_queue: int = 8
    "Runs that may wait beyond those the servers' slots let go at once; more get 429."
    api_key: str | None = field(default=None, repr=False)
    "When set, every endpoint but `GET /` and the web page's files wants `Authorization: Bearer <key>`."
    history: bool = True
    "Keep served runs in the history (marked `serve`)."
    keepalive_s: float = 5.0
    "A quiet stream gets a keepalive after this many seconds."
    allow_origins: tuple[str, ...] = ()
    "Browser origins allowed beyond this machine's pages (patterns like https://*.example.com, or *)."
    idle_timeout_s: float = IDLE_TIMEOUT_S
    "A request's headers must come within this long of the connection opening or its last answer; idle keep-alive."
    body_timeout_s: float = BODY_TIMEOUT_S
    "A request body that sends nothing for this long gets a 408."
    max_connections: int | None = None
    "Connections open at once, beyond which new ones are closed on arrival; None: half the open-file limit."
    metrics: bool = True
    "Serve Prometheus metrics at `/metrics` (behind the API key when there is one)."


@dataclass(frozen=True)
class Ask:
    """What one chat request asks of the fleet."""

    model: str
    "The name as the client wrote it (echoed back)."
    strategy: str
    prompt: str
    context: "tuple[Message, ...]" = ()
    progress: "ProgressMode" = "thinking"
    seed: int | None = None
    ignored: tuple[str, ...] = ()
    "The request's settings the fleet does not use: named in the header and, once, in the progress."


@dataclass
class ServedRun:
    model: str
    started_at: datetime
    started: float


def run_capacity(fleet: "Fleet") -> int:
    """How many runs the workers' servers let go at once: on each server, its slots over the workers it hosts."""
    hosted = Counter(a.server for a in fleet.workers)
    return max(1, min(fleet.servers[url].parallel // n if url in fleet.servers else 0 for url, n in hosted.items()))


class Service:
    """What every request shares: the fleet, its client, the model names, and the runs in progress."""

    def __init__(self, fleet: "Fleet", options: ServeOptions) -> None:
        self.fleet = fleet
        self.options = options
        self.catalogue = Catalogue(fleet)
        self.capacity = run_capacity(fleet)
        self.redact = Redactor(fleet.secrets())
        "The fleet's keys and URL passwords, masked in what is streamed (results come masked already)."
        self.page_redact = Redactor([*self.redact.secrets, *([options.api_key] if options.api_key else [])])
        "What the web page never shows: the fleet's secrets and serve's own key (say, pasted into a prompt)."
        self.runs: dict[str, ServedRun] = {}
        "The served runs in progress (waiting or running), by run id."
        self.typical_run_s = 10.0
        "A moving average of served runs' wall time, for Retry-After."
        self._client: FleetClient | None = None
        self._history: History | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def client(self) -> "FleetClient":
        if self._client is None:
            raise RuntimeError("the service is not started")
        return self._client

    async def start(self) -> None:
        from ..client import FleetClient

        if self.options.history:
            from ..errors import HistoryError
            from ..history import History

            try:
                self._history = History()
            except HistoryError as exc:  # as `run` does: say so once, and serve unrecorded
                log.warning("warning: %s; served runs are not kept in the history (serve with --no-history to "
                            "not try)", exc)
        client = FleetClient(self.fleet)
        await client.__aenter__()
        self._client = client
        if self._history is not None:
            from ..history import HistoryWriter

            secrets = (self.options.api_key,) if self.options.api_key else ()
            client.subscribe(HistoryWriter(self._history, origin="serve", secrets=secrets))

    def launch(self, run: "Coroutine[Any, Any, T]") -> "asyncio.Task[T]":
        """Start a served run's task (or one agent's answer); `close` cancels and waits for those still going."""
        task = asyncio.ensure_future(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        # Runs still going (serve is stopping) end first, so that the history marks each `interrupted`.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None
        if self._history is not None:
            self._history.close()
            self._history = None

    @property
    def history(self) -> "History | None":
        """The history served runs are kept in; None with history off."""
        return self._history

    def strategy_for(self, model: str) -> str:
        """The strategy a model name asks for, or a 404 ApiError."""
        strategy = self.catalogue.strategy_for(model)
        if strategy is None:
            raise ApiError(404, self.catalogue.unknown_model_message(model), code="model_not_found", param="model")
        return strategy

    def check_model(self, model: str) -> None:
        """A 404 ApiError unless `model` is one of the names this server answers to."""
        if self.catalogue.agent_for(model) is None:
            self.strategy_for(model)

    def agent_to_answer(self, model: str, tools: object) -> "Agent | None":
        """The agent that answers alone: the one a `parallama/<agent>` name asks for, or, for a fleet name with
        tools in the request, the tools agent (a 400 ApiError when the fleet has none); None: the fleet runs."""
        agent = self.catalogue.agent_for(model)
        if agent is not None or not tools:
            return agent
        self.strategy_for(model)  # an unknown name is a 404 first
        agent = self.fleet.tools_agent
        if agent is None:
            raise ApiError(400, "this request offers tools, and no agent here is set to call them: name one in the "
                                'config as "serve": {"tools_agent": "<agent name>"} (the default, the first reviewer, '
                                "does not exist: this fleet has no reviewer), or ask a parallama/<agent> model",
                           code="tools_not_supported", param="tools")
        return agent

    def admit(self, run_id: str, model: str) -> None:
        """Count a run in, or refuse it (429) when `max_queue` runs already wait beyond those that can go."""
        limit = self.capacity + self.options.max_queue
        if len(self.runs) >= limit:
            raise ApiError(429, f"busy: {len(self.runs)} runs are in progress or waiting, the most this server "
                                f"takes (--max-queue {self.options.max_queue} beyond the {self.capacity} its "
                                "servers' slots let go at once); try again later",
                           retry_after=self.retry_after())
        self.runs[run_id] = ServedRun(self.catalogue.canonical(model), datetime.now(timezone.utc),
                                      time.perf_counter())

    def release(self, run_id: str, *, completed: bool) -> None:
        served = self.runs.pop(run_id, None)
        if served is not None and completed:
            self.typical_run_s = 0.7 * self.typical_run_s + 0.3 * (time.perf_counter() - served.started)

    async def settle(self, run_id: str, task: "asyncio.Task | None", completed: "Callable[[], bool]") -> None:
        """A request is over: cancel its run if it still goes (its client left), wait for it, free its place."""
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self.release(run_id, completed=completed())

    def retry_after(self) -> float:
        """When to try again, in seconds: a random moment between the oldest run's likely end (the first place to
        free) and one typical run later (by then the runs now going have made room), so that refused clients
        spread out instead of coming back in lockstep; within 1 … RETRY_AFTER_MAX_S."""
        oldest = min((r.started for r in self.runs.values()), default=time.perf_counter())
        first = max(1.0, oldest + self.typical_run_s - time.perf_counter())
        return round(min(RETRY_AFTER_MAX_S, random.uniform(first, first + self.typical_run_s)), 3)

    def running(self) -> list[dict[str, Any]]:
        """`/api/ps`: each fleet name with runs in progress, and those runs."""
        by_model: dict[str, list[dict[str, Any]]] = {}
        now = time.perf_counter()
        for run_id, served in self.runs.items():
            by_model.setdefault(served.model, []).append(
                {"id": run_id, "started_at": served.started_at.astimezone().isoformat(),
                 "elapsed_s": round(now - served.started, 1)})
        return [self.catalogue.running_entry(name, runs) for name, runs in by_model.items()]


class Reply(Feed[Piece]):
    """One request's fleet run, followed (a `Feed`): its narration as pieces in this request's progress mode; at
    the end `narrator` holds the result, or `error` says why there is none.

        async with Reply(service, ask) as reply:
            await write_stream(response, reply, write=..., keepalive=...)
    """

    def __init__(self, service: Service, ask: Ask) -> None:
        super().__init__(service, ask.model)
        self.service: Service = service
        self.ask = ask
        self.narrator = Narrator(service.fleet, ask.strategy, service.redact)
        self._think_open = False
        self._tags = TagGuard()
        self._content_begun = False
        self._waiting_check: asyncio.TimerHandle | None = None
        self.error_status = 502
        "The status of an answer sent whole when there is none: 502 (every worker failed), 500 (a bug)."

    async def __aenter__(self) -> "Reply":
        await super().__aenter__()
        self.push(self.narrator.opening(self.ask.ignored))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._waiting_check is not None:
            self._waiting_check.cancel()
        await super().__aexit__(*exc)

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, "RunResult"]:
        return self.service.client.run(self.ask.prompt, context=self.ask.context, strategy=self.ask.strategy,
                                       seed=self.ask.seed, run_id=self.run_id, on_event=on_event)

    def render(self, event: "Event") -> list[Piece]:
        if type(event) is Queued and not self._waiting_check:
            # Said once it is clear that a request waits (not for one its server takes at once).
            self._waiting_check = asyncio.get_running_loop().call_later(WAITING_AFTER_S, self._say_waiting)
        return self.narrator.feed(event)

    def _say_waiting(self) -> None:
        self._waiting_check = None
        self.push(self.narrator.waiting(WAITING_AFTER_S))

    def crashed(self, message: str) -> list[Piece]:
        self.error_status = 500
        self.narrator.error = message
        return []

    @property
    def error(self) -> str | None:
        """Why there is no answer (every worker failed, the run was interrupted, a bug), or None."""
        return self.narrator.error

    async def collect_text(self) -> tuple[str, str]:
        """Every piece to the end, for an answer sent whole: (reasoning, content)."""
        return split_channels(await self.collect())

    def note(self) -> str:
        """Why there is no answer, as content (see `no_answer_note`): each worker's failure and its fix."""
        result = self.narrator.result
        if result is not None and result.no_answer_reason is not None:
            return no_answer_note("every worker failed", result.failures)
        return no_answer_note("the run did not finish", [self.narrator.error or "no answer"])

    def keepalive_text(self) -> str | None:
        """The progress line for a quiet moment, in this request's progress mode, or None (send no text)."""
        if self.ask.progress == "none" or self._content_begun:
            return None
        return self.narrator.status()

    def shape(self, pieces: list[Piece]) -> list[Piece]:
        """Pieces in this request's progress mode: reasoning as is (thinking), inside <think>…</think> in the
        content (think-tags), or left out (none)."""
        mode = self.ask.progress
        if mode == "thinking":
            return pieces
        out: list[Piece] = []
        for channel, text in pieces:
            if channel == REASONING:
                if mode == "none" or self._content_begun:
                    continue
                text = self._tags.feed(text)  # a worker's `</think>` must not end serve's block
                if not self._think_open:
                    self._think_open = True
                    text = "<think>\n" + text
            else:
                if self._think_open:
                    self._think_open = False
                    text = self._tags.flush() + "\n</think>\n\n" + text
                self._content_begun = True
            out.append((CONTENT, text))
        return out

    def styled_status(self, text: str) -> Piece:
        """A keepalive line as a piece of this request's stream."""
        if self.ask.progress == "think-tags":
            [piece] = self.shape([(REASONING, text)])
            return piece
        return (REASONING, text)


SERVICE = web.AppKey("parallama.service", Service)
"Where the app keeps its Service."
