"""The review strategies, by name: the one list that config validation, the CLI's choices, `serve`'s models
(`parallama:judge` …), its narration, the page and the history read.

A new strategy is one module in `review/` with a `Strategy` subclass (`review.base`), and its class named in
`REGISTERED` below."""

from __future__ import annotations

from .base import Details, Strategy
from .confidence import Confidence
from .council import Council
from .judge import Judge
from .synthesize import Synthesize
from .vote import Vote

REGISTERED: tuple[type[Strategy], ...] = (Synthesize, Judge, Council, Vote, Confidence)
"Every strategy, the default first, in the order people are shown them."

REGISTRY: dict[str, Strategy] = {cls.name: cls() for cls in REGISTERED}

STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
"Every strategy's name, the default first."

DEFAULT_STRATEGY: str = STRATEGIES[0]


def strategy_named(name: str) -> Strategy:
    """The strategy called `name`; ValueError naming the ones there are for any other name."""
    strategy = REGISTRY.get(name)
    if strategy is None:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    return strategy


def check_strategy(name: str) -> str:
    """`name` when it is a strategy's name, else ValueError naming the ones there are."""
    return strategy_named(name).name


def needs_reviewer(name: str) -> bool:
    """Whether the strategy can only run with a reviewer in the config."""
    return strategy_named(name).needs_reviewer


def reviewer_writes_reply(name: str | None) -> bool:
    """The reviewer's text is the final answer, streamed as it is written (synthesize, council); False with no
    review (None), where the reply is a worker's answer (judge, vote), and for a name this version does not know
    (a history written by another)."""
    strategy = REGISTRY.get(name) if name is not None else None
    return strategy is not None and strategy.reviewer_writes_reply


def votes_over_samples(name: str | None) -> bool:
    """Whether the strategy decides over extra samples when `review.samples` asks for them."""
    strategy = REGISTRY.get(name) if name is not None else None
    return strategy is not None and strategy.votes_over_samples


VOTING: tuple[str, ...] = tuple(name for name in STRATEGIES if votes_over_samples(name))
"Strategies that decide by the answers' short answers (`review.samples` needs one)."


def summary(name: str | None, details: "Details | None") -> list[str]:
    """The details a run of strategy `name` left, for people; nothing for no review or a name this version does
    not know (an older history's)."""
    strategy = REGISTRY.get(name) if name is not None else None
    return strategy.summary(details) if strategy is not None and details else []
