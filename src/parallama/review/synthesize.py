"""Aggregate-and-synthesize (after Mixture-of-Agents): critically read every answer, write one better answer."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from typing_extensions import override

from .base import Strategy
from .fallback import ReviewOutcome, ask_reviewers, finish

if TYPE_CHECKING:
    from ..backends import Message
    from ..calls import Run
    from ..fleet import Agent, Fleet
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


def numbered(answers: list["AgentResult"]) -> str:
    """`1. …` per answer, no authors: small models copy `### Answer from` headers back into their answer."""
    return "\n\n".join(f"{i}. {a.content.strip()}" for i, a in enumerate(answers, 1))


def messages(task: str, answers: list["AgentResult"], system: str | None, *, template: str | None = None,
             system_template: str | None = None, note: str | None = None) -> list["Message"]:
    """System instructions plus one user message with the task and every labelled answer.

    `template` (the config's review.prompt) replaces the user message, `system_template` (review.system) the
    instructions after the agent's own system; `note` (such as a peer ranking) is added after the answers.
    """
    extra = f"\n\n{note}" if note else ""
    fields = {"task": task, "answers": labelled(answers) + extra, "answer_list": numbered(answers) + extra}
    if system_template is not None:
        instructions: str | None = system_template.format(**fields)
    elif template is not None:
        instructions = None
    else:
        instructions = INSTRUCTIONS
    system_text = "\n\n".join(part for part in (system, instructions) if part)
    out: list[Message] = [{"role": "system", "content": system_text}] if system_text else []
    return out + [{"role": "user", "content": (template or USER_TEMPLATE).format(**fields)}]


def refine_messages(task: str, answers: list["AgentResult"], system: str | None) -> list["Message"]:
    """A worker's request in round k+1: the task and the round-k answers (Mixture-of-Agents layer)."""
    out: list[Message] = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": REFINE_TEMPLATE.format(task=task, answers=labelled(answers))}]


class Synthesize(Strategy):
    """The reviewer reads every answer and writes one better answer."""

    name = "synthesize"
    description = "the reviewer reads every answer and writes one better answer"
    plan = "then {reviewer} writes the final answer from theirs"

    @override
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        def build(agent: "Agent") -> list["Message"]:
            return messages(task, answers, agent.system, template=fleet.review_prompt,
                            system_template=fleet.review_system)

        outcome = ReviewOutcome()
        await ask_reviewers(run, fleet, build, until, outcome)
        finish(outcome, answers, best=None)
        return outcome
