"""What the web page sees of a run: each event as a small JSON-ready dict, live from a run's events (`RunView`) or
rebuilt from the history (`replay`), so the page draws both the same way.

Model output is untrusted text. Streamed pieces are masked as they come (no key shown, not even cut in two across
pieces); answers are sent as text and as Markdown rendered here, on the server, with raw HTML off (markdown-it
escapes every tag and refuses `javascript:` links), so the page never turns model text into markup itself.

The page's events, each with `type`:
  run      run_id, prompt, strategy (None: no review), rounds, context (earlier turns), workers, reviewers
  queued   t, stage, agent, model, role, server      (t: seconds since the run started)
  started  t, stage, agent, queued_s
  delta    stage, agent, text                         (a piece of an answer)
  thinking stage, agent, text                         (a piece of a reasoning model's thinking)
  ended    t, stage, agent, status, content, html, error, error_kind, queued_s, elapsed_s, ttft_s, tokens, …
  ranked   t, stage, rankings, ranking                (council: each worker's ranking, and the aggregate)
  result   t, final, final_html, final_source, scores, rankings, ranking, warnings, wall_s, history_id, error,
           cut (workers cut: the answer is partial), tally (vote: each distinct answer, its count and workers)
  error    message                                    (the run ended without a result)
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Mapping

from ..urls import server_of
from ..events import RANKING, REVIEW, Delta, Failed, Finished, Queued, Ranked, RunEnded, RunStarted, Started, Thinking
from ..redact import StreamMask

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from ..fleet import Agent, Fleet
    from ..events import Event
    from ..history import RunRecord
    from ..redact import Redactor
    from ..result import RunResult

View = dict[str, Any]
"One event as the page reads it."

RESULT_FIELDS = ("status", "content", "error", "error_kind", "queued_s", "elapsed_s", "ttft_s", "prompt_tokens",
                 "completion_tokens", "tokens_per_s", "thinking_tokens")


@functools.lru_cache(maxsize=1)
def _markdown() -> "MarkdownIt":
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def markdown_html(text: str | None) -> str:
    """Markdown as HTML with raw HTML off: a tag in the text is shown as text, never made an element."""
    return _markdown().render(text) if text else ""


def agent_view(name: str, model: str, role: str, api_url: str) -> View:
    try:
        server = server_of(api_url)
    except ValueError:
        server = api_url
    return {"name": name, "model": model, "role": role, "server": server}


def _agent(agent: "Agent") -> View:
    return {"name": agent.name, "model": agent.model, "role": agent.role, "server": agent.server}


def context_view(context: Any, redact: "Redactor") -> list[View]:
    """Earlier turns of the conversation: an assistant's answer with its Markdown rendered."""
    turns = []
    for message in context:
        text = redact(str(message.get("content") or ""))
        turn: View = {"role": message.get("role"), "content": text}
        if turn["role"] == "assistant":
            turn["html"] = markdown_html(text)
        turns.append(turn)
    return turns


def queued_view(t: float, stage: str, agent: View) -> View:
    return {"type": "queued", "t": t, "stage": stage, "agent": agent["name"], "model": agent["model"],
            "role": agent["role"], "server": agent["server"]}


def ranked_view(t: float, rankings: Any, ranking: Any) -> View:
    return {"type": "ranked", "t": t, "stage": RANKING, "rankings": rankings, "ranking": ranking}


def ended_view(t: float, stage: str, agent: str, fields: Mapping[str, Any], redact: "Redactor") -> View:
    """An agent's request ended: its result (from an AgentResult or a history row), masked, the answer rendered."""
    view: View = {"type": "ended", "t": t, "stage": stage, "agent": agent}
    view.update({name: fields.get(name) for name in RESULT_FIELDS})
    view["content"] = redact(view["content"] or "")
    view["error"] = redact(view["error"]) if view["error"] else None
    view["html"] = markdown_html(view["content"])
    return view


