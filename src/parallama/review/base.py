"""What a review strategy is: one class carrying every fact of it — its name and one line for people, whether it
needs a reviewer and whether the reviewer's text is the reply, the sentence serve's narration says of it, the rule
that may cut the workers short, the review itself, and how its details read for people. `review.registry` lists
the strategies; nothing outside a strategy's own class asks `if strategy == …`."""

from __future__ import annotations

import abc
import random
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

if TYPE_CHECKING:
    from ..calls import Run
    from ..cutoff import Cutoff
    from ..fleet import Fleet
    from ..result import AgentResult
    from .fallback import ReviewOutcome

Details = Mapping[str, Any]
"""A strategy's own record of how it decided, JSON-shaped, each value under a key saying what it is (judge:
`scores`; council: `rankings`, `ranking`; vote: `tally`). `RunResult.details`, `--json`, the history and the page
carry it as it is."""


class Strategy(abc.ABC):
    """One way of turning the workers' answers into the final one. A subclass sets the facts below and writes
    `review`; `cutoff` and `summary` have defaults (no early stop; nothing to say)."""

    name: ClassVar[str]
    "How the config, the CLI and serve's models (`parallama:<name>`) call it."
    description: ClassVar[str]
    "One line for people (the page shows it beside the strategy's name)."
    plan: ClassVar[str]
    """What serve's narration says the fleet does once the workers answer (after "…answer at once; "), with
    `{reviewer}` for the first reviewer's name; read through `plan_sentence`."""
    needs_reviewer: ClassVar[bool] = True
    "False: it makes a final answer with no reviewer in the config (a reviewer is then only its fallback)."
    reviewer_writes_reply: ClassVar[bool] = True
    """The reviewer's text is the final answer, streamed as it is written; False when the reply is a worker's
    answer (the judge's pick, the majority's)."""
    reviewer_does: ClassVar[str] = "is writing the final answer"
    "What serve's narration says the reviewer does once its request is sent."
    votes_over_samples: ClassVar[bool] = False
    "It decides by the answers' short answers, so more samples can help it (`review.samples`)."
    wants_logprobs: ClassVar[bool] = False
    "It reads the workers' token log-probabilities (the backends ask the servers for them)."
    source_label: ClassVar[str | None] = None
    """What the terminal says of a final answer whose `final_source` is this strategy's own ("majority vote";
    `{agent}` for the worker it names: "judged best: {agent}"), or None when it never names itself so."""
    source_note: ClassVar[str | None] = None
    """What serve's narration says of such a reply, after the details ("The reply is the majority's answer.";
    `{agent}` as in `source_label`)."""
    picked: ClassVar[str] = "the answer it picked"
    """A reply that is one worker's answer, as this strategy picks it, in a sentence ("the majority's answer"):
    serve's notes on the request's tools, and the note of the agent that writes the reply from it with them."""

    def cutoff(self, question: str | None = None) -> "Cutoff | None":  # noqa: ARG002 - vote reads it
        """A rule that ends the workers' last round early once the outcome is settled (vote), or None; `question`
        is the task, which the rule reads the answers by as the strategy's review will."""
        return None

    @abc.abstractmethod
    async def review(self, run: "Run", fleet: "Fleet", task: str, answers: list["AgentResult"],
                     until: float | None, rng: random.Random) -> "ReviewOutcome":
        """The final answer from the successful `answers`; never raises for a failing reviewer (it falls back)."""

    def summary(self, details: Details) -> list[str]:  # noqa: ARG002 - a strategy with details says them
        """The details, for people, one line each (a heading, then its lines): the terminal prints them, serve's
        narration and `history show` say them. Empty: nothing to say."""
        return []

    def reviewer_asked(self, answers: Sequence["AgentResult"],  # noqa: ARG002
                       question: str | None = None) -> tuple[str, str] | None:  # noqa: ARG002
        """Why the reviewer is asked after all, said as it is asked (vote: no majority), and the warning the result
        will carry for it (serve's narration says the one, and so not the other again); None: nothing to say.
        `question` is the task, as the review read the answers by it."""
        return None

    def plan_sentence(self, reviewer: str) -> str:
        """`plan` said of a fleet whose first reviewer is `reviewer` ('' for none)."""
        return self.plan.format(reviewer=reviewer)
