"""Typed results of a run: one AgentResult per agent, one RunResult for the whole."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from .backends import Message
    from .backends.base import TokenLogprob
    from .backends.tools import ToolCall

Status = Literal["ok", "error", "timeout", "cut"]
"`cut`: closed because the stage had heard enough (a quorum, a settled vote); `error` says why."

NO_ANSWER = "no answer: every worker failed"


SourceKind = str
"""`review`, `vote`, `confidence`, `judge`, `worker`, `workers` — or the name of a strategy whose reply is a worker's answer it
picked by a rule of its own (written `<strategy>:<name>`)."""


class FinalSource(str):
    """Where a run's reply came from: the reviewer (`review`), the workers' majority (`vote`), the group of answers
    the workers were surest of (`confidence`), the judge's
    best-scored worker (`judge`, agent), a worker's answer because every reviewer failed (`worker`, agent), or, with
    no review, the workers' answers (`workers`); a strategy added later that picks a worker's answer by its own rule
    names itself, with the agent. A string of its written form — `review`, `vote`, `judge:<name>`,
    `worker:<name>`, `workers`, as the JSON and the history keep it — so it compares, hashes and `json.dumps` as
    that text, with `kind` and `agent` read from it."""

    __slots__ = ()

    def __new__(cls, kind: SourceKind, agent: str | None = None) -> "FinalSource":
        return super().__new__(cls, f"{kind}:{agent}" if agent is not None else kind)

    def __getnewargs__(self) -> tuple[str, str | None]:  # type: ignore[override]
        return self.kind, self.agent

    @property
    def kind(self) -> SourceKind:
        return str.__str__(self).partition(":")[0]

    @property
    def agent(self) -> str | None:
        """The worker it names (`judge`, `worker`), or None."""
        _, colon, agent = str.__str__(self).partition(":")  # (a plain str: `partition` may return self)
        return agent if colon else None

    def __repr__(self) -> str:
        return f"FinalSource({self.kind!r}" + (f", {self.agent!r})" if self.agent is not None else ")")

    @classmethod
    def read(cls, text: str | None) -> "FinalSource | None":
        """The source as stored (`judge:<name>` …), read back; None for none or a form this version does not know."""
        if not text:
            return None
        kind, colon, agent = text.partition(":")
        if kind in ("judge", "worker"):
            return cls(kind, agent) if colon else None
        if kind in ("review", "vote", "confidence", "workers"):
            return None if colon else cls(kind)
        if re.fullmatch(r"[a-z][a-z0-9_-]*", kind):  # a strategy's own
            return cls(kind, agent) if colon else cls(kind)
        return None


REVIEW_SOURCE = FinalSource("review")
WORKERS_SOURCE = FinalSource("workers")


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


class _Confidences(TypedDict, total=False):
    confidence: float
    "confidence: the group's summed weight (each answer's exp(mean token logprob); neutral ones the mean)."
    weights: list[float | None]
    "confidence: each member's weight, in `workers`' order; None for one whose server sent no logprobs."


class VoteCount(_Confidences):
    """vote: one distinct answer, how many workers gave it, and which; confidence: also the weights."""

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
    logprobs: "tuple[TokenLogprob, ...] | None" = None
    "Each generated token's logprob, when the request asked for them (`Run.ask(…, logprobs=)`) and the server sent"
    " them; None otherwise."

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
    final_source: FinalSource | None
    ("The reviewer, the vote's majority, the judge's pick, a worker when every reviewer failed (or a vote had no "
     "majority and no reviewer); None when there was no review.")
    wall_s: float
    warnings: list[str] = field(default_factory=list)
    strategy: str | None = None
    "How the answers were reviewed: synthesize, judge, council or vote (None: no review)."
    earlier_rounds: list[list[AgentResult]] = field(default_factory=list)
    "With `rounds: N`, the workers' results of rounds 1 … N−1 (`workers` is the last round)."
    review_attempts: list[AgentResult] = field(default_factory=list)
    "Reviewers that failed before one answered (or all of them)."
    details: dict[str, Any] = field(default_factory=dict)
    """The strategy's own record of how it decided, JSON-shaped (`review.base.Details`): the judge's `scores`
    (`JudgeScore` each), council's `rankings` (`CouncilBallot`) and aggregate `ranking` (`CouncilRank`), a vote's
    `tally` (`VoteCount`); `review.summary(strategy, details)` says it for people."""
    cut: list[str] = field(default_factory=list)
    "Workers whose requests were cut (a quorum, a settled vote), in any round: the result is partial."
    samples: list[AgentResult] = field(default_factory=list)
    "`review.samples`: the workers' extra answers (stages `sample 2` …), asked while the first answers disagreed."
    sampling: dict[str, float | int | bool] | None = None
    ("`review.samples`: what sampling cost and how it ended — `sample_rounds`, `sample_requests`, `sample_tokens`, "
     "`sample_s`, `settled`, `leader_share`; None without it.")
    run_id: str | None = None
    history_id: str | None = None
    "The run's id in the history database, when the run was kept there (the same as `run_id`)."
    continue_with: "list[Message]" = field(default_factory=list)
    ("With `tools` offered: the writing reviewer's request when its answer is tool calls (`tool_calls`); send it "
     "again with the calls and their results to continue (the workers need not answer again).")

    @property
    def tool_calls(self) -> "tuple[ToolCall, ...]":
        """The tools the reviewer that writes the reply asked to call (its `final` text may then be empty)."""
        return self.review.tool_calls if self.review is not None and self.review.ok else ()

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

    @property
    def answers(self) -> list[AgentResult]:
        """The workers' answers (of the last round), in config order."""
        return [w for w in self.workers if w.ok]

    @property
    def reply(self) -> str | None:
        """The answer to give: the final one; with no review, the workers' answers (one alone, several each under
        a `## name` heading); None when there is none (see `no_answer_reason`)."""
        if self.final is not None:
            return self.final
        if self.review is not None:
            return None
        answers = self.answers
        if len(answers) == 1:
            return answers[0].content
        return "\n\n".join(f"## {w.name}\n{w.content.strip()}" for w in answers) if answers else None

    @property
    def reply_source(self) -> FinalSource | None:
        """Where `reply` came from: `final_source`, or `workers` for the workers' answers unreviewed."""
        if self.final is not None:
            return self.final_source
        return WORKERS_SOURCE if self.reply is not None else None

    @property
    def no_answer_reason(self) -> str | None:
        """Why there is no reply (every worker failed, and how), or None when there is one."""
        if self.answered:
            return None
        if not self.workers:
            return "no answer"
        return f"{NO_ANSWER}: " + "; ".join(self.failures)

    @property
    def failures(self) -> list[str]:
        """Each worker's failure (of the last round), as its error says it (cause — fix)."""
        return [w.error or w.status for w in self.workers if not w.ok]

    def __getattr__(self, name: str) -> Any:
        """`result.scores`, `.rankings`, `.ranking`, `.tally` read the details, as they read the fields of before."""
        if name in FLAT_DETAILS:
            return self.details.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict:
        """The result as `--json` and `batch` write it: the details also at the top level, where readers of the
        fixed fields of before find them (`scores`, `rankings`, `ranking`, `tally`, null when absent)."""
        data = asdict(self)
        data["final_source"] = str(self.final_source) if self.final_source is not None else None
        return {**dict.fromkeys(FLAT_DETAILS), **self.details, **data}


FLAT_DETAILS = ("scores", "rankings", "ranking", "tally")
"The details that were fields of their own in the JSON before the strategies' registry: always written, null when absent."
