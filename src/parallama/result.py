"""Typed results of a run: one AgentResult per agent, one RunResult for the whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

if TYPE_CHECKING:
    from .backends.tools import ToolCall

Status = Literal["ok", "error", "timeout", "cut"]
"`cut`: closed because the stage had heard enough (a quorum, a settled vote); `error` says why."


class JudgeScore(TypedDict):
    """judge: one worker's score and the judge's one-line reason."""

    name: str
    score: int
    reason: str


class CouncilBallot(TypedDict):
    """council: what one worker was shown (label → worker), its order (best first), or why it was left out."""

    ranker: str
    shown: dict[str, str]
    ranking: list[str]
    error: str | None


class CouncilRank(TypedDict):
    """council: one place in the aggregate ranking (Borda points)."""

    name: str
    points: int


class VoteCount(TypedDict):
    """vote: one distinct answer, how many workers gave it, and which."""

    answer: str
    count: int
    workers: list[str]


@dataclass(frozen=True)
class AgentResult:
    """What one agent produced, or why it did not."""

    name: str
    model: str
    api_url: str
    protocol: str
    status: Status
    content: str
    "The answer; for a failed agent, whatever arrived before the failure."
    error: str | None = None
    error_kind: str | None = None
    queued_s: float = 0.0
    "Seconds spent waiting for a free slot on the server."
    elapsed_s: float = 0.0
    "Seconds from sending the request to its last token (or failure)."
    ttft_s: float | None = None
    "Seconds from sending the request to the first piece of text."
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    stage: str = "workers"
    "`workers`, `round 2` … `round N`, `ranking` (council) or `review`."
    thinking: str | None = None
    "A reasoning model's thinking, kept apart: it never reaches the reviewer or the final answer."
    thinking_tokens: int | None = None
    tool_calls: "tuple[ToolCall, ...]" = ()
    "The tools the agent asked to call, when it was offered tools (its `content` may then be empty)."

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RunResult:
    """The whole run: every worker, the review, and the final answer with where it came from."""

    prompt: str
    workers: list[AgentResult]
    review: AgentResult | None
    final: str | None
    final_source: str | None
    ("`review`, `vote`, `judge:<name>`, `worker:<name>` when the reviewer failed (or a vote had no majority and no "
     "reviewer), or None.")
    wall_s: float
    warnings: list[str] = field(default_factory=list)
    strategy: str | None = None
    "How the answers were reviewed: synthesize, judge, council or vote (None: no review)."
    earlier_rounds: list[list[AgentResult]] = field(default_factory=list)
    "With `rounds: N`, the workers' results of rounds 1 … N−1 (`workers` is the last round)."
    review_attempts: list[AgentResult] = field(default_factory=list)
    "Reviewers that failed before one answered (or all of them)."
    scores: list[JudgeScore] | None = None
    "judge: each worker's score (1–10) and one-line reason."
    rankings: list[CouncilBallot] | None = None
    "council: each worker's ranking of the others (what it was shown, its order, or why it was left out)."
    ranking: list[CouncilRank] | None = None
    "council: the aggregate (Borda count), best first."
    cut: list[str] = field(default_factory=list)
    "Workers whose requests were cut (a quorum, a settled vote), in any round: the result is partial."
    tally: list["VoteCount"] | None = None
    "vote: each distinct answer (normalised as batch scoring does), how many workers gave it and who, most first."
    run_id: str | None = None
    history_id: str | None = None
    "The run's id in the history database, when the run was kept there (the same as `run_id`)."

    @property
    def partial(self) -> bool:
        """Some workers were cut: the answer was made without them."""
        return bool(self.cut)

    @property
    def answered(self) -> bool:
        """A final answer, or (with no review) at least one worker answer, was produced."""
        if self.final is not None:
            return True
        return self.review is None and any(w.ok for w in self.workers)

    def to_dict(self) -> dict:
        data = asdict(self)
        return data
