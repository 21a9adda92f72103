"""How `bench` is shown: a progress bar while it runs, then a table of both modes and the flags."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.table import Table

from ..bench import BenchResult, Progress


@contextmanager
def progress_for() -> Iterator[Progress]:
    """A rich progress bar on a terminal; plain lines otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        def line(step: int, total: int, label: str) -> None:
            sys.stderr.write(f"[{step}/{total}] {label}\n")

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
             console=console, transient=True) as bar:
        task = bar.add_task("bench", total=None)

        def update(step: int, total: int, label: str) -> None:
            bar.update(task, completed=step, total=total, description=label)

        yield update


def _s(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "—"


def print_bench(result: BenchResult) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped: rich would assume 80 columns and wrap the per-agent table's cells; a file has no width.
        console = Console(highlight=False, width=200, no_color=True)
    modes = Table(title="makespan (s)", title_justify="left", box=None, header_style="bold")
    for column in ("mode", "median", "min", "max"):
        modes.add_column(column, justify="right" if column != "mode" else "left")
    for mode in (result.sequential, result.parallel):
        modes.add_row(mode.mode, _s(mode.makespan_s), _s(mode.makespan_min_s), _s(mode.makespan_max_s))
    console.print(modes)
    console.print(f"speedup {result.speedup:.2f}×   (the slot layout allows {result.ideal_speedup:.2f}×)\n")
    agents = Table(title="per agent (medians)", title_justify="left", box=None, header_style="bold")
    for column in ("agent", "latency seq", "latency par", "TTFT seq", "TTFT par", "tok/s seq", "tok/s par",
                   "failed"):
        agents.add_column(column, justify="left" if column == "agent" else "right")
    for seq, par in zip(result.sequential.agents, result.parallel.agents):
        agents.add_row(seq.name, _s(seq.latency_s), _s(par.latency_s), _s(seq.ttft_s), _s(par.ttft_s),
                       _s(seq.tokens_per_s), _s(par.tokens_per_s), str(seq.failures + par.failures))
    console.print(agents)
    console.print("warm-up, one request per model (its load time; not counted):")
    for name, secs in result.warmup.items():
        console.print(f"  {name}: {secs:.2f} s", markup=False)
    for flag in result.flags:
        console.print(f"⚠ {flag}", markup=False)
