"""Many prompts through one FleetClient, pipelined: a bounded number of runs in progress, started in input order,
so the gates serve earlier prompts first (prompt k's reviewer before prompt k+1's workers) while later prompts'
workers keep every other slot busy. Each prompt's line is written the moment it finishes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..scoring import PromptScore, Scoreboard
from .output import result_line, score_line

if TYPE_CHECKING:
    from ..client import FleetClient
    from ..gates import ServerLoad
    from ..fleet import Fleet
    from .records import BatchRecord

LineSink = Callable[[dict[str, Any]], None]

SAMPLE_COST = ("sample_requests", "sample_tokens", "sample_s")
"What `review.samples` cost a strategy compared as `name+samples`, summed over the prompts like its review."


def default_concurrency(fleet: "Fleet") -> int:
    """Runs in progress by default: one per slot of every server the fleet uses, plus one, so that whichever
    server is the bottleneck always has a request waiting (the gates keep the earliest prompts first)."""
    used = {replica.server for agent in fleet.agents for replica in agent.pool}  # a pool: every replica's slots
    return sum(fleet.servers[url].parallel if url in fleet.servers else 1 for url in used) + 1


class BusyMeter:
    """Slot-seconds each server spent serving during the batch: the change in its gate's running totals (the
    gates count every request they let through, so nothing needs to follow the events)."""

    def __init__(self, load: Callable[[], dict[str, "ServerLoad"]]) -> None:
        self._load = load
        self._start: dict[str, "ServerLoad"] = {}

    def start(self) -> None:
        self._start = self._load()

    def servers(self, wall_s: float) -> list["ServerUsage"]:
        """Each server's share of its slot time spent serving (requests still open count up to now)."""
        out = []
        for url, now in self._load().items():
            before = self._start.get(url)
            busy = now.busy_s - (before.busy_s if before else 0.0)
            served = now.served - (before.served if before else 0)
            waited = now.shared_wait_s - (before.shared_wait_s if before else 0.0)
            others_in_flight, others_waiting = now.others()
            out.append(ServerUsage(url, now.slots, served, round(busy, 3),
                                   round(busy / (now.slots * wall_s), 4) if wall_s > 0 else 0.0,
                                   now.shared, round(waited, 3), others_in_flight, others_waiting))
        return out


@dataclass(frozen=True)
class ServerUsage:
    """One server over the batch: requests served, and the share of its slots' time spent serving them."""

    url: str
    slots: int
    requests: int
    busy_s: float
    busy_fraction: float
    shared: str = "none"
    "Who shares the server's slots: `none`, `local` (this machine) or `redis`."
    waited_for_others_s: float = 0.0
    "Seconds the batch's requests waited for slots other processes held."
    others_in_flight: int = 0
    "Other processes' requests in flight on the server as the batch ended."
    others_waiting: int = 0
    "Other processes' requests waiting for the server as the batch ended."


