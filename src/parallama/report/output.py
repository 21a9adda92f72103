"""How a run is shown on the terminal: plain progress lines, the final answer, the JSON, the review summary."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from ..fleet import Fleet
from ..result import RunResult
from .progress import AgentRow, Progress, summary_line


class ProgressLines(Progress):
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


def review_summary(result: RunResult) -> list[str]:
    """The judge's scores, a vote's tally or the council's aggregate ranking, one line each."""
    lines = []
    if result.scores:
        lines.append("judge's scores:")
        lines += [f"  {s['score']:>2}/10  {s['name']}: {s['reason']}" for s in result.scores]
    if result.tally:
        lines.append("votes:")
        lines += [f"  {c['count']}× {c['answer'] or '(empty)'}: {', '.join(c['workers'])}" for c in result.tally]
    if result.ranking:
        lines.append("council ranking (Borda count):")
        lines += [f"  {i + 1}. {r['name']} ({r['points']} points)" for i, r in enumerate(result.ranking)]
    return lines


def source_label(result: RunResult) -> str:
    """Where the final answer came from, for people: `reviewer, council`, `judged best: B`, `fallback: A's`."""
    kind, _, name = (result.final_source or "").partition(":")
    if kind == "judge":
        return f"judged best: {name}"
    if kind == "vote":
        return "majority vote"
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
            partial = f" · partial: {', '.join(result.cut)} cut" if result.cut else ""
            rule.rule(f"final answer ({source_label(result)}{partial})", style="dim")
        out.write(result.final.rstrip() + "\n")
        return
    answers = [w for w in result.workers if w.ok]
    for i, worker in enumerate(answers):
        if i:
            out.write("\n")
        out.write(f"## {worker.name}\n{worker.content.rstrip()}\n")
