"""One run's events folded into what every view shows: a row per agent request (state, queued and running seconds,
tokens, tok/s, the tail of its stream and of its thinking, its error and fix) and the run's own facts (stages,
tokens in all, when the first request was sent and the first token came, the result).

The terminal's live view, `serve`'s progress narration and the page's stream all read a `RunTracker`: a view is a
renderer of these rows, not another state machine over the events. The tracker reads events and results only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from .events import (
    ALONE, REVIEW, WORKERS, Delta, Event, Failed, Finished, Queued, Ranked, Rejected, RunEnded, RunStarted, Started,
    Thinking)

if TYPE_CHECKING:
    from .backends import Message
    from .fleet import Agent, Fleet
    from .result import AgentResult, CouncilBallot, CouncilRank, RunResult

State = Literal["waiting", "queued", "running", "thinking", "done", "failed", "timeout", "cut", "stopped",
                "unusable"]
"""Where an agent's request is. `cut`: closed because its stage had heard enough (a quorum, a settled vote).
`stopped`: still queued or in flight when the run was stopped or interrupted (no result: not a failure).
`unusable`: it answered, but the strategy threw its answer away (`Rejected`: a judge's scores or a council ranking
that could not be read); `error` says why."""
END_STATES: dict[str, State] = {"ok": "done", "error": "failed", "timeout": "timeout", "cut": "cut"}
"The state a request ends in, from its result's status."
ENDED: frozenset[str] = frozenset([*END_STATES.values(), "stopped", "unusable"])

TAIL_CHARS = 96
"How much of a stream's end a row keeps (raw, as streamed: a view masks what it draws)."
FIX_MARK = " — "
"An error's cause and its fix (`… — ollama pull llama3`) are joined by this."
INTERRUPTED = "the run was interrupted"

Clock = Callable[[], float]


@dataclass(eq=False)
class AgentRow:
    """What is known of one agent's request in one stage, right now. Times are the tracker's clock's readings."""

    stage: str
    agent: "Agent"
    attempt: int = 1
    "1, or 2, 3 … when the same agent is asked again in the same stage."
    state: State = "waiting"
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    first_at: float | None = None
    "When the first piece (of thinking or answer) arrived."
    pieces: int = 0
    "Pieces of answer so far (≈ tokens)."
    thought_pieces: int = 0
    "Pieces of thinking so far (a reasoning model, before and apart from its answer)."
    tail: str = ""
    thought_tail: str = ""
    result: "AgentResult | None" = None
    unusable: str | None = None
    "Why its answer could not be used (state `unusable`)."

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def queued_s(self, now: float) -> float | None:
        if self.result:
            return self.result.queued_s
        if self.queued_at is None:
            return None
        return (self.started_at if self.started_at is not None else now) - self.queued_at

    def elapsed_s(self, now: float) -> float | None:
        if self.result:
            return self.result.elapsed_s if self.started_at is not None else None
        return now - self.started_at if self.started_at is not None else None

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
        if self.first_at is not None and now > self.first_at and produced > 1:
            return produced / (now - self.first_at)
        return None

    @property
    def error(self) -> str | None:
        """Why the request failed (its cause, without the fix), or why its answer was unusable, or None."""
        if self.unusable is not None:
            return self.unusable
        if self.result is None or self.result.error is None:
            return None
        return self.result.error.split(FIX_MARK, 1)[0]

    @property
    def fix(self) -> str | None:
        """What to do about the failure (`ollama pull …`, `start it with …`), when the error says."""
        if self.result is None or self.result.error is None or FIX_MARK not in self.result.error:
            return None
        return self.result.error.split(FIX_MARK, 1)[1]


