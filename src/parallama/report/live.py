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

STATE_STYLE = {"waiting": "dim", "queued": "yellow", "thinking": "magenta", "running": "cyan", "done": "green",
               "failed": "bold red", "timeout": "bold red", "cut": "yellow", "stopped": "dim yellow",
               "unusable": "red"}
"Each state's colour; the state is always written as a word too (colour alone is lost on many terminals)."
GAP = 2
"Spaces between columns."
NAME_MIN = 12
"The agent column's width before any optional column is given room (a longer name is cut with …)."
NAME_MAX = 36
STREAM_MIN = 8
"The stream's tail is shown only with at least this many columns left for it."
OPTIONAL = ("elapsed", "queued", "tokens", "tok/s")
"The columns after the name and the state, most important first: as the terminal narrows, the last go first."


class LiveView:
    """A rich table of the run's rows (its `RunTracker`'s), redrawn several times a second while the run goes on;
    the view is the run's event sink. As the terminal narrows, columns are dropped by importance: the name and
    the state always show, then elapsed and queued seconds, then tokens and tok/s; the stream's tail takes what is
    left. A header is shown whole or its column is left out, never cut."""

    def __init__(self, fleet: Fleet, console: Console, *, review: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """`clock`: the time the rows' seconds and rates are read against (a test's own, to draw one moment)."""
        self.clock = clock
        self.tracker = RunTracker(fleet, review=review, clock=clock)
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
        if exc[0] is not None and issubclass(exc[0], KeyboardInterrupt):
            # Ctrl-C can land in the middle of a redraw: rich would then print the table again under the half-drawn
            # one (its header twice). Erase the live area instead, and print the table once.
            self._live.transient = True
            self._live.__exit__(*exc)
            self.console.print(self._table())
            return
        self._live.__exit__(*exc)

    def render(self) -> RenderableType:
        table = self._table()
        if self.server_load is None or self.tracker.over:
            return table  # the servers' load is for while the run goes (its client is closed after)
        load = self.server_load()
        if not load:
            return table
        return Group(table, Text(servers_line(load), style="dim", overflow="ellipsis", no_wrap=True))

    def _table(self) -> Table:
        now = self.clock()
        cells = [self._cells(row, now) for row in self.rows.values()]
        widths = column_widths(cells, self.console.width)
        table = Table(box=None, pad_edge=False, expand=False, header_style="bold", padding=(0, GAP, 0, 0))
        for name, width in widths.items():
            right = name in OPTIONAL
            overflow = "ellipsis" if name in ("agent", "stream") else "fold"
            table.add_column(name, width=width, no_wrap=True, overflow=overflow,  # type: ignore[arg-type]
                             justify="right" if right else "left")
        for row in cells:
            table.add_row(*(row[name] for name in widths))
        return table

    def _cells(self, row: AgentRow, now: float) -> dict[str, Text]:
        name = row.agent.name if row.stage == WORKERS else f"↳ {row.agent.name}"
        if row.stage not in (WORKERS, REVIEW):
            name += f" ({row.stage})"
        if row.agent.pooled and row.started_at is not None:
            name += f" @ {row.agent.server.split('://', 1)[-1]}"  # the replica of its pool that took it
        queued, elapsed, rate = row.queued_s(now), row.elapsed_s(now), row.tokens_per_s(now)
        if row.state == "unusable":
            stream = Text(row.error or "unusable", style="red")
        elif row.result and not row.result.ok:
            stream = Text(row.result.error_kind or row.result.status, style="red")
        elif row.state == "thinking":
            stream = Text(tail_text(self.redact(row.thought_tail)), style="dim italic")
        else:
            stream = Text(tail_text(self.redact(row.tail)), style="dim")
        tokens = ""
        if row.state not in ("waiting", "queued"):
            tokens = str(row.tokens())
            if row.thinking_tokens():
                tokens += f" +{row.thinking_tokens()} think"
        return {
            "agent": Text(name),
            "state": Text(row.state, style=STATE_STYLE.get(row.state, "")),
            "elapsed": Text(f"{elapsed:.1f}s" if elapsed is not None else ""),
            "queued": Text(f"{queued:.1f}s" if queued is not None else ""),
            "tokens": Text(tokens),
            "tok/s": Text(f"{rate:.1f}" if rate else ""),
            "stream": stream,
        }


def column_widths(rows: list[dict[str, Text]], width: int) -> dict[str, int]:
    """Which columns fit in `width`, and how wide each is: the state whole and the name (at least NAME_MIN, or
    its header) always; then each optional column in order of importance while it fits whole with its header; the
    name then grows to its natural width (up to NAME_MAX); the stream takes what is left, if enough is."""
    def natural(name: str) -> int:
        return max([len(name), *(row[name].cell_len for row in rows)])

    name_natural = min(NAME_MAX, natural("agent"))
    name_width = min(name_natural, NAME_MIN)
    chosen: dict[str, int] = {"agent": name_width, "state": natural("state")}
    used = name_width + GAP + chosen["state"]
    for column in OPTIONAL:
        need = natural(column)
        if used + GAP + need > width:
            break  # the rest are less important: none is shown before this one
        chosen[column] = need
        used += GAP + need
    grow = min(name_natural - name_width, max(0, width - used))
    chosen["agent"] += grow
    used += grow
    left = width - used - GAP
    if left >= STREAM_MIN:
        chosen["stream"] = min(left, natural("stream"), 50)
    return chosen


def servers_line(load: dict[str, ServerLoad]) -> str:
    """`servers  localhost:11434 1/1 busy, 2 waiting (1 busy, 1 waiting in other processes) · localhost:11435 0/1
    busy`: the counts are every process's that shares the slots."""
    parts = []
    for url, gate in load.items():
        text = f"{url.split('://', 1)[-1]} {gate.in_flight}/{gate.slots} busy"
        if gate.benched:
            text += f", benched {gate.benched}"
        if gate.waiting:
            text += f", {gate.waiting} waiting"
        busy, waiting = gate.others()
        if busy or waiting:
            text += f" ({busy} busy, {waiting} waiting in other processes)"
        parts.append(text)
    return "servers  " + " · ".join(parts)
