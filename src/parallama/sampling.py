"""Sampling more only while the workers disagree (Adaptive-Consistency, ESC): after the first answers, while the
leading short answer holds less than `settle` of the answers (or ties), every worker is asked again with another seed,
up to `max` answers each, through the slots like any request; a strategy that votes (`vote`, `confidence`) then
decides over all of them. Three agreeing first answers cost no second round."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

from .events import sample_stage
from .short_answer import answer_key

if TYPE_CHECKING:
    from .backends import Message
    from .calls import Run
    from .fleet import Agent, Fleet, Samples
    from .result import AgentResult


@dataclass
class Sampling:
    """What sampling asked and what it cost: every extra answer (ok or not), in the order the rounds ran."""

    answers: list["AgentResult"] = field(default_factory=list)
    rounds: int = 0
    "Extra rounds asked (0: the first answers were settled)."
    settled: bool = False
    "Whether the leader held `settle` of the answers when sampling stopped (False: it ran out of samples)."
    leader_share: float = 0.0
    wall_s: float = 0.0

    def cost(self) -> dict[str, float | int | bool]:
        """Requests, tokens and model seconds of the extra answers; rounds; whether it settled."""
        tokens = sum((a.prompt_tokens or 0) + (a.completion_tokens or 0) + (a.thinking_tokens or 0)
                     for a in self.answers)
        return {"sample_rounds": self.rounds, "sample_requests": len(self.answers), "sample_tokens": tokens,
                "sample_s": round(sum(a.elapsed_s for a in self.answers), 3), "settled": self.settled,
                "leader_share": round(self.leader_share, 3)}


def sampling_line(cost: dict) -> str:
    """How sampling went, for people: `samples: 1 more round (3 requests, 18 tokens, 0.4 s); settled at 67 %`."""
    rounds = cost.get("sample_rounds", 0)
    spent = (f"{rounds} more round{'s' if rounds != 1 else ''} ({cost.get('sample_requests', 0)} requests, "
             f"{cost.get('sample_tokens', 0)} tokens, {cost.get('sample_s', 0)} s)" if rounds else "no more rounds")
    share = f"{float(cost.get('leader_share', 0)):.0%}"
    return f"samples: {spent}; " + (f"settled, the leader at {share}" if cost.get("settled")
                                    else f"not settled, the leader at {share}")


def leader_share(answers: Sequence["AgentResult"], question: str | None) -> tuple[float, bool]:
    """The leading short answer's share of the answers that vote, and whether it leads alone."""
    counts: dict[str, int] = {}
    for answer in answers:
        if not answer.ok:
            continue
        key = answer_key(answer.content, question)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return 0.0, False
    ranked = sorted(counts.values(), reverse=True)
    return ranked[0] / sum(ranked), len(ranked) == 1 or ranked[0] > ranked[1]


def reseeded(agent: "Agent", k: int) -> "Agent":
    """The agent as asked for its k-th answer: its seed (0 when it has none) plus k − 1."""
    seed = agent.options.get("seed")
    base = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    return replace(agent, options={**agent.options, "seed": base + k - 1})


async def sample_more(run: "Run", fleet: "Fleet", samples: "Samples", first: Sequence["AgentResult"],
                      messages: dict[str, list["Message"]], until: float | None, question: str,
                      logprobs: int | None = None) -> Sampling:
    """Extra rounds of the workers that answered, each with another seed, until the leader is settled or each has
    `samples.max` answers. `messages`: each worker's request, by name; `logprobs`: asked as of the first answers."""
    started = time.perf_counter()
    out = Sampling()
    answered = {a.name for a in first if a.ok}
    agents = [a for a in fleet.workers if a.name in answered]
    for k in range(2, samples.max + 1):
        share, alone = leader_share([*first, *out.answers], question)
        out.leader_share = share
        if alone and share >= samples.settle:
            out.settled = True
            break
        if until is not None and time.perf_counter() >= until:
            break
        jobs = [(reseeded(agent, k), messages[agent.name]) for agent in agents]
        out.answers += await run.ask(sample_stage(k), jobs, until, logprobs=logprobs)
        out.rounds += 1
    else:
        share, alone = leader_share([*first, *out.answers], question)
        out.leader_share, out.settled = share, alone and share >= samples.settle
    out.answers = [a for a in out.answers if a is not None]
    out.wall_s = time.perf_counter() - started
    return out
