"""`FleetClient`: one long-lived client for a fleet — its HTTP session, one gate per server, and every request of
every run sent through those gates.

    async with FleetClient("config.json") as client:
        result = await client.run("Why is the sky blue?")

Runs share the gates (with every other client in the event loop), so concurrent runs never put more requests on a
server than its slots. A request waits at its server's gate (`queued_s`), then its timeout starts as it is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import aiohttp

from .backends import Message, backend_for
from .config import STRATEGIES, ConfigLike, as_fleet
from .errors import AgentTimeout, BackendError, HTTPStatus
from .events import (
    WORKERS, Delta, Event, EventSink, Failed, Finished, Queued, RunEnded, RunStarted, Started, Thinking)
from .gates import Gate, Priority, ServerLoad, gate_for
from .redact import Redactor, valid_unicode
from .slots import SlotStore, close_store, open_store
from .result import AgentResult, RunResult

if TYPE_CHECKING:
    from .backends.base import Completion
    from .config import Agent, Fleet
    from .history import History, HistoryWriter

Job = tuple["Agent", list[Message]]

_run_numbers = itertools.count()
"Runs are numbered in the order they start, across every client in the process: the gates serve earlier runs first."


def client_session() -> aiohttp.ClientSession:
    """The HTTP client: no timeouts of its own (each agent has its own) and no global connection cap (each
    server's slots are the cap)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))


class FleetClient:
    """The fleet's connections and slots, for as many runs as you like (concurrent or one after another)."""

    def __init__(self, config: ConfigLike, *, history: "bool | History" = False) -> None:
        self.fleet = as_fleet(config)
        self._history = history
        self._owned_store: "History | None" = None
        self._writer: "HistoryWriter | None" = None
        self._session: aiohttp.ClientSession | None = None
        self._gates: dict[str, Gate] = {}
        self._store: SlotStore | None = None
        self._subscribers: list[EventSink] = []
        self.running: dict[str, RunStarted] = {}
        "The runs in progress, by run id."
        self.think_refused: set[tuple[str, str]] = set()
        "(endpoint, model) pairs whose server refused the `think` field: sent without it from then on."

    async def __aenter__(self) -> "FleetClient":
        if self._history is not False:  # first: a HistoryError here leaves nothing open
            from .history import History, HistoryWriter

            store = self._owned_store = History() if self._history is True else None
            self._writer = HistoryWriter(store or self._history)  # type: ignore[arg-type]
            self.subscribe(self._writer)
        try:
            self._store = await open_store(self.fleet.slot_store)
        except BaseException:
            await self.__aexit__()
            raise
        self._session = client_session()
        self._gates = {url: gate_for(url, server.parallel, self._store) for url, server in self.fleet.servers.items()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gates = {}
        store, self._store = self._store, None
        await close_store(store)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owned_store is not None:
            self._owned_store.close()
            self._owned_store = None

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Send every run's events to `sink` from now on; call the returned function to stop."""
        self._subscribers.append(sink)
        return lambda: self._subscribers.remove(sink)

    def load(self) -> dict[str, ServerLoad]:
        """Per server: slots, requests in flight and requests waiting (across every process sharing the slots)."""
        return {url: gate.load() for url, gate in self._gates.items()}

    async def run(self, prompt: str, *, deadline: float | None = None, review: bool = True,
                  strategy: str | None = None, on_event: EventSink | None = None, seed: int | None = None,
                  run_id: str | None = None, context: Sequence[Message] | None = None) -> RunResult:
        """Run every worker on `prompt` (within the servers' slots), `rounds` times when the config asks, then
        review the answers with the strategy. `deadline` bounds the whole run, in seconds. `context`: the earlier
        turns of a conversation that `prompt` continues (`system`, `user`, `assistant` messages, oldest first);
        the workers get them as messages, the reviewers and later rounds read them with the task."""
        from .flow import orchestrate

        strategy = strategy or self.fleet.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        prompt, undecodable = valid_unicode(prompt)
        run = self._open_run(on_event, run_id)
        context = tuple(context or ())
        started = RunStarted(run.id, prompt, self.fleet, strategy if review and self.fleet.reviewers else None,
                             context)
        self.running[run.id] = started
        run.emit(started)
        try:
            result = await orchestrate(run, self.fleet, prompt, deadline=deadline, review=review, strategy=strategy,
                                       rng=random.Random(seed), context=context)
        except BaseException:
            run.emit(RunEnded(run.id, None))
            raise
        finally:
            del self.running[run.id]
        warnings = result.warnings
        if undecodable:
            warnings = [f"the prompt had {undecodable} undecodable byte(s) (not UTF-8); each was sent as U+FFFD �",
                        *warnings]
        result = replace(result, prompt=run.redact(prompt), warnings=warnings,
                         history_id=run.id if self._writer is not None else None)
        run.emit(RunEnded(run.id, result))
        if self._writer is not None and self._writer.error is not None:
            # History stopped during (or before) this run: say so in its result, and do not point at a partial row.
            result = replace(result, history_id=None, warnings=[*result.warnings, str(self._writer.error)])
        return result

    async def run_workers(self, prompt: str, *, sequential: bool = False, on_event: EventSink | None = None,
                          agents: "tuple[Agent, ...] | None" = None) -> list[AgentResult]:
        """Only the workers (or `agents`): all at once within each server's slots (as `run` does), or strictly one
        at a time."""
        from .flow import worker_messages

        prompt = valid_unicode(prompt)[0]
        run = self._open_run(on_event, None, agents or ())
        jobs = [(agent, worker_messages(agent, prompt)) for agent in (agents or self.fleet.workers)]
        if not sequential:
            return await run.ask(WORKERS, jobs, None)
        results: list[AgentResult] = []
        for job in jobs:
            results += await run.ask(WORKERS, [job], None)
        return results

    # ------------------------------------------------------------ inside a run

    def _open_run(self, on_event: EventSink | None, run_id: str | None, agents: "tuple[Agent, ...]" = ()) -> "Run":
        if self._session is None:
            raise RuntimeError("use the client as `async with FleetClient(...) as client:`")
        sinks = [s for s in (on_event, *self._subscribers) if s is not None]
        if not sinks:
            emit: EventSink | None = None
        elif len(sinks) == 1:
            emit = sinks[0]
        else:
            def emit(event: Event) -> None:
                for sink in sinks:
                    sink(event)
        redact = Redactor.for_agents(self.fleet.agents + agents)  # keys as the environment holds them now
        return Run(self, run_id or uuid.uuid4().hex[:12], next(_run_numbers), emit, redact)

    def _gate(self, server: str) -> Gate:
        gate = self._gates.get(server)
        if gate is None:  # an agent on a server the fleet did not list (built by code): one slot
            gate = self._gates[server] = gate_for(server, 1, self._store)
        return gate

    async def _ask(self, run: "Run", stage: str, jobs: list[Job], until: float | None) -> list[AgentResult]:
        now = time.perf_counter()
        calls = [_Call(run, stage, agent, messages, now) for agent, messages in jobs]
        if run.listening:
            for call in calls:
                run.emit(Queued(run.id, stage, call.agent))
        tasks = [asyncio.create_task(self._send(call)) for call in calls]
        try:
            timeout = None if until is None else max(0.0, until - time.perf_counter())
            done, _ = await asyncio.wait(tasks, timeout=timeout)
            for task in done:
                task.result()  # a request only raises on a bug: let it show
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for call in calls:
            if call.result is None:
                call.fail(AgentTimeout("the run's deadline was reached before the answer was complete",
                                       agent=call.agent.name, url=call.agent.endpoint))
        return [call.result for call in calls]  # type: ignore[misc]

    async def _send(self, call: "_Call") -> None:
        gate = self._gate(call.agent.server)
        await gate.acquire(call.priority)
        try:
            await call.send(self._session)  # type: ignore[arg-type]
        finally:
            gate.release()


class Run:
    """One run's handle on its client: its id, its place in the gates' order, where its events go, and what
    must be masked in what it reports."""

    __slots__ = ("client", "id", "number", "emit", "listening", "warnings", "redact", "_order")

    def __init__(self, client: FleetClient, run_id: str, number: int, emit: EventSink | None,
                 redact: Redactor) -> None:
        self.client = client
        self.id = run_id
        self.number = number
        self.emit: EventSink = emit or _ignore
        self.listening = emit is not None
        self.warnings: list[str] = []
        "What went wrong but was worked around during the run (say, a setting a server refused)."
        self.redact = redact
        "Masks the fleet's keys and URL passwords: every AgentResult is built through it."
        self._order = itertools.count()

    def priority(self) -> Priority:
        """The next request's place: after every request of earlier runs and earlier in this run."""
        return (self.number, next(self._order))

    async def ask(self, stage: str, jobs: list[Job], until: float | None) -> list[AgentResult]:
        """Send `jobs` (agent, messages) through the gates, all at once; each result in job order. Never raises
        for a failed request: it becomes a failed result (and a `Failed` event)."""
        return await self.client._ask(self, stage, jobs, until)


class _Call:
    """One agent's request while it is queued or in flight."""

    __slots__ = ("run", "stage", "agent", "messages", "priority", "queued_at", "sent_at", "first_at", "parts",
                 "thoughts", "result")

    def __init__(self, run: Run, stage: str, agent: "Agent", messages: list[Message], queued_at: float) -> None:
        self.run = run
        self.stage = stage
        self.agent = agent
        self.messages = messages
        self.priority = run.priority()
        self.queued_at = queued_at
        self.sent_at: float | None = None
        self.first_at: float | None = None
        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self.result: AgentResult | None = None

    async def send(self, session: aiohttp.ClientSession) -> None:
        agent, run = self.agent, self.run
        self.sent_at = sent = time.perf_counter()
        emit, listening, parts = run.emit, run.listening, self.parts
        if listening:
            emit(Started(run.id, self.stage, agent, round(sent - self.queued_at, 3)))

        def on_delta(text: str) -> None:  # the hot loop: one call per streamed chunk
            if self.first_at is None:
                self.first_at = time.perf_counter()
            parts.append(text)
            if listening:
                emit(Delta(run.id, self.stage, agent, text))

        def on_thinking(text: str) -> None:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            self.thoughts.append(text)
            if listening:
                emit(Thinking(run.id, self.stage, agent, text))

        try:
            completion = await asyncio.wait_for(self._chat(session, on_delta, on_thinking), agent.timeout)
        except asyncio.TimeoutError:
            self.fail(AgentTimeout(f"no complete answer within its timeout of {agent.timeout:g} s",
                                   agent=agent.name, url=agent.endpoint))
            return
        except BackendError as exc:
            self.fail(exc)
            return
        if not completion.text.strip():
            self.fail(BackendError("the model returned an empty answer", agent=agent.name, url=agent.endpoint))
            return
        self.result = self._result("ok", completion=completion)
        emit(Finished(run.id, self.stage, agent, self.result))

    async def _chat(self, session: aiohttp.ClientSession, on_delta: Callable[[str], None],
                    on_thinking: Callable[[str], None]) -> "Completion":
        """The request; a server that refuses the `think` field gets it again without, and the run says so."""
        agent, client = self.agent, self.run.client
        backend = backend_for(agent.protocol)
        refused = (agent.endpoint, agent.model) in client.think_refused
        if agent.think is not None and not refused:
            try:
                return await backend.chat(session, agent, self.messages, on_delta, on_thinking)
            except HTTPStatus as exc:
                if not 400 <= exc.status_code < 500 or exc.status_code in (401, 403, 404, 429) or self.parts:
                    raise
                client.think_refused.add((agent.endpoint, agent.model))
                self.run.warnings.append(f"{agent.name} ({agent.endpoint}) refused the thinking setting "
                                         f"(think: {agent.think!r}; {exc.cause}); asked again without it")
        plain = replace(agent, think=None) if agent.think is not None else agent
        return await backend.chat(session, plain, self.messages, on_delta, on_thinking)

    def fail(self, error: BackendError) -> None:
        self.result = self._result(error.status, error=error)
        self.run.emit(Failed(self.run.id, self.stage, self.agent, self.result))

    def _result(self, status: str, *, completion: "Completion | None" = None,
                error: BackendError | None = None) -> AgentResult:
        agent = self.agent
        ended = time.perf_counter()
        sent = self.sent_at
        # Once per answer, not per chunk: what a server streams or says is cleaned here for everything downstream
        # (views, JSON, history, reviewers' prompts): no key or URL password, no lone surrogate.
        redact = self.run.redact
        text = redact(valid_unicode(completion.text if completion else "".join(self.parts))[0])
        tokens = completion.completion_tokens if completion else (len(self.parts) or None)
        thinking = redact(valid_unicode(completion.thinking if completion else "".join(self.thoughts))[0])
        thinking_tokens = completion.thinking_tokens if completion else (len(self.thoughts) or None)
        generated = (tokens or 0) + (thinking_tokens or 0)  # the rate counts every token the model produced
        tokens_per_s = None
        if completion and completion.generation_s and generated:
            tokens_per_s = generated / completion.generation_s
        elif generated and self.first_at is not None and ended > self.first_at:
            tokens_per_s = generated / (ended - self.first_at)
        return AgentResult(
            name=agent.name, model=agent.model, api_url=agent.api_url, protocol=agent.protocol,
            status=status, content=text,  # type: ignore[arg-type]
            error=redact(valid_unicode(str(error))[0]) if error else None, error_kind=error.kind if error else None,
            queued_s=round((sent if sent is not None else ended) - self.queued_at, 3),
            elapsed_s=round(ended - sent, 3) if sent is not None else 0.0,
            ttft_s=round(self.first_at - sent, 3) if self.first_at is not None and sent is not None else None,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=tokens,
            tokens_per_s=round(tokens_per_s, 2) if tokens_per_s else None,
            stage=self.stage,
            thinking=thinking or None,
            thinking_tokens=thinking_tokens,
        )


def _ignore(event: Any) -> None:
    return None
