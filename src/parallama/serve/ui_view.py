"""What the web page sees of a run: each event as a small JSON-ready dict, live from a run's events (`RunView`) or
rebuilt from the history (`replay`), so the page draws both the same way.

Model output is untrusted text. Streamed pieces are masked as they come (no key shown, not even cut in two across
pieces); answers are sent as text and as Markdown rendered here, on the server, with raw HTML off (markdown-it
escapes every tag and refuses `javascript:` links), so the page never turns model text into markup itself.

The page's events, each with `type`:
  run      run_id, prompt, strategy (None: no review), final_streams (the reviewer's text is the final answer as it
           is written), rounds, context (earlier turns), workers, reviewers
  queued   t, stage, agent, model, role, server      (t: seconds since the run started)
  started  t, stage, agent, queued_s
  delta    stage, agent, text                         (a piece of an answer)
  thinking stage, agent, text                         (a piece of a reasoning model's thinking)
  ended    t, stage, agent, state, status, content, html, error, error_kind, queued_s, elapsed_s, ttft_s, tokens, …
  ranked   t, stage, rankings, ranking                (council: each worker's ranking, and the aggregate)
  result   t, final, final_html, final_source, source, details, summary, warnings, wall_s, history_id, error,
           cut (workers cut: the answer is partial)
           (source: {kind, agent}; final_source as the JSON writes it; details: the strategy's own record — the
           judge's `scores`, council's `rankings` and `ranking`, a vote's `tally` —, which the page draws in a
           panel of its own where it has one, else as `summary`, the strategy's lines for people)
  error    message                                    (the run ended without a result)
"""

from __future__ import annotations

import functools
import html
import time
from typing import TYPE_CHECKING, Any

from ..cutoff import CUT
from ..fleet import Agent
from ..history import RUN_DETAILS
from ..review import REGISTRY, reviewer_writes_reply, summary
from ..urls import server_of
from ..events import (
    RANKING, REVIEW, Cut, Delta, Event, Failed, Finished, Queued, Ranked, Rejected, RunEnded, RunStarted, Started,
    Thinking)
from ..redact import StreamMask
from ..result import AgentResult, FinalSource, RunResult
from ..tracker import INTERRUPTED, AgentRow, RunTracker

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from ..fleet import Fleet
    from ..history import AgentRecord, RunRecord
    from ..redact import Redactor

View = dict[str, Any]
"One event as the page reads it."

RESULT_FIELDS = ("status", "content", "error", "error_kind", "queued_s", "elapsed_s", "ttft_s", "prompt_tokens",
                 "completion_tokens", "tokens_per_s", "thinking_tokens")


@functools.lru_cache(maxsize=1)
def _markdown() -> "MarkdownIt":
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


MARKDOWN_MAX_CHARS = 200_000
"""A longer answer goes to the page as plain text in a `<pre>`: rendering is linear, but not cheap enough to hold
the event loop for a whole answer of a million characters."""
MARKDOWN_TURNS = 20
"""Of a conversation's earlier answers, the latest this many are rendered; older ones go as text (a long
conversation would otherwise hold the event loop for a rendering per turn)."""


def markdown_html(text: str | None) -> str:
    """Markdown as HTML with raw HTML off: a tag in the text is shown as text, never made an element."""
    if not text:
        return ""
    if len(text) > MARKDOWN_MAX_CHARS:
        return f"<pre>{html.escape(text)}</pre>"
    return _markdown().render(text)


def agent_view(name: str, model: str, role: str, api_url: str | list[str]) -> View:
    urls = api_url if isinstance(api_url, list) else [api_url]  # a pool: its replicas
    servers = []
    for url in urls:
        try:
            servers.append(server_of(str(url)))
        except ValueError:
            servers.append(str(url))
    return {"name": name, "model": model, "role": role, "server": servers_label(servers)}


def servers_label(servers: list[str]) -> str:
    """An agent's server as the page shows it; a pool's replicas all, before one of them takes a request."""
    if len(servers) == 1:
        return servers[0]
    return "its pool (" + " · ".join(s.split("://", 1)[-1] for s in servers) + ")"


def _agent(agent: "Agent") -> View:
    server = agent.server if not agent.pooled else servers_label([r.server for r in agent.pool])
    return {"name": agent.name, "model": agent.model, "role": agent.role, "server": server}


