"""How `batch` is shown: on a terminal a progress bar (done/failed, prompts per minute, ETA, the servers' load),
otherwise a plain line at every tenth of the prompts and at least every half minute; a line per prompt that got
no answer; and the summary at the end, with the table of scores."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Iterable

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from ..batch import Batch, BatchRecord, BatchSummary
from ..batch.output import line_errors
from ..gates import ServerLoad
from ..scoring import REGEX_TIMEOUT_S, Scoreboard
from .live import servers_line

PLAIN_EVERY_S = 30.0


def duration(seconds: float) -> str:
    """`45s`, `4m 05s`, `2h 05m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def status_text(batch: Batch) -> str:
    """`12/50 · ✗ 1 · 8.3 prompts/min · ETA 4m 35s`"""
    total, done, elapsed = len(batch.records), batch.done, batch.wall_s()
    parts = [f"{done}/{total}"]
    if batch.failed:
        parts.append(f"✗ {len(batch.failed)}")
    if done and elapsed > 0:
        rate = done / elapsed
        parts.append(f"{rate * 60:.1f} prompts/min")
        if done < total:
            parts.append(f"ETA {duration((total - done) / rate)}")
    return " · ".join(parts)


def failure_line(record: BatchRecord, line: dict[str, Any]) -> str:
    """`✗ q7: no answer — Worker A (http://…/api/chat): connection refused …` (the first error of the prompt)."""
    errors = line_errors(line)
    reason = errors[0] if errors else "no answer"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"✗ {record.id}: no answer — {reason}{more}"


def done_lines(record: BatchRecord, line: dict[str, Any]) -> list[str]:
    """What a finished prompt has to say at once: that it got no answer, that its regex gave up on an answer."""
    said = [] if line["answered"] else [failure_line(record, line)]
    gave_up = (line.get("score") or {}).get("gave_up")
    if gave_up:
        said.append(f"⚠ {record.id}: the expected regex took over {REGEX_TIMEOUT_S:g} s on the answer of "
                    f"{', '.join(gave_up)}: scored wrong (a pattern that backtracks without end?)")
    return said


class BatchProgress:
    """Plain progress on stderr (not a terminal): a line per tenth of the prompts, or every half minute."""

    def __init__(self, batch: Batch, *, quiet: bool = False, every_s: float = PLAIN_EVERY_S) -> None:
        self.batch = batch
        self.quiet = quiet
        self.every_s = every_s
        self.step = max(1, math.ceil(len(batch.records) / 10))
        self._last = time.perf_counter()

    def __enter__(self) -> "BatchProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def on_done(self, record: BatchRecord, line: dict[str, Any]) -> None:
        for text in done_lines(record, line):
            self.say(text)
        if not self.quiet and (self.batch.done % self.step == 0 or self.batch.done == len(self.batch.records)):
            self._status()

    def tick(self) -> None:
        """Called about every second: a line when none was written for a while (a slow batch still shows life)."""
        if not self.quiet and time.perf_counter() - self._last >= self.every_s:
            self._status()

    def _status(self) -> None:
        self._last = time.perf_counter()
        in_progress = f" · {self.batch.running} running" if self.batch.running else ""
        self.say(f"batch {status_text(self.batch)}{in_progress}")

    def say(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class _Status(ProgressColumn):
    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch

    def render(self, task: Task) -> Text:  # noqa: ARG002 - rich's signature; the batch's line is not per task
        return Text(status_text(self.batch))


class _BarWithServers(Progress):
    server_load: Callable[[], dict[str, ServerLoad]] | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        load = self.server_load() if self.server_load is not None else {}
        if load:  # none once the client is closed: no bare "servers" line left at the end
            yield Text(servers_line(load), style="dim")


class BarProgress(BatchProgress):
    """A rich progress bar on a terminal, the servers' load under it; failed prompts print above it."""

    def __init__(self, batch: Batch, console: Console,
                 server_load: Callable[[], dict[str, ServerLoad]] | None = None) -> None:
        super().__init__(batch)
        self.bar = _BarWithServers(TextColumn("batch"), BarColumn(), _Status(batch), console=console,
                                   transient=True, refresh_per_second=4)
        self.bar.server_load = server_load
        self.task = self.bar.add_task("batch", total=len(batch.records))

    def __enter__(self) -> "BarProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def on_done(self, record: BatchRecord, line: dict[str, Any]) -> None:
        self.bar.update(self.task, completed=self.batch.done)
        for text in done_lines(record, line):
            self.say(text)

    def tick(self) -> None:
        return None

    def say(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------- the summary


def print_summary(summary: BatchSummary, console: Console, *, output: str | None, final_label: str) -> None:
    """Counts, time and throughput, each server's busy share, failures; then the scores, when there are any."""
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731
    if not summary.ran and not summary.interrupted and not summary.failed:
        say(f"batch: nothing left to run: all {summary.prompts} prompt(s) are answered" +
            (f" in {output}" if output else ""))
        if summary.scoring is not None:
            console.print()
            print_scores(summary.scoring, console, final_label=final_label)
        return
    head = f"batch: {summary.ran} prompt(s) in {summary.wall_s:.1f} s"
    if summary.ran:
        head += f", {summary.prompts_per_min:.1f} prompts/min"
    say(head + f" (concurrency {summary.concurrency})" + (f" → {output}" if output else ""))
    counts = [f"answered {summary.answered}", f"failed {len(summary.failed)}"]
    if summary.before:
        counts.append(f"{summary.before} answered before (skipped)")
    if summary.interrupted:
        counts.append(f"{summary.in_flight} stopped in flight")
    say("  " + " · ".join(counts) + f" · {summary.before + summary.answered}/{summary.prompts} of the input done")
    if summary.servers and summary.ran:
        busy = [f"{s.url.split('://', 1)[-1]} {s.busy_fraction:.0%}" + (f" of {s.slots} slots" if s.slots > 1 else "")
                for s in summary.servers]
        say("  servers busy  " + " · ".join(busy))
        shared = [f"{s.url.split('://', 1)[-1]}: waited {s.waited_for_others_s:.1f} s behind them; "
                  f"{s.others_in_flight} busy, {s.others_waiting} waiting of theirs at the end"
                  for s in summary.servers if s.waited_for_others_s >= 0.05 or s.others_in_flight or s.others_waiting]
        if shared:
            say("  other processes on these slots  " + " · ".join(shared))
    if summary.agent_failures:
        say("  failed requests  " + " · ".join(f"{name} {n}" for name, n in summary.agent_failures.items()))
        for name, cause in summary.agent_causes.items():
            say(f"    {name}: {cause}")
    if summary.failed:
        shown = ", ".join(summary.failed[:10]) + (", …" if len(summary.failed) > 10 else "")
        say(f"  no answer: {shown}")
    if summary.scoring is not None:
        console.print()
        print_scores(summary.scoring, console, final_label=final_label)
        print_strategies(summary.scoring, summary.review_cost, console)


def print_strategies(board: Scoreboard, cost: dict[str, dict[str, float]], console: Console) -> None:
    """`--strategies`: each strategy's accuracy over the same worker answers, its gain over the best worker, and
    what its review cost (requests, tokens, seconds of model time), and the extra samples a `+samples` strategy
    asked for."""
    if not board.strategies:
        return
    best = board.best_worker()
    table = Table(title="strategies over the same worker answers" + (f" (best worker: {best[0]}, "
                  f"{best[1].correct}/{board.scored})" if best else ""), title_justify="left", box=None,
                  header_style="bold", pad_edge=False)
    sampled = any("sample_requests" in spent for spent in cost.values())
    what = "review + samples" if sampled else "review"
    for column in ("strategy", "correct", "accuracy", "gain", f"{what} requests", f"{what} tokens", f"{what} time"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, tally in board.strategies.items():
        gain = board.gain(tally)
        spent = cost.get(name, {})
        extra = "sample_requests" in spent

        def both(review: str, sample: str, show=lambda v: f"{int(v)}", spent=spent, extra=extra) -> str:
            spent_review = show(spent.get(review, 0))
            return f"{spent_review} + {show(spent.get(sample, 0))}" if extra else spent_review
        table.add_row(name, f"{tally.correct}/{tally.scored}", f"{tally.accuracy:.1%}" if tally.accuracy is not None
                      else "—", f"{gain * 100:+.1f} pts" if gain is not None else "—",
                      both("review_requests", "sample_requests"), both("review_tokens", "sample_tokens"),
                      both("review_s", "sample_s", duration))
    console.print()
    console.print(table)


def print_scores(board: Scoreboard, console: Console, *, final_label: str) -> None:
    """Accuracy per worker, of the final answer and of any worker, then the ensemble gain."""
    table = Table(title=f"scores over {board.scored} prompt(s) with an expected answer", title_justify="left",
                  box=None, header_style="bold", pad_edge=False)
    for column in ("answer", "correct", "accuracy", "no answer"):
        table.add_column(column, justify="left" if column == "answer" else "right")

    def row(label: str, tally) -> None:
        table.add_row(label, f"{tally.correct}/{tally.scored}", f"{tally.accuracy:.1%}", str(tally.no_answer))

    for name, tally in board.workers.items():
        row(name, tally)
    if board.final is not None:
        row(final_label, board.final)
    row("any worker right", board.any_worker)
    console.print(table)
    best, gain = board.best_worker(), board.gain()
    if board.final is None or best is None or gain is None:
        console.print("ensemble gain: none to measure (no review: no final answer)", highlight=False)
        return
    diff = board.final.correct - best[1].correct
    console.print(f"ensemble gain: {gain * 100:+.1f} points ({diff:+d} prompt(s)): final {board.final.correct} vs "
                  f"the best worker, {best[0]}, {best[1].correct} of {board.scored}", markup=False, highlight=False)
