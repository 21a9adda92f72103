"""Review strategies: how the workers' answers become the final one. One module per strategy — `synthesize`,
`judge`, `council`, `vote` — each a small object with one `review` method; `fallback` holds what they share: the
reviewers tried in order, and a worker's answer when every reviewer fails."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

from ..strategies import StrategyName, check_strategy
from .confidence import Confidence
from .council import Council
from .fallback import ReviewOutcome
from .judge import Judge
from .synthesize import Synthesize
from .vote import Vote

if TYPE_CHECKING:
    from ..calls import Run
    from ..cutoff import Cutoff
    from ..fleet import Fleet
    from ..result import AgentResult


class Strategy(Protocol):
    """Turns the successful answers into the final one; never raises for a failing reviewer."""

    name: StrategyName

    def cutoff(self) -> "Cutoff | None":
        """A rule that ends the workers' last round early once its outcome is settled (vote), or None."""

    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome: ...


IMPLEMENTATIONS: tuple[type[Strategy], ...] = (Synthesize, Judge, Council, Vote, Confidence)
"One class per name in `strategies.STRATEGIES`."


def strategy_named(name: str) -> Strategy:
    """The strategy object for one of `strategies.STRATEGIES`; ValueError for any other name."""
    name = check_strategy(name)
    return next(strategy for strategy in IMPLEMENTATIONS if strategy.name == name)()


__all__ = ["IMPLEMENTATIONS", "ReviewOutcome", "Strategy", "strategy_named"]
