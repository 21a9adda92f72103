"""The fallbacks every review strategy shares: the reviewers tried in order until one answers, and a worker's
answer as the final one when every reviewer fails."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable

from ..events import REVIEW, Rejected
from ..result import REVIEW_SOURCE, FinalSource

if TYPE_CHECKING:
    from ..calls import Run
    from ..backends import Message
    from ..fleet import Agent, Fleet
    from ..result import AgentResult


@dataclass
class ReviewOutcome:
    final: str | None = None
    final_source: FinalSource | None = None
    review: "AgentResult | None" = None
    "The reviewer result that produced the final answer, or the last one tried."
    attempts: list["AgentResult"] = field(default_factory=list)
    "Reviewers that failed, in the order tried."
    details: dict[str, Any] = field(default_factory=dict)
    "The strategy's own record of how it decided (`base.Details`): the judge's scores, a vote's tally …"
    warnings: list[str] = field(default_factory=list)
    continue_with: list["Message"] = field(default_factory=list)
    "The writing reviewer's request when its answer is tool calls: sent again with the calls and their results."


async def ask_reviewers(run: "Run", fleet: "Fleet", build: Callable[["Agent"], list["Message"]],
                         until: float | None, outcome: ReviewOutcome,
                         read: Callable[["AgentResult"], None] | None = None,
                         prepare: Callable[["Agent"], "Agent"] | None = None,
                         retry: Callable[[list["Message"], "AgentResult"], list["Message"]] | None = None) -> None:
    """Try each reviewer in order until one answers (and, when `read` is given, answers readably). A reviewer that
    writes the reply (no `read`) is offered the run's tools; one whose server refuses them is asked again without."""
    tools = run.tools if read is None else ()
    for reviewer in fleet.reviewers:
        agent = prepare(reviewer) if prepare else reviewer
        messages = build(reviewer)
        [result] = await run.ask(REVIEW, [(agent, messages)], until, tools)
        if tools and not result.ok and result.error_kind == "http_status":
            run.warnings.append(f"{reviewer.name} ({reviewer.endpoint}) refused the request's tools "
                                f"({result.error}); asked again without them")
            [result] = await run.ask(REVIEW, [(agent, messages)], until)
        if agent is not reviewer and not result.ok and result.error_kind == "http_status":
            # The server refused what `prepare` added (say, a structured-output field it does not know):
            # ask again plainly.
            [result] = await run.ask(REVIEW, [(reviewer, messages)], until)
        if result.ok and read is not None:
            try:
                read(result)
            except ValueError as first:
                # Retry once with a stricter prompt and without the structured-output field, in case the
                # server ignored or mishandled it.
                if retry:
                    if run.listening:
                        run.emit(Rejected(run.id, REVIEW, agent, "its answer could not be read"))
                    [result] = await run.ask(REVIEW, [(reviewer, retry(messages, result))], until)
                try:
                    if result.ok:  # a retry that failed outright keeps its own error
                        read(result)
                except ValueError as second:
                    result = replace(result, status="error", error_kind="unreadable",
                                     error=f"{reviewer.name} ({reviewer.endpoint}): unreadable answer, twice: "
                                           f"{first}; then {second}")
                    if run.listening:
                        run.emit(Rejected(run.id, REVIEW, reviewer, result.error or ""))
        if result.ok:
            outcome.review, outcome.final, outcome.final_source = result, result.content, REVIEW_SOURCE
            if result.tool_calls:
                outcome.continue_with = messages
            return
        outcome.attempts.append(result)
        outcome.review = result


def finish(outcome: ReviewOutcome, answers: list["AgentResult"], best: str | None) -> None:
    """When every reviewer failed: the best-scored or best-ranked answer, else the first in config order."""
    if outcome.final is not None or not outcome.attempts:
        return
    chosen = next((a for a in answers if a.name == best), answers[0])
    outcome.final, outcome.final_source = chosen.content, FinalSource("worker", chosen.name)
    why = "the best-scored" if best else "the first successful"
    failed = "; ".join(a.error or a.status for a in outcome.attempts)
    who = "the reviewer" if len(outcome.attempts) == 1 else f"every reviewer ({len(outcome.attempts)})"
    outcome.warnings.append(f"{who} failed ({failed}); the final answer is {why} worker answer, {chosen.name}'s")
