"""What every request to `serve` shares: the fleet, one fleet client for every request, the model names, a bound on
how many runs may wait, and the runs in progress (`Service`); how `serve` behaves (`ServeOptions`)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar, Union

from aiohttp import web

from ..redact import Redactor
from ..review import VOTING, reviewer_writes_reply, strategy_named
from .alone import AgentAsk, AgentReply
from .connections import BODY_TIMEOUT_S, IDLE_TIMEOUT_S
from .conversation import for_agent, split
from .errors import ApiError
from .models import Catalogue
from .replies import Ask, Reply
from .tool_turns import ToolTurns, question_end

T = TypeVar("T")

if TYPE_CHECKING:
    from ..client import FleetClient
    from ..fleet import Agent, Fleet
    from ..history import History
    from .wire import Intent, ProgressMode

log = logging.getLogger("parallama.serve")

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
        self.tool_turns = ToolTurns()
        "The runs whose reply was a tool call, for the client's follow-up with the results."
        self._client: FleetClient | None = None
        self._history: History | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stack: AsyncExitStack | None = None

    @property
    def client(self) -> "FleetClient":
        if self._client is None:
            raise RuntimeError("the service is not started")
        return self._client

    async def __aenter__(self) -> "Service":
        """Open what every request shares, each closed in turn by `__aexit__` (the app's cleanup context): the
        history, the fleet client with the history's writer subscribed, and last the runs still going."""
        from ..client import FleetClient

        stack = AsyncExitStack()
        try:
            if self.options.history:
                from ..errors import HistoryError
                from ..history import History

                try:
                    self._history = History()
                    stack.callback(self._forget_history)
                except HistoryError as exc:  # as `run` does: say so once, and serve unrecorded
                    log.warning("warning: %s; served runs are not kept in the history (serve with --no-history to "
                                "not try)", exc)
            self._client = await stack.enter_async_context(FleetClient(self.fleet))
            stack.callback(self._forget_client)
            if self._history is not None:
                from ..history import HistoryWriter

                secrets = (self.options.api_key,) if self.options.api_key else ()
                stack.callback(self._client.subscribe(HistoryWriter(self._history, origin="serve", secrets=secrets)))
            # Runs still going when serve stops end first, so that the history marks each `interrupted`.
            stack.push_async_callback(self._end_runs)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _forget_history(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None

    def _forget_client(self) -> None:
        self._client = None

    async def _end_runs(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def launch(self, run: "Coroutine[Any, Any, T]") -> "asyncio.Task[T]":
        """Start a served run's task (or one agent's answer); `close` cancels and waits for those still going."""
        task = asyncio.ensure_future(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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

    def follower(self, intent: "Intent") -> "Follower":
        """Who answers a request, followed (a `Feed`; 404 for a name this server does not answer to, 400 for a
        conversation with nothing to answer):

        - a `parallama/<agent>` model: that agent alone, with the conversation as it is and the tools offered;
        - a fleet name: the ensemble, the offered tools going to the reviewer that writes the reply, and a tool
          call it makes going back to the client; the client's follow-up with the results continues that reviewer's
          request (`ToolTurns`), the workers not asked again;
        - tools with `tool_choice` demanding a call, a tool result no run here knows, or `serve.tools: agent`: the
          tools agent alone (with none, the ensemble answers without the tools and says so)."""
        progress = self.options.progress if intent.think else "none"
        thinking = intent.think and self.options.progress == "thinking"
        agent = self.catalogue.agent_for(intent.model)
        if agent is not None:
            return self._alone(intent, agent, thinking)
        strategy = self.strategy_for(intent.model)
        fleet = self.fleet
        tools, notes = intent.tools, []
        if intent.messages and intent.messages[-1]["role"] == "tool":
            turn = self.tool_turns.find(self.catalogue.canonical(intent.model), intent.messages)
            if turn is not None:
                tail, _ = for_agent(intent.messages[question_end(intent.messages):])
                opening = (f"parallama: {turn.agent.name} goes on with the tool results (the workers answered "
                           "this question already).\n\n")
                return AgentReply(self, AgentAsk(intent.model, turn.agent, (*turn.messages, *tail), tools, thinking,
                                                 opening if thinking else None))
            # A tool result with no run here to continue (serve restarted): an agent reads it as it is.
            return self._alone(intent, fleet.tools_agent or fleet.reviewer or fleet.workers[0], thinking)
        if tools:
            mode = fleet.tools_mode
            if mode == "ignore":
                tools = ()
                notes.append('The request\'s tools are not used ("serve": {"tools": "ignore"} in the config).')
            elif mode == "agent" or intent.demands_a_tool:
                if fleet.tools_agent is not None:
                    return self._alone(intent, fleet.tools_agent, thinking)
                tools = ()
                notes.append("The request's tools are not used: no agent here is set to call them (name one as "
                             '"serve": {"tools_agent": "<agent name>"} in the config).')
            elif not reviewer_writes_reply(strategy):  # the reply is a worker's answer: judge, vote, confidence
                writer = fleet.tools_agent
                voting = strategy in VOTING
                pick = strategy_named(strategy).picked
                fallback = voting and bool(fleet.reviewers)  # with no majority, the reviewer writes, with the tools
                if writer is not None:
                    notes.append(f"The request's tools go to {writer.name}, which writes the reply from {pick}"
                                 + (" (with no majority, the reviewer writes it, with the tools)." if fallback
                                    else "."))
                else:
                    notes.append(f"The request's tools are not used: with {strategy} the reply is {pick}"
                                 + (" unless there is no majority" if fallback else "")
                                 + ' (name a tools agent, "serve": {"tools_agent": "<agent name>"}, to have it '
                                   "write the reply with them).")
                    tools = tools if fallback else ()
            elif not fleet.reviewers:
                tools = ()
                notes.append("The request's tools are not used: no agent here writes the reply (this fleet has no "
                             'reviewer; name a tools agent as "serve": {"tools_agent": "<agent name>"}, with '
                             '"tools": "agent", to have it call them).')
            else:
                names = ", ".join(t.get("function", {}).get("name", "?") for t in tools[:3])
                more = f" and {len(tools) - 3} more" if len(tools) > 3 else ""
                notes.append(f"The request's {len(tools)} tool{'s' if len(tools) != 1 else ''} ({names}{more}) go "
                             f"to {fleet.reviewers[0].name}, which writes the reply.")
        context, prompt, dropped = split((m["role"], m["content"]) for m in intent.messages)
        ignored = (*intent.ignored, *(f"{r} messages" for r in dropped))
        writer = fleet.tools_agent if tools and not reviewer_writes_reply(strategy) else None
        ask = Ask(intent.model, strategy, prompt, context, progress, intent.seed, ignored, tools, tuple(notes),
                  intent.messages, writer)
        return Reply(self, ask)

    def _alone(self, intent: "Intent", agent: "Agent", thinking: bool) -> "AgentReply":
        messages, dropped = for_agent(intent.messages)
        ignored = (*intent.ignored, *(["seed"] if intent.seed is not None else []), *(f"{r} messages" for r in dropped))
        return AgentReply(self, AgentAsk(intent.model, agent, tuple(messages), intent.tools, thinking,
                                         ignored=ignored))

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


Follower = Union[Reply, AgentReply]
"A request's answer, followed: a fleet run or one agent alone; each API writes either with one `respond`."

SERVICE = web.AppKey("parallama.service", Service)
"Where the app keeps its Service."
