"""Review strategies: how the answers become the final one. One module per strategy; this module runs them,
trying the reviewers in order (the fallback chain) and falling back to a worker's answer when all fail."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

if TYPE_CHECKING:
    from ..backends import Message
    from ..config import Agent, Fleet
    from ..result import AgentResult


class Stage(Protocol):
    def run(self, jobs: list[tuple["Agent", list["Message"]]], until: float | None) -> Awaitable[list["AgentResult"]]: ...


@dataclass
class ReviewOutcome:
    final: str | None = None
    final_source: str | None = None
    review: "AgentResult | None" = None
    "The reviewer result that produced the final answer, or the last one tried."
    attempts: list["AgentResult"] = field(default_factory=list)
    "Reviewers that failed, in the order tried."
    scores: list[dict] | None = None
    rankings: list[dict] | None = None
    ranking: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)


async def review(strategy: str, stage: Stage, fleet: "Fleet", task: str, answers: list["AgentResult"],
                 until: float | None, rng: random.Random) -> ReviewOutcome:
    """Run `strategy` over the successful `answers`; never raises for a failing reviewer."""
    if strategy == "judge":
        return await _judge(stage, fleet, task, answers, until)
    if strategy == "council":
        return await _council(stage, fleet, task, answers, until, rng)
    from . import synthesize

    def build(agent: "Agent") -> list["Message"]:
        return synthesize.messages(task, answers, agent.system, template=fleet.review_prompt)

    outcome = ReviewOutcome()
    await _ask_reviewers(stage, fleet, build, until, outcome)
    _finish(outcome, answers, best=None)
    return outcome


async def _ask_reviewers(stage: Stage, fleet: "Fleet", build: Callable[["Agent"], list["Message"]],
                         until: float | None, outcome: ReviewOutcome,
                         read: Callable[["AgentResult"], None] | None = None,
                         prepare: Callable[["Agent"], "Agent"] | None = None,
                         retry: Callable[[list["Message"], "AgentResult"], list["Message"]] | None = None) -> None:
    """Try each reviewer in order until one answers (and, when `read` is given, answers readably)."""
    for reviewer in fleet.reviewers:
        agent = prepare(reviewer) if prepare else reviewer
        messages = build(reviewer)
        [result] = await stage.run([(agent, messages)], until)
        if agent is not reviewer and not result.ok and result.error_kind == "http_status":
            # The server refused what `prepare` added (say, a structured-output field it does not know):
            # ask again plainly.
            [result] = await stage.run([(reviewer, messages)], until)
        if result.ok and read is not None:
            try:
                read(result)
            except ValueError as first:
                # Retry once with a stricter prompt and without the structured-output field, in case the
                # server ignored or mishandled it.
                if retry:
                    [result] = await stage.run([(reviewer, retry(messages, result))], until)
                try:
                    if result.ok:  # a retry that failed outright keeps its own error
                        read(result)
                except ValueError as second:
                    result = replace(result, status="error", error_kind="unreadable",
                                     error=f"{reviewer.name} ({reviewer.endpoint}): unreadable answer, twice: "
                                           f"{first}; then {second}")
        if result.ok:
            outcome.review, outcome.final, outcome.final_source = result, result.content, "review"
            return
        outcome.attempts.append(result)
        outcome.review = result


def _finish(outcome: ReviewOutcome, answers: list["AgentResult"], best: str | None) -> None:
    """When every reviewer failed: the best-scored or best-ranked answer, else the first in config order."""
    if outcome.final is not None or not outcome.attempts:
        return
    chosen = next((a for a in answers if a.name == best), answers[0])
    outcome.final, outcome.final_source = chosen.content, f"worker:{chosen.name}"
    why = "the best-scored" if best else "the first successful"
    failed = "; ".join(a.error or a.status for a in outcome.attempts)
    who = "the reviewer" if len(outcome.attempts) == 1 else f"every reviewer ({len(outcome.attempts)})"
    outcome.warnings.append(f"{who} failed ({failed}); the final answer is {why} worker answer, {chosen.name}'s")


async def _judge(stage: Stage, fleet: "Fleet", task: str, answers: list["AgentResult"],
                 until: float | None) -> ReviewOutcome:
    from . import judge

    outcome = ReviewOutcome()
    scored: list[judge.Score] = []

    def read(result: "AgentResult") -> None:
        scored[:] = judge.parse(result.content, answers)

    def retry(messages: list["Message"], result: "AgentResult") -> list["Message"]:
        return judge.stricter(messages, result.content if result.ok else "", len(answers))

    await _ask_reviewers(stage, fleet, lambda agent: judge.messages(task, answers, agent.system), until, outcome,
                         read=read, prepare=judge.with_structured_output, retry=retry)
    if outcome.final is not None and scored:
        winner = judge.best(scored)
        chosen = next(a for a in answers if a.name == winner.name)
        outcome.final, outcome.final_source = chosen.content, f"judge:{chosen.name}"
        outcome.scores = [{"name": s.name, "score": s.score, "reason": s.reason} for s in scored]
    _finish(outcome, answers, best=None)
    return outcome


async def _council(stage: Stage, fleet: "Fleet", task: str, answers: list["AgentResult"], until: float | None,
                   rng: random.Random) -> ReviewOutcome:
    from . import council, synthesize

    outcome = ReviewOutcome()
    agents = {a.name: a for a in fleet.workers}
    note = None
    if len(answers) >= 2:
        plan = council.ballots(answers, rng)
        jobs = [(agents[ranker.name], council.messages(task, others, agents[ranker.name].system))
                for ranker, _, others in plan]
        replies = await stage.run(jobs, until)
        ballots = []
        for (_, ballot, _), reply in zip(plan, replies):
            if reply.ok:
                council.read_ranking(reply.content, ballot)
            else:
                ballot.error = f"no ranking: {reply.error}"
            if ballot.error:
                outcome.warnings.append(f"the ranking by {ballot.ranker} was left out: {ballot.error}")
            ballots.append(ballot)
        readable = [b for b in ballots if not b.error]
        outcome.rankings = [b.to_dict() for b in ballots]
        if readable:
            ranking = council.borda(readable, [a.name for a in answers])
            outcome.ranking = [{"name": name, "points": pts} for name, pts in ranking]
            note = council.ranking_note(ranking, len(readable))

    def build(agent: "Agent") -> list["Message"]:
        return synthesize.messages(task, answers, agent.system, template=fleet.review_prompt, note=note)

    await _ask_reviewers(stage, fleet, build, until, outcome)
    _finish(outcome, answers, best=outcome.ranking[0]["name"] if outcome.ranking else None)
    return outcome


__all__ = ["ReviewOutcome", "review"]
