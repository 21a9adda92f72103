"""The stages of one run: workers fan out, `rounds − 1` refinement rounds, then the review strategy."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from .cutoff import CUT, Cutoff, QuorumCutoff
from .events import WORKERS, EventSink, Failed, Finished, round_stage
from .result import AgentResult, RunResult
from .review import ReviewOutcome, needs_reviewer, strategy_named, votes_over_samples
from .review.confidence import LOGPROBS
from .review.synthesize import refine_messages
from .sampling import Sampling, sample_more

if TYPE_CHECKING:
    from .backends import Message
    from .calls import Run
    from .events import Event
    from .fleet import Agent, Fleet


TASK_WITH_CONVERSATION = """\
{system}{turns}The user's latest message, to answer now:
{prompt}"""
SYSTEM_PART = "The user's instructions (system prompt):\n{text}\n\n"
TURNS_PART = "The conversation so far:\n\n{text}\n\n"
SPEAKERS = {"user": "User", "assistant": "Assistant"}


def worker_messages(agent: "Agent", prompt: str, context: Sequence["Message"] = ()) -> list["Message"]:
    """A worker's request: one system message (the agent's system prompt, then the conversation's), the earlier
    turns, and the task."""
    systems = ([agent.system] if agent.system else []) + [m["content"] for m in context if m["role"] == "system"]
    messages: list[Message] = [{"role": "system", "content": "\n\n".join(systems)}] if systems else []
    messages += [{"role": m["role"], "content": m["content"]} for m in context if m["role"] != "system"]
    messages.append({"role": "user", "content": prompt})
    return messages


def task_text(prompt: str, context: Sequence["Message"] = ()) -> str:
    """The task as reviewers, rankers and later rounds read it: the prompt alone, or with the conversation's
    system prompt and earlier turns written out before it."""
    if not context:
        return prompt
    systems = [m["content"] for m in context if m["role"] == "system"]
    turns = [f"{SPEAKERS.get(m['role'], m['role'].title())}: {m['content']}" for m in context if m["role"] != "system"]
    return TASK_WITH_CONVERSATION.format(
        system=SYSTEM_PART.format(text="\n\n".join(systems)) if systems else "",
        turns=TURNS_PART.format(text="\n\n".join(turns)) if turns else "", prompt=prompt)


def reviewing(fleet: "Fleet", strategy: str, review: bool) -> str | None:
    """The strategy a run is reviewed with, or None: no review asked, or none possible (no reviewer, and the
    strategy needs one)."""
    if not review:
        return None
    return strategy if fleet.reviewers or not needs_reviewer(strategy) else None


async def orchestrate(run: "Run", fleet: "Fleet", prompt: str, *, deadline: float | None, review: bool,
                      strategy: str, rng: random.Random, context: Sequence["Message"] = ()) -> RunResult:
    """Every stage of one run through the client's gates; the RunResult at the end. `context` holds the earlier
    turns of a conversation (and its system prompt) that `prompt` continues."""
    started = time.perf_counter()
    until = started + deadline if deadline is not None else None
    task = task_text(prompt, context)
    reviewed = reviewing(fleet, strategy, review)
    early_stop = strategy_named(reviewed).cutoff(task) if reviewed else None
    logprobs = wanted_logprobs([reviewed] if reviewed else [])
    rounds = await worker_rounds(run, fleet, prompt, context, until, early_stop, logprobs)
    answers = reviewed_answers(rounds)
    sampling = None
    if answers and fleet.samples is not None and votes_over_samples(reviewed):
        sampling = await sample_more(run, fleet, fleet.samples, rounds[-1],
                                     {a.name: worker_messages(a, prompt, context) for a in fleet.workers}, until, task,
                                     logprobs)
        answers = answers + [a for a in sampling.answers if a.ok]
    outcome = ReviewOutcome()
    if reviewed and answers:
        outcome = await strategy_named(reviewed).review(run, fleet, task, answers, until, rng)
    return run_result(run, fleet, prompt, rounds, outcome, reviewed, time.perf_counter() - started, sampling)


def wanted_logprobs(strategies: Sequence[str]) -> int | None:
    """What the workers are asked for when one of `strategies` reads token logprobs (confidence), else None."""
    return LOGPROBS if any(strategy_named(name).wants_logprobs for name in strategies) else None


async def worker_rounds(run: "Run", fleet: "Fleet", prompt: str, context: Sequence["Message"], until: float | None,
                        early_stop: "Cutoff | None" = None, logprobs: int | None = None) -> list[list[AgentResult]]:
    """The workers' answers, round by round (`rounds − 1` refinement rounds after the first): each round cut short
    by the fleet's quorum, the last also by `early_stop` (a vote that is settled); `logprobs`: asked of every
    round's requests."""
    task = task_text(prompt, context)
    cutoffs: list[Cutoff] = [QuorumCutoff(fleet.quorum)] if fleet.quorum is not None else []
    last = cutoffs + ([early_stop] if early_stop is not None else [])
    first = [(a, worker_messages(a, prompt, context)) for a in fleet.workers]
    rounds: list[list[AgentResult]] = [
        await run.ask(WORKERS, first, until, cutoffs=last if fleet.rounds == 1 else cutoffs, logprobs=logprobs)]
    for k in range(2, fleet.rounds + 1):
        previous = [w for w in rounds[-1] if w.ok]
        if not previous:
            break
        jobs = [(a, refine_messages(task, previous, a.system)) for a in fleet.workers]
        rounds.append(await run.ask(round_stage(k), jobs, until, cutoffs=last if k == fleet.rounds else cutoffs,
                                    logprobs=logprobs))
    return rounds


