"""The review strategies by name, each with one line saying what it does: the one list that config validation, the
CLI's choices, `serve`'s model names (`parallama:judge` …), the review package and the web page read."""

from __future__ import annotations

from typing import Literal, get_args

StrategyName = Literal["synthesize", "judge", "council", "vote", "confidence"]
"How the reviewer turns the workers' answers into the final one."

STRATEGIES: tuple[StrategyName, ...] = get_args(StrategyName)
"Every strategy's name, the default first."

DEFAULT_STRATEGY: StrategyName = STRATEGIES[0]

DESCRIPTIONS: dict[StrategyName, str] = {
    "synthesize": "the reviewer reads every answer and writes one better answer",
    "judge": "the reviewer scores every answer from 1 to 10, and the best-scored one is the reply",
    "council": "the workers rank each other's answers anonymously, then the reviewer writes the final answer with "
               "that ranking in view",
    "vote": "the answer most workers give is the reply (numbers compared as numbers); it stops waiting once the "
            "majority is settled, and falls back to the reviewer when there is none",
    "confidence": "the answers are grouped by their short answer, each weighed by how sure its model was of its "
                  "tokens (token logprobs), and the weightiest group's surest answer is the reply",
}
"One line per strategy, for people (the page shows them)."


WITHOUT_REVIEWER: tuple[StrategyName, ...] = ("vote", "confidence")
"Strategies that make a final answer with no reviewer in the config (a reviewer is only their fallback)."


VOTING: tuple[StrategyName, ...] = ("vote", "confidence")
"Strategies that decide by the answers' short answers, so more samples can help them (`review.samples`)."


def votes_over_samples(name: str | None) -> bool:
    """Whether the strategy decides over extra samples when `review.samples` asks for them."""
    return name in VOTING


def needs_reviewer(name: str) -> bool:
    """Whether the strategy can only run with a reviewer in the config."""
    return name not in WITHOUT_REVIEWER


def check_strategy(name: str) -> StrategyName:
    """`name` as a strategy's name, or ValueError naming the ones there are."""
    for known in STRATEGIES:
        if name == known:
            return known
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


REPLY_IS_A_WORKERS: tuple[StrategyName, ...] = ("judge", "vote", "confidence")
"Strategies whose reply is one worker's answer (the judge's pick, the majority's), not a text the reviewer writes."


def reviewer_writes_reply(strategy: str | None) -> bool:
    """The reviewer's text is the final answer, streamed as it is written (synthesize, council); with judge or vote
    the reply is a worker's answer."""
    return strategy is not None and strategy not in REPLY_IS_A_WORKERS