def context_view(context: Any, redact: "Redactor") -> list[View]:
    """Earlier turns of the conversation: the latest answers with their Markdown rendered."""
    turns = []
    for message in context:
        text = redact(str(message.get("content") or ""))
        turns.append({"role": message.get("role"), "content": text})
    answers = [turn for turn in turns if turn["role"] == "assistant"]
    for turn in answers[-MARKDOWN_TURNS:]:
        turn["html"] = markdown_html(turn["content"])
    return turns


def queued_view(t: float, stage: str, agent: View) -> View:
    return {"type": "queued", "t": t, "stage": stage, "agent": agent["name"], "model": agent["model"],
            "role": agent["role"], "server": agent["server"]}


def ranked_view(t: float, rankings: Any, ranking: Any) -> View:
    return {"type": "ranked", "t": t, "stage": RANKING, "rankings": rankings, "ranking": ranking}


def ended_view(t: float, row: AgentRow, redact: "Redactor") -> View:
    """An agent's request ended: the state its row ended in (done, failed, timeout, cut; stopped with no result;
    unusable, sent again once its answer was found unusable), its result masked, the answer rendered."""
    view: View = {"type": "ended", "t": t, "stage": row.stage, "agent": row.name, "attempt": row.attempt,
                  "state": row.state}
    view.update({name: getattr(row.result, name, None) for name in RESULT_FIELDS})
    if row.result is None:
        view["status"] = row.state
    if row.unusable is not None:
        view["error"] = row.unusable
    view["content"] = redact(view["content"] or "")
    view["error"] = redact(view["error"]) if view["error"] else None
    view["html"] = markdown_html(view["content"])
    return view


def result_view(t: float, result: "RunResult", history_id: str | None, redact: "Redactor") -> View:
    """The run's outcome: its reply as text and rendered, where it came from, the judge's scores or the council's
    rankings, the warnings; or why there is no answer."""
    reply, source = result.reply, result.reply_source
    final = redact(reply) if reply is not None else None
    error = redact(result.no_answer_reason) if result.no_answer_reason is not None else None
    return {"type": "result", "t": t, "final": final, "final_html": markdown_html(final),
            "final_source": str(source) if source is not None else None,
            "source": {"kind": source.kind, "agent": source.agent} if source is not None else None,
            "details": dict(result.details), "summary": summary(result.strategy, result.details),
            "warnings": [redact(w) for w in result.warnings], "wall_s": result.wall_s, "history_id": history_id,
            "error": error, "cut": list(result.cut)}


class RunView:
    """One run's events as the page's: `feed(event)` folds the event into the run's `RunTracker` and gives the
    views to send (often one, maybe none). `kept`: the run goes to the history (under its run id)."""

    def __init__(self, redact: "Redactor", *, kept: bool = False, tracker: RunTracker | None = None) -> None:
        self.redact = redact
        self.kept = kept
        self.tracker = tracker if tracker is not None else RunTracker(tails=False)
        self._masks: dict[tuple[str, str, str], StreamMask] = {}

    def feed(self, event: "Event") -> list[View]:
        row = self.tracker.feed(event)
        kind = type(event)
        if kind is Delta or kind is Thinking:  # the hot path: one per token of every agent
            channel = "delta" if kind is Delta else "thinking"
            text = self._piece(channel, event)  # type: ignore[arg-type]
            return [{"type": channel, "stage": event.stage, "agent": event.agent.name,  # type: ignore[union-attr]
                     "text": text}] if text else []
        t = self.tracker.t
        if isinstance(event, Queued) and row is not None:
            return [queued_view(t(row.queued_at), event.stage, _agent(event.agent))]
        if isinstance(event, Started) and row is not None:
            return [{"type": "started", "t": t(row.started_at), "stage": event.stage, "agent": event.agent.name,
                     "queued_s": event.queued_s, "server": event.agent.server}]  # a pool: the replica that took it
        if isinstance(event, (Finished, Failed)) and row is not None:
            stage, name = event.stage, event.agent.name
            return self._flush(stage, name) + [ended_view(t(row.ended_at), row, self.redact)]
        if isinstance(event, Rejected) and row is not None:  # its row sent again, unusable
            return [ended_view(t(row.ended_at), row, self.redact)]
        if isinstance(event, Ranked):
            return [ranked_view(t(), event.rankings, event.ranking)]
        if isinstance(event, RunStarted):
            return [self._opened(event)]
        if isinstance(event, RunEnded):
            return [*self._changed(), self.ended()]
        return []

    def _changed(self) -> list[View]:
        """Rows the run's end changed (a request stopped), sent again."""
        return [ended_view(self.tracker.t(row.ended_at), row, self.redact) for row in self.tracker.changed]

    def ended(self) -> View:
        """The run's outcome, once it has ended."""
        result = self.tracker.result
        if result is None:
            if self.tracker.stopped:
                return {"type": "error", "stopped": True, "message": STOPPED}
            return {"type": "error", "message": self.tracker.no_answer_reason or INTERRUPTED}
        return result_view(self.tracker.t(), result, result.run_id if self.kept else None, self.redact)

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
        return {"type": "run", "run_id": event.run_id, "prompt": self.redact(event.prompt), "strategy": event.strategy,
                "final_streams": reviewer_writes_reply(event.strategy),
                "rounds": fleet.rounds, "context": context_view(event.context, self.redact),
                "workers": [_agent(a) for a in fleet.workers],
                "reviewers": [_agent(a) for a in fleet.reviewers] if event.strategy else [],
                "started_at": time.time()}


