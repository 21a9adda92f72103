"""`parallama bench`: the same workers one at a time and all at once, on the user's own servers, with the speedup
the slot layout allows and the likely cause when parallel falls short of it."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .client import FleetClient
from .events import Delta, Event, Failed, Finished, RUN_EVENTS, Started
from .fleet import Agent, Fleet
from .result import AgentResult
from .urls import is_local

WARMUP_PROMPT = "Reply with the single word: ready."
SLOWER_THAN_IDEAL = 0.85
"Parallel is flagged when its speedup is below this share of the ideal one."

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Span:
    """One agent's request on the mode's clock (seconds from the mode's start)."""

    agent: str
    server: str
    sent_s: float
    first_token_s: float | None
    end_s: float
    ok: bool


@dataclass
class AgentStats:
    name: str
    server: str
    latency_s: float | None
    "Median from sending the request to its last token."
    ttft_s: float | None
    tokens_per_s: float | None
    failures: int


@dataclass
class ModeStats:
    mode: str
    makespan_s: float
    "Median over repeats (and prompts)."
    makespan_min_s: float
    makespan_max_s: float
    agents: list[AgentStats]


@dataclass
class BenchResult:
    prompts: list[str]
    repeat: int
    warmup: dict[str, float]
    "Seconds of each model's first request (its load time, not counted in the modes)."
    sequential: ModeStats
    parallel: ModeStats
    speedup: float
    ideal_speedup: float
    "What the slot layout allows, from the sequential latencies."
    flags: list[str]
    timelines: dict[str, list[Span]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _ModeRun:
    makespan_s: float
    results: list[AgentResult]
    spans: list[Span]


async def _measure(client: FleetClient, prompt: str, sequential: bool) -> _ModeRun:
    fleet = client.fleet
    sent: dict[str, float] = {}
    first: dict[str, float] = {}
    ended: dict[str, float] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, RUN_EVENTS):
            return
        name = event.agent.name
        now = time.perf_counter()
        if isinstance(event, Started):
            sent[name] = now
        elif isinstance(event, Delta):
            first.setdefault(name, now)
        elif isinstance(event, (Finished, Failed)):
            ended[name] = now

    t0 = time.perf_counter()
    results = await client.run_workers(prompt, sequential=sequential, on_event=on_event)
    makespan = time.perf_counter() - t0
    spans = [Span(a.name, a.server, sent.get(a.name, t0) - t0,
                  (first[a.name] - t0) if a.name in first else None, ended.get(a.name, t0) - t0, r.ok)
             for a, r in zip(fleet.workers, results)]
    return _ModeRun(makespan, results, spans)


async def _warm_up(client: FleetClient, on_progress: Progress | None) -> dict[str, float]:
    """One request per model and server, one at a time, so loading a model is not counted in either mode."""
    fleet = client.fleet
    seen: dict[tuple[str, str], Agent] = {}
    for agent in fleet.workers:
        seen.setdefault((agent.server, agent.model), agent)
    times: dict[str, float] = {}
    for i, ((server, model), agent) in enumerate(seen.items()):
        if on_progress:
            on_progress(i, len(seen), f"warm-up {model} on {server}")
        t0 = time.perf_counter()
        await client.run_workers(WARMUP_PROMPT, agents=(agent,))
        times[f"{model} on {server}"] = round(time.perf_counter() - t0, 3)
    return times


def ideal_makespan(latencies: dict[str, float], fleet: Fleet) -> float:
    """The shortest parallel makespan the slots allow: each server's lanes take its agents in config order."""
    worst = 0.0
    for server, spec in fleet.servers.items():
        lanes = [0.0] * spec.parallel
        for agent in fleet.workers:
            if agent.server == server:
                i = lanes.index(min(lanes))
                lanes[i] += latencies.get(agent.name, 0.0)
        worst = max(worst, max(lanes))
    return worst


async def bench(fleet: Fleet, prompts: list[str], repeat: int = 3, on_progress: Progress | None = None) -> BenchResult:
    """Warm up, then per prompt and repeat run the workers sequentially and in parallel (alternating)."""
    async with FleetClient(fleet) as client:
        return await _bench(client, prompts, repeat, on_progress)


async def _bench(client: FleetClient, prompts: list[str], repeat: int, on_progress: Progress | None) -> BenchResult:
    fleet = client.fleet
    warmup = await _warm_up(client, on_progress)
    runs: dict[str, list[_ModeRun]] = {"sequential": [], "parallel": []}
    total = len(prompts) * repeat * 2
    step = 0
    for prompt in prompts:
        for _ in range(repeat):
            for mode in ("sequential", "parallel"):
                if on_progress:
                    on_progress(step, total, f"{mode} run {step // 2 + 1} of {total // 2}")
                runs[mode].append(await _measure(client, prompt, mode == "sequential"))
                step += 1
    if on_progress:
        on_progress(total, total, "done")
    seq, par = (_stats(mode, runs[mode], fleet) for mode in ("sequential", "parallel"))
    latencies = {a.name: a.latency_s for a in seq.agents if a.latency_s is not None}
    ideal_par = ideal_makespan(latencies, fleet)
    ideal_speedup = sum(latencies.values()) / ideal_par if ideal_par else 1.0
    speedup = seq.makespan_s / par.makespan_s if par.makespan_s else 0.0
    flags = _flags(fleet, seq, par, speedup, ideal_speedup)
    return BenchResult(prompts=prompts, repeat=repeat, warmup=warmup, sequential=seq, parallel=par,
                       speedup=round(speedup, 3), ideal_speedup=round(ideal_speedup, 3), flags=flags,
                       timelines={mode: runs[mode][-1].spans for mode in runs})


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _stats(mode: str, runs: list[_ModeRun], fleet: Fleet) -> ModeStats:
    makespans = [r.makespan_s for r in runs]
    agents = []
    for i, agent in enumerate(fleet.workers):
        results = [r.results[i] for r in runs]
        ok = [r for r in results if r.ok]
        agents.append(AgentStats(
            name=agent.name, server=agent.server,
            latency_s=_median([r.elapsed_s for r in ok]),
            ttft_s=_median([r.ttft_s for r in ok if r.ttft_s is not None]),
            tokens_per_s=_median([r.tokens_per_s for r in ok if r.tokens_per_s]),
            failures=len(results) - len(ok)))
    return ModeStats(mode, round(statistics.median(makespans), 3), round(min(makespans), 3),
                     round(max(makespans), 3), agents)


def _flags(fleet: Fleet, seq: ModeStats, par: ModeStats, speedup: float, ideal: float) -> list[str]:
    flags: list[str] = []
    failures = sum(a.failures for a in seq.agents + par.agents)
    if failures:
        flags.append(f"{failures} request(s) failed during the bench; their agents' figures leave them out")
    if ideal < 1.05:
        flags.append("the slot layout allows no speedup: the workers share servers with too few slots "
                     "(see `parallama plan`)")
        return flags
    if speedup >= SLOWER_THAN_IDEAL * ideal:
        return flags
    flags.append(f"parallel is slower than it should be: {speedup:.2f}× where the slot layout allows {ideal:.2f}×")
    flags.extend(_same_process(fleet))
    ratios = [p.latency_s / s.latency_s for s, p in zip(seq.agents, par.agents) if s.latency_s and p.latency_s]
    waits = [p.ttft_s - s.ttft_s for s, p in zip(seq.agents, par.agents)
             if s.ttft_s is not None and p.ttft_s is not None]
    if ratios and statistics.median(ratios) > 1.3:
        flags.append(f"each request took ×{statistics.median(ratios):.1f} longer in parallel than alone: the "
                     "servers compete for the same CPU, GPU or memory bandwidth (instances on one machine share "
                     "its cores) — fewer or smaller instances, or threads split between them")
    if waits and statistics.median(waits) > 0.5 * (statistics.median([s.latency_s for s in seq.agents
                                                                       if s.latency_s]) or 1):
        flags.append("in parallel the first token came much later: a server queued requests before serving them — "
                     "it has fewer real slots than `servers[…].parallel` says (OLLAMA_NUM_PARALLEL)")
    return flags


def _same_process(fleet: Fleet) -> list[str]:
    """Local servers on different ports answered by one process are one server, whatever the config says."""
    from urllib.parse import urlsplit

    from .engines.ports import port_holder

    owners: dict[int, list[str]] = {}
    for url in fleet.servers:
        parts = urlsplit(url)
        if is_local(url) and parts.port:
            holder = port_holder(parts.port)
            if holder.pid is not None:
                owners.setdefault(holder.pid, []).append(url)
    return [f"{' and '.join(urls)} are the same process (pid {pid}): their requests queue together"
            for pid, urls in owners.items() if len(urls) > 1]
