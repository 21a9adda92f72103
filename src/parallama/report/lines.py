"""The terminal's plain lines for a run: one per agent request as it ends, and the tail of a stream, shortened."""

from __future__ import annotations

import sys

from ..cutoff import CUT
from ..fleet import Fleet
from ..events import Event, Failed, Finished
from ..result import AgentResult
from ..tracker import AgentRow, RunTracker

TAIL_WIDTH = 48


class ProgressLines:
    """Plain progress for a non-terminal stderr: one line per agent as it ends (only failures when quiet)."""

    def __init__(self, fleet: Fleet, *, review: bool, failures_only: bool) -> None:
        self.tracker = RunTracker(fleet, review=review)
        self.failures_only = failures_only

    def __call__(self, event: Event) -> None:
        row = self.tracker.feed(event)
        if row is not None and isinstance(event, (Finished, Failed)):
            self.on_end(row)

    def on_end(self, row: AgentRow) -> None:
        assert row.result is not None
        if row.result.ok and self.failures_only:
            return
        sys.stderr.write(summary_line(row.result) + "\n")
        sys.stderr.flush()


def tail_text(text: str, width: int = TAIL_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat[-width:]


def summary_line(result: AgentResult) -> str:
    """One line for a finished agent: `✓ name  3.2 s  120 tok  37.5 tok/s` or `✗ name (url): cause`."""
    if result.ok:
        parts = [f"✓ {result.name}", f"{result.elapsed_s:.1f} s"]
        if result.queued_s >= 0.05:
            parts.append(f"queued {result.queued_s:.1f} s")
        if result.completion_tokens is not None:
            parts.append(f"{result.completion_tokens} tok")
        if result.thinking_tokens:
            parts.append(f"+{result.thinking_tokens} thinking")
        if result.tokens_per_s:
            parts.append(f"{result.tokens_per_s:.1f} tok/s")
        return "  ".join(parts)
    if result.status == CUT:
        return f"✂ {result.name} {result.error}"
    mark = "⏱" if result.status == "timeout" else "✗"
    return f"{mark} {result.error}"


def failed_rows(tracker: RunTracker) -> list[AgentRow]:
    """The requests that failed, in the order they ended."""
    rows = [row for row in tracker.attempts if row.result is not None and not row.result.ok]
    return sorted(rows, key=lambda row: row.ended_at or 0.0)
