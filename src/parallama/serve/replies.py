"""A request's fleet run, followed as pieces to send (`Reply`): what it asks of the fleet (`Ask`), its narration
in the request's progress mode."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Coroutine, Sequence

from ..events import ALONE, Delta, Failed, Finished, Queued, RunEnded
from ..redact import StreamMask
from ..result import REVIEW_SOURCE, WORKERS_SOURCE
from ..review import VOTING, strategy_named
from ..stages import task_text
from .conversation import TagGuard, for_agent
from .errors import no_answer_note
from .feed import Feed, Serving
from .narration import CONTENT, REASONING, Narrator, Piece, split_channels
from .tool_turns import question_end

if TYPE_CHECKING:
    from ..backends import Message, Tool, ToolCall
    from ..fleet import Agent
    from ..events import Event, EventSink
    from ..result import RunResult
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
    writer: "Agent | None" = None
    """With tools and a strategy whose reply is a worker's answer (judge, vote's majority): the agent that writes
    the reply from it, with the tools (the tools agent)."""


WRITER_NOTE = """A team of assistants has answered the user's latest message; {pick} is below. Reply to the user with it. Call one of the tools only if the reply needs what a tool gives (the current time, the user's saved data, …); otherwise give this answer, in your own words only where it needs them.

The team's answer:
{answer}"""


def writer_messages(conversation: "Sequence[Message]", strategy: str, answer: str) -> "list[Message]":
    """The conversation as the writer takes it (tool calls kept), its system message led by the team's answer."""
    messages, _ = for_agent(conversation)
    note = WRITER_NOTE.format(pick=strategy_named(strategy).picked, answer=answer)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": note + "\n\n" + messages[0]["content"]}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]



