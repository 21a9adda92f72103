"""Requests through the gates, below the stages of a run: what every run of one client shares (its HTTP session,
one gate per server, the `think` settings servers refused), a run's handle on them (`Run`), and each agent's
request while it is queued or in flight (`_Call`, whose `send` is the hot loop: one call per streamed chunk).

A request waits at its server's gate (`queued_s`), then its timeout starts as it is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import aiohttp

from .backends import Message, Tool, backend_for
from .cutoff import CUT, Cutoff, earliest
from .errors import AgentTimeout, BackendError, HTTPStatus
from .events import Cut, Delta, EventSink, Failed, Finished, Queued, Started, Thinking
from .gates import Gate, Priority, gate_for
from .pools import Hedging, retryable, send_pooled
from .redact import Redactor, valid_unicode
from .result import AgentResult

if TYPE_CHECKING:
    from .backends.base import Completion
    from .fleet import Agent, Replica
    from .slots import SlotStore

Job = tuple["Agent", list[Message]]
"An agent and the messages to send it."

_run_numbers = itertools.count()
"Runs are numbered in the order they start, across every client in the process: the gates serve earlier runs first."


def client_session() -> aiohttp.ClientSession:
    """The HTTP client: no timeouts of its own (each agent has its own) and no global connection cap (each
    server's slots are the cap)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None))


class Transport:
    """What every run of one client sends through: the HTTP session, one gate per server (with its slots in
    `store`, when shared beyond this process), and the (endpoint, model) pairs whose server refused the `think`
    field (sent without it from then on)."""

    __slots__ = ("session", "gates", "store", "think_refused")

    def __init__(self, session: aiohttp.ClientSession, gates: dict[str, Gate], store: "SlotStore | None") -> None:
        self.session = session
        self.gates = gates
        self.store = store
        self.think_refused: set[tuple[str, str]] = set()

    def gate(self, server: str) -> Gate:
        gate = self.gates.get(server)
        if gate is None:  # an agent on a server the fleet did not list (built by code): one slot
            gate = self.gates[server] = gate_for(server, 1, self.store)
        return gate

    async def send(self, call: "_Call") -> None:
        """`call` once its server's gate lets it through (a pool's: a replica's); the slot is freed however it
        ends."""
        if call.agent.pooled:
            await send_pooled(self.session, self.gate, call)
            return
        gate = self.gate(call.agent.server)
        await gate.acquire(call.priority)
        try:
            await call.send(self.session)
        finally:
            gate.release()


class Run:
    """One run's handle on its client's transport: its id, its place in the gates' order, where its events go,
    and what must be masked in what it reports."""

    __slots__ = ("transport", "id", "number", "emit", "listening", "warnings", "redact", "tools", "_order")

    def __init__(self, transport: Transport, run_id: str, emit: EventSink | None, redact: Redactor,
                 number: int | None = None) -> None:
        self.transport = transport
        self.id = run_id
        self.number = next(_run_numbers) if number is None else number
        "The run's place in the gates' order (`number`: share an earlier run's, as a part of it)."
        self.emit: EventSink = emit or _ignore
        self.listening = emit is not None
        self.warnings: list[str] = []
        "What went wrong but was worked around during the run (say, a setting a server refused)."
        self.redact = redact
        "Masks the fleet's keys and URL passwords: every AgentResult is built through it."
        self.tools: tuple[Tool, ...] = ()
        "Tools the caller offers: the step that writes the reply (a writing reviewer) gets them."
        self._order = itertools.count()

    def priority(self) -> Priority:
        """The next request's place: after every request of earlier runs and earlier in this run."""
        return (self.number, next(self._order))

    async def ask(self, stage: str, jobs: list[Job], until: float | None,
                  tools: Sequence[Tool] = (), cutoffs: Sequence[Cutoff] = (),
                  logprobs: int | None = None) -> list[AgentResult]:
        """Send `jobs` (agent, messages) through the gates, all at once; each result in job order. Never raises
        for a failed request: it becomes a failed result (and a `Failed` event). `tools`: offered to each agent,
        whose answer may then be tool calls instead of text. With `cutoffs` (a quorum, a vote's early stop), the
        requests still running when one of them says so are closed and marked `cut`, except those of `required`
        agents. `logprobs`: ask each server for the tokens' logprobs (0: each token's own; N: also its N likeliest
        rivals), found in each result's `logprobs` (None where a server ignores the field)."""
        now = time.perf_counter()
        calls = [_Call(self, stage, agent, messages, now, tools, logprobs) for agent, messages in jobs]
        if self.listening:
            for call in calls:
                self.emit(Queued(self.id, stage, call.agent))
        tasks = [asyncio.create_task(self.transport.send(call)) for call in calls]
        try:
            await self._wait(calls, tasks, until, cutoffs)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for call in calls:
            if call.result is None:
                call.fail(AgentTimeout("the run's deadline was reached before the answer was complete",
                                       agent=call.agent.name, url=call.agent.endpoint))
        return [call.result for call in calls]  # type: ignore[misc]

    async def _wait(self, calls: list["_Call"], tasks: list[asyncio.Task[None]], until: float | None,
                    cutoffs: Sequence[Cutoff]) -> None:
        """Until every request ended, the deadline passed, or a cutoff closed the ones still running."""
        pending = set(tasks)
        cut_at: float | None = None
        total = len(calls)
        while pending:
            now = time.perf_counter()
            ends = [t for t in (until, cut_at) if t is not None]
            timeout = max(0.0, min(ends) - now) if ends else None
            done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a request only raises on a bug: let it show
            now = time.perf_counter()
            if until is not None and now >= until:
                return
            if not cutoffs or not pending:
                continue
            answers = sorted((c.result for c in calls if c.result is not None and c.result.ok),
                             key=lambda r: r.queued_s + r.elapsed_s)
            running = sum(1 for c in calls if c.result is None)
            if done:
                found = earliest(cutoffs, answers, running, total, now)
                if found is not None and (cut_at is None or found[0] < cut_at):
                    cut_at = found[0]
            if cut_at is None or now < cut_at:
                continue
            found = earliest(cutoffs, answers, running, total, now)
            reason = found[1] if found else "cut"
            cut = [(call, task) for call, task in zip(calls, tasks)
                   if call.result is None and not call.agent.required and not task.done()]
            for _, task in cut:
                task.cancel()  # closes its connection; the gate hands its slot on
            await asyncio.gather(*(task for _, task in cut), return_exceptions=True)
            for call, task in cut:
                if call.result is None:
                    call.cut(reason)
                pending.discard(task)
            cut_at = None
            cutoffs = ()  # what is left is required: waited for

class _Call:
    """One agent's request while it is queued or in flight."""

    __slots__ = ("run", "stage", "agent", "messages", "tools", "logprobs", "priority", "queued_at", "sent_at",
                 "first_at", "parts", "thoughts", "result", "sent_to")

    def __init__(self, run: Run, stage: str, agent: "Agent", messages: list[Message], queued_at: float,
                 tools: Sequence[Tool] = (), logprobs: int | None = None) -> None:
        self.run = run
        self.stage = stage
        self.agent = agent
        self.messages = messages
        self.tools = tools
        self.logprobs = logprobs
        self.priority = run.priority()
        self.queued_at = queued_at
        self.sent_at: float | None = None
        self.first_at: float | None = None
        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self.result: AgentResult | None = None
        self.sent_to: "Agent | None" = None
        "The agent as sent: on the replica of its pool that took the request."

    def note(self, line: str) -> None:
        """Something the run worked around (a replica benched), said once in its warnings."""
        self.run.warnings.append(f"{self.agent.name}: {line}")

    async def send(self, session: aiohttp.ClientSession, replica: "Replica | None" = None,
                   may_retry: bool = False, hedging: "Hedging | None" = None) -> BackendError | None:
        """Send the request (to `replica` of the agent's pool, when given) and record its result. With
        `may_retry`, a failure the replica is to blame for before the first token is returned instead (nothing
        recorded: the request may go to another replica). `hedging`: a late first token may bring a copy on another
        replica; the first to answer is the answer."""
        run = self.run
        agent = self.sent_to = self.agent if replica is None else self.agent.on(replica)
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
            if hedging is None:
                chat = self._chat(session, agent, on_delta, on_thinking)
            else:
                chat = hedging.chat(lambda on, delta, think: self._chat(session, on, delta, think), on_delta, on_thinking)
            completion = await asyncio.wait_for(chat, agent.timeout)
        except asyncio.TimeoutError:
            self.fail(AgentTimeout(f"no complete answer within its timeout of {agent.timeout:g} s",
                                   agent=agent.name, url=agent.endpoint))
            return None
        except BackendError as exc:
            if may_retry and self.first_at is None and retryable(exc):
                return exc
            self.fail(exc)
            return None
        if not completion.text.strip() and not completion.tool_calls:
            self.fail(BackendError("the model returned an empty answer", agent=agent.name, url=agent.endpoint))
            return None
        self.result = self._result("ok", completion=completion)
        emit(Finished(run.id, self.stage, self.agent, self.result))
        return None

    async def _chat(self, session: aiohttp.ClientSession, agent: "Agent", on_delta: Callable[[str], None],
                    on_thinking: Callable[[str], None]) -> "Completion":
        """The request; a server that refuses the `think` field gets it again without, and the run says so."""
        refused_by = self.run.transport.think_refused
        backend = backend_for(agent.protocol)
        refused = (agent.endpoint, agent.model) in refused_by
        if agent.think is not None and not refused:
            try:
                return await backend.chat(session, agent, self.messages, on_delta, on_thinking, tools=self.tools,
                                          logprobs=self.logprobs)
            except HTTPStatus as exc:
                if not 400 <= exc.status_code < 500 or exc.status_code in (401, 403, 404, 429) or self.parts:
                    raise
                refused_by.add((agent.endpoint, agent.model))
                self.run.warnings.append(f"{agent.name} ({agent.endpoint}) refused the thinking setting "
                                         f"(think: {agent.think!r}; {exc.cause}); asked again without it")
        plain = replace(agent, think=None) if agent.think is not None else agent
        return await backend.chat(session, plain, self.messages, on_delta, on_thinking, tools=self.tools,
                                  logprobs=self.logprobs)

    def fail(self, error: BackendError) -> None:
        self.result = self._result(error.status, error=error)
        self.run.emit(Failed(self.run.id, self.stage, self.agent, self.result))

    def cut(self, reason: str) -> None:
        """Closed by a cutoff: what had arrived is kept, and the result says why it stopped."""
        self.result = self._result(CUT, reason=reason)
        self.run.emit(Cut(self.run.id, self.stage, self.agent, self.result))

    def _result(self, status: str, *, completion: "Completion | None" = None,
                error: BackendError | None = None, reason: str | None = None) -> AgentResult:
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
        sent_to = self.sent_to or agent
        return AgentResult(
            name=agent.name, model=agent.model, api_url=sent_to.api_url, protocol=agent.protocol,
            status=status, content=text,  # type: ignore[arg-type]
            error=redact(valid_unicode(str(error))[0]) if error else reason,
            error_kind=error.kind if error else (CUT if reason else None),
            queued_s=round((sent if sent is not None else ended) - self.queued_at, 3),
            elapsed_s=round(ended - sent, 3) if sent is not None else 0.0,
            ttft_s=round(self.first_at - sent, 3) if self.first_at is not None and sent is not None else None,
            prompt_tokens=completion.prompt_tokens if completion else None,
            completion_tokens=tokens,
            tokens_per_s=round(tokens_per_s, 2) if tokens_per_s else None,
            stage=self.stage,
            thinking=thinking or None,
            thinking_tokens=thinking_tokens,
            tool_calls=tuple(call.cleaned(redact) for call in completion.tool_calls) if completion else (),
            logprobs=completion.logprobs if completion else None,
        )


def _ignore(_event: Any) -> None:
    return None
