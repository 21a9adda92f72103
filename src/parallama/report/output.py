"""How a run's outcome is shown on the terminal: the final answer (or the workers' answers), the JSON, the review
summary."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from ..result import RunResult
from ..review import REGISTRY, summary
from ..sampling import sampling_line


def review_summary(result: RunResult) -> list[str]:
    """The strategy's details for people (the judge's scores, a vote's tally, the council's ranking), one line
    each; then what sampling cost, with `review.samples`."""
    return summary(result.strategy, result.details) + ([sampling_line(result.sampling)] if result.sampling else [])


def source_label(result: RunResult) -> str:
    """Where the final answer came from, for people: `reviewer, council`, `judged best: B`, `fallback: A's`."""
    source = result.final_source
    own = REGISTRY.get(source.kind) if source is not None else None
    if source is not None and own is not None and own.source_label:
        return own.source_label.format(agent=source.agent)
    if source is not None and source.kind == "worker":
        return f"fallback: {source.agent}'s answer"
    if source is not None and source.agent is not None:  # a strategy's own pick
        return f"{source.kind}: {source.agent}'s answer"
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
    reply = result.reply
    if reply is None:
        return
    answers = result.answers
    if len(answers) == 1:  # stdout names even a lone worker's answer: nothing else there says whose it is
        reply = f"## {answers[0].name}\n{reply.strip()}"
    out.write(reply.rstrip() + "\n")
