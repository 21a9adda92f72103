"""`parallama batch`: many prompts through the fleet, pipelined, appended to a JSONL file as each finishes,
resumable after a crash, and scored against expected answers."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ..review import STRATEGIES
from .common import (CONFIG_ENV, DEFAULT_CONFIG, METRICS_PORT_HELP, ListenAddress, Number, echo_json, load_fleet,
                     until_stopped, user_errors)

if TYPE_CHECKING:
    from ..batch import Batch, BatchRecord, BatchSummary
    from ..batch.queue import JobSettings
    from ..fleet import Fleet
    from ..report.batch_view import BatchProgress


@click.command()
@click.argument("input_path", metavar="INPUT", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Append a JSON line per finished prompt to this file (default: stdout).")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help=f"Fleet config. Default: ${CONFIG_ENV}, then ./{DEFAULT_CONFIG}.")
@click.option("--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Prompts in progress at once (default: the fleet's slots + 1, enough to keep every slot busy).")
@click.option("--resume", is_flag=True,
              help="Go on from OUTPUT: skip the ids answered there, run the rest (failed ones included) again.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="How the answers are reviewed (default: the config's review.strategy, else synthesize).")
@click.option("--strategies", metavar="A,B,…",
              help="Compare strategies (e.g. synthesize,judge,council,vote): the workers once per prompt, each "
                   "strategy's review over the same answers; each line holds every final answer, the summary "
                   "each strategy's accuracy, gain over the best worker and cost.")
@click.option("--no-review", is_flag=True, help="Skip the reviewer; each line holds the workers' answers.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (and scores) as JSON on stdout; needs -o.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr; failed prompts and the summary still show.")
@click.option("--metrics-port", "metrics_at", type=ListenAddress(), metavar="[HOST:]PORT", help=METRICS_PORT_HELP)
@click.option("--queue", "queue_url", metavar="REDIS_URL",
              help="Share the work with other hosts through Redis (redis://host:6379/0): the prompts go on a job's "
                   "stream, this process works on them too and writes OUTPUT; it prints the job's name.")
@click.option("--join", "join_url", metavar="REDIS_URL",
              help="Work on a job another host started with --queue, with this host's config (no INPUT, no -o).")
@click.option("--job", "job_name", metavar="NAME", help="--join: the job to work on, when the Redis holds several.")
@click.option("--tries", type=click.IntRange(min=1), default=None, metavar="N",
              help="--queue: deliveries of a prompt (a failed try, a worker that died on it) before it is set aside "
                   "in the dead-letter list (default 3).")
@click.option("--takeover-after", type=Number(min=0.5), default=None, metavar="SECONDS",
              help="--queue: a prompt whose worker stopped renewing its claim this long is taken over by another "
                   "(default 30).")
def batch(input_path: str | None, output: str | None, config_path: str | None, concurrency: int | None,
          resume: bool, strategy: str | None, strategies: str | None, no_review: bool, as_json: bool, quiet: bool,
          metrics_at: tuple[str, int] | None, queue_url: str | None, join_url: str | None, job_name: str | None,
          tries: int | None, takeover_after: float | None) -> None:
    """Run every prompt of INPUT through the fleet, several at once, and write each result as it finishes.

    INPUT is JSON lines, {"id": "q1", "prompt": "...", "expected": "...", "match": "answer|number|exact|contains|regex"}
    (only "prompt" is required; a missing id becomes the line number), or plain text with one prompt per line,
    or - for stdin. The whole input is checked before anything is sent.

    Across hosts: `--queue redis://…/0` here, `parallama batch --join redis://…/0 -c CONFIG` on the others; every
    prompt is written once, a stopped worker's prompts are taken over, a prompt that fails every try is set aside.

    Exit codes: 0 every prompt has an answer; 1 some have none (run again with --resume to retry them);
    2 bad usage, config or input; 130 interrupted (what finished is written).
    """
    with user_errors():
        from ..batch import first_line_is_a_result
        from ..errors import UsageError

        if join_url is not None:
            from .batch_queue import join

            given = [name for name, value in (("INPUT", input_path), ("-o", output), ("--resume", resume),
                                              ("--queue", queue_url), ("--strategy", strategy),
                                              ("--strategies", strategies), ("--no-review", no_review),
                                              ("--tries", tries), ("--takeover-after", takeover_after)) if value]
            if given:
                raise UsageError(f"--join works on a job as its writer started it: leave out {', '.join(given)}")
            code = join(join_url, config_path, job_name, concurrency=concurrency, as_json=as_json, quiet=quiet,
                        metrics_at=metrics_at)
            sys.exit(code)
        if input_path is None:
            raise UsageError("missing INPUT: the file of prompts (or - for stdin); or --join REDIS_URL to work on a "
                             "job another host started")
        if queue_url is None:
            extra = [name for name, value in (("--job", job_name), ("--tries", tries),
                                              ("--takeover-after", takeover_after)) if value]
            if extra:
                raise UsageError(f"{', '.join(extra)} go{'es' if len(extra) == 1 else ''} with --queue or --join")
        elif job_name is not None:
            raise UsageError("--job picks a job to --join; --queue names its job itself (it prints the name)")
        if output == "-":
            output = None
        if queue_url is not None:
            from .batch_queue import check_queue_url

            queue_url = check_queue_url(queue_url, "--queue")
            if output is None:
                raise UsageError("--queue writes every host's results to one file: add -o FILE")
        if resume and output is None:
            raise UsageError("--resume goes on from an output file: add -o FILE")
        if as_json and output is None:
            raise UsageError("--json prints the summary on stdout, where the result lines would go: add -o FILE")
        fleet = load_fleet(config_path)
        compared = _strategies(strategies, fleet, strategy, no_review) if strategies is not None else ()
        if output is not None:
            _not_the_input(input_path, output)
        records = _read_input(input_path)
        held = first_line_is_a_result(output) if output is not None and not resume else None
        if held is True:
            raise UsageError(f"{output} already holds results: add --resume to go on from them (only prompts "
                             "without an answer run), or choose another -o")
        if held is False:
            raise UsageError(f"{output} is not empty, and what it holds is not results of parallama batch: "
                             "choose another -o")
        queue = None
        if queue_url is not None:
            from ..batch.queue import DEFAULT_TAKEOVER_S, DEFAULT_TRIES, JobSettings

            reviewing = not no_review
            queue = (queue_url, JobSettings(
                review=reviewing, strategy=(strategy or fleet.strategy) if reviewing and not compared else None,
                strategies=compared, tries=tries or DEFAULT_TRIES, takeover_s=takeover_after or DEFAULT_TAKEOVER_S))
        code = _run(fleet, records, input_path, output, concurrency=concurrency, review=not no_review,
                    strategy=strategy, strategies=compared, as_json=as_json, quiet=quiet, metrics_at=metrics_at,
                    queue=queue)
    sys.exit(code)


def _strategies(listed: str, fleet: "Fleet", strategy: str | None, no_review: bool) -> tuple[str, ...]:
    """`--strategies a,b`: known names, each once, and a reviewer in the config for those that need one."""
    from ..errors import UsageError
    from ..review import needs_reviewer

    if strategy is not None or no_review:
        raise UsageError("--strategies compares strategies: leave out " + ("--strategy" if strategy else "--no-review"))
    names = [name.strip() for name in listed.split(",") if name.strip()]
    if not names:
        raise UsageError(f"--strategies: name at least one of {', '.join(STRATEGIES)}")
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise UsageError(f"--strategies: unknown {unknown[0]!r}: use {', '.join(STRATEGIES)}")
    if not fleet.reviewers:
        needing = [name for name in names if needs_reviewer(name)]
        if needing:
            raise UsageError(f"--strategies: {', '.join(needing)} need{'s' if len(needing) == 1 else ''} a "
                             f"reviewer_agent, and {fleet.source} has none")
    return tuple(dict.fromkeys(names))


def _read_input(input_path: str) -> list["BatchRecord"]:
    from ..batch import parse_records, read_records

    if input_path == "-":
        return parse_records(sys.stdin.buffer.read(), "<stdin>")
    return read_records(input_path)


def _not_the_input(input_path: str, output: str) -> None:
    """Refuse to write the results into the input (the same file by any name or link, or what stdin reads)."""
    from ..batch import same_file
    from ..errors import UsageError

    try:
        source: str | int = sys.stdin.fileno() if input_path == "-" else input_path
    except (OSError, ValueError):  # a stdin that is no file
        return
    if same_file(source, output):
        raise UsageError(f"{output} is the input file ({input_path}): the results must go to another file "
                         "(-o answers.jsonl)")


def _run(fleet: "Fleet", records: list["BatchRecord"], input_path: str, output: str | None, *,
         concurrency: int | None, review: bool, strategy: str | None, strategies: tuple[str, ...], as_json: bool,
         quiet: bool, metrics_at: tuple[str, int] | None = None, queue: tuple[str, "JobSettings"] | None = None) -> int:
    from contextlib import ExitStack

    from rich.console import Console

    from ..batch import JsonLines, ResultsFile
    from ..report.batch_view import print_summary

    err = Console(stderr=True)
    with ExitStack() as stack:
        if output is None:
            writer: JsonLines = JsonLines(sys.stdout)
            done: dict = {}
        else:
            results = stack.enter_context(ResultsFile.open(output, records))
            writer, done = results, results.done
            _say_what_resume_found(results, len(records), quiet)
        for warning in fleet.warnings:
            click.echo(f"warning: {warning}", err=True)
        todo = [r for r in records if r.id not in done]
        before = [(r, done[r.id]) for r in records if r.id in done]
        if queue is not None and output is not None and todo:  # nothing to run: no job to make
            from .batch_queue import write_job

            summary = write_job(fleet, records, todo, before, output, writer, err, url=queue[0], settings=queue[1],
                                concurrency=concurrency, quiet=quiet, metrics_at=metrics_at)
        else:
            summary = _pipeline(fleet, todo, before, len(records), writer, err, concurrency=concurrency,
                                review=review, strategy=strategy, strategies=strategies, quiet=quiet,
                                metrics_at=metrics_at)
    if as_json:
        echo_json({"input": input_path, "output": output, **summary.to_dict()})
    else:
        # The summary is what the command reports when the results went to a file; else stdout is the results'.
        out = Console(file=sys.stdout if output else sys.stderr, highlight=False, soft_wrap=True)
        label = f"final ({strategies[0] if strategies else strategy or fleet.strategy})" if strategies or (
            review and fleet.reviewers) else "final"
        print_summary(summary, out, output=output, final_label=label)
        if summary.job:
            from ..report.queue_view import print_dead, print_workers

            print_workers(summary.workers, out)
            print_dead(summary.dead, out)
    if summary.interrupted:
        from shlex import quote

        again = (f"parallama batch {quote(input_path)} -o {quote(output)} -c {quote(fleet.source)} --resume"
                 if output else "-o FILE, then --resume")
        if queue is not None:
            from ..urls import public_url

            again += f" --queue {public_url(queue[0])}"
        click.echo(f"interrupted: what finished is written; go on with: {again}", err=True)
        return 130
    return 0 if summary.complete else 1


def _say_what_resume_found(results, prompts: int, quiet: bool) -> None:
    if results.cut_off:
        click.echo(f"{results.path}: dropped its last line, cut off by an interruption (that prompt runs again)",
                   err=True)
    if results.other_ids:
        click.echo(f"warning: {results.path} holds {results.other_ids} line(s) for ids not in this input (kept)",
                   err=True)
    if results.duplicates:
        click.echo(f"{results.path}: took out {results.duplicates} further line(s) for ids answered above them "
                   "(every id once)", err=True)
    if results.changed:
        click.echo(f"{results.path}: the prompt changed since it was answered for {_ids(results.changed)}: "
                   "run again", err=True)
    if results.rescored:
        click.echo(f"{results.path}: the expected answer changed for {_ids(results.rescored)}: scored again "
                   "(no model call)", err=True)
    if not quiet and (results.done or results.rerun):
        click.echo(f"resuming: {len(results.done)} of {prompts} answered in {results.path}"
                   + (f"; {len(results.rerun)} without an answer run again" if results.rerun else ""), err=True)


def _ids(ids: list[str], shown: int = 5) -> str:
    """`q1, q2` or `7 ids (q1, q2, q3, q4, q5, …)`."""
    listed = ", ".join(ids[:shown]) + (", …" if len(ids) > shown else "")
    return listed if len(ids) <= 2 else f"{len(ids)} ids ({listed})"


def _pipeline(fleet: "Fleet", todo: list["BatchRecord"], before: list, prompts: int, writer, err, *,
              concurrency: int | None, review: bool, strategy: str | None, strategies: tuple[str, ...],
              quiet: bool, metrics_at: tuple[str, int] | None = None) -> "BatchSummary":
    """Run the batch in an event loop; Ctrl-C or SIGTERM stop it cleanly (the summary says it was interrupted)."""
    import asyncio

    from ..batch import Batch
    from ..client import FleetClient
    from ..observe.endpoint import observing
    from ..report.batch_view import BarProgress, BatchProgress

    def say(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    async def go() -> "BatchSummary":
        async with FleetClient(fleet) as client, observing(client, metrics_at=metrics_at, say=say):
            batch = Batch(client, todo, write=writer.write, concurrency=concurrency or 0, review=review,
                          strategy=strategy, strategies=strategies, prompts=prompts, before=before)
            if err.is_terminal and not quiet:
                view: BatchProgress = BarProgress(batch, err, server_load=client.load)
            else:
                view = BatchProgress(batch, quiet=quiet)
            with view:
                await _until_interrupted(batch, view)
            return batch.summary()

    return asyncio.run(go())


async def _until_interrupted(batch: "Batch", view: "BatchProgress") -> None:
    import asyncio

    async def ticks() -> None:
        while True:
            await asyncio.sleep(1)
            view.tick()

    await until_stopped(lambda: batch.run(on_done=view.on_done), ticks)
