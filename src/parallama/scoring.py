"""Scoring answers against an expected one, and the accuracy table of a batch: per worker, the final answer, and
the ensemble gain (the final answer's accuracy minus the best single worker's).

Five ways to match, chosen per record:
- `number` (the default when the expected answer is a number): the *last* number in the answer (or in its final
  "Answer: …" line), compared as an exact number (`42`, `42.0`, `The answer is 42.` and `$42` all equal 42;
  `0.30000000000000004` does not equal 0.3), as math benchmarks score — `vote`'s rule, `short_answer.answer_key`;
- `answer` (the default otherwise): the same short answer, as `vote` compares two answers (`short_answer`): "It's
  Berlin!" and "The capital of Germany is Berlin." both match `Berlin`, "Bern" does not;
- `exact`: equal after normalising case, spaces and punctuation;
- `contains`: the normalised expected words appear, as whole words, in the normalised answer;
- `regex`: `re.search(expected, answer)` on the answer as written, by the `regex` module (Python's syntax, with a
  time limit: a pattern that backtracks without end, such as `(a|aa)+$`, gives up after `REGEX_TIMEOUT_S` and that
  answer is scored wrong, with a note).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, Literal, TypedDict, get_args

import regex

from .short_answer import NUMBER, answer_key, as_number, last_number_in, normalise, number_key

Match = Literal["answer", "number", "exact", "contains", "regex"]
MATCHES: tuple[str, ...] = get_args(Match)
REGEX_TIMEOUT_S = 0.1
"""The most one regex match may take. A sane pattern needs well under a millisecond on an answer; a catastrophic one
would hold the batch (and its event loop, so also SIGTERM) for ever. Python's `re` cannot be stopped, so matching
uses the `regex` module, whose matches take a timeout; its syntax is Python's (and the same answers match)."""

_WHOLE_NUMBER = re.compile(r"\s*[$€£]?\s*(" + NUMBER + r")\s*%?\s*")


def parse_number(text: str) -> Fraction | None:
    """The number `text` is, as a whole (`42`, `-3.5`, `1,000`, `$12`, `50%`), or None (also for one with more digits
    or a larger exponent than `short_answer` lets a number have)."""
    number = _whole_number(text)
    return Fraction(number) if number is not None else None


def _whole_number(text: str) -> Decimal | None:
    found = _WHOLE_NUMBER.fullmatch(text)
    return as_number(found.group(1)) if found else None


def last_number(text: str) -> Fraction | None:
    """The last number written in `text`, or None when it has none (or the last is too big to count as one)."""
    number = last_number_in(text)
    return Fraction(number) if number is not None else None


def default_match(expected: str) -> Match:
    """`number` for an expected answer that is a number, else `answer`."""
    return "number" if parse_number(expected) is not None else "answer"


def check_expected(expected: str, match: Match) -> str | None:
    """Why `expected` cannot be matched this way (a broken regex, a `number` that is not one), or None."""
    if match == "regex":
        try:
            regex.compile(expected)
        except regex.error as exc:
            return f"expected is not a valid regex: {exc}"
    elif match == "number" and parse_number(expected) is None:
        return f"match is number but expected {expected!r} is not a number"
    elif match in ("answer", "exact", "contains") and not normalise(expected):
        return "expected is empty once punctuation and spaces are removed"
    return None


def is_correct(answer: str, expected: str, match: Match, question: str | None = None) -> bool:
    """Whether `answer` matches `expected` in the way `match` says (`answer` with the `question` asked, when known).
    Raises TimeoutError when a `regex` match takes longer than REGEX_TIMEOUT_S."""
    if match == "number":
        want = _whole_number(expected)
        return want is not None and answer_key(answer) == number_key(want)
    if match == "answer":
        key = answer_key(answer, question)
        return key is not None and key == answer_key(expected, question)
    if match == "regex":
        return regex.search(expected, answer, timeout=REGEX_TIMEOUT_S) is not None
    if match == "contains":
        return f" {normalise(expected)} " in f" {normalise(answer)} "
    return normalise(answer) == normalise(expected)


class _PromptScoreNotes(TypedDict, total=False):
    gave_up: list[str]
    "Answers the regex gave up on after REGEX_TIMEOUT_S (scored wrong): `final` and workers' names."
    strategies: dict[str, bool | None]
    "`batch --strategies`: each strategy's final answer, by strategy name."


