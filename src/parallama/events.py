"""What a run publishes as it goes on, each event with its run id and stage; views, JSON, history and `serve`
consume the same stream.

A run's events: `RunStarted`, then for each agent request `Queued` → `Started` → (`Thinking`… →) `Delta`… →
`Finished`, `Failed` or `Cut` (closed by a quorum or a settled vote), then `RunEnded`. A request whose answer the
strategy then throws away (a judge's scores, a council ranking that could not be read) is followed by `Rejected`.
A council run also sends `Ranked` when the workers' rankings are read, before its reviewer writes. Stages are
`workers`, `round 2` … `round N`, `sample 2` … `sample K`, `ranking` (council) and `review`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    from .backends import Message
    from .fleet import Agent, Fleet
    from .result import AgentResult, CouncilBallot, CouncilRank, RunResult

WORKERS = "workers"
RANKING = "ranking"
REVIEW = "review"
ALONE = "alone"
"The stage of an agent asked on its own, outside a run's stages (`FleetClient.ask_agent`)."


def round_stage(k: int) -> str:
    """The stage name of the workers' k-th round (k ≥ 2; round 1 is `workers`)."""
    return f"round {k}"


def sample_stage(k: int) -> str:
    """The stage name of the workers' k-th sample (k ≥ 2; `review.samples`, while their answers disagree)."""
    return f"sample {k}"


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began: its prompt, the fleet it runs on and how it will be reviewed (None: no review)."""

    run_id: str
    prompt: str
    fleet: "Fleet"
    strategy: str | None
    context: "tuple[Message, ...]" = ()
    "The earlier turns of the conversation the prompt continues (system prompt included), oldest first."
    kind: str = "run"
    """What began: `run` (`FleetClient.run`: the workers, then the review), `workers` (`run_workers`: the workers
    alone), `agent` (`ask_agent`: one agent on its own, stage `alone`) or `compare` (the workers once, then each
    strategy's review). Only a `run` is kept in the history."""
    agents: "tuple[Agent, ...]" = ()
    "The agents a `workers` or `agent` run asks (empty: the fleet's workers, and its reviewers as the review asks)."


@dataclass(frozen=True, slots=True)
class Queued:
    """The agent waits for a free slot on its server."""

    run_id: str
    stage: str
    agent: "Agent"


@dataclass(frozen=True, slots=True)
class Started:
    """The agent's request was sent; its timeout runs from now."""

    run_id: str
    stage: str
    agent: "Agent"
    queued_s: float


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the agent's answer arrived, raw as streamed (a key a server echoes is masked in the finished
    result, once, not per piece; views that show pieces mask what they draw)."""

    run_id: str
    stage: str
    agent: "Agent"
    text: str


@dataclass(frozen=True, slots=True)
class Thinking:
    """A piece of a reasoning model's thinking arrived (kept apart from its answer), raw as streamed, as `Delta`."""

    run_id: str
    stage: str
    agent: "Agent"
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The agent's answer is complete."""

    run_id: str
    stage: str
    agent: "Agent"
    result: "AgentResult"


@dataclass(frozen=True, slots=True)
class Failed:
    """The agent failed or timed out; `result.error` says why."""

    run_id: str
    stage: str
    agent: "Agent"
    result: "AgentResult"


@dataclass(frozen=True, slots=True)
class Cut(Failed):
    """The agent's request was closed because the stage had heard enough (a quorum, a settled vote);
    `result.status` is `cut` and `result.error` says why. A `Failed` too, for views that only tell ended from
    failed."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The strategy threw the agent's answer away after it `Finished`: it could not be used (a judge's scores or a
    council ranking that could not be read); `why` says so."""

    run_id: str
    stage: str
    agent: "Agent"
    why: str


@dataclass(frozen=True, slots=True)
class Ranked:
    """council: the workers' rankings of each other's answers are read, and added up (None when none could be
    read); the reviewer writes next."""

    run_id: str
    stage: str
    rankings: "list[CouncilBallot]"
    ranking: "list[CouncilRank] | None"


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run is over: its result, or None when it was interrupted (cancelled, Ctrl-C) or stopped."""

    run_id: str
    result: "RunResult | None"
    stopped: bool = False
    "The run was stopped at the user's word (`FleetClient.stop`: the page's Stop), not interrupted otherwise."


AgentEvent = Union[Queued, Started, Thinking, Delta, Finished, Failed, Cut, Rejected]
RunEvent = Union[RunStarted, Ranked, RunEnded]
"The events of a run as a whole, with no agent."
RUN_EVENTS = (RunStarted, Ranked, RunEnded)
"For `isinstance(event, RUN_EVENTS)`: a view that follows agents skips these (and any run-level event added later)."
Event = Union[RunStarted, Queued, Started, Thinking, Delta, Finished, Failed, Cut, Rejected, Ranked, RunEnded]
EventSink = Callable[[Event], None]


@runtime_checkable
class RunKeeper(Protocol):
    """A subscriber that keeps the runs it sees somewhere (the history's `HistoryWriter`): before a run's result is
    made, the client asks whether the run is kept, so the result says it (`history_id`, a warning when keeping
    stopped) before `RunEnded` announces it."""

    error: "Exception | None"
    "Why it stopped keeping runs, once it has (every later result warns with it); None while it keeps them."

    def __call__(self, event: Event) -> None: ...

    def kept(self, run_id: str) -> bool:
        """The run is being kept, whole so far."""
