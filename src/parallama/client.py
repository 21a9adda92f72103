"""`FleetClient`: one long-lived client for a fleet — its HTTP session and one gate per server (the transport every
run's requests go through, `calls`), its subscribers, and the runs in progress; each run's stages are in `stages`.

    async with FleetClient("config.json") as client:
        result = await client.run("Why is the sky blue?")

Runs share the gates (with every other client in the event loop), so concurrent runs never put more requests on a
server than its slots.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Sequence, TypeVar

from .backends import Message, Tool
from .calls import Run, Transport, client_session
from .config import ConfigLike, as_fleet
from .events import ALONE, WORKERS, Event, EventSink, RunEnded, RunKeeper, RunStarted
from .fleet import secrets_of
from .gates import Gate, ServerLoad, gate_for
from .pools import known_health
from .redact import Redactor, valid_unicode
from .result import AgentResult, RunResult
from .slots import SlotStore, close_store, open_store
from .stages import StrategyRun, compare, orchestrate, reviewing, worker_messages
from .review import check_strategy

if TYPE_CHECKING:
    from .fleet import Agent

T = TypeVar("T")


class FleetClient:
    """The fleet's connections and slots, for as many runs as you like (concurrent or one after another)."""

    def __init__(self, config: ConfigLike) -> None:
        self.fleet = as_fleet(config)
        self._state: Literal["unopened", "open", "closed"] = "unopened"
        self._transport: Transport | None = None
        self._gates: dict[str, Gate] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: SlotStore | None = None
        self._subscribers: list[EventSink] = []
        self.running: dict[str, RunStarted] = {}
        "The runs in progress, by run id."
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping: set[str] = set()

    async def __aenter__(self) -> "FleetClient":
        # Used once, like httpx's clients: a second `async with` on one client would give its gates a second life.
        if self._state != "unopened":
            raise RuntimeError(f"this FleetClient is {self._state}: a client is entered once; make a new "
                               "FleetClient for another `async with`")
        self._state = "open"
        try:
            self._store = await open_store(self.fleet.slot_store)
            self._gates = {url: gate_for(url, server.parallel, self._store)
                           for url, server in self.fleet.servers.items()}
        except BaseException:
            await self.__aexit__()
            raise
        self._loop = asyncio.get_running_loop()
        self._transport = Transport(client_session(), self._gates, self._store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._state = "closed"
        self._gates = {}
        store, self._store = self._store, None
        await close_store(store)
        if self._transport is not None:
            await self._transport.session.close()
            self._transport = None

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Send every run's events to `sink` from now on; call the returned function to stop. A sink that keeps
        runs (a `RunKeeper`: the history's `HistoryWriter(History())`) is asked before each result is made whether
        it kept the run, and the result says so (`history_id`)."""
        self._subscribers.append(sink)
        return lambda: self._subscribers.remove(sink)

    def load(self) -> dict[str, ServerLoad]:
        """Per server: slots, requests in flight and requests waiting (across every process sharing the slots)."""
        loads = {url: gate.load() for url, gate in self._gates.items()}
        for url, health in known_health(self._loop).items():
            if url in loads and health.is_benched():
                loads[url] = replace(loads[url], benched=f"until {health.until_clock()} ({health.why})")
        return loads

    async def run(self, prompt: str, *, deadline: float | None = None, review: bool = True,
                  strategy: str | None = None, on_event: EventSink | None = None, seed: int | None = None,
                  run_id: str | None = None, context: Sequence[Message] | None = None,
                  tools: Sequence[Tool] = ()) -> RunResult:
        """Run every worker on `prompt` (within the servers' slots), `rounds` times when the config asks, then
        review the answers with the strategy. `deadline` bounds the whole run, in seconds. `context`: the earlier
        turns of a conversation that `prompt` continues (`system`, `user`, `assistant` messages, oldest first);
        the workers get them as messages, the reviewers and later rounds read them with the task. `tools`: offered
        to the reviewer that writes the reply (synthesize, council, vote's fallback; never to the workers or a
        judge): its answer may then be tool calls (`result.tool_calls`; `result.continue_with` is its request, to
        send again with the calls and their results, as `serve` does)."""
        chosen = check_strategy(strategy or self.fleet.strategy)
        prompt, undecodable = valid_unicode(prompt)
        run = self._open_run(on_event, run_id)
        run.tools = tuple(tools)
        context = tuple(context or ())
        started = RunStarted(run.id, prompt, self.fleet, reviewing(self.fleet, chosen, review), context)
        self.running[run.id] = started
        task = asyncio.current_task()
        if task is not None:
            self._tasks[run.id] = task
        run.emit(started)
        try:
            result = await orchestrate(run, self.fleet, prompt, deadline=deadline, review=review, strategy=chosen,
                                       rng=random.Random(seed), context=context)
        except BaseException:
            run.emit(RunEnded(run.id, None, stopped=run.id in self._stopping))
            raise
        finally:
            del self.running[run.id]
            self._tasks.pop(run.id, None)
            self._stopping.discard(run.id)
        warnings = result.warnings
        if undecodable:
            warnings = [f"the prompt had {undecodable} undecodable byte(s) (not UTF-8); each was sent as U+FFFD �",
                        *warnings]
        result = self._kept(replace(result, prompt=run.redact(prompt), warnings=warnings))
        run.emit(RunEnded(run.id, result))  # the result is whole: subscribers and the caller hold the same one
        return result

    def _kept(self, result: RunResult) -> RunResult:
        """The result with where it is kept: its `history_id` when every keeper subscribed keeps the run whole; when
        keeping stopped (during this run or before), a warning saying so, and no id pointing at a partial row."""
        keepers = [sink for sink in self._subscribers if isinstance(sink, RunKeeper)]
        if not keepers:
            return result
        stopped = [str(keeper.error) for keeper in keepers if keeper.error is not None]
        kept = not stopped and all(keeper.kept(result.run_id or "") for keeper in keepers)
        return replace(result, history_id=result.run_id if kept else None, warnings=[*result.warnings, *stopped])

    def stop(self, run_id: str) -> bool:
        """Stop a run in progress at the user's word (the page's Stop): its requests are closed at once, their
        slots freed, and it ends as stopped (`RunEnded.stopped`; the history says `stopped`), its `run` raising
        CancelledError. False when no such run is going."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            return False
        self._stopping.add(run_id)
        task.cancel()
        return True

    async def run_workers(self, prompt: str, *, sequential: bool = False, on_event: EventSink | None = None,
                          agents: "tuple[Agent, ...] | None" = None) -> list[AgentResult]:
        """Only the workers (or `agents`): all at once within each server's slots (as `run` does), or strictly one
        at a time."""
        prompt = valid_unicode(prompt)[0]
        run = self._open_run(on_event, None, agents or ())
        asked = agents or self.fleet.workers
        jobs = [(agent, worker_messages(agent, prompt)) for agent in asked]

        async def ask() -> list[AgentResult]:
            if not sequential:
                return await run.ask(WORKERS, jobs, None)
            results: list[AgentResult] = []
            for job in jobs:
                results += await run.ask(WORKERS, [job], None)
            return results

        started = RunStarted(run.id, prompt, self.fleet, None, kind="workers", agents=tuple(asked))
        return await self._framed(run, started, ask(), lambda results: results)

    async def ask_agent(self, agent: "Agent", messages: Sequence[Message], *, tools: Sequence[Tool] = (),
                        on_event: EventSink | None = None, run_id: str | None = None) -> AgentResult:
        """One agent on its own, with `messages` as they are (no review): one request through its server's gate, in
        turn with every run's requests. With `tools` its answer may be tool calls (`AgentResult.tool_calls`)."""
        run = self._open_run(on_event, run_id, (agent,))
        prompt = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        started = RunStarted(run.id, prompt, self.fleet, None, tuple(messages[:-1]), kind="agent", agents=(agent,))
        [result] = await self._framed(run, started, run.ask(ALONE, [(agent, list(messages))], None, tools),
                                      lambda results: results)
        return result

    # ------------------------------------------------------------ inside a run

    async def compare(self, prompt: str, strategies: Sequence[str], *, seed: int | None = None,
                      deadline: float | None = None) -> list[StrategyRun]:
        """The workers once, then each strategy's review of the same answers (every request through the gates):
        one RunResult per strategy, with what its review cost. A vote stops the workers early only when it is
        the one strategy (the others need every answer)."""
        for name in strategies:
            check_strategy(name)
        prompt = valid_unicode(prompt)[0]
        run = self._open_run(None, None)

        def review_run(sink: EventSink) -> Run:
            return self._open_run(sink, run.id, number=run.number)

        started = RunStarted(run.id, prompt, self.fleet, None, kind="compare")
        return await self._framed(run, started, compare(run, review_run, self.fleet, prompt, strategies,
                                                        deadline=deadline, rng=random.Random(seed)),
                                  lambda runs: runs[0].result.workers if runs else [])

    async def _framed(self, run: Run, started: RunStarted, work: "Awaitable[T]",
                      answers: "Callable[[T], list[AgentResult]]") -> T:
        """`work` between its run's `RunStarted` and `RunEnded` (whose result holds the answers it got, unreviewed;
        None when it was interrupted), for the entry points other than `run`."""
        if not run.listening:  # nobody to tell: no result to build
            return await work
        began = time.perf_counter()
        run.emit(started)
        try:
            value = await work
        except BaseException:
            run.emit(RunEnded(run.id, None))
            raise
        run.emit(RunEnded(run.id, RunResult(
            prompt=run.redact(started.prompt), workers=answers(value), review=None, final=None, final_source=None,
            wall_s=round(time.perf_counter() - began, 3), warnings=list(run.warnings), run_id=run.id)))
        return value

    def _open_run(self, on_event: EventSink | None, run_id: str | None, agents: "tuple[Agent, ...]" = (),
                  number: int | None = None) -> Run:
        if self._transport is None:
            raise RuntimeError("this FleetClient is closed: make a new one" if self._state == "closed" else
                               "use the client as `async with FleetClient(...) as client:`")
        sinks = [s for s in (on_event, *self._subscribers) if s is not None]
        if not sinks:
            emit: EventSink | None = None
        elif len(sinks) == 1:
            emit = sinks[0]
        else:
            def emit(event: Event) -> None:
                for sink in sinks:
                    sink(event)
        redact = Redactor(secrets_of(self.fleet.agents + agents))  # keys as the environment holds them now
        return Run(self._transport, run_id or uuid.uuid4().hex[:12], emit, redact, number)