class Reply(Feed[Piece]):
    """One request's fleet run, followed (a `Feed`): its narration as pieces in this request's progress mode; at
    the end `narrator` holds the result, or `error` says why there is none.

        async with Reply(service, ask) as reply:
            await write_stream(response, reply, write=..., keepalive=...)
    """

    def __init__(self, service: Serving, ask: Ask) -> None:
        super().__init__(service, ask.model)
        self.service: Serving = service
        self.ask = ask
        self.narrator = Narrator(service.fleet, ask.strategy, service.redact, task_text(ask.prompt, ask.context))
        self.narrator.tools_offered = bool(ask.tools)
        self._think_open = False
        self._tags = TagGuard()
        self._content_begun = False
        self._waiting_check: asyncio.TimerHandle | None = None
        self.error_status = 502
        "The status of an answer sent whole when there is none: 502 (every worker failed), 500 (a bug)."
        self._writer_follows = False
        self._writer_messages: list[Message] = []
        self._writer_calls: tuple[ToolCall, ...] = ()
        self._writer_mask = StreamMask(service.redact) if service.redact.secrets else None
        self._held = ""

    async def __aenter__(self) -> "Reply":
        await super().__aenter__()
        self.push(self.narrator.opening(self.ask.ignored, self.ask.notes))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._waiting_check is not None:
            self._waiting_check.cancel()
        await super().__aexit__(*exc)

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, "RunResult"]:
        return self._run(on_event)

    async def _run(self, on_event: "EventSink") -> "RunResult":
        """The run; then, when a writer follows (see `Ask.writer`), its reply with the tools."""
        ask = self.ask
        tools = ask.tools if ask.writer is None or ask.strategy in VOTING else ()  # a vote's fallback reviewer
        result = await self.service.client.run(ask.prompt, context=ask.context, strategy=ask.strategy,
                                               seed=ask.seed, run_id=self.run_id, on_event=on_event, tools=tools)
        if self._writer_follows and ask.writer is not None and result.reply is not None:
            self._writer_messages = writer_messages(ask.messages, ask.strategy, result.reply)
            await self.service.client.ask_agent(ask.writer, self._writer_messages, tools=ask.tools,
                                                on_event=on_event, run_id=self.run_id)
        return result

    def ends(self, event: "Event") -> bool:
        if type(event) is RunEnded:
            return not self._writer_follows
        return self._writer_follows and isinstance(event, (Finished, Failed)) and event.stage == ALONE

    @property
    def tally(self) -> Narrator:
        """The numbers of the last chunk (tokens, Ollama's durations)."""
        return self.narrator

    @property
    def tool_calls(self) -> "tuple[ToolCall, ...]":
        """The calls the step that writes the reply asked for (the reviewer, or the writer after a judge or a
        vote): they go back to the client, and the run is kept for the follow-up with their results."""
        if self._writer_calls:
            return self._writer_calls
        result = self.narrator.result
        return result.tool_calls if result is not None and self.error is None else ()

    def render(self, event: "Event") -> list[Piece]:
        if event.run_id != self.run_id:
            return []
        if getattr(event, "stage", None) == ALONE:
            return self._writer(event)
        if type(event) is RunEnded:
            result = event.result
            writer = self.ask.writer
            source = result.final_source if result is not None else None
            self._writer_follows = (writer is not None and result is not None and result.reply is not None
                                    and source is not None and source not in (REVIEW_SOURCE, WORKERS_SOURCE))
            self.narrator.hold_reply = self._writer_follows
            self._keep_tool_turn(result)
            if self._writer_follows and result is not None:
                self._held = result.reply or ""
                assert writer is not None
                return self.narrator.feed(event) + self.narrator.say(
                    f"\n▸ {writer.name} ({writer.model}) writes the reply from it, with the request's tools\n")
        pieces = self.narrator.feed(event)
        if type(event) is Queued:
            self._check_waiting()
        return pieces

    def _writer(self, event: "Event") -> list[Piece]:
        """The writer's events (stage `alone`): its text is the reply; its tool calls go to the client."""
        kind = type(event)
        if kind is Delta:
            text = event.text  # type: ignore[union-attr]
            if self._writer_mask is not None:
                text = self._writer_mask.feed(text)
            return self.narrator.say_content(text) if text else []
        if isinstance(event, (Finished, Failed)):
            result = event.result
            out = self.narrator.say_content(self._writer_mask.flush()) if self._writer_mask is not None else []
            if result.ok and result.tool_calls:
                self._writer_calls = result.tool_calls
                names = ", ".join(dict.fromkeys(call.name for call in result.tool_calls))
                question = self.ask.messages[:question_end(self.ask.messages)]
                assert self.ask.writer is not None
                self.service.tool_turns.remember(self.service.catalogue.canonical(self.ask.model), question,
                                                 self.ask.writer, self._writer_messages)
                return out + self.narrator.say(f"↪ {result.name} calls {names}: the tools run on your side, and "
                                               "the reply follows with their results\n")
            if not result.ok:  # the team's answer stands
                return out + self.narrator.say(f"⚠ {result.error}; the reply is the team's answer\n") \
                    + self.narrator.say_content(self._held)
            return out
        return []

    def _keep_tool_turn(self, result: "RunResult | None") -> None:
        if result is None or not result.tool_calls or not result.continue_with or result.review is None:
            return
        writer = next((a for a in self.service.fleet.reviewers if a.name == result.review.name), None)
        if writer is not None:
            question = self.ask.messages[:question_end(self.ask.messages)]
            self.service.tool_turns.remember(self.service.catalogue.canonical(self.ask.model), question, writer,
                                             result.continue_with)

    def _check_waiting(self) -> None:
        """Look again when the next request not said to wait yet has waited WAITING_AFTER_S: said once it is clear
        that a request waits (not for one its server takes at once), each request at its own time (one queued a
        moment after the request that set the last look is not missed)."""
        if self._waiting_check is not None:
            return
        due = self.narrator.waiting_due(WAITING_AFTER_S)
        if due is not None:
            self._waiting_check = asyncio.get_running_loop().call_later(due, self._say_waiting)

    def _say_waiting(self) -> None:
        self._waiting_check = None
        self.push(self.narrator.waiting(WAITING_AFTER_S))
        self._check_waiting()

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
