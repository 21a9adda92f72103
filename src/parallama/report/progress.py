"""Per-agent state kept from the event stream, shared by the live table and the plain progress lines."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..cutoff import CUT
from ..fleet import Agent, Fleet
from ..events import (
    REVIEW, WORKERS, Delta, Event, Failed, Finished, Queued, RUN_EVENTS, Started, Thinking)
from ..redact import Redactor
from ..result import AgentResult

TAIL_CHARS = 48


@dataclass
class AgentRow:
    """What the view knows of one agent right now."""

    agent: Agent
    stage: str = WORKERS
    state: str = "waiting"
    queued_at: float | None = None
    started_at: float | None = None
    pieces: int = 0
    tail: str = ""
    thought_pieces: int = 0
    "Thinking chunks so far (a reasoning model, before and apart from its answer)."
    thought_tail: str = ""
    result: AgentResult | None = None
    _first_at: float | None = field(default=None, repr=False)

    def queued_s(self, now: float) -> float | None:
        if self.result:
            return self.result.queued_s
        if self.queued_at is None:
            return None
        return (self.started_at or now) - self.queued_at

    def elapsed_s(self, now: float) -> float | None:
        if self.result:
            return self.result.elapsed_s if self.started_at else None
        return now - self.started_at if self.started_at else None

    def tokens(self) -> int:
        if self.result and self.result.completion_tokens is not None:
            return self.result.completion_tokens
        return self.pieces

    def thinking_tokens(self) -> int:
        if self.result and self.result.thinking_tokens is not None:
            return self.result.thinking_tokens
        return self.thought_pieces

    def tokens_per_s(self, now: float) -> float | None:
        if self.result:
            return self.result.tokens_per_s
        produced = self.pieces + self.thought_pieces
        if self._first_at and now > self._first_at and produced > 1:
            return produced / (now - self._first_at)
        return None


class Progress:
    """Folds one run's events into one row per (stage, agent): the workers in config order and the first reviewer
    from the start, then rows for later rounds, council rankings and fallback reviewers as they are queued."""

    def __init__(self, fleet: Fleet, *, review: bool = True) -> None:
        # By name, not by object: a strategy may send a reviewer's request with extra fields (a copy of the agent).
        self.rows: dict[tuple[str, str], AgentRow] = {(WORKERS, a.name): AgentRow(a) for a in fleet.workers}
        if review and fleet.reviewer is not None:
            self.rows[(REVIEW, fleet.reviewer.name)] = AgentRow(fleet.reviewer, REVIEW)
        self.ended: list[AgentRow] = []
        self.redact = Redactor(fleet.secrets())
        "Streamed text is raw (results are masked once they end): a tail is masked when it is drawn."

    def __call__(self, event: Event) -> None:
        if isinstance(event, RUN_EVENTS):
            return
        key = (event.stage, event.agent.name)
        row = self.rows.get(key)
        if row is None:
            if not isinstance(event, Queued):
                return
            row = self._add_row(key, AgentRow(event.agent, event.stage))
        if isinstance(event, Delta):
            row.pieces += 1
            if row._first_at is None:
                row._first_at = time.perf_counter()
            row.tail = (row.tail + event.text)[-TAIL_CHARS * 2:]
            if row.state == "thinking":
                row.state = "running"
        elif isinstance(event, Thinking):
            row.thought_pieces += 1
            if row._first_at is None:
                row._first_at = time.perf_counter()
            row.thought_tail = (row.thought_tail + event.text)[-TAIL_CHARS * 2:]
            if row.state == "running" and not row.pieces:
                row.state = "thinking"
        elif isinstance(event, Queued):
            row.state, row.queued_at = "queued", time.perf_counter()
        elif isinstance(event, Started):
            row.state, row.started_at = "running", time.perf_counter()
        elif isinstance(event, (Finished, Failed)):
            row.result = event.result
            row.state = "done" if isinstance(event, Finished) else event.result.status.replace("error", "failed")
            self.ended.append(row)
            self.on_end(row)

    def _add_row(self, key: tuple[str, str], row: AgentRow) -> AgentRow:
        """A new stage's row goes before the review rows (rounds and rankings happen before the review)."""
        if row.stage == REVIEW:
            self.rows[key] = row
            return row
        rows = list(self.rows.items())
        at = next((i for i, (k, _) in enumerate(rows) if k[0] == REVIEW), len(rows))
        rows.insert(at, (key, row))
        self.rows = dict(rows)
        return row

    def on_end(self, row: AgentRow) -> None:
        """Called once per agent when it finishes or fails."""


def tail_text(text: str, width: int = TAIL_CHARS) -> str:
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
