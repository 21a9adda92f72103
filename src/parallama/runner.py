"""The orchestrator: workers fan out under each server's slot limit, then the reviewer merges their answers."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Mapping

import aiohttp

from .backends import Message, backend_for
from .backends.base import Completion
from .config import Agent, Fleet, fleet_from_dict, load_config
from .config import STRATEGIES
from .errors import AgentTimeout, BackendError, UsageError
from .events import Delta, Event, EventSink, Failed, Finished, Queued, Started
from .result import AgentResult, RunResult
from .review import ReviewOutcome
from .review import review as review_answers
from .review.synthesize import refine_messages

if TYPE_CHECKING:
    from .history import History

ConfigLike = Fleet | str | os.PathLike | Mapping[str, Any]


async def run(
    prompt: str,
    config: ConfigLike,
    *,
    deadline: float | None = None,
    review: bool = True,
    strategy: str | None = None,
    on_event: EventSink | None = None,
    history: "bool | History" = False,
    seed: int | None = None,
) -> RunResult:
    """Run every worker on `prompt` in parallel (within server slots), `rounds` times when the config asks, then
    review the answers with the strategy; return the result. `history=True` keeps the run in the history db."""
    fleet = as_fleet(config)
    strategy = strategy or fleet.strategy
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    started = time.perf_counter()
    until = started + deadline if deadline is not None else None
    recorder, store = _recorder(history, prompt, fleet, strategy)
    def recording(event: Event) -> None:
        if on_event is not None:
            on_event(event)
        if isinstance(event, (Finished, Failed)):
            recorder.agent_done(event.result, event.agent.role)

    sink = recording if recorder is not None else on_event
    try:
        async with client_session() as session:
            stage = _Stage(fleet, session, sink)
            workers = await stage.run([(a, worker_messages(a, prompt)) for a in fleet.workers], until)
            rounds = [workers]
            for k in range(2, fleet.rounds + 1):
                previous = [w for w in rounds[-1] if w.ok]
                if not previous:
                    break
                if recorder:
                    recorder.stage = f"round {k}"
                rounds.append(await stage.run(
                    [(a, refine_messages(prompt, previous, a.system)) for a in fleet.workers], until))
            workers = rounds[-1]
            answers = [w for w in workers if w.ok]
            if not answers and len(rounds) > 1:
                answers = [w for w in rounds[-2] if w.ok]  # the last round failed entirely: review the one before
            outcome = ReviewOutcome()
            if review and fleet.reviewers and answers:
                if recorder:
                    recorder.stage = "review"
                outcome = await review_answers(strategy, stage, fleet, prompt, answers, until,
                                               random.Random(seed))
        result = RunResult(
            prompt=prompt, workers=workers, review=outcome.review, final=outcome.final,
            final_source=outcome.final_source, wall_s=round(time.perf_counter() - started, 3),
            warnings=list(fleet.warnings) + outcome.warnings, strategy=strategy if review and fleet.reviewers else None,
            earlier_rounds=rounds[:-1], review_attempts=outcome.attempts, scores=outcome.scores,
            rankings=outcome.rankings, ranking=outcome.ranking, history_id=recorder.id if recorder else None)
        if recorder:
            recorder.finish(result)
        return result
    except BaseException:
        if recorder:
            recorder.interrupted()
        raise
    finally:
        if store is not None and history is True:
            store.close()


def _recorder(history: "bool | History", prompt: str, fleet: Fleet, strategy: str):
    if history is False:
        return None, None
    from .history import History

    store = History() if history is True else history
    return store.start(prompt, fleet, strategy), store


def client_session() -> aiohttp.ClientSession:
    """One HTTP client for a run: no timeouts of its own (each agent has its own) and no global connection cap
    (each server's slots are the cap)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))


async def run_workers(
    prompt: str, config: ConfigLike, *, sequential: bool = False, on_event: EventSink | None = None
) -> list[AgentResult]:
    """Only the workers: all at once within each server's slots (as `run` does), or strictly one at a time."""
    fleet = as_fleet(config)
    async with client_session() as session:
        stage = _Stage(fleet, session, on_event)
        jobs = [(agent, worker_messages(agent, prompt)) for agent in fleet.workers]
        if not sequential:
            return await stage.run(jobs, None)
        results: list[AgentResult] = []
        for job in jobs:
            results += await stage.run([job], None)
        return results


def run_sync(prompt: str, config: ConfigLike, **kwargs: Any) -> RunResult:
    """Blocking twin of `run` for scripts."""
    return asyncio.run(run(prompt, config, **kwargs))


def as_fleet(config: ConfigLike) -> Fleet:
    if isinstance(config, Fleet):
        return config
    if isinstance(config, Mapping):
        return fleet_from_dict(dict(config))
    return load_config(config)


def worker_messages(agent: Agent, prompt: str) -> list[Message]:
    messages: list[Message] = []
    if agent.system:
        messages.append({"role": "system", "content": agent.system})
    messages.append({"role": "user", "content": prompt})
    return messages


class _Call:
    """One agent's request while it is queued or in flight."""

    __slots__ = ("agent", "messages", "queued_at", "sent_at", "first_at", "parts", "result")

    def __init__(self, agent: Agent, messages: list[Message], queued_at: float) -> None:
        self.agent = agent
        self.messages = messages
        self.queued_at = queued_at
        self.sent_at: float | None = None
        self.first_at: float | None = None
        self.parts: list[str] = []
        self.result: AgentResult | None = None


class _Stage:
    """Runs a batch of agent requests: per server, `parallel` lanes take requests in config order."""

    def __init__(self, fleet: Fleet, session: aiohttp.ClientSession, on_event: EventSink | None) -> None:
        self.fleet = fleet
        self.session = session
        self.emit = on_event or _ignore

    async def run(self, jobs: list[tuple[Agent, list[Message]]], until: float | None) -> list[AgentResult]:
        now = time.perf_counter()
        calls = [_Call(agent, messages, now) for agent, messages in jobs]
        queues: dict[str, deque[_Call]] = {}
        for call in calls:
            queues.setdefault(call.agent.server, deque()).append(call)
            self.emit(Queued(call.agent))
        lanes = [
            asyncio.create_task(self._lane(queue))
            for server, queue in queues.items()
            for _ in range(min(self.fleet.servers[server].parallel, len(queue)))
        ]
        try:
            timeout = None if until is None else max(0.0, until - time.perf_counter())
            done, _ = await asyncio.wait(lanes, timeout=timeout)
            for task in done:
                task.result()  # a lane only raises on a bug: let it show
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        for call in calls:
            if call.result is None:
                self._fail(call, AgentTimeout("the run's deadline was reached before the answer was complete"))
        return [call.result for call in calls]  # type: ignore[misc]

    async def _lane(self, queue: deque[_Call]) -> None:
        while queue:
            await self._send(queue.popleft())

    async def _send(self, call: _Call) -> None:
        agent = call.agent
        call.sent_at = sent = time.perf_counter()
        self.emit(Started(agent, round(sent - call.queued_at, 3)))
        parts, emit = call.parts, self.emit
        listening = emit is not _ignore

        def on_delta(text: str) -> None:
            if call.first_at is None:
                call.first_at = time.perf_counter()
            parts.append(text)
            if listening:
                emit(Delta(agent, text))

        backend = backend_for(agent.protocol)
        try:
            completion = await asyncio.wait_for(backend.chat(self.session, agent, call.messages, on_delta), agent.timeout)
        except asyncio.TimeoutError:
            self._fail(call, AgentTimeout(f"no complete answer within its timeout of {agent.timeout:g} s"))
            return
        except BackendError as exc:
            self._fail(call, exc)
            return
        if not completion.text.strip():
            self._fail(call, BackendError("the model returned an empty answer"))
            return
        call.result = self._result(call, "ok", completion=completion)
        self.emit(Finished(agent, call.result))

    def _fail(self, call: _Call, error: BackendError) -> None:
        error.agent, error.url = error.agent or call.agent.name, error.url or call.agent.endpoint
        call.result = self._result(call, error.status, error=error)
        self.emit(Failed(call.agent, call.result))

    @staticmethod
    def _result(
        call: _Call, status: str, *, completion: Completion | None = None, error: BackendError | None = None
    ) -> AgentResult:
        agent = call.agent
        ended = time.perf_counter()
        sent = call.sent_at
        text = completion.text if completion else "".join(call.parts)
        tokens = completion.completion_tokens if completion else (len(call.parts) or None)
        tokens_per_s = None
        if completion and completion.generation_s and tokens:
            tokens_per_s = tokens / completion.generation_s
        elif tokens and call.first_at is not None and ended > call.first_at:
            tokens_per_s = tokens / (ended - call.first_at)
        return AgentResult(
            name=agent.name, model=agent.model, api_url=agent.api_url, protocol=agent.protocol,
            status=status, content=text,  # type: ignore[arg-type]
            error=str(error) if error else None, error_kind=error.kind if error else None,
            queued_s=round((sent if sent is not None else ended) - call.queued_at, 3),
            elapsed_s=round(ended - sent, 3) if sent is not None else 0.0,
            ttft_s=round(call.first_at - sent, 3) if call.first_at is not None and sent is not None else None,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=tokens,
            tokens_per_s=round(tokens_per_s, 2) if tokens_per_s else None,
        )


def _ignore(event: object) -> None:
    return None
