"""Majority vote (self-consistency): the answer most workers give, compared by their short answers as `batch` scores
them (`short_answer`: the last number as an exact number, else the short answer in words, so "It's Berlin!" and "The
capital of Germany is Berlin." agree); an answer with no word and no number casts no vote. The winner's full text is
the final answer. It stops early: once the leader cannot be overtaken by the workers still running, they are cut.
With no majority (all different, or a tie) the configured reviewer synthesizes the answers; with none, the first
answer is the final one; either way the result says so."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from typing_extensions import override

from ..result import FinalSource, VoteCount
from ..short_answer import answer_key
from .base import Details, Strategy
from .fallback import ReviewOutcome
from .synthesize import Synthesize

if TYPE_CHECKING:
    from ..calls import Run
    from ..fleet import Fleet
    from ..result import AgentResult


def vote_key(text: str, question: str | None = None) -> str | None:
    """What an answer votes for: its short answer (`The answer is 42.` and `42.0` both vote `42`; `Paris.` and `It's
    Paris!` both vote `paris`), or None for one with no word and no number (it casts no vote)."""
    return answer_key(text, question)


def tally(answers: Sequence["AgentResult"], question: str | None = None) -> list["VoteCount"]:
    """Each distinct answer, how many gave it and who, most votes first (then in the order first given); answers
    with no word and no number are not counted."""
    groups: dict[str, list[str]] = {}
    for answer in answers:
        key = vote_key(answer.content, question)
        if key is not None:
            groups.setdefault(key, []).append(answer.name)
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


def tally_lines(counts: Sequence[Any], note: Callable[[Any], str] | None = None) -> list[str]:
    """A tally for people: `Votes:`, then each answer, its count and who gave it (and `note` of it)."""
    return ["Votes:", *(f"- {c['answer'] or '(empty)'}: {c['count']} ({', '.join(c['workers'])}){note(c) if note else ''}"
                        for c in counts)] if counts else []


def no_majority(counts: Sequence["VoteCount"]) -> str:
    """Why there is no majority, in a few words."""
    return ("no answer has a word or a number" if not counts else
            "all answers differ" if all(c["count"] == 1 for c in counts) else "a tie")


def synthesized_warning(why: str) -> str:
    return f"vote: no majority ({why}); the reviewer synthesized the answers"


@dataclass(frozen=True)
class SettledVote:
    """The early stop: once the leader has more votes than the runner-up could reach with every worker still
    running, the rest are cut. The answers are keyed by the `question` as the vote itself keys them, so
    "The capital of Germany is Berlin." and "Berlin." count as one here too."""

    question: str | None = None

    def cut_at(self, answers: Sequence["AgentResult"], running: int, total: int,
               now: float) -> tuple[float, str] | None:
        counts = tally(answers, self.question)
        if running == 0 or not counts or counts[0]["count"] < 2:
            return None
        second = counts[1]["count"] if len(counts) > 1 else 0
        if counts[0]["count"] <= second + running:
            return None
        return now, (f"cut: {counts[0]['count']} of {total} agreed ({counts[0]['answer']!r}); the {running} still "
                     "running could not change the majority")


class Vote(Strategy):
    """The majority's answer; the reviewer (or the first answer) when there is none."""

    name = "vote"
    description = ("the answer most workers give is the reply (numbers compared as numbers); it stops waiting once "
                   "the majority is settled, and falls back to the reviewer when there is none")
    plan = ("then the answer most of them give is the reply (a majority vote, which stops waiting once it is "
            "settled)")
    needs_reviewer = False
    reviewer_writes_reply = False
    source_label = "majority vote"
    source_note = "The reply is the majority's answer."
    picked = "the majority's answer"
    votes_over_samples = True

    @override
    def reviewer_asked(self, answers: Sequence["AgentResult"],
                       question: str | None = None) -> tuple[str, str] | None:
        counts = tally(answers, question)
        if winner(counts) is not None:
            return None
        why = no_majority(counts)
        return f"No majority ({why}): the reviewer writes the final answer from theirs.", synthesized_warning(why)

    @override
    def plan_sentence(self, reviewer: str) -> str:
        fallback = f"; with no majority, {reviewer} writes the final answer from theirs" if reviewer else ""
        return self.plan + fallback

    @override
    def cutoff(self, question: str | None = None) -> SettledVote:
        return SettledVote(question)

    @override
    def summary(self, details: Details) -> list[str]:
        return tally_lines(details.get("tally") or [])

    @override
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        counts = tally(answers, task)
        chosen = winner(counts)
        silent = [a.name for a in answers if vote_key(a.content, task) is None]
        notes = [f"vote: {', '.join(silent)} gave no word and no number; cast no vote"] if silent else []
        if chosen is not None:
            first = next(a for a in answers if vote_key(a.content, task) == chosen["answer"])
            return ReviewOutcome(final=first.content, final_source=FinalSource("vote"), details={"tally": counts},
                                 warnings=notes)
        why = no_majority(counts)
        if fleet.reviewers:
            outcome = await Synthesize().review(run, fleet, task, answers, until, rng)
            outcome.details["tally"] = counts
            outcome.warnings[:0] = [synthesized_warning(why), *notes]
            return outcome
        first = next((a for a in answers if a.name not in silent), answers[0])
        return ReviewOutcome(final=first.content, final_source=FinalSource("worker", first.name),
                             details={"tally": counts},
                             warnings=[f"vote: no majority ({why}) and no reviewer; the final answer is the first "
                                       f"answer that says something, {first.name}'s", *notes])