class RunTracker:
    """Folds one run's events into rows, one per (stage, agent, attempt): the workers in config order and the first
    reviewer from the start (when a fleet is given, or at `RunStarted`), then rows for later rounds, council
    rankings and fallback reviewers as they are queued, before the review rows.

    `tracker(event)` (or `feed`) returns the row the event touched, or None for a run-level event."""

    def __init__(self, fleet: "Fleet | None" = None, *, review: bool = True, tails: bool = True,
                 clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.tails = tails
        "Keep each stream's last characters (`tail`, `thought_tail`), for a view that draws them (the terminal's)."
        self.started_at = clock()
        "When the tracker began following the run (its clock's reading)."
        self.rows: dict[tuple[str, str], AgentRow] = {}
        "The latest attempt of each (stage, agent name), in the order views show them."
        self.attempts: list[AgentRow] = []
        "Every row, earlier attempts too, in the order they were made."
        self.run_id: str | None = None
        self.prompt: str | None = None
        self.fleet = fleet
        self.strategy: str | None = None
        "How the answers are reviewed (None: not reviewed); known at `RunStarted`."
        self.context: "tuple[Message, ...]" = ()
        self.first_sent_at: float | None = None
        self.first_token_at: float | None = None
        self.ended_at: float | None = None
        self.stage_opened: dict[str, AgentRow] = {}
        "Each stage's first request sent, in the order the stages began."
        self.prompt_tokens = 0
        self.completion_tokens = 0
        "Every request's (workers, rounds, rankings, reviewers); thinking tokens included."
        self.rankings: "list[CouncilBallot] | None" = None
        self.ranking: "list[CouncilRank] | None" = None
        self.result: "RunResult | None" = None
        self.over = False
        "The run has ended (with a result, or interrupted: `result` None)."
        self.stopped = False
        "The run was stopped at the user's word (the page's Stop)."
        self.changed: list[AgentRow] = []
        "The rows the last run-level event (`RunEnded`) changed: requests stopped."
        if fleet is not None:
            self._seed(fleet, review)

    def _seed(self, fleet: "Fleet", review: bool) -> None:
        for agent in fleet.workers:
            self._add(AgentRow(WORKERS, agent))
        if review and fleet.reviewer is not None:
            self._add(AgentRow(REVIEW, fleet.reviewer))

    # ---------------------------------------------------------------- the fold

    def __call__(self, event: Event) -> AgentRow | None:
        return self.feed(event)

    def feed(self, event: Event) -> AgentRow | None:
        kind = type(event)
        if kind is Delta:  # the hot path: one per token of every agent
            row = self.rows.get((event.stage, event.agent.name))  # type: ignore[union-attr]
            if row is None:
                return None
            row.pieces += 1
            if row.first_at is None:
                row.first_at = now = self.clock()
                if self.first_token_at is None:
                    self.first_token_at = now
            if self.tails:
                row.tail = (row.tail + event.text)[-TAIL_CHARS:]  # type: ignore[union-attr]
            if row.state == "thinking":
                row.state = "running"
            return row
        if kind is Thinking:
            row = self.rows.get((event.stage, event.agent.name))  # type: ignore[union-attr]
            if row is None:
                return None
            row.thought_pieces += 1
            if row.first_at is None:
                row.first_at = now = self.clock()
                if self.first_token_at is None:
                    self.first_token_at = now
            if self.tails:
                row.thought_tail = (row.thought_tail + event.text)[-TAIL_CHARS:]  # type: ignore[union-attr]
            if row.state == "running" and not row.pieces:
                row.state = "thinking"
            return row
        if isinstance(event, Queued):
            return self._queued(event)
        if isinstance(event, Started):
            row = self.rows.get((event.stage, event.agent.name)) or self._queued(event)
            row.state, row.started_at = "running", self.clock()
            row.agent = event.agent  # as sent: on the replica of its pool that took it
            if self.first_sent_at is None:
                self.first_sent_at = row.started_at
            self.stage_opened.setdefault(event.stage, row)
            return row
        if isinstance(event, (Finished, Failed)):
            row = self.rows.get((event.stage, event.agent.name)) or self._queued(event)
            result = event.result
            row.result, row.ended_at = result, self.clock()
            row.state = END_STATES.get(result.status, "failed")
            self.prompt_tokens += result.prompt_tokens or 0
            self.completion_tokens += (result.completion_tokens or 0) + (result.thinking_tokens or 0)
            return row
        if isinstance(event, Rejected):
            row = self.rows.get((event.stage, event.agent.name))
            if row is not None:
                row.state, row.unusable = "unusable", event.why.split(FIX_MARK, 1)[0]
            return row
        if isinstance(event, RunStarted):
            self.run_id, self.prompt, self.strategy, self.context = (
                event.run_id, event.prompt, event.strategy, event.context)
            if self.fleet is None:
                self.fleet = event.fleet
                if event.agents:  # one agent on its own, or chosen workers
                    for agent in event.agents:
                        self._add(AgentRow(ALONE if event.kind == "agent" else WORKERS, agent))
                else:
                    self._seed(event.fleet, event.strategy is not None)
        elif isinstance(event, Ranked):
            self.rankings, self.ranking = event.rankings, event.ranking
            self.changed = []
        elif isinstance(event, RunEnded):
            self.result, self.over, self.ended_at, self.stopped = event.result, True, self.clock(), event.stopped
            self.changed = self._stop_unended()
        return None

    def _stop_unended(self) -> "list[AgentRow]":
        """The run's end: a request still queued or in flight was stopped (it has no result)."""
        changed = []
        for row in self.attempts:
            if row.state in ("queued", "running", "thinking"):
                row.state, row.ended_at = "stopped", self.clock()
                changed.append(row)
        return changed

    def _queued(self, event: Queued | Started | Finished | Failed) -> AgentRow:
        """A request waits for a slot: its row (waiting until now), or a new one for a new stage or a retry."""
        key = (event.stage, event.agent.name)
        row = self.rows.get(key)
        if row is None or row.state != "waiting":
            attempt = row.attempt + 1 if row is not None else 1
            row = self._add(AgentRow(event.stage, event.agent, attempt))
        row.state, row.queued_at = "queued", self.clock()
        return row

    def _add(self, row: AgentRow) -> AgentRow:
        """A row in view order: a retry where its earlier attempt was, a review row last, a row of another stage
        (a round, the ranking) before the review rows, which happen after it."""
        key = (row.stage, row.agent.name)
        self.attempts.append(row)
        if key in self.rows or row.stage == REVIEW:
            self.rows[key] = row
            return row
        items = list(self.rows.items())
        at = next((i for i, (k, _) in enumerate(items) if k[0] == REVIEW), len(items))
        items.insert(at, (key, row))
        self.rows = dict(items)
        return row

    # ---------------------------------------------------------------- reading it

    def now(self) -> float:
        return self.clock()

    def t(self, at: float | None = None) -> float:
        """Seconds since the tracker began following the run (at `at`, or now), to the millisecond."""
        return round((self.clock() if at is None else at) - self.started_at, 3)

    @property
    def reviewed(self) -> bool:
        """The answers go to a reviewer (a strategy was asked for at `RunStarted`)."""
        return self.strategy is not None

    def waiting_for_slot(self) -> list[AgentRow]:
        """The requests queued for a slot, not sent yet."""
        return [row for row in self.attempts if row.state == "queued"]

    def in_flight(self) -> tuple[list[str], int]:
        """The agents whose requests are sent and not ended, and how many requests wait for a slot."""
        sent = [row.name for row in self.attempts if row.state in ("running", "thinking")]
        waiting = sum(1 for row in self.attempts if row.state == "queued")
        return sent, waiting

    @property
    def no_answer_reason(self) -> str | None:
        """Why the run ended with no reply (every worker failed; it was interrupted), or None."""
        if not self.over:
            return None
        if self.result is None:
            return INTERRUPTED
        return self.result.no_answer_reason


__all__ = ["AgentRow", "END_STATES", "ENDED", "INTERRUPTED", "RunTracker", "State", "TAIL_CHARS"]
