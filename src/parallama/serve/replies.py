"""A request's fleet run, followed as pieces to send (`Reply`): what it asks of the fleet (`Ask`), its narration
in the request's progress mode."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine

from ..events import Queued, RunEnded
from .conversation import TagGuard
from .errors import no_answer_note
from .feed import Feed
from .narration import CONTENT, REASONING, Narrator, Piece, split_channels
from .tool_turns import question_end

if TYPE_CHECKING:
    from ..backends import Message, Tool, ToolCall
    from ..events import Event, EventSink
    from ..result import RunResult
    from .service import Service
    from .wire import ProgressMode

WAITING_AFTER_S = 0.25
"A request still waiting for its slot this long after it was queued is listed as waiting in the progress."


@dataclass(frozen=True)
class Ask:
    """What one chat request asks of the fleet."""

    model: str
    "The name as the client wrote it (echoed back)."
    strategy: str
    prompt: str
    context: "tuple[Message, ...]" = ()
    progress: "ProgressMode" = "thinking"
    seed: int | None = None
    ignored: tuple[str, ...] = ()
    "The request's settings the fleet does not use: named in the header and, once, in the progress."
    tools: "tuple[Tool, ...]" = ()
    "Offered to the reviewer that writes the reply."
    notes: tuple[str, ...] = ()
    "Said once in the opening progress (what becomes of the request's tools)."
    messages: "tuple[Message, ...]" = ()
    "The conversation as the client sent it: a reply that is a tool call is kept under it for the follow-up."



class Reply(Feed[Piece]):
    """One request's fleet run, followed (a `Feed`): its narration as pieces in this request's progress mode; at
    the end `narrator` holds the result, or `error` says why there is none.

        async with Reply(service, ask) as reply:
            await write_stream(response, reply, write=..., keepalive=...)
    """

    def __init__(self, service: Service, ask: Ask) -> None:
        super().__init__(service, ask.model)
        self.service: Service = service
        self.ask = ask
        self.narrator = Narrator(service.fleet, ask.strategy, service.redact)
        self._think_open = False
        self._tags = TagGuard()
        self._content_begun = False
        self._waiting_check: asyncio.TimerHandle | None = None
        self.error_status = 502
        "The status of an answer sent whole when there is none: 502 (every worker failed), 500 (a bug)."

    async def __aenter__(self) -> "Reply":
        await super().__aenter__()
        self.push(self.narrator.opening(self.ask.ignored, self.ask.notes))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._waiting_check is not None:
            self._waiting_check.cancel()
        await super().__aexit__(*exc)

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, "RunResult"]:
        return self.service.client.run(self.ask.prompt, context=self.ask.context, strategy=self.ask.strategy,
                                       seed=self.ask.seed, run_id=self.run_id, on_event=on_event,
                                       tools=self.ask.tools)

    @property
    def tally(self) -> Narrator:
        """The numbers of the last chunk (tokens, Ollama's durations)."""
        return self.narrator

    @property
    def tool_calls(self) -> "tuple[ToolCall, ...]":
        """The calls the reviewer that writes the reply asked for: they go back to the client, and the run is kept
        for the follow-up with their results."""
        result = self.narrator.result
        return result.tool_calls if result is not None and self.error is None else ()

    def render(self, event: "Event") -> list[Piece]:
        if type(event) is RunEnded and event.run_id == self.run_id:
            self._keep_tool_turn(event.result)
        if type(event) is Queued and not self._waiting_check:
            # Said once it is clear that a request waits (not for one its server takes at once).
            self._waiting_check = asyncio.get_running_loop().call_later(WAITING_AFTER_S, self._say_waiting)
        return self.narrator.feed(event)

    def _keep_tool_turn(self, result: "RunResult | None") -> None:
        if result is None or not result.tool_calls or not result.continue_with or result.review is None:
            return
        writer = next((a for a in self.service.fleet.reviewers if a.name == result.review.name), None)
        if writer is not None:
            question = self.ask.messages[:question_end(self.ask.messages)]
            self.service.tool_turns.remember(self.service.catalogue.canonical(self.ask.model), question, writer,
                                             result.continue_with)

    def _say_waiting(self) -> None:
        self._waiting_check = None
        self.push(self.narrator.waiting(WAITING_AFTER_S))

    def crashed(self, message: str) -> list[Piece]:
        self.error_status = 500
        self.narrator.error = message
        return []

    @property
    def error(self) -> str | None:
        """Why there is no answer (every worker failed, the run was interrupted, a bug), or None."""
        return self.narrator.error

    async def collect_text(self) -> tuple[str, str]:
        """Every piece to the end, for an answer sent whole: (reasoning, content)."""
        return split_channels(await self.collect())

    def note(self) -> str:
        """Why there is no answer, as content (see `no_answer_note`): each worker's failure and its fix."""
        result = self.narrator.result
        if result is not None and result.no_answer_reason is not None:
            return no_answer_note("every worker failed", result.failures)
        return no_answer_note("the run did not finish", [self.narrator.error or "no answer"])

    def keepalive_text(self) -> str | None:
        """The progress line for a quiet moment, in this request's progress mode, or None (send no text)."""
        if self.ask.progress == "none" or self._content_begun:
            return None
        return self.narrator.status()

    def shape(self, pieces: list[Piece]) -> list[Piece]:
        """Pieces in this request's progress mode: reasoning as is (thinking), inside <think>…</think> in the
        content (think-tags), or left out (none)."""
        mode = self.ask.progress
        if mode == "thinking":
            return pieces
        out: list[Piece] = []
        for channel, text in pieces:
            if channel == REASONING:
                if mode == "none" or self._content_begun:
                    continue
                text = self._tags.feed(text)  # a worker's `</think>` must not end serve's block
                if not self._think_open:
                    self._think_open = True
                    text = "<think>\n" + text
            else:
                if self._think_open:
                    self._think_open = False
                    text = self._tags.flush() + "\n</think>\n\n" + text
                self._content_begun = True
            out.append((CONTENT, text))
        return out

    def styled_status(self, text: str) -> Piece:
        """A keepalive line as a piece of this request's stream."""
        if self.ask.progress == "think-tags":
            [piece] = self.shape([(REASONING, text)])
            return piece
        return (REASONING, text)