def result_view(t: float, result: Mapping[str, Any], reviewed: bool, redact: "Redactor") -> View:
    """The run's outcome (from a RunResult's fields or a history record): the final answer as text and rendered,
    where it came from, the judge's scores or the council's rankings, the warnings; or why there is no answer."""
    final, source, error = result.get("final"), result.get("final_source"), None
    if final is None:
        answers = [w for w in result["workers"] if w["status"] == "ok"]
        if reviewed or not answers:
            error = "no answer: every worker failed: " + "; ".join(
                redact(w["error"] or w["status"]) for w in result["workers"]) if result["workers"] else "no answer"
        else:  # no reviewer in the config: every answer under its worker's name
            final = answers[0]["content"] if len(answers) == 1 else "\n\n".join(
                f"## {w['name']}\n\n{w['content'].strip()}" for w in answers)
            source = "workers"
    final = redact(final) if final is not None else None
    return {"type": "result", "t": t, "final": final, "final_html": markdown_html(final), "final_source": source,
            "scores": result.get("scores"), "rankings": result.get("rankings"), "ranking": result.get("ranking"),
            "warnings": [redact(w) for w in result.get("warnings") or []], "wall_s": result.get("wall_s"),
            "history_id": result.get("history_id"), "error": error, "cut": list(result.get("cut") or []),
            "tally": result.get("tally")}


