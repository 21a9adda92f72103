"""`council` (after llm-council): each worker ranks the others' answers, anonymized and shuffled, its own left out;
the rankings are added up (Borda count) and the reviewer synthesizes with that ranking in view."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ..events import RANKING, Ranked, Rejected
from . import synthesize
from .base import Details, Strategy
from .fallback import ReviewOutcome, ask_reviewers, finish

if TYPE_CHECKING:
    from ..backends import Message
    from ..calls import Run
    from ..fleet import Agent, Fleet
    from ..result import AgentResult, CouncilBallot, CouncilRank

INSTRUCTIONS = """\
You are evaluating answers that other assistants gave to a task. They are anonymized as Response A, Response B, \
and so on. Evaluate each briefly: what it gets right and wrong. Then end your reply with the line \
"FINAL RANKING:" followed by a numbered list of all the responses from best to worst, one per line, like:
FINAL RANKING:
1. Response B
2. Response A"""


@dataclass
class Ballot:
    """What one worker was shown and how it ranked it."""

    ranker: str
    shown: dict[str, str]
    "Label → the worker whose answer it is."
    order: list[str] = field(default_factory=list)
    "Worker names, best first, when the ranking could be read."
    error: str | None = None

    def to_dict(self) -> "CouncilBallot":
        return {"ranker": self.ranker, "shown": self.shown, "ranking": self.order, "error": self.error}


def ballots(answers: list["AgentResult"], rng: random.Random) -> list[tuple["AgentResult", Ballot, list["AgentResult"]]]:
    """For each answering worker: the others' answers, shuffled for it, labelled A, B, …"""
    out = []
    for ranker in answers:
        others = [a for a in answers if a.name != ranker.name]
        rng.shuffle(others)
        shown = {chr(ord("A") + i): a.name for i, a in enumerate(others)}
        out.append((ranker, Ballot(ranker.name, shown), others))
    return out


def messages(task: str, others: list["AgentResult"], system: str | None) -> list["Message"]:
    shown = "\n\n".join(f"### Response {chr(ord('A') + i)}\n{a.content.strip()}" for i, a in enumerate(others))
    instructions = f"{system}\n\n{INSTRUCTIONS}" if system else INSTRUCTIONS
    return [{"role": "system", "content": instructions},
            {"role": "user", "content": f"Task:\n{task}\n\nResponses:\n\n{shown}"}]


def read_ranking(text: str, ballot: Ballot) -> None:
    """Fill `ballot.order` from the reply's FINAL RANKING, or `ballot.error` saying why it cannot be read."""
    head, marker, tail = text.rpartition("FINAL RANKING:")
    if not marker:
        ballot.error = "no FINAL RANKING section"
        return
    labels: list[str] = []
    for label in re.findall(r"Response\s+([A-Z])\b", tail):
        if label not in labels:
            labels.append(label)
    unknown = [label for label in labels if label not in ballot.shown]
    missing = [label for label in ballot.shown if label not in labels]
    if unknown:
        ballot.error = f"ranks Response {', '.join(unknown)}, which it was not shown"
    elif missing:
        ballot.error = f"leaves out Response {', '.join(missing)}"
    else:
        ballot.order = [ballot.shown[label] for label in labels]


def borda(ballots: list[Ballot], names: list[str]) -> list[tuple[str, int]]:
    """Borda count over the readable ballots: on a ballot of m answers, place i (0-based) scores m − 1 − i.
    Best first; ties keep config order (`names`)."""
    points = {name: 0 for name in names}
    for ballot in ballots:
        m = len(ballot.order)
        for i, name in enumerate(ballot.order):
            points[name] += m - 1 - i
    return sorted(points.items(), key=lambda item: (-item[1], names.index(item[0])))


def ranking_note(ranking: list[tuple[str, int]], counted: int) -> str:
    lines = "\n".join(f"{i + 1}. {name} ({pts} points)" for i, (name, pts) in enumerate(ranking))
    return (f"The assistants also ranked each other's answers anonymously. Aggregate ranking (Borda count over "
            f"{counted} rankings, best first):\n{lines}")


class Council(Strategy):
    """Each worker ranks the others' answers (stage `ranking`); the reviewer synthesizes with the ranking in view."""

    name = "council"
    description = ("the workers rank each other's answers anonymously, then the reviewer writes the final answer "
                   "with that ranking in view")
    plan = ("then they rank each other's answers anonymously, and {reviewer} writes the final answer with that "
            "ranking in view")

    @override
    def summary(self, details: Details) -> list[str]:
        ranking: list[Any] = details.get("ranking") or []
        return ["The workers' ranking (Borda count):",
                *(f"{i + 1}. {r['name']} ({r['points']} points)" for i, r in enumerate(ranking))] if ranking else []

    @override
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        outcome = ReviewOutcome()
        agents = {a.name: a for a in fleet.workers}
        note = None
        rankings: "list[CouncilBallot] | None" = None
        aggregate: "list[CouncilRank] | None" = None
        if len(answers) >= 2:
            plan = ballots(answers, rng)
            jobs = [(agents[ranker.name], messages(task, others, agents[ranker.name].system))
                    for ranker, _, others in plan]
            replies = await run.ask(RANKING, jobs, until)
            cast = []
            for (_, ballot, _), reply in zip(plan, replies):
                if reply.ok:
                    read_ranking(reply.content, ballot)
                    if ballot.error and run.listening:
                        run.emit(Rejected(run.id, RANKING, agents[ballot.ranker], f"ranking left out: {ballot.error}"))
                else:
                    ballot.error = f"no ranking: {reply.error}"
                if ballot.error:
                    outcome.warnings.append(f"the ranking by {ballot.ranker} was left out: {ballot.error}")
                cast.append(ballot)
            readable = [b for b in cast if not b.error]
            rankings = outcome.details["rankings"] = [b.to_dict() for b in cast]
            if readable:
                ranking = borda(readable, [a.name for a in answers])
                aggregate = outcome.details["ranking"] = [{"name": name, "points": pts} for name, pts in ranking]
                note = ranking_note(ranking, len(readable))
            if run.listening:
                run.emit(Ranked(run.id, RANKING, rankings, aggregate))

        def build(agent: "Agent") -> list["Message"]:
            return synthesize.messages(task, answers, agent.system, template=fleet.review_prompt,
                                       system_template=fleet.review_system, note=note)

        await ask_reviewers(run, fleet, build, until, outcome)
        finish(outcome, answers, best=aggregate[0]["name"] if aggregate else None)
        return outcome
