"""Confidence-weighted vote (DeepConf, Fu et al. 2025; self-certainty, Kang et al. 2025): each answer weighs what its
tokens say about how sure the model was, the answers are grouped by their short answer (`short_answer`, as `vote`
groups them), and the group with the highest summed weight wins; its most confident member's full text is the final
answer, `final_source: "confidence"`.

An answer's weight is the geometric mean of its tokens' probabilities, exp(mean token logprob), in (0, 1]: the mean
token logprob separated right from wrong first answers best on the demo fleet (the README's table gives the AUROC
of each measure tried), and DeepConf's lowest sliding-window group, made for long reasoning traces, is little more
than the least likely token on answers of a few dozen tokens. Weights are not rescaled per worker: one run has one
answer per worker (or a few samples), too few to learn a worker's scale from, and a probability is read the same on
every model — though a model that is often sure and wrong still weighs more. An answer whose server sent no
logprobs weighs the mean of the others' weights (neutral), and the result says so; with none anywhere, this is a
plain vote by count, with a warning."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Sequence

from typing_extensions import override

from ..result import FinalSource
from ..short_answer import answer_key
from .base import Details, Strategy
from .fallback import ReviewOutcome
from .vote import Vote, tally_lines

if TYPE_CHECKING:
    from ..calls import Run
    from ..fleet import Fleet
    from ..result import AgentResult, VoteCount

LOGPROBS = 1
"""What the workers are asked for: each generated token's logprob and its likeliest rival (unused, but
llama-cpp-python's server sends no logprobs at all unless `top_logprobs` is at least 1)."""


def confidence(answer: "AgentResult") -> float | None:
    """exp(mean token logprob) of the answer's tokens; None when its server sent no logprobs."""
    values = [t.logprob for t in (getattr(answer, "logprobs", None) or ()) if math.isfinite(t.logprob)]
    if not values:
        return None
    return math.exp(sum(values) / len(values))


def weigh(answers: Sequence["AgentResult"], question: str | None) -> tuple[list["VoteCount"], list[str], bool]:
    """The groups by short answer, highest summed weight first (then in the order first given), each with its
    members' weights; the answers that had no logprobs (neutral weight); whether any answer had logprobs."""
    weights = [confidence(a) for a in answers]
    known = [w for w in weights if w is not None]
    neutral = sum(known) / len(known) if known else 1.0
    groups: dict[str, "VoteCount"] = {}
    for answer, weight in zip(answers, weights):
        key = answer_key(answer.content, question)
        if key is None:
            continue
        group = groups.setdefault(key, {"answer": key, "count": 0, "workers": [], "confidence": 0.0,
                                        "weights": []})
        group["count"] += 1
        group["workers"].append(answer.name)
        group["weights"].append(round(weight, 4) if weight is not None else None)
        group["confidence"] = round(group["confidence"] + (weight if weight is not None else neutral), 4)
    counts = sorted(groups.values(), key=lambda g: -g.get("confidence", 0.0))
    without = [a.name for a, w in zip(answers, weights) if w is None]
    return counts, without, bool(known)


def weight_text(count: "VoteCount") -> str:
    """confidence: ` (confidence 1.52: 0.81, 0.71)`, each member's weight (`?` for neutral); vote: nothing."""
    if "confidence" not in count:
        return ""
    weights = ", ".join(f"{w:.2f}" if w is not None else "?" for w in count.get("weights") or [])
    return f" (confidence {count['confidence']:.2f}: {weights})"


class Confidence(Strategy):
    """The group of answers the workers were surest of; the first answer that says something when none does."""

    name = "confidence"
    description = ("the answers are grouped by their short answer, each weighed by how sure its model was of its "
                   "tokens (token logprobs), and the weightiest group's surest answer is the reply")
    plan = ("then their answers are grouped by what they say, each weighed by how sure its model was of its "
            "tokens, and the weightiest group's surest answer is the reply")
    needs_reviewer = False
    reviewer_writes_reply = False
    votes_over_samples = True
    wants_logprobs = True
    source_label = "confidence-weighted vote"
    source_note = "The reply is the surest answer of the weightiest group."
    picked = "the answer the workers were surest of"

    @override
    def summary(self, details: Details) -> list[str]:
        return tally_lines(details.get("tally") or [], weight_text)

    @override
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> ReviewOutcome:
        counts, without, any_known = weigh(answers, task)
        if not any_known:
            outcome = await Vote().review(run, fleet, task, answers, until, rng)
            outcome.warnings.insert(0, "confidence: no worker's server sent token logprobs; decided as a plain vote")
            return outcome
        warnings = []
        if without:
            warnings.append(f"confidence: no token logprobs from {', '.join(dict.fromkeys(without))}; their answers "
                            "weighed the others' mean (neutral)")
        if not counts:
            first = answers[0]
            return ReviewOutcome(final=first.content, final_source=FinalSource("worker", first.name),
                                 details={"tally": counts},
                                 warnings=[*warnings, "confidence: no answer has a word or a number; the final "
                                                      f"answer is the first, {first.name}'s"])
        top = counts[0]
        members = [a for a in answers if answer_key(a.content, task) == top["answer"]]
        sure = max(members, key=lambda a: c if (c := confidence(a)) is not None else -1.0)
        return ReviewOutcome(final=sure.content, final_source=FinalSource("confidence"), details={"tally": counts},
                             warnings=warnings)
