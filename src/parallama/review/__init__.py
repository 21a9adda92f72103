"""Review strategies: how the workers' answers become the final one. One module per strategy — `synthesize`,
`judge`, `council` — each a small object with one `review` method; `fallback` holds what they share: the
reviewers tried in order, and a worker's answer when every reviewer fails."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

from .fallback import ReviewOutcome

if TYPE_CHECKING:
    from ..calls import Run
    from ..fleet import Fleet
    from ..result import AgentResult


class Strategy(Protocol):
    """Turns the successful answers into the final one; never raises for a failing reviewer."""

    name: str

    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome: ...


def strategy_named(name: str) -> Strategy:
    """The strategy object for `synthesize`, `judge` or `council`."""
    if name == "judge":
        from .judge import Judge

        return Judge()
    if name == "council":
        from .council import Council

        return Council()
    if name == "synthesize":
        from .synthesize import Synthesize

        return Synthesize()
    raise ValueError(f"unknown review strategy {name!r}")


__all__ = ["ReviewOutcome", "Strategy", "strategy_named"]
