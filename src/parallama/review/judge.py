"""`judge`: the reviewer scores every answer 1–10 with a one-line reason, as structured output; the best one wins."""

from __future__ import annotations

import random
import re
import reprlib
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ..result import FinalSource, JudgeScore
from .base import Details, Strategy
from .fallback import ReviewOutcome, ask_reviewers, finish

if TYPE_CHECKING:
    from ..backends import Message
    from ..calls import Run
    from ..fleet import Agent, Fleet
    from ..result import AgentResult

SCHEMA = {
    "type": "object",
    "properties": {
        "scores": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "response": {"type": "string"},
                    "score": {"type": "integer", "minimum": 1, "maximum": 10},
                    "reason": {"type": "string"},
                },
                "required": ["response", "score", "reason"],
            },
        }
    },
    "required": ["scores"],
}

INSTRUCTIONS = """\
You are a strict judge. Several assistants answered the same task; their answers are below as Response A, \
Response B, and so on. Score every response from 1 (useless or wrong) to 10 (correct, complete and clear), \
with a one-line reason. Reply with JSON only, in this shape:
{"scores": [{"response": "A", "score": 7, "reason": "..."}, ...]}"""

STRICTER = """\
Your previous reply could not be read. Reply with ONLY a JSON object, no other text, exactly in this shape, \
with one entry for each of {labels}:
{{"scores": [{{"response": "A", "score": 7, "reason": "one line"}}]}}"""


class ScoresUnreadable(ValueError):
    pass


def labels(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def messages(task: str, answers: list["AgentResult"], system: str | None) -> list["Message"]:
    shown = "\n\n".join(f"### Response {label}\n{a.content.strip()}" for label, a in zip(labels(len(answers)), answers))
    instructions = f"{system}\n\n{INSTRUCTIONS}" if system else INSTRUCTIONS
    return [{"role": "system", "content": instructions},
            {"role": "user", "content": f"Task:\n{task}\n\nResponses:\n\n{shown}"}]


def stricter(previous: list["Message"], reply: str, n: int) -> list["Message"]:
    """The retry: the same conversation, the unreadable reply, and a stricter instruction."""
    return previous + [{"role": "assistant", "content": reply},
                       {"role": "user", "content": STRICTER.format(labels=", ".join(labels(n)))}]


def schema_for(n: int) -> dict:
    """SCHEMA for `n` answers: exactly n scores, each naming one of their labels (A, B, …), so a server that binds
    the reply by a grammar (llama.cpp's) lets even a tiny model write nothing `parse` cannot read."""
    item = SCHEMA["properties"]["scores"]["items"]  # type: ignore[index]
    item = {**item, "properties": {**item["properties"], "response": {"type": "string", "enum": labels(n)}}}
    scores = {"type": "array", "items": item, "minItems": n, "maxItems": n}
    return {**SCHEMA, "properties": {"scores": scores}}


def with_structured_output(agent: "Agent", n: int) -> "Agent":
    """The judge asks the server for JSON of the schema for `n` answers, in its backend's words (Ollama's `format`,
    an OpenAI-compatible `response_format`), which a grammar-bound server such as llama.cpp's holds the reply to."""
    from dataclasses import replace

    from ..backends import backend_for

    extra = backend_for(agent.protocol).structured_output(schema_for(n), "scores")
    return replace(agent, extra_body={**agent.extra_body, **extra})


def parse(text: str, answers: list["AgentResult"]) -> list[JudgeScore]:
    """The scores in answer order; raise ScoresUnreadable when the reply is not the promised shape."""
    from ..backends.chunks import read_json  # (pydantic, which `parallama --help` does not load)

    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise ScoresUnreadable("no JSON object in the reply")
    try:
        data = read_json(match.group(0))
    except ValueError as exc:
        raise ScoresUnreadable(f"not JSON: {exc}") from exc
    items = data.get("scores") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ScoresUnreadable('no "scores" list')
    by_label: dict[str, JudgeScore] = {}
    names = dict(zip(labels(len(answers)), answers))
    for item in items:
        if not isinstance(item, dict):
            raise ScoresUnreadable("a score is not an object")
        response, score, reason = item.get("response"), item.get("score"), item.get("reason")
        label = response.strip().removeprefix("Response ").strip().upper() if isinstance(response, str) else ""
        if label not in names:  # (reprlib: a reply may nest a value as deep as it likes)
            raise ScoresUnreadable(f"unknown response {reprlib.repr(response)}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 1 <= score <= 10:
            raise ScoresUnreadable(f"score for {label} is not a number from 1 to 10: {reprlib.repr(score)}")
        by_label[label] = {"name": names[label].name, "score": int(round(score)),
                           "reason": reason.strip() if isinstance(reason, str) else ""}
    missing = [label for label in names if label not in by_label]
    if missing:
        raise ScoresUnreadable(f"no score for response {', '.join(missing)}")
    return [by_label[label] for label in names]


def best(scores: list[JudgeScore]) -> JudgeScore:
    """The highest score; ties go to the earlier worker in config order."""
    return max(scores, key=lambda s: s["score"])


class Judge(Strategy):
    """The reviewer scores every answer; the best-scored answer is the final one."""

    name = "judge"
    description = "the reviewer scores every answer from 1 to 10, and the best-scored one is the reply"
    plan = "then {reviewer} scores their answers, and the best-scored one is the reply"
    reviewer_writes_reply = False
    reviewer_does = "is scoring the answers"
    picked = "the answer the judge scored best"
    source_label = "judged best: {agent}"
    source_note = "The reply is {agent}'s answer, scored best."

    @override
    def summary(self, details: Details) -> list[str]:
        scores: list[Any] = details.get("scores") or []
        return ["Scores:", *(f"- {s['name']}: {s['score']}/10, {s['reason']}" for s in scores)] if scores else []

    @override
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        outcome = ReviewOutcome()
        scored: list[JudgeScore] = []

        def read(result: "AgentResult") -> None:
            scored[:] = parse(result.content, answers)

        def retry(previous: list["Message"], result: "AgentResult") -> list["Message"]:
            return stricter(previous, result.content if result.ok else "", len(answers))

        await ask_reviewers(run, fleet, lambda agent: messages(task, answers, agent.system), until, outcome,
                            read=read, prepare=lambda agent: with_structured_output(agent, len(answers)),
                            retry=retry)
        if outcome.final is not None and scored:
            winner = best(scored)
            chosen = next(a for a in answers if a.name == winner["name"])
            outcome.final, outcome.final_source = chosen.content, FinalSource("judge", chosen.name)
            outcome.details["scores"] = list(scored)
        finish(outcome, answers, best=None)
        return outcome
