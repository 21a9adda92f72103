"""One batch job over many hosts: a `QueueWorker` on each host takes prompts from the job's stream as it has room
(its concurrency) and runs them through that host's FleetClient; the `JobWriter` on the host that started the job
puts the prompts on the stream and writes every host's lines to the output as they arrive, once per prompt id.

    job = Job(await connect(url), url, job_name(output, records, settings))
    writer = JobWriter(job, client, records, todo, before, write=out.write, settings=settings)
    await writer.start()                     # the job made (or found again), what is missing put on the stream
    worker = QueueWorker(job, client, settings)
    await asyncio.gather(writer.run(), worker.run())
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .output import line_errors
from .pipeline import Batch, BatchSummary, ServerUsage
from .queue import Finished, Job, JobCounts, JobGone, JobSettings, Task, is_gone, worker_name

if TYPE_CHECKING:
    from ..client import FleetClient
    from .records import BatchRecord

TAKE_BLOCK_MS = 1000
"The longest a worker with room waits on the stream before it looks for stalled prompts again."
READ_BLOCK_MS = 1000
STUCK_CHECK_S = 5.0
"How often a writer with nothing arriving checks that every prompt it waits for is still somewhere in the job."


def _nowhere(line: dict[str, Any]) -> None:
    """A worker's lines go to the results stream, not to a file."""


@dataclass
class WorkerTally:
    """What one worker did for the job."""

    finished: int = 0
    "Prompts whose outcome this worker handed in first (answered, or set aside as dead)."
    answered: int = 0
    tries_failed: int = 0
    "Tries that got no answer and were handed back for another try."
    dead: list[str] = field(default_factory=list)
    taken_over: int = 0
    "Prompts taken from a worker that stopped renewing its claim (or handed back after a failed try)."
    lost: int = 0
    "Prompts another worker took over or finished first while this one ran them (dropped here)."

    def to_dict(self) -> dict[str, Any]:
        return {"finished": self.finished, "answered": self.answered, "tries_failed": self.tries_failed,
                "dead": self.dead, "taken_over": self.taken_over, "lost": self.lost}


