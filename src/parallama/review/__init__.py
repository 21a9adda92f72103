"""Review strategies: how the workers' answers become the final one. One module per strategy — `synthesize`,
`judge`, `council`, `vote` — each a `Strategy` (`base`) carrying all of its facts; `registry` lists them by name;
`fallback` holds what they share: the reviewers tried in order, and a worker's answer when every reviewer fails."""

from __future__ import annotations

from .base import Details, Strategy
from .fallback import ReviewOutcome
from .registry import (
    DEFAULT_STRATEGY, REGISTRY, STRATEGIES, VOTING, check_strategy, needs_reviewer, reviewer_writes_reply,
    strategy_named, summary, votes_over_samples)

__all__ = ["DEFAULT_STRATEGY", "REGISTRY", "STRATEGIES", "VOTING", "Details", "ReviewOutcome", "Strategy",
           "check_strategy", "needs_reviewer", "reviewer_writes_reply", "strategy_named", "summary",
           "votes_over_samples"]
