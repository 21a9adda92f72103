"""The live table on stderr: one row per agent with state, queued/elapsed seconds, tokens, tok/s and its stream."""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..fleet import Fleet
from ..events import REVIEW, WORKERS, Event
from ..gates import ServerLoad
from ..redact import Redactor
from ..tracker import AgentRow, RunTracker
from .lines import tail_text

_STATE_STYLE = {"waiting": "dim", "queued": "yellow", "thinking": "magenta", "running": "cyan", "done": "green",
                "failed": "red", "timeout": "red", "cut": "yellow"}


class LiveView:
    """A rich table of the run's rows (its `RunTracker`'s), redrawn several times a second while the run goes on;
    the view is the run's event sink."""

    def __init__(self, fleet: Fleet, console: Console, *, review: bool = True) -> None:
        self.tracker = RunTracker(fleet, review=review)
        self.redact = Redactor(fleet.secrets())
        "Streamed text is raw (results are masked once they end): a tail is masked when it is drawn."
        self.console = console
        self.server_load: Callable[[], dict[str, ServerLoad]] | None = None
        "When set (to `FleetClient.load`), a line under the table shows each server's slots in use and queue."
        self._live = Live(console=console, refresh_per_second=8, get_renderable=self.render, transient=False)

    def __call__(self, event: Event) -> None:
        self.tracker.feed(event)

    @property
    def rows(self) -> dict[tuple[str, str], AgentRow]:
        return self.tracker.rows

    def __enter__(self) -> "LiveView":
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)

    def render(self) -> RenderableType:
        table = self._table()
        if self.server_load is None:
            return table
        return Group(table, Text(servers_line(self.server_load()), style="dim"))

    def _table(self) -> Table:
        now = time.perf_counter()
        table = Table(box=None, pad_edge=False, expand=False, header_style="bold")
        table.add_column("agent", no_wrap=True, max_width=36)
        table.add_column("state", no_wrap=True)
        table.add_column("queued", justify="right", no_wrap=True)
        table.add_column("elapsed", justify="right", no_wrap=True)
        table.add_column("tokens", justify="right", no_wrap=True)
        table.add_column("tok/s", justify="right", no_wrap=True)
        table.add_column("stream", no_wrap=True, overflow="ellipsis", max_width=50)
        for row in self.rows.values():
            table.add_row(*self._cells(row, now))
        return table

    def _cells(self, row: AgentRow, now: float) -> list:
        name = row.agent.name if row.stage == WORKERS else f"↳ {row.agent.name}"
        if row.stage not in (WORKERS, REVIEW):
            name += f" ({row.stage})"
        queued, elapsed, rate = row.queued_s(now), row.elapsed_s(now), row.tokens_per_s(now)
        if row.result and not row.result.ok:
            stream = Text(row.result.error_kind or row.result.status, style="red")
        elif row.state == "thinking":
            stream = Text(tail_text(self.redact(row.thought_tail)), style="dim italic")
        else:
            stream = Text(tail_text(self.redact(row.tail)), style="dim")
        tokens = ""
        if row.state != "waiting":
            tokens = str(row.tokens())
            if row.thinking_tokens():
                tokens += f" +{row.thinking_tokens()} think"
        return [
            name,
            Text(row.state, style=_STATE_STYLE.get(row.state, "")),
            f"{queued:.1f}s" if queued is not None else "",
            f"{elapsed:.1f}s" if elapsed is not None else "",
            tokens,
            f"{rate:.1f}" if rate else "",
            stream,
        ]


def servers_line(load: dict[str, ServerLoad]) -> str:
    """`servers  localhost:11434 1/1 busy, 2 waiting (1 busy, 1 waiting in other processes) · localhost:11435 0/1
    busy`: the counts are every process's that shares the slots."""
    parts = []
    for url, gate in load.items():
        text = f"{url.split('://', 1)[-1]} {gate.in_flight}/{gate.slots} busy"
        if gate.waiting:
            text += f", {gate.waiting} waiting"
        busy, waiting = gate.others()
        if busy or waiting:
            text += f" ({busy} busy, {waiting} waiting in other processes)"
        parts.append(text)
    return "servers  " + " · ".join(parts)