class RunView:
    """One live run's events as the page's: `feed(event)` gives the views to send (often one, maybe none).
    `kept`: the run goes to the history (under its run id)."""

    def __init__(self, redact: "Redactor", *, kept: bool = False) -> None:
        self.redact = redact
        self.kept = kept
        self.started = time.perf_counter()
        self.reviewed = False
        self._masks: dict[tuple[str, str, str], StreamMask] = {}

    def t(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def feed(self, event: "Event") -> list[View]:
        kind = type(event)
        if kind is Delta or kind is Thinking:  # the hot path: one per token of every agent
            channel = "delta" if kind is Delta else "thinking"
            text = self._piece(channel, event)  # type: ignore[arg-type]
            return [{"type": channel, "stage": event.stage, "agent": event.agent.name,  # type: ignore[union-attr]
                     "text": text}] if text else []
        if isinstance(event, Queued):
            return [queued_view(self.t(), event.stage, _agent(event.agent))]
        if isinstance(event, Started):
            return [{"type": "started", "t": self.t(), "stage": event.stage, "agent": event.agent.name,
                     "queued_s": event.queued_s}]
        if isinstance(event, (Finished, Failed)):
            stage, name = event.stage, event.agent.name
            return self._flush(stage, name) + [ended_view(self.t(), stage, name, vars_of(event.result), self.redact)]
        if isinstance(event, Ranked):
            return [ranked_view(self.t(), event.rankings, event.ranking)]
        if isinstance(event, RunStarted):
            return [self._opened(event)]
        if isinstance(event, RunEnded):
            return [self._ended(event.result)]
        return []

    def _ended(self, result: "RunResult | None") -> View:
        if result is None:
            return {"type": "error", "message": "the run was interrupted"}
        fields = vars_of(result)
        fields["workers"] = [vars_of(w) for w in result.workers]
        if self.kept:
            fields["history_id"] = result.run_id
        return result_view(self.t(), fields, self.reviewed, self.redact)

    def _flush(self, stage: str, name: str) -> list[View]:
        """What the masks held back of an agent's stream (the start of what might have been a secret)."""
        out = []
        for channel in ("thinking", "delta"):
            mask = self._masks.pop((stage, name, channel), None)
            if mask is not None and (text := mask.flush()):
                out.append({"type": channel, "stage": stage, "agent": name, "text": text})
        return out

    def _piece(self, channel: str, event: Delta | Thinking) -> str:
        if not self.redact.secrets:
            return event.text
        key = (event.stage, event.agent.name, channel)
        mask = self._masks.get(key)
        if mask is None:
            mask = self._masks[key] = StreamMask(self.redact)
        return mask.feed(event.text)

    def _opened(self, event: RunStarted) -> View:
        fleet = event.fleet
        self.reviewed = event.strategy is not None
        return {"type": "run", "run_id": event.run_id, "prompt": self.redact(event.prompt), "strategy": event.strategy,
                "rounds": fleet.rounds, "context": context_view(event.context, self.redact),
                "workers": [_agent(a) for a in fleet.workers],
                "reviewers": [_agent(a) for a in fleet.reviewers] if event.strategy else [],
                "started_at": time.time()}


def vars_of(obj: Any) -> dict[str, Any]:
    """A result dataclass's fields, shallow (no copy of nested results, as `asdict` would make)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


# ---------------------------------------------------------------- from the history

def replay(record: "RunRecord", redact: "Redactor") -> list[View]:
    """A run kept in the history as the events the page would have seen, in order. The history keeps each
    request's queued and elapsed seconds, not when it was queued: each stage is placed after the one before it
    ended (as a run goes), its requests queued together, and reviewers tried one after another."""
    config = record["config"]
    reviewers = config.get("reviewer_agent") or []
    # Reviewed: a reviewer was asked (a run with answers and a reviewer always asks one; one with no answer
    # reads the same either way).
    reviewed = any(a["stage"] == REVIEW for a in record["agents"])
    views: list[View] = [{
        "type": "run", "run_id": record["id"], "prompt": redact(record["prompt"]),
        "strategy": record["strategy"] if reviewed else None,
        "rounds": (config.get("review") or {}).get("rounds", 1), "context": context_view(record["context"], redact),
        "workers": [agent_view(a["name"], a["model"], "worker", a["api_url"]) for a in config["worker_agents"]],
        "reviewers": [agent_view(a["name"], a["model"], "reviewer", a["api_url"]) for a in reviewers],
        "started_at": record["started_at"]}]
    timed: list[View] = []
    stages: list[str] = []
    stage_start = stage_end = next_at = 0.0
    for row in record["agents"]:  # in the order they ended
        stage = row["stage"]
        if not stages or stage != stages[-1]:
            stages.append(stage)
            stage_start = next_at = stage_end
        queued_at = next_at if stage == REVIEW else stage_start  # reviewers one after another, the rest together
        sent_at = queued_at + (row["queued_s"] or 0.0)
        ended_at = sent_at + (row["elapsed_s"] or 0.0)
        stage_end, next_at = max(stage_end, ended_at), ended_at
        agent = agent_view(row["name"], row["model"], row["role"], row["api_url"])
        timed += [queued_view(round(queued_at, 3), stage, agent),
                  {"type": "started", "t": round(sent_at, 3), "stage": stage, "agent": row["name"],
                   "queued_s": row["queued_s"]},
                  ended_view(round(ended_at, 3), stage, row["name"], row, redact)]
    details = record["details"]
    if RANKING in stages and details.get("rankings"):
        ranked_at = max(v["t"] for v in timed if v["stage"] == RANKING)
        timed.append(ranked_view(ranked_at, details["rankings"], details.get("ranking")))
    # In time order; at one moment, an earlier stage first, and within a stage queued, started, ended.
    timed.sort(key=lambda v: (v["t"], stages.index(v["stage"]), REPLAY_ORDER[v["type"]]))
    views += timed
    if record["status"] == "complete":
        workers = [{"name": a["name"], "status": a["status"], "content": a["content"] or "", "error": a["error"]}
                   for a in record["agents"] if a["stage"] == _last_worker_stage(record)]
        fields = {"final": record["final"], "final_source": record["final_source"], "warnings": record["warnings"],
                  "wall_s": record["wall_s"], "history_id": record["id"], "workers": workers, **details}
        views.append(result_view(round(record["wall_s"] or stage_end, 3), fields, reviewed, redact))
    else:
        views.append({"type": "error", "message": INCOMPLETE.get(record["status"], record["status"])})
    return views


REPLAY_ORDER = {"queued": 0, "started": 1, "ended": 2, "ranked": 3}
INCOMPLETE = {
    "interrupted": "this run was interrupted (Ctrl-C, or its page was closed): what had finished is shown",
    "incomplete": "this run has not ended: it is still going, or its process was killed; what had finished is shown",
}


def _last_worker_stage(record: "RunRecord") -> str:
    """The workers' last round (whose answers were reviewed): `workers`, or `round N`."""
    rounds = [a["stage"] for a in record["agents"] if a["stage"] not in (RANKING, REVIEW)]
    return rounds[-1] if rounds else "workers"


def fleet_view(fleet: "Fleet") -> View:
    """The fleet as the page's prompt box and cards need it."""
    return {"workers": [_agent(a) for a in fleet.workers], "reviewers": [_agent(a) for a in fleet.reviewers],
            "strategy": fleet.strategy, "rounds": fleet.rounds,
            "servers": {url: server.parallel for url, server in fleet.servers.items()},
            "warnings": list(fleet.warnings)}
