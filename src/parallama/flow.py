"""The stages of one run: workers fan out, `rounds − 1` refinement rounds, then the review strategy."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .events import WORKERS, round_stage
from .result import AgentResult, RunResult
from .review import ReviewOutcome, strategy_named
from .review.synthesize import refine_messages

if TYPE_CHECKING:
    from .backends import Message
    from .client import Run
    from .config import Agent, Fleet


def worker_messages(agent: "Agent", prompt: str) -> list["Message"]:
    """A worker's request: its system prompt, if any, and the task."""
    messages: list[Message] = []
    if agent.system:
        messages.append({"role": "system", "content": agent.system})
    messages.append({"role": "user", "content": prompt})
    return messages


async def orchestrate(run: "Run", fleet: "Fleet", prompt: str, *, deadline: float | None, review: bool,
                      strategy: str, rng: random.Random) -> RunResult:
    """Every stage of one run through the client's gates; the RunResult at the end."""
    started = time.perf_counter()
    until = started + deadline if deadline is not None else None
    rounds: list[list[AgentResult]] = [
        await run.ask(WORKERS, [(a, worker_messages(a, prompt)) for a in fleet.workers], until)]
    for k in range(2, fleet.rounds + 1):
        previous = [w for w in rounds[-1] if w.ok]
        if not previous:
            break
        jobs = [(a, refine_messages(prompt, previous, a.system)) for a in fleet.workers]
        rounds.append(await run.ask(round_stage(k), jobs, until))
    workers = rounds[-1]
    answers = [w for w in workers if w.ok]
    if not answers and len(rounds) > 1:
        answers = [w for w in rounds[-2] if w.ok]  # the last round failed entirely: review the one before
    reviewed = review and bool(fleet.reviewers)
    outcome = ReviewOutcome()
    if reviewed and answers:
        outcome = await strategy_named(strategy).review(run, fleet, prompt, answers, until, rng)
    return RunResult(
        prompt=prompt, workers=workers, review=outcome.review, final=outcome.final,
        final_source=outcome.final_source, wall_s=round(time.perf_counter() - started, 3),
        warnings=list(fleet.warnings) + run.warnings + outcome.warnings, strategy=strategy if reviewed else None,
        earlier_rounds=rounds[:-1], review_attempts=outcome.attempts, scores=outcome.scores,
        rankings=outcome.rankings, ranking=outcome.ranking, run_id=run.id)