def reviewed_answers(rounds: list[list[AgentResult]]) -> list[AgentResult]:
    """The answers a strategy reviews: the last round's, or the round before when the last failed entirely."""
    answers = [w for w in rounds[-1] if w.ok]
    if not answers and len(rounds) > 1:
        answers = [w for w in rounds[-2] if w.ok]
    return answers


def run_result(run: "Run", fleet: "Fleet", prompt: str, rounds: list[list[AgentResult]], outcome: ReviewOutcome,
               strategy: str | None, wall_s: float, sampling: Sampling | None = None) -> RunResult:
    """The RunResult of worker rounds (and extra samples) and a review's outcome; a cut is said first among the
    warnings."""
    return RunResult(
        samples=sampling.answers if sampling else [], sampling=sampling.cost() if sampling else None,
        prompt=prompt, workers=rounds[-1], review=outcome.review, final=outcome.final,
        final_source=outcome.final_source, wall_s=round(wall_s, 3),
        warnings=_cut_notes(rounds) + list(fleet.warnings) + run.warnings + outcome.warnings,
        strategy=strategy, cut=_cut(rounds), earlier_rounds=rounds[:-1], review_attempts=outcome.attempts,
        details=outcome.details, run_id=run.id, continue_with=outcome.continue_with)


@dataclass
class StrategyRun:
    """One strategy's review of a prompt's worker answers (`FleetClient.compare`), and what the review cost: every
    request it made (reviewers, their fallbacks, council's rankings), their tokens and seconds."""

    strategy: str
    result: RunResult
    requests: int = 0
    tokens: int = 0
    "Prompt, answer and thinking tokens of the review's requests, as the servers counted them."
    seconds: float = 0.0
    "The review's requests' seconds from sending to the last token (time waiting for a slot not counted)."
    warnings: list[str] = field(default_factory=list)
    "What the review itself had to say (a failed reviewer, a vote with no majority)."
    sampling: Sampling | None = None
    "`name+samples`: the extra answers it decided over too, and their cost."

    def __call__(self, event: "Event") -> None:
        if isinstance(event, (Finished, Failed)):
            r = event.result
            self.requests += 1
            self.tokens += (r.prompt_tokens or 0) + (r.completion_tokens or 0) + (r.thinking_tokens or 0)
            self.seconds += r.elapsed_s

    def cost(self) -> dict[str, float | int | bool]:
        spent: dict[str, float | int | bool] = {"review_requests": self.requests, "review_tokens": self.tokens,
                                                "review_s": round(self.seconds, 3)}
        return {**spent, **self.sampling.cost()} if self.sampling else spent


async def compare(run: "Run", review_run: Callable[[EventSink], "Run"], fleet: "Fleet", prompt: str,
                  strategies: Sequence[str], *, deadline: float | None, rng: random.Random) -> list[StrategyRun]:
    """The workers once on `run`, then each strategy in turn over the same answers, each on its own `review_run`
    (which counts its cost)."""
    started = time.perf_counter()
    until = started + deadline if deadline is not None else None
    usable = [name for name in strategies if reviewing(fleet, name, True)]
    early_stop = (strategy_named(usable[0]).cutoff(prompt)
                  if len(usable) == 1 and len(strategies) == 1 else None)
    logprobs = wanted_logprobs(usable)
    rounds = await worker_rounds(run, fleet, prompt, (), until, early_stop, logprobs)
    workers_s = time.perf_counter() - started
    answers = reviewed_answers(rounds)
    sampling: Sampling | None = None
    out = []
    for name in strategies:
        variants = [False] + ([True] if fleet.samples is not None and votes_over_samples(name) and answers else [])
        for sampled in variants:
            if sampled and sampling is None:
                assert fleet.samples is not None
                sampling = await sample_more(run, fleet, fleet.samples, rounds[-1],
                                             {a.name: worker_messages(a, prompt) for a in fleet.workers}, until, prompt,
                                             logprobs)
            began = time.perf_counter()
            outcome = ReviewOutcome()
            runs = StrategyRun(f"{name}{SAMPLED}" if sampled else name, None,  # type: ignore[arg-type]
                               sampling=sampling if sampled else None)
            reviewed = reviewing(fleet, name, True)
            over = answers + [a for a in sampling.answers if a.ok] if sampled and sampling else answers
            if reviewed and over:
                outcome = await strategy_named(name).review(review_run(runs), fleet, prompt, over, until, rng)
            runs.warnings = outcome.warnings
            runs.result = run_result(run, fleet, prompt, rounds, outcome, reviewed,
                                     workers_s + time.perf_counter() - began, sampling if sampled else None)
            out.append(runs)
    return out


SAMPLED = "+samples"
"`batch --strategies` with `review.samples`: a voting strategy is compared both over the first answers (`vote`) and "
"over the extra samples too (`vote+samples`)."


def _cut(rounds: list[list[AgentResult]]) -> list[str]:
    """The workers cut in any round, in config order, each once."""
    names = [w.name for results in rounds for w in results if w.status == CUT]
    return list(dict.fromkeys(names))


def _cut_notes(rounds: list[list[AgentResult]]) -> list[str]:
    """One warning per round that was cut short: the result is partial, and says so first."""
    notes = []
    for results in rounds:
        cut = [w for w in results if w.status == CUT]
        if cut:
            where = f" in {cut[0].stage}" if cut[0].stage != WORKERS else ""
            names = ", ".join(w.name for w in cut)
            why = (cut[0].error or "").removeprefix("cut: ")
            notes.append(f"partial result: {names} {'was' if len(cut) == 1 else 'were'} cut{where} "
                         f"({why}); the answer was made without {'it' if len(cut) == 1 else 'them'}")
    return notes