# ---------------------------------------------------------------- from the history

class ReplayClock:
    """A clock that reads what it is set to: a kept run's moments, fed to a tracker in order."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


def replay(record: "RunRecord", redact: "Redactor") -> list[View]:
    """A run kept in the history as the events the page would have seen, in order: its requests made events again
    and folded by a `RunView`, as a live run's are, at the moments the history kept (when each request was queued
    and sent, then its elapsed seconds). For runs kept before those moments were, each stage is placed after the
    one before it ended (as a run goes), its requests queued together, and reviewers tried one after another."""
    config = record["config"]
    reviewers = config.get("reviewer_agent") or []
    # Reviewed: a reviewer was asked (a run with answers and a reviewer always asks one; one with no answer
    # reads the same either way).
    reviewed = any(a["stage"] == REVIEW for a in record["agents"])
    views: list[View] = [{
        "type": "run", "run_id": record["id"], "prompt": redact(record["prompt"]),
        "strategy": record["strategy"] if reviewed else None,
        "final_streams": reviewer_writes_reply(record["strategy"] if reviewed else None),
        "rounds": (config.get("review") or {}).get("rounds", 1), "context": context_view(record["context"], redact),
        "workers": [agent_view(a["name"], a["model"], "worker", a["api_url"]) for a in config["worker_agents"]],
        "reviewers": [agent_view(a["name"], a["model"], "reviewer", a["api_url"]) for a in reviewers],
        "started_at": record["started_at"]}]
    run_id = record["id"]
    timed: list[tuple[float, int, float, Event]] = []
    stages: list[str] = []
    results: list[AgentResult] = []
    stage_start = stage_end = next_at = 0.0
    for row in record["agents"]:  # in the order they ended
        stage = row["stage"]
        if not stages or stage != stages[-1]:
            stages.append(stage)
            stage_start = next_at = stage_end
        queued_at = next_at if stage == REVIEW else stage_start  # reviewers one after another, the rest together
        if row.get("queued_at") is not None:
            queued_at = row["queued_at"] or 0.0
        sent_at = queued_at + (row["queued_s"] or 0.0)
        if row.get("sent_at") is not None:
            sent_at = row["sent_at"] or 0.0
        ended_at = sent_at + (row["elapsed_s"] or 0.0)
        stage_end, next_at = max(stage_end, ended_at), ended_at
        agent, result = _kept_agent(row), _kept_result(row)
        results.append(result)
        at = len(stages) - 1
        ended = (Finished if result.ok else Cut if result.status == CUT else Failed)(run_id, stage, agent, result)
        # Reviewers go one after another: one's end comes before the next one's queueing at the same moment.
        turn = 3 * sum(1 for r in results if r.stage == REVIEW) if stage == REVIEW else 0
        timed += [(round(queued_at, 3), at, turn, Queued(run_id, stage, agent)),
                  (round(sent_at, 3), at, turn + 1, Started(run_id, stage, agent, row["queued_s"] or 0.0)),
                  (round(ended_at, 3), at, turn + 2, ended)]
        if row.get("rejected"):
            timed.append((round(ended_at, 3), at, turn + 2.5, Rejected(run_id, stage, agent, row["rejected"] or "")))
    details = record["details"]
    if RANKING in stages and details.get("rankings"):
        ranked_at = max(t for t, at, _, _ in timed if stages[at] == RANKING)
        timed.append((ranked_at, stages.index(RANKING), 3,
                      Ranked(run_id, RANKING, details["rankings"], details.get("ranking"))))
    # In time order; at one moment, an earlier stage first, and within a stage queued, started, ended (a reviewer's
    # before the next reviewer's).
    timed.sort(key=lambda item: item[:3])
    clock = ReplayClock()
    view = RunView(redact, kept=True, tracker=RunTracker(tails=False, clock=clock))
    for clock.at, _, _, event in timed:
        views += view.feed(event)
    if record["status"] == "complete":
        clock.at = round(record["wall_s"] or stage_end, 3)
        views += view.feed(RunEnded(run_id, _kept_outcome(record, results, reviewed)))
    else:
        clock.at = max(clock.at, stage_end)
        views += view.feed(RunEnded(run_id, None, stopped=record["status"] == "stopped"))
        views[-1] = {"type": "error", "stopped": record["status"] == "stopped",
                     "message": INCOMPLETE.get(record["status"], record["status"])}
    return views


KEPT = "what had finished is kept in each agent's row (open one to read it)"
STOPPED = f"stopped: you pressed Stop; {KEPT}"

INCOMPLETE = {
    "stopped": f"this run was stopped (Stop was pressed): {KEPT}",
    "interrupted": "this run was interrupted (Ctrl-C, its page closed, or its client went away, as a chat's Stop "
                   f"does): {KEPT}",
    "incomplete": f"this run has not ended: it is still going, or its process was killed; {KEPT}",
}


def _kept_agent(row: "AgentRecord") -> "Agent":
    """An agent as a kept request names it (enough for the page: name, model, role, server)."""
    try:
        server = server_of(row["api_url"])
    except ValueError:
        server = row["api_url"]
    role: Any = row["role"]
    protocol: Any = row["protocol"]
    return Agent(name=row["name"], role=role, model=row["model"], api_url=row["api_url"], protocol=protocol,
                 endpoint=row["api_url"], server=server, timeout=0.0)


def _kept_result(row: "AgentRecord") -> AgentResult:
    return AgentResult(
        name=row["name"], model=row["model"], api_url=row["api_url"], protocol=row["protocol"],
        status=row["status"], content=row["content"] or "", error=row["error"],  # type: ignore[arg-type]
        error_kind=row["error_kind"], queued_s=row["queued_s"] or 0.0, elapsed_s=row["elapsed_s"] or 0.0,
        ttft_s=row["ttft_s"], prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        tokens_per_s=row["tokens_per_s"], stage=row["stage"], thinking=row["thinking"],
        thinking_tokens=row["thinking_tokens"])


def _kept_outcome(record: "RunRecord", results: list[AgentResult], reviewed: bool) -> "RunResult":
    """A complete kept run's result, as far as the page shows it."""
    worker_stage = _last_worker_stage(record)
    reviews = [r for r in results if r.stage == REVIEW]
    details = record["details"]
    return RunResult(
        prompt=record["prompt"], workers=[r for r in results if r.stage == worker_stage],
        review=reviews[-1] if reviews else None, final=record["final"],
        final_source=FinalSource.read(record["final_source"]), wall_s=record["wall_s"] or 0.0,
        warnings=list(record["warnings"] or []), strategy=record["strategy"] if reviewed else None,
        details={key: value for key, value in details.items() if key not in RUN_DETAILS},
        cut=list(details.get("cut") or []), sampling=details.get("sampling"),
        run_id=record["id"], history_id=record["id"])


def _last_worker_stage(record: "RunRecord") -> str:
    """The workers' last round (whose answers were reviewed): `workers`, or `round N`."""
    rounds = [a["stage"] for a in record["agents"] if a["stage"] not in (RANKING, REVIEW)]
    return rounds[-1] if rounds else "workers"


def fleet_view(fleet: "Fleet") -> View:
    """The fleet as the page's prompt box and cards need it."""
    return {"workers": [_agent(a) for a in fleet.workers], "reviewers": [_agent(a) for a in fleet.reviewers],
            "strategy": fleet.strategy, "rounds": fleet.rounds,
            "strategies": [{"name": name, "note": strategy.description} for name, strategy in REGISTRY.items()],
            "servers": {url: server.parallel for url, server in fleet.servers.items()},
            "warnings": list(fleet.warnings)}
