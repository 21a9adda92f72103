"""When a stage stops waiting for its stragglers: the config's quorum (once `min_answers` workers answered, the rest
get `grace_s` more), and the rule a strategy may add (`vote` stops once its leader cannot be overtaken). A cut request
is closed at once (its slot handed on) and its result has status `cut`; a `required` agent is never cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

from .fleet import Quorum

if TYPE_CHECKING:
    from .result import AgentResult

CUT = "cut"
"The status of a request that was closed because the stage had heard enough."


class Cutoff(Protocol):
    """A rule for cutting a stage short: looked at each time one of its requests ends."""

    def cut_at(self, answers: Sequence["AgentResult"], running: int, total: int,
               now: float) -> tuple[float, str] | None:
        """When to cut the requests still running (a `time.perf_counter()` time) and why, given the answers so
        far (in the order they arrived), how many requests are still running and how many the stage has; None
        while it should wait for them."""


@dataclass(frozen=True)
class QuorumCutoff:
    """The fleet's quorum as a rule: once `min_answers` workers have answered, wait at most `grace_s` more for the
    rest, then cut them."""

    quorum: Quorum

    def cut_at(self, answers: Sequence["AgentResult"], running: int, total: int,
               now: float) -> tuple[float, str] | None:
        if running == 0 or len(answers) < self.quorum.min_answers:
            return None
        # `now` is when the answer that made the quorum arrived (this is asked each time one does).
        return now + self.quorum.grace_s, (f"cut: {len(answers)} of {total} had answered; "
                                           f"waited {self.quorum.grace_s:g} s more")


def earliest(rules: Sequence[Cutoff], answers: Sequence["AgentResult"], running: int, total: int,
             now: float) -> tuple[float, str] | None:
    """The first moment any of `rules` says to cut, with its reason."""
    found = [at for rule in rules if (at := rule.cut_at(answers, running, total, now)) is not None]
    return min(found, key=lambda at: at[0]) if found else None
