"""Majority vote (self-consistency): the answer most workers give, compared as `batch` scores answers — the last
number in an answer as a number, else the text with case, spaces and punctuation folded. The winner's full text is
the final answer. It stops early: once the leader cannot be overtaken by the workers still running, they are cut.
With no majority (all different, or a tie) the configured reviewer synthesizes the answers; with none, the first
answer is the final one; either way the result says so."""

from __future__ import annotations

import random
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

from ..result import FinalSource
from ..scoring import last_number, normalise
from ..strategies import StrategyName
from .fallback import ReviewOutcome
from .synthesize import Synthesize

from ..result import VoteCount

if TYPE_CHECKING:
    from ..calls import Run
    from ..fleet import Fleet
    from ..result import AgentResult


def vote_key(text: str) -> str:
    """What an answer votes for: its last number (`The answer is 42.` and `42.0` both vote `42`), else its text
    normalised (`Paris.` and `paris` both vote `paris`)."""
    number = last_number(text)
    if number is not None:
        return _number_text(number)
    return normalise(text)


def _number_text(number: Fraction) -> str:
    if number.denominator == 1:
        return str(number.numerator)
    return f"{float(number):.10g}"


def tally(answers: Sequence["AgentResult"]) -> list["VoteCount"]:
    """Each distinct answer, how many gave it and who, most votes first (then in the order first given)."""
    groups: dict[str, list[str]] = {}
    for answer in answers:
        groups.setdefault(vote_key(answer.content), []).append(answer.name)
    counts: list[VoteCount] = [{"answer": key, "count": len(names), "workers": names} for key, names in groups.items()]
    counts.sort(key=lambda c: -c["count"])  # stable: ties keep the order first given
    return counts


def winner(counts: Sequence["VoteCount"]) -> "VoteCount | None":
    """The majority's answer: more votes than any other, and at least two; None for all different or a tie."""
    if not counts or counts[0]["count"] < 2:
        return None
    if len(counts) > 1 and counts[1]["count"] == counts[0]["count"]:
        return None
    return counts[0]


class SettledVote:
    """The early stop: once the leader has more votes than the runner-up could reach with every worker still
    running, the rest are cut."""

    def cut_at(self, answers: Sequence["AgentResult"], running: int, total: int,
               now: float) -> tuple[float, str] | None:
        counts = tally(answers)
        if running == 0 or not counts or counts[0]["count"] < 2:
            return None
        second = counts[1]["count"] if len(counts) > 1 else 0
        if counts[0]["count"] <= second + running:
            return None
        return now, (f"cut: {counts[0]['count']} of {total} agreed ({counts[0]['answer']!r}); the {running} still "
                     "running could not change the majority")


class Vote:
    """The majority's answer; the reviewer (or the first answer) when there is none."""

    name: StrategyName = "vote"

    def cutoff(self) -> SettledVote:
        return SettledVote()

    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        counts = tally(answers)
        chosen = winner(counts)
        if chosen is not None:
            first = next(a for a in answers if a.name == chosen["workers"][0])
            return ReviewOutcome(final=first.content, final_source=FinalSource("vote"), tally=counts)
        why = "all answers differ" if all(c["count"] == 1 for c in counts) else "a tie"
        if fleet.reviewers:
            outcome = await Synthesize().review(run, fleet, task, answers, until, rng)
            outcome.tally = counts
            outcome.warnings.insert(0, f"vote: no majority ({why}); the reviewer synthesized the answers")
            return outcome
        first = answers[0]
        return ReviewOutcome(final=first.content, final_source=FinalSource("worker", first.name), tally=counts,
                             warnings=[f"vote: no majority ({why}) and no reviewer; the final answer is the first "
                                       f"answer, {first.name}'s"])