@dataclass
class BatchSummary:
    """What a batch did: counts, time, throughput, each server's busy fraction, failures and the scores."""

    prompts: int
    "Prompts in the input."
    before: int
    "Already answered in the output file when the batch began (skipped)."
    ran: int
    "Prompts run and written this time."
    answered: int
    failed: list[str]
    "Ids of the prompts run this time that got no answer (their lines say why)."
    in_flight: int
    "Runs stopped by an interrupt before they finished (not written; a resume runs them)."
    interrupted: bool
    wall_s: float
    concurrency: int
    servers: list[ServerUsage]
    agent_failures: dict[str, int]
    "Failed requests per agent name (a worker's failure does not always cost the prompt its answer)."
    scoring: Scoreboard | None
    "Over every scored prompt of the input in the output, earlier ones included; None when none has `expected`."
    review_cost: dict[str, dict[str, float]] = field(default_factory=dict)
    "`--strategies`: per strategy, over every prompt in the output: prompts, review requests, tokens and seconds."
    job: str | None = None
    "`--queue`: the job's name in Redis (its prompts ran on every host that joined it)."
    dead: dict[str, dict[str, Any]] = field(default_factory=dict)
    "`--queue`: the dead-letter list, prompt id → its last `error` and `tries`."
    workers: dict[str, dict[str, int]] = field(default_factory=dict)
    "`--queue`: per worker (`host:pid`), prompts done and in flight."
    agent_causes: dict[str, str] = field(default_factory=dict)
    "Per agent with failed requests, the cause of its last failure (one line, its fix left out)."

    @property
    def prompts_per_min(self) -> float:
        return self.ran / self.wall_s * 60 if self.wall_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every prompt of the input has an answer in the output."""
        return self.before + self.answered == self.prompts

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts, "before": self.before, "ran": self.ran, "answered": self.answered,
            "failed": len(self.failed), "failed_ids": self.failed, "in_flight": self.in_flight,
            "interrupted": self.interrupted, "complete": self.complete, "wall_s": round(self.wall_s, 3),
            "prompts_per_min": round(self.prompts_per_min, 2), "concurrency": self.concurrency,
            "servers": [vars(s) for s in self.servers], "agent_failures": self.agent_failures,
            "agent_causes": self.agent_causes,
            "scoring": self.scoring.to_dict() if self.scoring else None,
            **({"review_cost": self.review_cost} if self.review_cost else {}),
            **({"job": self.job, "dead": self.dead, "workers": self.workers} if self.job else {}),
        }


@dataclass
class Batch:
    """One batch: `records` to run through `client`, each finished line handed to `write` (append and flush).

        async with FleetClient(fleet) as client:
            batch = Batch(client, records, write=JsonLines(sys.stdout).write)
            await batch.run()
            print(batch.summary().to_dict())
    """

    client: "FleetClient"
    records: Sequence["BatchRecord"]
    write: LineSink
    concurrency: int = 0
    "Runs in progress at once; 0: `default_concurrency(fleet)`."
    review: bool = True
    strategy: str | None = None
    strategies: tuple[str, ...] = ()
    "Compare these strategies: the workers once per prompt, each strategy's review over the same answers."
    prompts: int = 0
    "Prompts in the whole input (for the summary); 0: just `records`."
    before: Iterable[tuple["BatchRecord", dict[str, Any]]] = ()
    "(record, line) already in the output, so the scores cover the whole input."
    done: int = field(default=0, init=False)
    answered: int = field(default=0, init=False)
    failed: list[str] = field(default_factory=list, init=False)
    running: int = field(default=0, init=False)
    started_at: float | None = field(default=None, init=False)
    ended_at: float | None = field(default=None, init=False)
    interrupted: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.concurrency = self.concurrency or default_concurrency(self.client.fleet)
        self.prompts = self.prompts or len(self.records)
        self.meter = BusyMeter(self.client.load)
        self.agent_failures: Counter[str] = Counter()
        self.agent_causes: dict[str, str] = {}
        self.scoring: Scoreboard | None = None
        self.review_cost: dict[str, dict[str, float]] = {}
        self.previous = 0
        for record, line in self.before:
            self.previous += 1
            self._score(record, line)
            self._add_cost(line)

    async def run(self, on_done: Callable[["BatchRecord", dict[str, Any]], None] | None = None) -> None:
        """Run every record, at most `concurrency` at once; write each line (then call `on_done`) as it finishes.
        Cancelled, the runs in progress are cancelled (their requests closed) and nothing more is written."""
        records = iter(self.records)
        self.meter.start()
        self.started_at = time.perf_counter()

        async def lane() -> None:
            for record in records:  # the lanes share one iterator: runs start in input order
                self.running += 1
                line, failed_agents = await self.run_one(record)
                self.running -= 1  # not when cancelled: then `running` counts the runs an interrupt stopped
                self.write(line)
                self.take(record, line, failed_agents)
                if on_done is not None:
                    on_done(record, line)

        lanes = [asyncio.create_task(lane()) for _ in range(min(self.concurrency, len(self.records)))]
        try:
            await asyncio.gather(*lanes)
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        finally:
            self.ended_at = time.perf_counter()
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def run_one(self, record: "BatchRecord") -> tuple[dict[str, Any], list[str]]:
        """Run one record as the batch runs each: its output line, and the names of the agents whose requests
        failed (a name once per failed request)."""
        if self.strategies:
            compared = await self.client.compare(record.prompt, self.strategies)
            result = compared[0].result
            reviews = [a for run in compared for a in run.result.review_attempts +
                       ([run.result.review] if run.result.review else [])]
        else:
            compared = []
            result = await self.client.run(record.prompt, review=self.review, strategy=self.strategy)
            reviews = result.review_attempts + ([result.review] if result.review else [])
        return result_line(record, result, compared), [a.name for a in result.workers + reviews if not a.ok]

    def take(self, record: "BatchRecord", line: dict[str, Any], failed_agents: Iterable[str]) -> None:
        """Count a finished prompt's line (written by the caller): run here, or on another host of a job."""
        self.done += 1
        if line["answered"]:
            self.answered += 1
        else:
            self.failed.append(record.id)
        for name in failed_agents:
            self.agent_failures[name] += 1
        for agent in [*(line.get("workers") or []), *(line.get("review_attempts") or []), line.get("review") or {}]:
            if agent.get("status") not in (None, "ok") and agent.get("error"):
                self.agent_causes[agent["name"]] = agent["error"].split(" — ", 1)[0]
        self._score(record, line)
        self._add_cost(line)

    def _score(self, record: "BatchRecord", line: dict[str, Any]) -> None:
        if record.expected is None:
            return
        if self.scoring is None:
            self.scoring = Scoreboard()
        written = line.get("score")
        fresh = isinstance(written, dict) and (written.get("expected"), written.get("match")) == (record.expected,
                                                                                                  record.match)
        # Scoring again could cost a regex's time limit per answer: only a score that is missing or stale.
        if fresh and set(written.get("strategies") or ()) != set(line.get("strategies") or ()):  # type: ignore[union-attr]
            fresh = False
        score: PromptScore = written if fresh else score_line(line, record)  # type: ignore[assignment]
        self.scoring.add(score, reviewed=line.get("strategy") is not None)

    def _add_cost(self, line: dict[str, Any]) -> None:
        for name, entry in (line.get("strategies") or {}).items():
            if not isinstance(entry, dict):
                continue
            cost = self.review_cost.setdefault(name, {"prompts": 0, "review_requests": 0, "review_tokens": 0,
                                                       "review_s": 0.0})
            cost["prompts"] += 1
            for key in ("review_requests", "review_tokens", "review_s", *SAMPLE_COST):
                value = entry.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    cost[key] = round(cost.get(key, 0) + value, 3)

    def wall_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.perf_counter()) - self.started_at

    def summary(self) -> BatchSummary:
        wall = self.wall_s()
        return BatchSummary(
            prompts=self.prompts, before=self.previous, ran=self.done, answered=self.answered,
            failed=list(self.failed), in_flight=self.running if self.interrupted else 0,
            interrupted=self.interrupted, wall_s=wall, concurrency=self.concurrency,
            servers=self.meter.servers(wall), agent_failures=dict(self.agent_failures), scoring=self.scoring,
            agent_causes=dict(self.agent_causes),
            review_cost=self.review_cost)