class QueueWorker:
    """Takes the job's prompts on this host, as many at once as its concurrency, and hands each outcome in."""

    def __init__(self, job: Job, client: "FleetClient", settings: JobSettings, *, concurrency: int = 0,
                 name: str | None = None) -> None:
        self.job = job
        self.settings = settings
        self.batch = Batch(client, [], write=_nowhere, concurrency=concurrency, review=settings.review,
                           strategy=settings.strategy, strategies=settings.strategies)
        self.concurrency = self.batch.concurrency
        self.name = name or worker_name()
        self.tally = WorkerTally()
        self.running: dict[str, tuple[Task, asyncio.Task[None]]] = {}
        self._broken: BaseException | None = None

    async def run(self) -> None:
        """Until nothing of the job is queued or in flight on any host (or the job is closed): take prompts while
        there is room, run them, hand them in. Cancelled, the prompts in progress are handed back at once."""
        self.batch.meter.start()
        self.batch.started_at = time.perf_counter()
        renewer = asyncio.create_task(self._renew())
        try:
            while True:
                if self._broken is not None:
                    raise self._broken
                room = self.concurrency - len(self.running)
                if room <= 0:
                    await asyncio.wait([task for _, task in self.running.values()],
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    tasks = await self.job.take(self.name, room, self.settings, block_ms=TAKE_BLOCK_MS)
                except JobGone:
                    break
                for task in tasks:
                    self._start(task)
                if not tasks and not self.running and await self.job.client.xlen(self.job.prompts) == 0:
                    break
        finally:
            self.batch.ended_at = time.perf_counter()
            renewer.cancel()
            held = list(self.running.values())
            for _, running in held:
                running.cancel()
            await asyncio.gather(renewer, *(running for _, running in held), return_exceptions=True)
            await asyncio.shield(self._give_back([task for task, _ in held]))

    def _start(self, task: Task) -> None:
        if task.deliveries > 1:
            self.tally.taken_over += 1
        running = asyncio.create_task(self._one(task))
        self.running[task.entry] = (task, running)

        def done(finished: asyncio.Task[None]) -> None:
            self.running.pop(task.entry, None)
            failure = None if finished.cancelled() else finished.exception()
            if failure is not None and not is_gone(failure) and self._broken is None:
                self._broken = failure  # Redis lost while handing in: the loop stops on it

        running.add_done_callback(done)

    async def _one(self, task: Task) -> None:
        settings = self.settings
        error: str | None
        if task.deliveries > settings.tries:  # its workers died on it every time
            said = await self.job.last_error(task.record.id)
            await self._hand_in(task, None, [], dead={"error": said or "its worker stopped while running it "
                                                      f"({task.deliveries - 1} times)", "tries": task.deliveries - 1})
            return
        try:
            line, failed = await self.batch.run_one(task.record)
            error = None if line["answered"] else (line_errors(line) or ["no answer"])[0]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a prompt that breaks its run must not stop the host's worker:
            line, failed, error = None, [], f"{type(exc).__name__}: {exc}"  # it is tried again, then set aside
        if error is None:
            await self._hand_in(task, line, failed)
        elif task.deliveries >= settings.tries:
            await self._hand_in(task, line, failed, dead={"error": error, "tries": task.deliveries})
        else:
            self.tally.tries_failed += 1
            if not await self.job.retry(task, self.name, error, settings):
                self.tally.lost += 1

    async def _hand_in(self, task: Task, line: dict[str, Any] | None, failed: Sequence[str],
                       dead: dict[str, Any] | None = None) -> None:
        if dead is not None:
            dead = {**dead, "worker": self.name}
        if await self.job.finish(task, self.name, line, failed, self.usage(), dead=dead):
            self.tally.finished += 1
            if dead is not None:
                self.tally.dead.append(task.record.id)
            elif line is not None and line.get("answered"):
                self.tally.answered += 1
        else:
            self.tally.lost += 1

    def usage(self) -> str:
        """This worker's use of its servers so far, as the job keeps it for the writer's summary."""
        return json.dumps([vars(s) for s in self.batch.meter.servers(self.batch.wall_s())])

    async def _renew(self) -> None:
        """Renew the claim on what runs here; a prompt another worker took over meanwhile is stopped here."""
        every = max(0.2, self.settings.takeover_s / 3)
        while True:
            await asyncio.sleep(every)
            lost = await self.job.renew(self.name, list(self.running))
            for entry in lost:
                held = self.running.get(entry)
                if held is not None:
                    self.tally.lost += 1
                    held[1].cancel()

    async def _give_back(self, tasks: list[Task]) -> None:
        """Interrupted: the prompts it ran go back for another worker at once, their tries not counted."""
        from redis.exceptions import RedisError

        try:
            for task in tasks:
                await self.job.client.xclaim(self.job.prompts, "workers", self.name, 0, [task.entry],
                                             idle=int(self.settings.takeover_s * 1000),
                                             retrycount=max(0, task.deliveries - 1), justid=True)
            if not tasks:
                await self.job.leave(self.name)
        except (RedisError, OSError):
            pass  # Redis gone too: they are taken over once their claim runs out

    def summary(self, counts: JobCounts | None) -> dict[str, Any]:
        wall = self.batch.wall_s()
        return {"job": self.job.name, "worker": self.name, "concurrency": self.concurrency,
                "wall_s": round(wall, 3), **self.tally.to_dict(),
                "prompts_per_min": round(self.tally.finished / wall * 60, 2) if wall > 0 else 0.0,
                "servers": [vars(s) for s in self.batch.meter.servers(wall)],
                "agent_failures": dict(self.batch.agent_failures),
                **({"job_counts": counts.to_dict()} if counts is not None else {})}


class JobWriter:
    """Puts the prompts on the job's stream and writes what every host finished, each prompt id once."""

    def __init__(self, job: Job, client: "FleetClient", records: Sequence["BatchRecord"],
                 todo: Sequence["BatchRecord"], before: Sequence[tuple["BatchRecord", dict[str, Any]]], *,
                 write: Callable[[dict[str, Any]], None], settings: JobSettings,
                 say: Callable[[str], None] = print) -> None:
        self.job = job
        self.settings = settings
        self.say = say
        self.records = list(records)
        self.waiting = {r.id: r for r in todo}
        "Prompts of the job with no line written yet (and not dead)."
        self.batch = Batch(client, list(todo), write=write, concurrency=1, review=settings.review,
                           strategy=settings.strategy, strategies=settings.strategies, prompts=len(records),
                           before=before)
        self.dead: dict[str, dict[str, Any]] = {}
        self.concurrency = 0
        "This host's worker's concurrency, for the summary."
        self._servers: dict[str, list[dict[str, Any]]] | None = None
        self._baseline: dict[str, list[dict[str, Any]]] = {}
        self._counts: JobCounts | None = None
        self.duplicates = 0
        self.enqueued = 0
        self.requeued = 0

    async def start(self) -> None:
        """Hold the job's writer lease, make the job (or find it again) and put on the stream what is missing."""
        await self.job.hold_writer(self.say)
        await self.job.create(self.settings, len(self.records))
        await self.job.set_before(len(self.records) - len(self.waiting))
        self._baseline = await self.job.servers_used()  # a worker's use is counted from its start: this run's part
        again, _ = await self.job.plan(list(self.waiting.values()))
        self.enqueued = await self.job.enqueue(again)

    async def run(self, on_done: Callable[["BatchRecord", dict[str, Any]], None] | None = None) -> None:
        """Write lines as they arrive until every prompt has one (or is dead); then close the job."""
        self.batch.meter.start()
        self.batch.started_at = time.perf_counter()
        last = "0-0"
        quiet_since = time.monotonic()
        renewed = time.monotonic()
        try:
            while self.waiting:
                arrived = await self.job.read_results(last, block_ms=READ_BLOCK_MS)
                for finished in arrived:
                    last = finished.entry
                    self._take(finished, on_done)
                await self.job.forget_results([f.entry for f in arrived])
                now = time.monotonic()
                if now - renewed >= 2.0:
                    await self.job.renew_writer()
                    renewed = now
                if arrived:
                    quiet_since = now
                elif now - quiet_since >= STUCK_CHECK_S and self.waiting:
                    quiet_since = now
                    await self._requeue_lost()
            self._servers = await self.job.servers_used()
            self._counts = await self.job.counts()
            await self.job.close_finished()
        finally:
            self.batch.ended_at = time.perf_counter()

    def _take(self, finished: Finished, on_done: Callable[["BatchRecord", dict[str, Any]], None] | None) -> None:
        record = self.waiting.pop(finished.id, None)
        if record is None:
            self.duplicates += 1  # answered twice (after a takeover), or already in the output: the first stays
            return
        if finished.dead is not None:
            self.dead[record.id] = finished.dead
        if finished.line is not None:
            self.batch.write(finished.line)
            self.batch.take(record, finished.line, finished.failed_agents)
            if on_done is not None:
                on_done(record, finished.line)

    async def _requeue_lost(self) -> None:
        """Nothing arrived for a while: put back on the stream any awaited prompt that is nowhere in the job (its
        entry deleted by hand, say), so the batch cannot wait for ever."""
        counts = await self.job.counts()
        if counts.queued or counts.in_flight:
            return
        again, _ = await self.job.plan(list(self.waiting.values()))
        if again:
            self.requeued += await self.job.enqueue(again)
            self.say(f"job {self.job.name}: {len(again)} prompt(s) were nowhere in the job: put back on the stream")

    async def summary(self) -> BatchSummary:
        """The batch's summary as today, with every host's servers, the dead-letter list and the workers."""
        summary = self.batch.summary()
        summary.job = self.job.name
        summary.concurrency = self.concurrency or summary.concurrency
        summary.dead = dict(self.dead)
        used = self._servers if self._servers is not None else await self.job.servers_used()
        summary.servers = merge_servers(used, summary.wall_s, self._baseline)
        counts = self._counts if self._counts is not None else await self.job.counts()
        summary.workers = counts.to_dict()["workers"]
        return summary


def merge_servers(used: dict[str, list[dict[str, Any]]], wall_s: float,
                  before: dict[str, list[dict[str, Any]]] | None = None) -> list[ServerUsage]:
    """Every worker's use of each server, added up — less what `before` held for the same worker and server (a
    writer started again counts from its own start): requests, busy slot-seconds, and the share of the server's
    slot time over the writer's wall time."""
    earlier = {(worker, entry["url"]): entry for worker, servers in (before or {}).items() for entry in servers}
    merged: dict[str, dict[str, Any]] = {}
    for worker, servers in used.items():
        for now in servers:
            then = earlier.get((worker, now["url"]), {})
            entry = {**now, **{key: now.get(key, 0) - then.get(key, 0)
                               for key in ("requests", "busy_s", "waited_for_others_s")}}
            into = merged.setdefault(entry["url"], {"slots": entry.get("slots", 1), "requests": 0, "busy_s": 0.0,
                                                    "shared": entry.get("shared", "none"), "waited": 0.0})
            into["slots"] = max(into["slots"], entry.get("slots", 1))
            into["requests"] += entry.get("requests", 0)
            into["busy_s"] += entry.get("busy_s", 0.0)
            into["waited"] += entry.get("waited_for_others_s", 0.0)
    return [ServerUsage(url, m["slots"], m["requests"], round(m["busy_s"], 3),
                        round(m["busy_s"] / (m["slots"] * wall_s), 4) if wall_s > 0 else 0.0, m["shared"],
                        round(m["waited"], 3)) for url, m in merged.items()]
