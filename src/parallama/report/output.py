"""Runs a fleet for the CLI: picks the view for the terminal, then prints the answer, JSON and warnings."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import nullcontext

from rich.console import Console

from ..config import Fleet
from ..result import RunResult
from ..runner import run
from .progress import AgentRow, Progress, summary_line


class _Lines(Progress):
    """Plain progress for a non-terminal stderr: one line per agent as it ends (only failures when quiet)."""

    def __init__(self, fleet: Fleet, *, review: bool, failures_only: bool) -> None:
        super().__init__(fleet, review=review)
        self.failures_only = failures_only

    def on_end(self, row: AgentRow) -> None:
        assert row.result is not None
        if row.result.ok and self.failures_only:
            return
        sys.stderr.write(summary_line(row.result) + "\n")
        sys.stderr.flush()


def run_and_report(
    prompt: str, fleet: Fleet, *, as_json: bool, quiet: bool, deadline: float | None, review: bool,
    strategy: str | None = None, history: bool = False,
) -> int:
    """Run with a live view or progress lines on stderr; print the result on stdout; return the exit code."""
    console = Console(stderr=True)
    live = console.is_terminal and not quiet
    if live:
        from .live import LiveView

        view: Progress = LiveView(fleet, console, review=review)
    else:
        view = _Lines(fleet, review=review, failures_only=quiet)
    with view if live else nullcontext():  # type: ignore[attr-defined]
        result = asyncio.run(run(prompt, fleet, deadline=deadline, review=review, strategy=strategy, on_event=view,
                                 history=history))
    if live:
        for row in view.ended:
            if row.result and not row.result.ok:
                sys.stderr.write(summary_line(row.result) + "\n")
    if not quiet:
        for line in review_summary(result):
            sys.stderr.write(line + "\n")
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    print_result(result, as_json=as_json, rule=console if live else None)
    if not result.answered:
        sys.stderr.write("error: no answer: every worker failed\n")
        return 1
    return 0


def review_summary(result: RunResult) -> list[str]:
    """The judge's scores or the council's aggregate ranking, one line each."""
    lines = []
    if result.scores:
        lines.append("judge's scores:")
        lines += [f"  {s['score']:>2}/10  {s['name']}: {s['reason']}" for s in result.scores]
    if result.ranking:
        lines.append("council ranking (Borda count):")
        lines += [f"  {i + 1}. {r['name']} ({r['points']} points)" for i, r in enumerate(result.ranking)]
    return lines


def source_label(result: RunResult) -> str:
    """Where the final answer came from, for people: `reviewer, council`, `judged best: B`, `fallback: A's`."""
    kind, _, name = (result.final_source or "").partition(":")
    if kind == "judge":
        return f"judged best: {name}"
    if kind == "worker":
        return f"fallback: {name}'s answer"
    return f"reviewer, {result.strategy}" if result.strategy else "reviewer"


def print_result(result: RunResult, *, as_json: bool, rule: Console | None = None) -> None:
    """The final answer alone on stdout; with no review, every worker's answer under its name; or the JSON."""
    out = sys.stdout
    if as_json:
        out.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    if result.final is not None:
        if rule is not None:
            rule.rule(f"final answer ({source_label(result)})", style="dim")
        out.write(result.final.rstrip() + "\n")
        return
    answers = [w for w in result.workers if w.ok]
    for i, worker in enumerate(answers):
        if i:
            out.write("\n")
        out.write(f"## {worker.name}\n{worker.content.rstrip()}\n")
