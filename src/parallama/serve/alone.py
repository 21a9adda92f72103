"""Requests one agent answers on its own: a `parallama/<agent>` model (a front-end's task model for titles and
tags), and a request that offers tools (the fleet's tools agent answers, and its tool calls go back to the client).

One request through the agent's gate and the shared slots, in turn with every run's requests (the client's own
`ask_agent`, never a side door); counted in serve's queue like a run; no review and no progress, only the agent's
own thinking when it is a reasoning model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine, Protocol

from ..events import Delta, Failed, Finished, Thinking
from ..redact import StreamMask
from ..tracker import RunTracker
from .errors import no_answer_note
from .feed import Feed, Serving
from .narration import CONTENT, REASONING, Piece, split_channels

if TYPE_CHECKING:
    from ..backends import Message, Tool, ToolCall
    from ..events import Event, EventSink
    from ..fleet import Agent
    from ..result import AgentResult

class Tally(Protocol):
    """What a reply's last chunk reports: tokens and Ollama's durations (a fleet run's Narrator, an AgentReply)."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    def durations_ns(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class AgentAsk:
    """What one request asks of one agent."""

    model: str
    "The name as the client wrote it (echoed back)."
    agent: "Agent"
    messages: "tuple[Message, ...]"
    tools: "tuple[Tool, ...]" = ()
    thinking: bool = True
    "Show the agent's own thinking (a reasoning model's), unless the request said `think: false`."
    opening: str | None = None
    "A line of progress before the answer (a review going on with the tool results), or None."
    ignored: tuple[str, ...] = ()
    "The request's settings this agent does not use (named in a header)."


class AgentReply(Feed[Piece]):
    """One agent's answer, followed (a `Feed`): its text and, when asked for, its thinking as pieces; at the end
    `result` holds the answer, or `error` says why there is none.

        async with AgentReply(service, ask) as reply:
            await write_stream(response, reply, write=..., keepalive=...)
    """

    def __init__(self, service: Serving, ask: AgentAsk) -> None:
        super().__init__(service, ask.model)
        self.service: Serving = service
        self.ask = ask
        self.result: AgentResult | None = None
        self.error: str | None = None
        "Why there is no answer (the agent failed), when there is none."
        self.error_status = 502
        self.tracker = RunTracker(tails=False)
        "The request's row (queued, sent, first token, ended): what the last chunk's durations read."
        redact = service.redact
        self._answer_mask = StreamMask(redact) if redact.secrets else None
        self._thought_mask = StreamMask(redact) if redact.secrets else None

    async def __aenter__(self) -> "AgentReply":
        await super().__aenter__()
        if self.ask.opening:
            self.push([(REASONING, self.ask.opening)])
        return self

    @property
    def tally(self) -> "AgentReply":
        """The numbers of the last chunk (tokens, Ollama's durations)."""
        return self

    @property
    def tool_calls(self) -> "tuple[ToolCall, ...]":
        return self.result.tool_calls if self.result is not None else ()

    def keepalive_text(self) -> str | None:
        """No progress line in a quiet moment: an agent alone has no stages to tell."""
        return None

    def styled_status(self, text: str) -> Piece:
        return (REASONING, text)

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, "AgentResult"]:
        return self.service.client.ask_agent(self.ask.agent, self.ask.messages, tools=self.ask.tools,
                                             on_event=on_event, run_id=self.run_id)

    def ends(self, event: "Event") -> bool:
        return event.run_id == self.run_id and isinstance(event, (Finished, Failed))

    def completed(self) -> bool:
        return self.result is not None

    def render(self, event: "Event") -> list[Piece]:
        if event.run_id != self.run_id:
            return []
        self.tracker.feed(event)
        kind = type(event)
        if kind is Delta or kind is Thinking:
            text = event.text  # type: ignore[union-attr]
            if kind is Thinking and not self.ask.thinking:
                return []
            mask = self._answer_mask if kind is Delta else self._thought_mask
            if mask is not None:
                text = mask.feed(text)
            return [(CONTENT if kind is Delta else REASONING, text)] if text else []
        if isinstance(event, (Finished, Failed)):
            result = event.result
            if result.ok:
                self.result = result
            else:
                self.error = f"no answer: {result.error or result.status}"
            return self._flush()
        return []

    def _flush(self) -> list[Piece]:
        out: list[Piece] = []
        if self._thought_mask is not None and self.ask.thinking and (text := self._thought_mask.flush()):
            out.append((REASONING, text))
        if self._answer_mask is not None and (text := self._answer_mask.flush()):
            out.append((CONTENT, text))
        return out

    def crashed(self, message: str) -> list[Piece]:
        self.error_status = 500
        self.result, self.error = None, message
        return []

    async def collect_text(self) -> tuple[str, str]:
        """Every piece to the end, for an answer sent whole: (reasoning, content)."""
        return split_channels(await self.collect())

    def note(self) -> str:
        """The reason there is no answer, as content (see `no_answer_note`)."""
        return no_answer_note(f"{self.ask.agent.name} failed", [self.error or ""])

    # ------------------------------------------------------- the final chunk's numbers

    @property
    def prompt_tokens(self) -> int:
        return (self.result.prompt_tokens or 0) if self.result else 0

    @property
    def completion_tokens(self) -> int:
        if self.result is None:
            return 0
        return (self.result.completion_tokens or 0) + (self.result.thinking_tokens or 0)

    def durations_ns(self) -> dict[str, int]:
        """As Ollama's final chunk gives them, from the request's row: waiting for the slot (`load_duration`),
        until the first token, the rest."""
        tracker = self.tracker
        row = tracker.attempts[-1] if tracker.attempts else None
        now = tracker.now()
        end = (row.ended_at if row is not None else None) or now
        sent = max((row.started_at if row is not None else None) or end, tracker.started_at)
        token = max((row.first_at if row is not None else None) or end, sent)
        return {"total_duration": _ns(end - tracker.started_at), "load_duration": _ns(sent - tracker.started_at),
                "prompt_eval_duration": _ns(token - sent), "eval_duration": _ns(end - token)}


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
