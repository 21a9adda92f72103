"""`parallama batch --queue URL` (the host that writes the output, a worker too) and `parallama batch --join URL`
(a worker on any host): one batch job over many hosts on Redis Streams."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import click

from .common import echo_json, until_stopped

if TYPE_CHECKING:
    from ..batch import BatchRecord, BatchSummary
    from ..batch.queue import JobSettings
    from ..fleet import Fleet


def check_queue_url(url: str, option: str) -> str:
    """The URL, or a UsageError naming the option (never the password)."""
    from ..batch.queue import check_url
    from ..errors import UsageError

    try:
        return check_url(url.strip())
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def write_job(fleet: "Fleet", records: list["BatchRecord"], todo: list["BatchRecord"], before: list, output: str,
              writer: Any, err: Any, *, url: str, settings: "JobSettings", concurrency: int | None,
              quiet: bool, metrics_at: tuple[str, int] | None = None) -> "BatchSummary":
    """Put the prompts on the job's stream, work on them here too, and write every host's lines to the output."""
    import asyncio

    from ..batch.queue import Job, connect, fleet_for_job, job_name, redis_errors
    from ..batch.queue_run import JobWriter, QueueWorker
    from ..client import FleetClient
    from ..report.batch_view import done_lines
    from ..observe.endpoint import observing
    from ..report.queue_view import JobProgress
    from ..urls import public_url

    def say(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    async def go() -> "BatchSummary":
        redis = await connect(url)
        try:
            with redis_errors(public_url(url)):
                return await write(redis)
        finally:
            await redis.aclose()

    async def write(redis: Any) -> "BatchSummary":
        job = Job(redis, url, job_name(output, records, settings))
        click.echo(f"job {job.name} on {job.where}: join it from any host with: parallama batch --join "
                   f"{job.where} --job {job.name} -c CONFIG", err=True)
        async with FleetClient(fleet_for_job(fleet, url)) as client, observing(client, metrics_at=metrics_at,
                                                                               say=say):
            job_writer = JobWriter(job, client, records, todo, before, write=writer.write, settings=settings,
                                   say=lambda text: click.echo(text, err=True))
            await job_writer.start()
            worker = QueueWorker(job, client, settings, concurrency=concurrency or 0)
            job_writer.concurrency = worker.concurrency
            view = JobProgress(job, quiet=quiet)

            def on_done(record: "BatchRecord", line: dict) -> None:
                for text in done_lines(record, line):
                    click.echo(text, err=True)

            async def both() -> None:
                await asyncio.gather(job_writer.run(on_done), worker.run())

            interrupted = await until_stopped(both, view.watch)
            job_writer.batch.interrupted = interrupted
            summary = await job_writer.summary()
            await job.release_writer()
            return summary

    return asyncio.run(go())


def join(url: str, config_path: str | None, name: str | None, *, concurrency: int | None, as_json: bool,
         quiet: bool, metrics_at: tuple[str, int] | None = None) -> int:
    """Work on a job from this host, with this host's config, until nothing of it is left to take."""
    import asyncio

    from rich.console import Console

    from ..batch.queue import Job, connect, fleet_for_job, jobs_on, redis_errors
    from ..batch.queue_run import QueueWorker
    from ..client import FleetClient
    from ..errors import UsageError
    from ..observe.endpoint import observing
    from ..report.queue_view import JobProgress, job_status, print_dead
    from ..review import needs_reviewer
    from ..urls import public_url
    from .common import load_fleet

    url = check_queue_url(url, "--join")
    fleet = load_fleet(config_path)

    async def go() -> tuple[dict[str, Any], dict[str, Any], bool]:
        redis = await connect(url)
        try:
            with redis_errors(public_url(url)):
                return await work(redis)
        finally:
            await redis.aclose()

    async def work(redis: Any) -> tuple[dict[str, Any], dict[str, Any], bool]:
        job = Job(redis, url, await _pick(redis, name, url, jobs_on, quiet))
        settings = await job.settings()
        if settings is None:
            raise UsageError(f"--job {job.name}: no such job on {job.where}")
        needing = [n for n in settings.strategies if needs_reviewer(n)]
        if needing and not fleet.reviewers:
            raise UsageError(f"job {job.name} compares {', '.join(needing)}, which need a reviewer_agent, and "
                             f"{fleet.source} has none")
        for warning in fleet.warnings:
            click.echo(f"warning: {warning}", err=True)
        async with FleetClient(fleet_for_job(fleet, url)) as client, observing(
                client, metrics_at=metrics_at, say=lambda line: click.echo(line, err=True)):
            worker = QueueWorker(job, client, settings, concurrency=concurrency or 0)
            if not quiet:
                click.echo(f"joined job {job.name} on {job.where} as {worker.name} "
                           f"(concurrency {worker.concurrency})", err=True)
            view = JobProgress(job, quiet=quiet)
            interrupted = await until_stopped(worker.run, view.watch)
            counts = await job.counts()
            dead = await job.dead_letters()
            if not quiet:
                click.echo(f"job {job.name}: finished, written by its writer" if not counts.exists else
                           job_status(job.name, counts, view.per_min(counts)), err=True)
            return worker.summary(counts if counts.exists else view.last), dead, interrupted

    summary, dead, interrupted = asyncio.run(go())
    if as_json:
        echo_json({**summary, "dead": dead, "interrupted": interrupted})
    else:
        out = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        out.print(f"worker {summary['worker']}: {summary['finished']} prompt(s) in {summary['wall_s']:.1f} s, "
                  f"{summary['prompts_per_min']:.1f} prompts/min · {summary['tries_failed']} tries failed · "
                  f"{summary['taken_over']} taken over", markup=False)
        print_dead(dead, out)
    if interrupted:
        click.echo(f"interrupted: the prompts in progress here went back to the job; join again with: parallama "
                   f"batch --join {public_url(url)}", err=True)
        return 130
    return 1 if dead else 0


async def _pick(redis: Any, name: str | None, url: str, jobs_on: Callable[[Any], Awaitable[list[str]]],
                quiet: bool) -> str:
    """The job to work on: `--job NAME`, else the only one on the Redis. With none there yet, wait for one (a
    worker may well start before the job does), saying so once."""
    import asyncio

    from ..batch.queue import PREFIX
    from ..errors import UsageError
    from ..urls import public_url

    said = False
    while True:
        names = await jobs_on(redis)
        if name and (name in names or await redis.hexists(f"{PREFIX}{name}:meta", "settings")):
            return name
        if not name and len(names) > 1:
            raise UsageError(f"--join: {len(names)} jobs on {public_url(url)}: pick one with --job "
                             f"({', '.join(names)})")
        if not name and names:
            return names[0]
        if not said and not quiet:
            click.echo(f"waiting for {'job ' + name if name else 'a batch job'} on {public_url(url)} (start one "
                       f"with: parallama batch INPUT -o OUT --queue {public_url(url)})", err=True)
            said = True
        await asyncio.sleep(0.2)
