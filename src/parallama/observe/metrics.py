"""Prometheus metrics of a fleet's runs, in the names dashboards for LiteLLM and vLLM already chart (the README's
table maps each): per server its slots, requests in flight and waiting, slot-seconds used and the slot wait; per
agent its requests by outcome, time to first token, duration and tokens; per strategy its runs by outcome.

    metrics = FleetMetrics()
    unwatch = metrics.watch(client)        # subscribes to the client's events; the gauges read client.load()
    text, content_type = metrics.exposition(accept_header)

Each `FleetMetrics` has its own registry (never the process-wide default), so tests, several services and
several clients in one process do not collide. Labels stay few and bounded: server (its public
`scheme://host:port`), agent, model, strategy, outcome, error kind; never a prompt, an answer or a key.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..events import Cut, Event, Failed, Finished, Queued, RunEnded, RunStarted, Started
from ..pools import known_health, known_pools
from ..review import REGISTRY

if TYPE_CHECKING:
    from ..client import FleetClient
    from ..fleet import Agent
    from ..gates import ServerLoad
    from ..result import RunResult

NO_STRATEGY = "none"
"The strategy label of a run whose answers were not reviewed."

SLOT_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"Few buckets: each is a series on every scrape (vLLM and LiteLLM use 10 to 20 per histogram)."

OUTCOMES = {"ok": "done", "error": "failed", "timeout": "timeout", "cut": "cut"}
"A request's outcome label, from its result's status; `stopped` when its run ended before it did."


def run_outcome(result: "RunResult | None", stopped: bool) -> str:
    """`answered`, `no_answer`, `stopped` (at the user's word) or `interrupted` (cancelled, the client left)."""
    if result is None:
        return "stopped" if stopped else "interrupted"
    return "answered" if result.answered else "no_answer"


def settled_early(result: "RunResult") -> bool:
    """A strategy that stops early (vote) picked its answer while workers still ran: they were cut for it."""
    strategy = REGISTRY.get(result.strategy) if result.strategy else None
    return (strategy is not None and strategy.cutoff() is not None and result.final_source == strategy.name
            and result.partial)


def fell_back(result: "RunResult") -> bool:
    """Every reviewer failed, and the reply is a worker's answer."""
    return result.final_source is not None and result.final_source.kind == "worker" and result.review is not None


class FleetMetrics:
    """The metrics of every run of the clients it watches: an event sink (`watch` subscribes it) and a registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._loads: list[Callable[[], "dict[str, ServerLoad]"]] = []
        self._running: list[Callable[[], int]] = []
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._open: dict[str, list[tuple[str, "Agent"]]] = {}
        "Per run: its requests queued or in flight, as (stage, agent); those left at its end were stopped."
        self._framed: dict[str, str] = {}
        "Runs that began with `RunStarted` (their `RunEnded` closes them), and their strategy labels (empty: not a run"
        " that is counted as one)."
        registry = self.registry
        self.slot_wait = Histogram(
            "parallama_server_slot_wait_seconds", "Seconds a request waited for a slot on its server before it was "
            "sent.", ["server"], registry=registry, buckets=SLOT_WAIT_BUCKETS)
        self.requests = Counter(
            "parallama_agent_requests", "Agent requests that ended, by outcome (done, failed, timeout, cut, "
            "stopped) and, for failed ones, the kind of error.", ["agent", "model", "outcome", "error_kind"],
            registry=registry)
        self.ttft = Histogram(
            "parallama_agent_time_to_first_token_seconds", "Seconds from sending an answered request to its first "
            "token (of thinking or answer).", ["agent", "model"], registry=registry, buckets=TTFT_BUCKETS)
        self.duration = Histogram(
            "parallama_agent_request_duration_seconds", "Seconds from sending an answered request to its last token.",
            ["agent", "model"], registry=registry, buckets=DURATION_BUCKETS)
        self.input_tokens = Counter(
            "parallama_agent_input_tokens", "Prompt tokens the agents' servers reported.", ["agent", "model"],
            registry=registry)
        self.output_tokens = Counter(
            "parallama_agent_output_tokens", "Tokens the agents produced (answer and thinking).", ["agent", "model"],
            registry=registry)
        self.runs = Counter(
            "parallama_runs", "Runs that ended, by strategy and outcome (answered, no_answer, stopped, interrupted).",
            ["strategy", "outcome"], registry=registry)
        self.partial = Counter(
            "parallama_runs_partial", "Runs answered without some workers, cut by a quorum or a settled vote.",
            ["strategy"], registry=registry)
        self.settled = Counter(
            "parallama_runs_settled_early", "Votes settled while workers still ran (those were cut).", ["strategy"],
            registry=registry)
        self.fallbacks = Counter(
            "parallama_runs_reviewer_fell_back", "Runs whose every reviewer failed, answered with a worker's answer.",
            ["strategy"], registry=registry)
        self.run_duration = Histogram(
            "parallama_run_duration_seconds", "Seconds a run took, from its start to its final answer.", ["strategy"],
            registry=registry, buckets=DURATION_BUCKETS)
        registry.register(_LoadCollector(self))
        self._agents: dict[tuple[str, str], _AgentSeries] = {}
        self._waits: dict[str, Any] = {}
        "Each label set's series, looked up once (`labels()` takes a lock and builds a key each time)."
        self._handlers: dict[type, Callable[..., None]] = {
            Queued: self._queued, Started: self._started, Finished: self._ended, Failed: self._ended,
            Cut: self._ended, RunStarted: self._run_started, RunEnded: self._run_ended}

    # ---------------------------------------------------------------- attaching

    def watch(self, client: "FleetClient") -> Callable[[], None]:
        """Follow `client`: its events from now on, its servers' load and runs at each scrape. Returns the function
        that stops it."""
        unsubscribe = client.subscribe(self)
        load, running = client.load, (lambda: len(client.running))
        self._loads.append(load)
        self._running.append(running)
        loop = asyncio.get_running_loop()  # its pools' counts are kept per event loop
        self._loops.append(loop)

        def stop() -> None:
            unsubscribe()
            self._loads.remove(load)
            self._running.remove(running)
            self._loops.remove(loop)

        return stop

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The page to answer a scrape with, and its content type (OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # ---------------------------------------------------------------- the events

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))  # Delta and Thinking, the hot path, find nothing here
        if handler is not None:
            handler(event)

    def _queued(self, event: Queued) -> None:
        self._open.setdefault(event.run_id, []).append((event.stage, event.agent))

    def _started(self, event: Started) -> None:
        server = event.agent.server
        wait = self._waits.get(server)
        if wait is None:
            wait = self._waits[server] = self.slot_wait.labels(server)
        wait.observe(event.queued_s)

    def _series(self, agent: "Agent") -> "_AgentSeries":
        key = (agent.name, agent.model)
        series = self._agents.get(key)
        if series is None:
            series = self._agents[key] = _AgentSeries(self, *key)
        return series

    def _ended(self, event: Finished) -> None:
        agent, result = event.agent, event.result
        self._close(event.run_id, event.stage, agent)
        series = self._series(agent)
        outcome = OUTCOMES.get(result.status, "failed")
        series.ended(outcome, (result.error_kind or "error") if outcome == "failed" else "")
        if result.prompt_tokens:
            series.input_tokens.inc(result.prompt_tokens)
        produced = (result.completion_tokens or 0) + (result.thinking_tokens or 0)
        if produced:
            series.output_tokens.inc(produced)
        if outcome == "done":
            if result.ttft_s is not None:
                series.ttft.observe(result.ttft_s)
            series.duration.observe(result.elapsed_s)

    def _close(self, run_id: str, stage: str, agent: "Agent") -> None:
        requests = self._open.get(run_id)
        if requests is None:
            return
        for i, (open_stage, open_agent) in enumerate(requests):
            if open_agent is agent and open_stage == stage:
                del requests[i]
                break
        if not requests and run_id not in self._framed:
            del self._open[run_id]  # a request asked alone (no run around it) is over

    def _run_started(self, event: RunStarted) -> None:
        # Only a run (`FleetClient.run`) counts as one; the workers alone, an agent alone (serve's
        # `parallama/<agent>`) or a comparison frame their requests but are not a strategy's run.
        counted = event.kind == "run"
        self._framed[event.run_id] = (event.strategy or NO_STRATEGY) if counted else ""

    def _run_ended(self, event: RunEnded) -> None:
        began = self._framed.pop(event.run_id, NO_STRATEGY)
        for _, agent in self._open.pop(event.run_id, ()):
            self._series(agent).ended("stopped", "")
        if not began:
            return
        result = event.result
        strategy = (result.strategy or NO_STRATEGY) if result is not None else began
        self.runs.labels(strategy, run_outcome(result, event.stopped)).inc()
        if result is None:
            return
        self.run_duration.labels(strategy).observe(result.wall_s)
        if result.partial:
            self.partial.labels(strategy).inc()
        if settled_early(result):
            self.settled.labels(strategy).inc()
        if fell_back(result):
            self.fallbacks.labels(strategy).inc()


class _AgentSeries:
    """One agent's (and model's) series."""

    __slots__ = ("metrics", "labels", "outcomes", "ttft", "duration", "input_tokens", "output_tokens")

    def __init__(self, metrics: FleetMetrics, name: str, model: str) -> None:
        self.metrics = metrics
        self.labels = (name, model)
        self.outcomes: dict[tuple[str, str], Any] = {}
        self.ttft = metrics.ttft.labels(name, model)
        self.duration = metrics.duration.labels(name, model)
        self.input_tokens = metrics.input_tokens.labels(name, model)
        self.output_tokens = metrics.output_tokens.labels(name, model)

    def ended(self, outcome: str, kind: str) -> None:
        counter = self.outcomes.get((outcome, kind))
        if counter is None:
            counter = self.outcomes[(outcome, kind)] = self.metrics.requests.labels(*self.labels, outcome, kind)
        counter.inc()


class _LoadCollector(Collector):
    """The gauges read at each scrape from the watched clients' gates: what the servers hold right now."""

    def __init__(self, metrics: FleetMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        slots = GaugeMetricFamily("parallama_server_slots", "Requests the server takes at once (its slots).",
                                  labels=["server"])
        in_flight = GaugeMetricFamily("parallama_server_requests_in_flight", "This process's requests sent to the "
                                      "server and not ended.", labels=["server"])
        waiting = GaugeMetricFamily("parallama_server_requests_waiting", "This process's requests waiting for a "
                                    "slot on the server.", labels=["server"])
        shared_in_flight = GaugeMetricFamily(
            "parallama_server_shared_requests_in_flight", "Requests in flight on the server from every process "
            "sharing its slots (store: local, this machine; redis, every host on the Redis).",
            labels=["server", "store"])
        shared_waiting = GaugeMetricFamily(
            "parallama_server_shared_requests_waiting", "Requests waiting for a slot on the server in every process "
            "sharing its slots.", labels=["server", "store"])
        busy = CounterMetricFamily("parallama_server_busy_seconds", "Slot-seconds spent serving this process's "
                                   "requests (a slot held for 2 s counts 2).", labels=["server"])
        benched = GaugeMetricFamily("parallama_server_benched", "1 while the server, a replica of a pool, takes no "
                                    "requests (it failed before its first token), else 0.", labels=["server"])
        runs = GaugeMetricFamily("parallama_runs_in_progress", "Runs started and not ended.")
        seen: dict[str, "ServerLoad"] = {}
        for load in self.metrics._loads:
            for server, state in load().items():
                seen.setdefault(server, state)  # clients in one event loop share a server's gate: counted once
        for server, state in seen.items():
            slots.add_metric([server], state.slots)
            in_flight.add_metric([server], state.own_in_flight)
            waiting.add_metric([server], state.own_waiting)
            busy.add_metric([server], state.busy_s)
            benched.add_metric([server], 1 if state.benched else 0)
            if state.shared != "none":
                shared_in_flight.add_metric([server, state.shared], state.in_flight)
                shared_waiting.add_metric([server, state.shared], state.waiting)
        runs.add_metric([], sum(running() for running in self.metrics._running))
        yield from (slots, in_flight, waiting, shared_in_flight, shared_waiting, busy, benched, runs)
        yield from self._pools()

    def _pools(self) -> Iterator[Metric]:
        """A pool's requests and hedges, and how often each replica was benched (pools keep these per loop)."""
        requests = CounterMetricFamily("parallama_pool_requests", "Requests sent to a pool (its servers, "
                                       "space-separated).", labels=["pool"])
        hedges = CounterMetricFamily("parallama_pool_hedges", "Requests of a pool that got a hedged copy on another "
                                     "replica.", labels=["pool"])
        won = CounterMetricFamily("parallama_pool_hedges_won", "Hedged requests whose copy answered first.",
                                  labels=["pool"])
        benchings = CounterMetricFamily("parallama_server_benchings", "Times a replica was benched.",
                                        labels=["server"])
        stats: dict[tuple[str, ...], Any] = {}
        health: dict[str, Any] = {}
        for loop in dict.fromkeys(self.metrics._loops):
            stats.update(known_pools(loop))
            health.update(known_health(loop))
        for servers, counts in stats.items():
            pool = " ".join(servers)
            requests.add_metric([pool], counts.requests)
            hedges.add_metric([pool], counts.hedges)
            won.add_metric([pool], counts.hedges_won)
        for server, replica in health.items():
            benchings.add_metric([server], replica.benched)
        yield from (requests, hedges, won, benchings)
