"""A batch job in Redis, shared by every host that works on it: the prompts on a stream read by one consumer group
of workers, the results on a second stream read by the one host that writes the output file.

    parallama:batch:<job>:prompts   stream; one entry per prompt still to finish (queued or in flight)
    parallama:batch:<job>:results   stream; finished lines the writer has not yet written (and deleted)
    parallama:batch:<job>:meta      hash; the job's settings (review, strategy, tries, takeover), its size
    parallama:batch:<job>:done      hash; prompts finished per worker
    parallama:batch:<job>:dead      hash; prompt id → its last error and tries (the dead-letter list)
    parallama:batch:<job>:errors    hash; prompt id → the error of its last failed try
    parallama:batch:<job>:servers   hash; worker → its servers' use (requests, busy seconds), for the summary
    parallama:batch:<job>:writer    string; the writing process, a lease renewed while it writes

Delivery is at least once: a worker acknowledges a prompt in the same script that puts its line on the results
stream and deletes its entry, so an entry is always in exactly one of the two streams; a prompt run twice (its
worker stalled, another took it over) reaches the results once, since only the first acknowledgement counts. A
worker renews its claim on what it runs (`XCLAIM … JUSTID`, only on entries still its own); an entry idle for the
job's takeover time is taken by whichever worker has room (`XAUTOCLAIM`), which counts a delivery. A try that
gets no answer is handed straight back; the try that reaches the job's `tries` deliveries puts the prompt in the
dead-letter list with its last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from ..errors import SetupError
from ..urls import public_url
from .queue_scripts import FINISH, RENEW, RENEW_WRITER, RETRY
from .records import BatchRecord

if TYPE_CHECKING:
    from ..fleet import Fleet

PREFIX = "parallama:batch:"
JOBS = PREFIX + "jobs"
"The set of the jobs on this Redis (a finished job leaves it)."
GROUP = "workers"
DEFAULT_TRIES = 3
DEFAULT_TAKEOVER_S = 30.0
WRITER_LEASE_S = 10.0
CONNECT_TIMEOUT_S = 3.0
ENQUEUE_CHUNK = 1000
KEEP_FINISHED_S = 86400
"How long a finished job's settings and dead-letter list stay, for a late look."

def check_url(url: str) -> str:
    """`url` if it can name a Redis, else ValueError saying what would (without the URL's password): the slot
    stores' own check of a Redis URL, and a database that is a number."""
    from urllib.parse import urlsplit

    from ..slots import store_kind

    kind = store_kind(url)
    if kind is None or not kind.is_url:
        raise ValueError(f"{public_url(url)!r} is not a Redis URL: use one like redis://host:6379/0")
    url = kind.check(url)
    database = urlsplit(url).path.strip("/") if urlsplit(url).scheme.lower() != "unix" else ""
    if database and not database.isdigit():
        raise ValueError(f"{public_url(url)!r} is not a Redis URL (its database, after the last /, is a number)")
    return url


def worker_name() -> str:
    """This process as the job's consumer: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fleet_for_job(fleet: "Fleet", url: str) -> "Fleet":
    """The fleet with its slots kept in the job's Redis when neither PARALLAMA_SLOT_STORE nor the config names a
    store: workers on many hosts then share every server's slots without being told twice."""
    import dataclasses

    from ..slots import SLOT_STORE_ENV

    if os.environ.get(SLOT_STORE_ENV, "").strip() or (fleet.slot_store or "").strip():
        return fleet
    return dataclasses.replace(fleet, slot_store=url)


@dataclass(frozen=True)
class JobSettings:
    """What every worker of the job runs each prompt with, chosen by the writing process."""

    review: bool = True
    strategy: str | None = None
    strategies: tuple[str, ...] = ()
    tries: int = DEFAULT_TRIES
    "Deliveries of a prompt before it goes to the dead-letter list."
    takeover_s: float = DEFAULT_TAKEOVER_S
    "How long a prompt's worker may go without renewing its claim before another worker takes it over."

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "strategies": list(self.strategies)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSettings":
        data = json.loads(text)
        return cls(review=bool(data.get("review", True)), strategy=data.get("strategy"),
                   strategies=tuple(data.get("strategies") or ()), tries=int(data.get("tries", DEFAULT_TRIES)),
                   takeover_s=float(data.get("takeover_s", DEFAULT_TAKEOVER_S)))


def job_name(output: str | os.PathLike[str], records: Sequence[BatchRecord], settings: JobSettings) -> str:
    """`answers-3f2a9c0d1e4b`: the output's name and a fingerprint of the input (ids, prompts, expected answers)
    and of how it is run, so the same batch started again finds its job, and another batch gets another."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.id, record.prompt_sha256, record.expected, record.match]).encode())
    digest.update(json.dumps({k: v for k, v in json.loads(settings.to_json()).items()
                              if k in ("review", "strategy", "strategies")}, sort_keys=True).encode())
    return f"{Path(output).stem or 'batch'}-{digest.hexdigest()[:12]}"


def record_text(record: BatchRecord) -> str:
    return json.dumps({"id": record.id, "prompt": record.prompt, "line": record.line, "expected": record.expected,
                       "match": record.match}, ensure_ascii=False)


def record_of(text: str) -> BatchRecord:
    data = json.loads(text)
    return BatchRecord(id=data["id"], prompt=data["prompt"], line=int(data.get("line") or 0),
                       expected=data.get("expected"), match=data.get("match"))


@dataclass(frozen=True)
class Task:
    """A prompt delivered to this worker: its stream entry, its record, and how often it has been delivered."""

    entry: str
    record: BatchRecord
    deliveries: int


@dataclass(frozen=True)
class Finished:
    """A prompt's outcome on the results stream: its line (None for a prompt that died with no line), the names
    of the agents whose requests failed, the worker that ran it and, for a dead prompt, why."""

    entry: str
    id: str
    line: dict[str, Any] | None
    failed_agents: list[str]
    worker: str
    dead: dict[str, Any] | None = None


@dataclass
class JobCounts:
    """The job as Redis holds it now, over every host."""

    total: int = 0
    "Prompts of the job."
    done_before: int = 0
    "Finished before this writer began (in the output or on the results stream then)."
    queued: int = 0
    in_flight: int = 0
    dead: int = 0
    done_by: dict[str, int] = field(default_factory=dict)
    "Prompts finished per worker (`host:pid`)."
    running_by: dict[str, int] = field(default_factory=dict)
    "Prompts in flight per worker."
    exists: bool = True

    @property
    def done(self) -> int:
        return self.done_before + sum(self.done_by.values())

    def to_dict(self) -> dict[str, Any]:
        workers = sorted(set(self.done_by) | set(self.running_by))
        return {"total": self.total, "done": self.done, "pending": self.queued, "in_flight": self.in_flight,
                "dead": self.dead, "workers": {w: {"done": self.done_by.get(w, 0),
                                                   "in_flight": self.running_by.get(w, 0)} for w in workers}}


class Job:
    """One batch job on one Redis, as this process sees it (the writer, a worker, or both)."""

    def __init__(self, client: Any, url: str, name: str) -> None:
        self.client = client
        self.url = url
        self.where = public_url(url)
        self.name = name
        base = f"{PREFIX}{name}:"
        self.prompts, self.results, self.meta = base + "prompts", base + "results", base + "meta"
        self.done, self.dead, self.errors = base + "done", base + "dead", base + "errors"
        self.servers, self.writer = base + "servers", base + "writer"
        self._finish = client.register_script(FINISH)
        self._renew = client.register_script(RENEW)
        self._retry = client.register_script(RETRY)
        self._renew_writer = client.register_script(RENEW_WRITER)
        self._cursor = "0-0"
        self._looked_for_stalled = 0.0
        self.writer_id = f"{worker_name()}:{uuid.uuid4().hex[:8]}"

    # ---------------------------------------------------------------- the writer's side

    async def create(self, settings: JobSettings, total: int) -> None:
        """Make the job (or find it again): its settings, its stream and group, its name in the list of jobs."""
        from redis.exceptions import ResponseError

        await self.client.sadd(JOBS, self.name)
        await self.client.hset(self.meta, mapping={"settings": settings.to_json(), "total": total,
                                                   "status": "running"})
        await self.client.persist(self.meta)
        try:
            await self.client.xgroup_create(self.prompts, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def hold_writer(self, say: Any) -> None:
        """Take the job's writer lease; wait (saying so once) while another live process holds it. A holder on this
        host whose process is gone (killed) is replaced at once."""
        ms = int(WRITER_LEASE_S * 1000)
        said = False
        while not await self.client.set(self.writer, self.writer_id, nx=True, px=ms):
            holder = await self.client.get(self.writer) or ""
            host, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                await self.client.delete(self.writer)
                continue
            if not said:
                say(f"job {self.name}: another process writes its output ({host}:{pid}); waiting for it to stop "
                    f"(its lease runs out {WRITER_LEASE_S:g} s after it does)")
                said = True
            await asyncio.sleep(0.5)

    async def renew_writer(self) -> bool:
        return bool(await self._renew_writer(keys=[self.writer], args=[self.writer_id, int(WRITER_LEASE_S * 1000)]))

    async def release_writer(self) -> None:
        if await self.client.get(self.writer) == self.writer_id:
            await self.client.delete(self.writer)

    async def queued_ids(self) -> set[str]:
        """Ids of the prompts on the stream now (queued or in flight)."""
        ids: set[str] = set()
        start = "-"
        while True:
            entries = await self.client.xrange(self.prompts, start, "+", count=ENQUEUE_CHUNK)
            for _, fields in entries:
                ids.add(json.loads(fields["r"])["id"])
            if len(entries) < ENQUEUE_CHUNK:
                return ids
            start = "(" + entries[-1][0]

    async def results_held(self) -> list[Finished]:
        """Every outcome on the results stream now, oldest first."""
        held: list[Finished] = []
        start = "-"
        while True:
            entries = await self.client.xrange(self.results, start, "+", count=ENQUEUE_CHUNK)
            held.extend(_finished(entry, fields) for entry, fields in entries)
            if len(entries) < ENQUEUE_CHUNK:
                return held
            start = "(" + entries[-1][0]

    async def plan(self, todo: Sequence[BatchRecord]) -> tuple[list[BatchRecord], int]:
        """What to put on the stream for `todo` (the prompts without an answer in the output): those neither queued,
        in flight, nor finished on the results stream; a dead one is taken out of the dead-letter list to run again.
        Also how many of `todo` are finished on the results stream (they are written without running again).
        The stream is read before the results: a prompt moves from the one to the other in one step."""
        queued = await self.queued_ids()
        held = await self.results_held()
        finished = {f.id for f in held if f.dead is None}
        again = [r for r in todo if r.id not in queued and r.id not in finished]
        again_ids = {r.id for r in again}
        stale = [f.entry for f in held if f.dead is not None and f.id in again_ids]
        if stale:
            await self.client.xdel(self.results, *stale)
        if again:
            await self.client.hdel(self.dead, *again_ids)
            await self.client.hdel(self.errors, *again_ids)
        return again, len({r.id for r in todo} & finished)

    async def enqueue(self, records: Iterable[BatchRecord]) -> int:
        """Put the records on the stream, in order, in chunks; how many."""
        count = 0
        batch: list[BatchRecord] = []
        for record in [*records, None]:
            if record is not None:
                batch.append(record)
            if batch and (record is None or len(batch) >= ENQUEUE_CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for one in batch:
                    pipe.xadd(self.prompts, {"r": record_text(one)})
                await pipe.execute()
                await self.renew_writer()  # a long input takes a while to put on the stream: keep the lease
                count += len(batch)
                batch = []
        return count

    async def set_before(self, done_before: int) -> None:
        """Start the job's count of finished prompts again from what is finished now (a writer (re)starting)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.done)
        pipe.hset(self.meta, "done_before", done_before)
        await pipe.execute()

    async def read_results(self, after: str, *, block_ms: int, count: int = 500) -> list[Finished]:
        """Outcomes after entry `after` (`0-0`: from the start), waiting up to `block_ms` for one."""
        answer = await self.client.xread({self.results: after}, count=count, block=block_ms)
        return [_finished(entry, fields) for _, entries in answer or [] for entry, fields in entries]

    async def forget_results(self, entries: Sequence[str]) -> None:
        if entries:
            await self.client.xdel(self.results, *entries)

    async def servers_used(self) -> dict[str, list[dict[str, Any]]]:
        return {worker: json.loads(text) for worker, text in (await self.client.hgetall(self.servers)).items()}

    async def dead_letters(self) -> dict[str, dict[str, Any]]:
        return {key: json.loads(text) for key, text in (await self.client.hgetall(self.dead)).items()}

    async def close_finished(self) -> None:
        """Every prompt is written: the streams go; the settings and the dead-letter list stay a day for a look."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.prompts, self.results, self.errors, self.done, self.servers)
        pipe.hset(self.meta, "status", "done")
        pipe.expire(self.meta, KEEP_FINISHED_S)
        pipe.expire(self.dead, KEEP_FINISHED_S)
        pipe.srem(JOBS, self.name)
        await pipe.execute()

    # ---------------------------------------------------------------- the workers' side

    async def settings(self) -> JobSettings | None:
        text = await self.client.hget(self.meta, "settings")
        return JobSettings.from_json(text) if text else None

    async def take(self, worker: str, room: int, settings: JobSettings, *, block_ms: int) -> list[Task]:
        """Up to `room` prompts for `worker`: first those whose worker stopped renewing (taken over), then new ones,
        waiting up to `block_ms` for one. Raises JobGone when the job's stream is gone (finished)."""
        from redis.exceptions import ResponseError

        try:
            tasks: list[Task] = []
            now = time.monotonic()
            if now - self._looked_for_stalled >= min(1.0, settings.takeover_s / 4):
                self._looked_for_stalled = now  # a stalled prompt waits `takeover_s` anyway: no need to ask each time
                tasks = await self._take_over(worker, room, settings)
            if len(tasks) < room:
                answer = await self.client.xreadgroup(GROUP, worker, {self.prompts: ">"}, count=room - len(tasks),
                                                      block=block_ms if not tasks else None)
                tasks += [Task(entry, record_of(fields["r"]), 1)
                          for _, entries in answer or [] for entry, fields in entries]
        except ResponseError as exc:
            if _gone(exc):
                raise JobGone(self.name) from exc
            raise
        return tasks

    async def _take_over(self, worker: str, room: int, settings: JobSettings) -> list[Task]:
        idle_ms = int(settings.takeover_s * 1000)
        answer = await self.client.xautoclaim(self.prompts, GROUP, worker, idle_ms, start_id=self._cursor,
                                              count=room)
        self._cursor = answer[0] if answer[0] else "0-0"
        claimed = [(entry, fields) for entry, fields in answer[1] if fields]
        if not claimed:
            return []
        pipe = self.client.pipeline(transaction=False)
        for entry, _ in claimed:
            pipe.xpending_range(self.prompts, GROUP, entry, entry, 1)
        counts = await pipe.execute()
        return [Task(entry, record_of(fields["r"]), int(pending[0]["times_delivered"]) if pending else 1)
                for (entry, fields), pending in zip(claimed, counts)]

    async def renew(self, worker: str, entries: Sequence[str]) -> list[str]:
        """Renew `worker`'s claim on `entries`; the ones no longer its own (taken over, or finished elsewhere)."""
        if not entries:
            return []
        return list(await self._renew(keys=[self.prompts], args=[GROUP, worker, *entries]))

    async def finish(self, task: Task, worker: str, line: dict[str, Any] | None, failed_agents: Sequence[str],
                     usage: str = "", dead: dict[str, Any] | None = None) -> bool:
        """Hand the prompt's outcome to the writer; False when another worker finished it first (this one is
        dropped)."""
        args = [GROUP, task.entry, task.record.id, json.dumps(line, ensure_ascii=False) if line is not None else "",
                json.dumps(list(failed_agents)), worker, usage, json.dumps(dead) if dead is not None else ""]
        keys = [self.prompts, self.results, self.done, self.servers, self.dead, self.errors]
        return bool(await self._finish(keys=keys, args=args))

    async def retry(self, task: Task, worker: str, error: str, settings: JobSettings) -> bool:
        """The try got no answer: keep its error, give the prompt back for any worker to take at once."""
        args = [GROUP, worker, task.entry, task.record.id, error, int(settings.takeover_s * 1000)]
        return bool(await self._retry(keys=[self.prompts, self.errors], args=args))

    async def last_error(self, prompt_id: str) -> str | None:
        return await self.client.hget(self.errors, prompt_id)

    async def leave(self, worker: str) -> None:
        """This worker holds nothing any more: take its name out of the group."""
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_delconsumer(self.prompts, GROUP, worker)
        except ResponseError:
            pass

    # ---------------------------------------------------------------- everyone

    async def counts(self) -> JobCounts:
        """Done, pending, in flight and dead, in all and per worker: one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.meta, "total", "done_before")
        pipe.xlen(self.prompts)
        pipe.hgetall(self.done)
        pipe.hlen(self.dead)
        pipe.exists(self.prompts)
        meta, length, done, dead, exists = await pipe.execute()
        running: dict[str, int] = {}
        if exists:
            from redis.exceptions import ResponseError

            try:
                pending = await self.client.xpending(self.prompts, GROUP)
            except ResponseError:
                pending = {"pending": 0, "consumers": []}
            running = {c["name"]: int(c["pending"]) for c in pending.get("consumers") or [] if int(c["pending"])}
        in_flight = sum(running.values())
        return JobCounts(total=int(meta[0] or 0), done_before=int(meta[1] or 0), queued=max(0, length - in_flight),
                         in_flight=in_flight, dead=dead, done_by={k: int(v) for k, v in done.items()},
                         running_by=running, exists=bool(exists))


class JobGone(Exception):
    """The job's stream is gone: its writer wrote every prompt and closed it."""


@contextlib.contextmanager
def redis_errors(where: str) -> Iterator[None]:
    """Redis lost mid-job becomes one SetupError naming the queue (without its password); what was finished is kept
    in the job and the output."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
            raise
        raise SetupError(f"job queue {where}: Redis lost ({str(exc).strip() or type(exc).__name__}); what was "
                         "finished is kept: start again when it answers (the writer with --resume)") from exc


def is_gone(exc: BaseException) -> bool:
    """Whether `exc` is Redis saying the job's stream or group is gone (deleted as the job was closed)."""
    from redis.exceptions import ResponseError

    return isinstance(exc, ResponseError) and _gone(exc)


def _gone(exc: Exception) -> bool:
    """Whether Redis's error says the job's stream or group is gone (deleted as the job was closed)."""
    text = str(exc)
    return "NOGROUP" in text or "no longer exists" in text


def _finished(entry: str, fields: dict[str, str]) -> Finished:
    line = fields.get("line") or ""
    dead = fields.get("dead")
    return Finished(entry=entry, id=fields["id"], line=json.loads(line) if line else None,
                    failed_agents=json.loads(fields.get("failed") or "[]"), worker=fields.get("worker", ""),
                    dead=json.loads(dead) if dead else None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def connect(url: str) -> Any:
    """An asyncio Redis client for the job queue at `url`, checked to answer; SetupError (URL without its password)
    when it does not, or when the Redis client library is missing."""
    try:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError
    except ImportError as exc:
        raise SetupError("batch --queue needs the Redis client: pip install 'parallama[redis]'") from exc
    client = aioredis.from_url(url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S,
                               socket_timeout=CONNECT_TIMEOUT_S + 10)
    try:
        await client.ping()
        info = await client.info("server")
    except (RedisError, OSError) as exc:
        await client.aclose()
        cause = str(exc).strip() or type(exc).__name__
        raise SetupError(f"job queue {public_url(url)}: Redis does not answer ({cause}); start it, or check the "
                         "URL") from exc
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2] if p.isdigit())
    if version < (6, 2):
        await client.aclose()
        raise SetupError(f"job queue {public_url(url)}: Redis {info.get('redis_version')} is too old; batch "
                         "--queue needs Redis 6.2 or later (XAUTOCLAIM)")
    return client


async def jobs_on(client: Any) -> list[str]:
    """The jobs on this Redis now, by name."""
    return sorted(await client.smembers(JOBS))
