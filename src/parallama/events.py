"""What the orchestrator publishes as a run goes on; views, JSON and history consume the same stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:
    from .config import Agent
    from .result import AgentResult


@dataclass(frozen=True, slots=True)
class Queued:
    """The agent waits for a free slot on its server."""

    agent: "Agent"


@dataclass(frozen=True, slots=True)
class Started:
    """The agent's request was sent; its timeout runs from now."""

    agent: "Agent"
    queued_s: float


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the agent's answer arrived."""

    agent: "Agent"
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The agent's answer is complete."""

    agent: "Agent"
    result: "AgentResult"


@dataclass(frozen=True, slots=True)
class Failed:
    """The agent failed or timed out; `result.error` says why."""

    agent: "Agent"
    result: "AgentResult"


Event = Union[Queued, Started, Delta, Finished, Failed]
EventSink = Callable[[Event], None]
