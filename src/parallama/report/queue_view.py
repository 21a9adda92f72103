"""How a batch job over many hosts is shown on each of them: a line with the whole job's progress (done, pending,
in flight, dead; prompts per minute and ETA; each worker's share) at every tenth of the job and at least every
half minute; and, after the summary, the workers and the dead-letter list."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Callable

from rich.console import Console

from ..batch.queue import Job, JobCounts
from .batch_view import PLAIN_EVERY_S, duration

POLL_S = 2.0


def job_status(name: str, counts: JobCounts, per_min: float | None) -> str:
    """`job answers-3f2a…: 120/200 done · 60 pending · 18 in flight · 1 dead · 95.2 prompts/min · ETA 50s ·
    host-a:123 70 done, 9 running · host-b:456 50 done, 9 running`"""
    parts = [f"job {name}: {counts.done}/{counts.total} done", f"{counts.queued} pending",
             f"{counts.in_flight} in flight", f"{counts.dead} dead"]
    left = max(0, counts.total - counts.done - counts.dead)
    if per_min:
        parts.append(f"{per_min:.1f} prompts/min")
        if left:
            parts.append(f"ETA {duration(left / per_min * 60)}")
    for worker, row in counts.to_dict()["workers"].items():
        parts.append(f"{worker} {row['done']} done, {row['in_flight']} running")
    return " · ".join(parts)


class JobProgress:
    """Polls the job's counts (one round trip) and says how the whole job goes, on stderr."""

    def __init__(self, job: Job, *, quiet: bool = False, every_s: float = PLAIN_EVERY_S,
                 say: Callable[[str], None] | None = None) -> None:
        self.job = job
        self.quiet = quiet
        self.every_s = every_s
        self.say = say or _stderr
        self.last: JobCounts | None = None
        self._first: tuple[float, int] | None = None
        self._said_at = 0.0
        self._said_step = -1

    def per_min(self, counts: JobCounts) -> float | None:
        """Prompts finished per minute over every host since this process began looking."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, counts.done)
            return None
        elapsed, finished = now - self._first[0], counts.done - self._first[1]
        return finished / elapsed * 60 if elapsed > 0 and finished > 0 else None

    async def watch(self) -> None:
        """Until cancelled: look every couple of seconds; say a line at each tenth of the job, or every half minute."""
        while True:
            await self.look()
            await asyncio.sleep(POLL_S)

    async def look(self) -> JobCounts:
        counts = await self.job.counts()
        self.last = counts
        rate = self.per_min(counts)
        step = (counts.done * 10 // counts.total) if counts.total else 0
        now = time.monotonic()
        if not self.quiet and (step != self._said_step or now - self._said_at >= self.every_s):
            self._said_step, self._said_at = step, now
            self.say(job_status(self.job.name, counts, rate))
        return counts


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def print_dead(dead: dict[str, dict[str, Any]], console: Console) -> None:
    """The dead-letter list: each prompt set aside after its tries, with its last error."""
    if not dead:
        return
    console.print(f"  dead-letter list ({len(dead)}): prompts set aside after their tries", markup=False,
                  highlight=False)
    for prompt_id, entry in list(dead.items())[:20]:
        console.print(f"    ✗ {prompt_id} ({entry.get('tries', '?')} tries): {entry.get('error', '?')}", markup=False,
                      highlight=False)
    if len(dead) > 20:
        console.print(f"    … and {len(dead) - 20} more", markup=False, highlight=False)


def print_workers(workers: dict[str, dict[str, int]], console: Console) -> None:
    if workers:
        console.print("  workers  " + " · ".join(f"{name} {row['done']} done" for name, row in workers.items()),
                      markup=False, highlight=False)
