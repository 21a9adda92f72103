"""Aggregate-and-synthesize (after Mixture-of-Agents): critically read every answer, write one better answer."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .chain import ReviewOutcome, ask_reviewers, finish

if TYPE_CHECKING:
    from ..backends import Message
    from ..client import Run
    from ..config import Agent, Fleet
    from ..result import AgentResult

INSTRUCTIONS = """\
You are the reviewer of a team of assistants. Several of them answered the same task independently; their \
answers are below, each labelled with its author. Critically evaluate them: some may be wrong, incomplete or \
biased. Keep what is correct and useful, fix or drop what is not, and resolve disagreements with your own \
judgement. Then write one final answer to the task — complete, accurate and well organized. Do not list or \
summarize the individual answers and do not mention the assistants: answer the task directly."""

USER_TEMPLATE = """\
Task:
{task}

Answers from the assistants:

{answers}

Write the single best final answer to the task."""

ANSWER_TEMPLATE = """\
### Answer from {name}
{content}"""

REFINE_TEMPLATE = """\
Task:
{task}

Answers from the previous round, by several assistants:

{answers}

Use them as references: keep what is right, fix what is wrong, and write your own improved, complete answer to \
the task."""


def labelled(answers: list["AgentResult"]) -> str:
    return "\n\n".join(ANSWER_TEMPLATE.format(name=a.name, content=a.content.strip()) for a in answers)


def messages(task: str, answers: list["AgentResult"], system: str | None, *, template: str | None = None,
             note: str | None = None) -> list["Message"]:
    """System instructions plus one user message with the task and every labelled answer.

    `template` (the config's review.prompt) replaces both; `note` (such as a peer ranking) is added after the answers.
    """
    answers_text = labelled(answers) + (f"\n\n{note}" if note else "")
    if template is not None:
        out: list[Message] = [{"role": "system", "content": system}] if system else []
        return out + [{"role": "user", "content": template.format(task=task, answers=answers_text)}]
    instructions = f"{system}\n\n{INSTRUCTIONS}" if system else INSTRUCTIONS
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": USER_TEMPLATE.format(task=task, answers=answers_text)},
    ]


def refine_messages(task: str, answers: list["AgentResult"], system: str | None) -> list["Message"]:
    """A worker's request in round k+1: the task and the round-k answers (Mixture-of-Agents layer)."""
    out: list[Message] = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": REFINE_TEMPLATE.format(task=task, answers=labelled(answers))}]


class Synthesize:
    """The reviewer reads every answer and writes one better answer."""

    name = "synthesize"

    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        def build(agent: "Agent") -> list["Message"]:
            return messages(task, answers, agent.system, template=fleet.review_prompt)

        outcome = ReviewOutcome()
        await ask_reviewers(run, fleet, build, until, outcome)
        finish(outcome, answers, best=None)
        return outcome