class PromptScore(_PromptScoreNotes):
    """One prompt's scores, as written into its output line: True/False, or None for an answer that is missing."""

    expected: str
    match: str
    final: bool | None
    "The final answer's; None when there was none (every worker failed, or no review)."
    workers: dict[str, bool | None]
    "Each worker's own first answer (round 1), by name."


def score_answers(expected: str, match: Match, final: str | None, workers: Iterable[tuple[str, str | None]],
                  strategies: Iterable[tuple[str, str | None]] = (), question: str | None = None) -> PromptScore:
    """Score the final answer, each worker's (name, answer or None when it failed) and each compared strategy's
    final answer; an answer the regex gave up on is wrong, and named in `gave_up`."""
    gave_up: list[str] = []

    def judge(who: str, answer: str | None) -> bool | None:
        if answer is None:
            return None
        try:
            return is_correct(answer, expected, match, question)
        except TimeoutError:
            gave_up.append(who)
            return False

    score = PromptScore(expected=expected, match=match, final=judge("final", final),
                  workers={name: judge(name, answer) for name, answer in workers})
    compared = {name: judge(f"strategy {name}", answer) for name, answer in strategies}
    if compared:
        score["strategies"] = compared
    if gave_up:
        score["gave_up"] = gave_up
    return score


@dataclass
class Tally:
    """Correct answers out of the prompts scored; `no_answer` of them had no answer to score (counted wrong)."""

    correct: int = 0
    scored: int = 0
    no_answer: int = 0

    def add(self, verdict: bool | None) -> None:
        self.scored += 1
        self.correct += verdict is True
        self.no_answer += verdict is None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    def to_dict(self) -> dict:
        return {"correct": self.correct, "scored": self.scored, "no_answer": self.no_answer,
                "accuracy": round(self.accuracy, 4) if self.accuracy is not None else None}


@dataclass
class Scoreboard:
    """Accuracy over many prompts: each worker, the final answer, and any worker (at least one right)."""

    workers: dict[str, Tally] = field(default_factory=dict)
    final: Tally | None = None
    "None when no prompt was reviewed (`--no-review`): there is no final answer to score."
    any_worker: Tally = field(default_factory=Tally)
    strategies: dict[str, Tally] = field(default_factory=dict)
    "`batch --strategies`: each strategy's final answer, over the same worker answers."

    def add(self, score: PromptScore, *, reviewed: bool) -> None:
        for name, verdict in (score.get("strategies") or {}).items():
            self.strategies.setdefault(name, Tally()).add(verdict)
        for name, verdict in score["workers"].items():
            self.workers.setdefault(name, Tally()).add(verdict)
        verdicts = score["workers"].values()
        self.any_worker.add(True if any(v is True for v in verdicts) else
                            (None if all(v is None for v in verdicts) else False))
        if reviewed:
            if self.final is None:
                self.final = Tally()
            self.final.add(score["final"])

    @property
    def scored(self) -> int:
        return self.any_worker.scored

    def best_worker(self) -> tuple[str, Tally] | None:
        """The worker with the most correct answers (the first in config order on a tie)."""
        if not self.workers:
            return None
        return max(self.workers.items(), key=lambda item: item[1].correct)

    def gain(self, tally: Tally | None = None) -> float | None:
        """The final answer's accuracy (or `tally`'s) minus the best worker's (a fraction: 0.06 is 6 points)."""
        best = self.best_worker()
        tally = tally if tally is not None else self.final
        if tally is None or best is None or not self.scored:
            return None
        return (tally.correct - best[1].correct) / self.scored

    def to_dict(self) -> dict:
        best = self.best_worker()
        gain = self.gain()
        return {
            "scored": self.scored,
            "workers": [{"name": name, **tally.to_dict()} for name, tally in self.workers.items()],
            "final": self.final.to_dict() if self.final else None,
            "any_worker": self.any_worker.to_dict(),
            "best_worker": best[0] if best else None,
            "ensemble_gain": round(gain, 4) if gain is not None else None,
            "ensemble_gain_prompts": (self.final.correct - best[1].correct) if self.final and best else None,
            "strategies": [{"name": name, **tally.to_dict(), "gain": _rounded(self.gain(tally)),
                            "gain_prompts": tally.correct - best[1].correct if best else None}
                           for name, tally in self.strategies.items()],
        }


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None
