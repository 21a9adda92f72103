"""What a chat client sees of a run while it goes on: the workers' progress and answers as reasoning, the final
answer as content.

The reviewer's answer is streamed as content as it is written (synthesize, council). The judge's reply is scores,
not an answer, so with `judge` the content is the best-scored worker answer, sent when the scores are in. A reviewer
that fails before its first token costs nothing visible: the next reviewer, or the best worker answer, becomes the
content. One that fails half-way cannot take back what was sent: a note in the content says so, and the answer
that replaces it follows. Once content has begun, no more reasoning is sent (clients show reasoning above the
answer, not inside it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..events import RANKING, REVIEW, WORKERS, Cut, Delta, Failed, Finished, Ranked, RunEnded, Started, Thinking
from ..redact import StreamMask
from ..sampling import sampling_line
from ..stages import reviewing
from ..review import REGISTRY, VOTING, strategy_named, summary
from ..tracker import RunTracker

if TYPE_CHECKING:
    from ..fleet import Fleet
    from ..redact import Redactor
    from ..events import Event
    from ..result import AgentResult, RunResult

REASONING = "reasoning"
CONTENT = "content"
Piece = tuple[str, str]

HALFWAY_NOTE = "\n\n*[parallama: {name} stopped in the middle of its answer ({cause}); the answer below replaces it]*\n\n"


class Narrator:
    """Renders one run's rows (its `RunTracker`, which `feed` folds each event into first) as pieces of reasoning
    and content; the tracker keeps what the final chunk reports (tokens, times)."""

    def __init__(self, fleet: "Fleet", strategy: str, redact: "Redactor | None" = None,
                 question: str | None = None) -> None:
        self.fleet = fleet
        self.question = question
        "The task as the review reads the answers by it (vote keys the short answers by the question)."
        self.strategy = strategy_named(strategy)
        self.reviewed = reviewing(fleet, strategy, True) is not None
        self.tracker = RunTracker(fleet, review=self.reviewed, tails=False)
        self.answer_streams = self.reviewed and (self.strategy.reviewer_writes_reply or strategy in VOTING)
        """The reviewer's text is the final answer as it is written (not so for the judge's scores; a vote's
        reviewer is asked only when there is no majority, and then writes the reply)."""
        self._said: set[str] = set()  # warnings said before the end (a vote's missing majority)
        self.tools_offered = False
        "The run offers the request's tools to the reviewer that writes the reply."
        self.hold_reply = False
        "The reply is written after the run (by a writer with the request's tools): the run's own is not sent."
        self.content_started = False
        self.error: str | None = None
        "Why there is no answer (every worker failed; the run was interrupted; a bug), when there is none."
        self._said_waiting: set[int] = set()  # the rows said to wait for a slot (by id)
        self._streamed: list[str] = []  # the current reviewer's text, as it came
        # Results arrive masked; the reviewer's raw stream is masked here, when the fleet has secrets at all.
        self._redact = redact if redact is not None and redact.secrets else None
        self._answer_mask = StreamMask(self._redact) if self._redact else None
        self._thought_mask = StreamMask(self._redact) if self._redact else None

    # ---------------------------------------------------------------- the stream

    def opening(self, ignored: Sequence[str] = (), notes: Sequence[str] = ()) -> list[Piece]:
        """What the fleet will do, sent before anything has happened (the first byte); and, once, the request's
        settings the fleet does not use (each agent keeps the options its config gives it) and `notes` (what
        becomes of the request's tools)."""
        workers = self.fleet.workers
        names = ", ".join(a.name for a in workers)
        text = f"parallama: {len(workers)} workers ({names}) answer at once" if len(workers) > 1 else \
            f"parallama: 1 worker ({names}) answers"
        if self.fleet.rounds > 1:
            text += f", in {self.fleet.rounds} rounds"
        if self.reviewed:
            reviewer = self.fleet.reviewers[0].name if self.fleet.reviewers else ""
            text += "; " + self.strategy.plan_sentence(reviewer)
        lines = [text + ".\n"] + [f"⚠ {warning}\n" for warning in self.fleet.warnings]
        if ignored:
            lines.append(f"Not used: {', '.join(ignored)} (each agent keeps the settings its config gives it).\n")
        lines += [f"{note}\n" for note in notes]
        return self._out([(REASONING, "".join(lines) + "\n")])

    def feed(self, event: "Event") -> list[Piece]:
        """Fold one event into the tracker; the pieces it adds (often none)."""
        row = self.tracker.feed(event)
        kind = type(event)
        if kind is Delta:  # the hot path: one per token of every agent
            if self.answer_streams and event.stage == REVIEW:  # type: ignore[union-attr]
                text = event.text  # type: ignore[union-attr]
                self._streamed.append(text)
                self.content_started = True
                if self._answer_mask is not None:
                    text = self._answer_mask.feed(text)
                return [(CONTENT, text)] if text else []
            return []
        if kind is Thinking:  # a reasoning model's thinking: the reviewer's is shown as it comes, the workers'
            # interleave badly, so only their token counts are
            if event.stage == REVIEW and not self.content_started:  # type: ignore[union-attr]
                text = event.text  # type: ignore[union-attr]
                if self._thought_mask is not None:
                    text = self._thought_mask.feed(text)
                return [(REASONING, text)] if text else []
            return []
        if kind is Started:
            opens_stage = self.tracker.stage_opened[event.stage] is row  # type: ignore[union-attr]
            return self._started(event, opens_stage)  # type: ignore[arg-type]
        if kind is Finished or kind is Failed or kind is Cut:
            return self._ended(event)  # type: ignore[arg-type]
        if kind is Ranked:
            return self._ranked()
        if kind is RunEnded:
            return self._review_read() + self._run_ended(event.result)  # type: ignore[union-attr,arg-type]
        return []

    @property
    def result(self) -> "RunResult | None":
        return self.tracker.result

    @property
    def prompt_tokens(self) -> int:
        return self.tracker.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.tracker.completion_tokens

    def status(self) -> str | None:
        """A short line for a quiet moment (the keepalive), or None once the answer has begun."""
        if self.content_started:
            return None
        sent, waiting = self.tracker.in_flight()
        parts = [f"waiting for {', '.join(sent)}"] if sent else []
        if waiting:
            parts.append(f"{waiting} request{'s' if waiting != 1 else ''} queued for a slot")
        return f"… {self.tracker.t():.0f} s" + (": " + "; ".join(parts) if parts else "") + "\n"

    def waiting(self, for_s: float) -> list[Piece]:
        """A line for each agent that has waited `for_s` or more for a slot and was not said to wait yet: every
        agent is listed early, not only once its server lets it start."""
        now = self.tracker.now()
        lines = []
        for row in self.tracker.waiting_for_slot():
            if row.queued_at is not None and now - row.queued_at >= for_s and id(row) not in self._said_waiting:
                self._said_waiting.add(id(row))
                agent = row.agent
                stage = "" if row.stage == WORKERS else f" ({row.stage})"
                where = (agent.server.split('://', 1)[-1] if not agent.pooled else
                         "any replica of its pool (" + ", ".join(r.server.split("://", 1)[-1] for r in agent.pool) + ")")
                lines.append(f"◦ {agent.name}{stage} ({agent.model}) is waiting for a slot on {where}\n")
        return self._out([(REASONING, "".join(lines))]) if lines else []

    def waiting_due(self, for_s: float) -> float | None:
        """Seconds until the next request queued for a slot and not said to wait yet has waited `for_s` (0 when one
        has already), or None when there is none."""
        now = self.tracker.now()
        due = [row.queued_at + for_s - now for row in self.tracker.waiting_for_slot()
               if row.queued_at is not None and id(row) not in self._said_waiting]
        return max(0.0, min(due)) if due else None

    # ---------------------------------------------------------------- the events

    def _started(self, event: Started, opens_stage: bool) -> list[Piece]:
        out = []
        if opens_stage:
            if event.stage == RANKING:
                out.append("\nThe workers rank each other's answers, anonymously.\n")
            elif event.stage.startswith("round "):
                out.append(f"\n{event.stage.capitalize()}: each worker improves its answer with the others'.\n")
            elif event.stage == REVIEW:
                out.append("\n" + self._reviewer_asked())
        agent = event.agent
        doing = "started"
        if event.stage == REVIEW:
            doing = self.strategy.reviewer_does
            earlier = [r for r in self.tracker.attempts if r.stage == REVIEW and r.name == agent.name
                       and r is not self.tracker.rows.get((REVIEW, agent.name))]
            if earlier and earlier[-1].state == "unusable":  # asked again: its first answer was thrown away (Rejected)
                doing += " again (its first answer could not be read)"
            elif earlier and self.tools_offered and earlier[-1].result is not None \
                    and earlier[-1].result.error_kind == "http_status":
                doing += " again, without the tools (its server refused them)"
        waited = f" after waiting {event.queued_s:.1f} s for a slot" if event.queued_s >= 0.1 else ""
        on = f" on {agent.server.split('://', 1)[-1]}" if agent.pooled else ""  # the replica of its pool
        out.append(f"▸ {agent.name} ({agent.model}) {doing}{on}{waited}\n")
        return self._out([(REASONING, "".join(out))])

    def _ended(self, event: Finished | Failed) -> list[Piece]:
        result = event.result
        held = self._flush() if event.stage == REVIEW else []
        if not result.ok:
            mark = "⏱" if result.status == "timeout" else "✗"
            line = f"✂ {result.name} {result.error}\n" if isinstance(event, Cut) else f"{mark} {result.error}\n"
            out = held + [(REASONING, line)]
            if event.stage == REVIEW and self._streamed:
                self._streamed = []
                out.append((CONTENT, HALFWAY_NOTE.format(name=result.name, cause=result.error)))
            return self._out(out)
        if event.stage == RANKING:
            return []  # said once the rankings are read (`Ranked`): an answer is not yet a readable ranking
        if event.stage == REVIEW:
            if result.tool_calls:
                names = ", ".join(dict.fromkeys(call.name for call in result.tool_calls))
                return self._out(held + [(REASONING, f"↪ {result.name} calls {names}: the tools run on your side, "
                                                     "and the reply follows with their results\n")])
            return self._out(held)  # a judge's scores are said once read (at the end): see `_review_read`
        return self._out([(REASONING, f"✓ {result.name} answered in {result.elapsed_s:.1f} s{_tokens(result)}:\n\n"
                                      f"{result.content.strip()}\n\n")])

    def _run_ended(self, result: "RunResult | None") -> list[Piece]:
        if result is None:
            self.error = self.tracker.no_answer_reason
            return []
        notes = []
        lines = summary(result.strategy, result.details)
        if lines:
            notes.append("\n" + "".join(line + "\n" for line in lines))
        if result.sampling:
            notes.append(f"\n{sampling_line(result.sampling)}\n")
        source = result.final_source
        own = REGISTRY.get(source.kind) if source is not None else None
        if source is not None and own is not None and own.source_note:
            notes.append(f"\n{own.source_note.format(agent=source.agent)}\n")
        notes += [f"\n⚠ {w}\n" for w in result.warnings if w not in self.fleet.warnings and w not in self._said]
        out: list[Piece] = [(REASONING, "".join(notes))] if notes else []
        final = result.reply
        if final is None:
            self.error = result.no_answer_reason
            return self._out(out)
        if self.hold_reply:
            return self._out(out)
        streamed = "".join(self._streamed)
        if (self._redact(streamed) if self._redact else streamed) != final:
            out.append((CONTENT, final))
        return self._out(out)

    def say(self, text: str) -> list[Piece]:
        """A line of progress from outside the run's events (dropped once the answer has begun)."""
        return self._out([(REASONING, text)])

    def say_content(self, text: str) -> list[Piece]:
        """Text of the reply from outside the run's events (a writer's)."""
        return self._out([(CONTENT, text)]) if text else []

    def _ranked(self) -> list[Piece]:
        """council: each ranking that came, as the tracker has read it: used, or left out (and why)."""
        lines = []
        for row in self.tracker.attempts:
            if row.stage != RANKING or row.result is None or not row.result.ok:
                continue  # a failed ranker was said when it failed
            if row.state == "unusable":
                lines.append(f"⚠ {row.name}'s ranking was left out: {(row.unusable or '').removeprefix('ranking left out: ')}\n")
            else:
                lines.append(f"✓ {row.name} ranked the others in {row.result.elapsed_s:.1f} s\n")
        return self._out([(REASONING, "".join(lines))]) if lines else []

    def _review_read(self) -> list[Piece]:
        """judge: each reviewer's scores that came, as the tracker has read them at the run's end: used, or not
        readable (the judge asked again, or gave up on it)."""
        if self.answer_streams or not self.reviewed:
            return []
        lines = []
        for row in self.tracker.attempts:
            if row.stage != REVIEW or row.result is None or not row.result.ok:
                continue
            if row.state == "unusable":
                lines.append(f"⚠ {row.name}'s scores could not be read: {row.unusable}\n")
            elif row.state == "done":
                lines.append(f"✓ {row.name} scored them in {row.result.elapsed_s:.1f} s\n")
        return self._out([(REASONING, "".join(lines))]) if lines else []

    def _reviewer_asked(self) -> str:
        """Why the reviewer is asked after all (vote: no majority), said as it is asked, not after the result."""
        answers = [row.result for row in self.tracker.rows.values()
                   if row.stage != REVIEW and row.stage != RANKING and row.result is not None and row.result.ok]
        last_stage = answers[-1].stage if answers else WORKERS
        said = self.strategy.reviewer_asked([a for a in answers if a.stage == last_stage], self.question)
        if said is None:
            return ""
        sentence, warning = said
        self._said.add(warning)
        return sentence + "\n"

    def _flush(self) -> list[Piece]:
        """What the masks held back (the start of what might be a secret), now that the reviewer is done."""
        out: list[Piece] = []
        if self._thought_mask is not None and (text := self._thought_mask.flush()):
            out.append((REASONING, text))
        if self._answer_mask is not None and (text := self._answer_mask.flush()):
            out.append((CONTENT, text))
        return out

    def _out(self, pieces: list[Piece]) -> list[Piece]:
        """Drop reasoning once the answer has begun; note when it begins."""
        if self.content_started:
            return [p for p in pieces if p[0] == CONTENT]
        for i, (channel, _) in enumerate(pieces):
            if channel == CONTENT:
                self.content_started = True
                return pieces[: i + 1] + [p for p in pieces[i + 1:] if p[0] == CONTENT]
        return pieces

    # ---------------------------------------------------------------- the final chunk's numbers

    def durations_ns(self) -> dict[str, int]:
        """Ollama's final-chunk durations for the whole run: waiting for the first slot (`load_duration`), until
        the first token (`prompt_eval_duration`), and the rest (`eval_duration`)."""
        tracker = self.tracker
        end = tracker.ended_at or tracker.now()
        sent = tracker.first_sent_at or end
        token = max(tracker.first_token_at or end, sent)
        return {"total_duration": _ns(end - tracker.started_at), "load_duration": _ns(sent - tracker.started_at),
                "prompt_eval_duration": _ns(token - sent), "eval_duration": _ns(end - token)}


def coalesce(pieces: list[Piece]) -> list[Piece]:
    """Neighbouring pieces of one channel as one: fewer, larger chunks when the client reads slower than the run
    writes."""
    if len(pieces) < 2:
        return pieces
    out: list[Piece] = []
    run: list[str] = []  # joined once per run of one channel: a client far behind has many pieces waiting
    for i, (channel, text) in enumerate(pieces):
        run.append(text)
        if i + 1 == len(pieces) or pieces[i + 1][0] != channel:
            out.append((channel, "".join(run)))
            run = []
    return out


def split_channels(pieces: list[Piece]) -> tuple[str, str]:
    """Pieces as an answer sent whole: (reasoning, content)."""
    reasoning = "".join(text for channel, text in pieces if channel != CONTENT)
    return reasoning, "".join(text for channel, text in pieces if channel == CONTENT)


def _tokens(result: "AgentResult") -> str:
    text = f", {result.completion_tokens} tokens" if result.completion_tokens else ""
    if result.thinking_tokens:
        text += f" (after {result.thinking_tokens} tokens of thinking)"
    return text


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


__all__ = ["CONTENT", "REASONING", "Narrator", "Piece", "coalesce", "split_channels"]
