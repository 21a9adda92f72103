"""Requests one agent answers on its own: a `parallama/<agent>` model (a front-end's task model for titles and
tags), and a request that offers tools (the fleet's tools agent answers, and its tool calls go back to the client).

One request through the agent's gate and the shared slots, in turn with every run's requests (the client's own
`ask_agent`, never a side door); counted in serve's queue like a run; no review and no progress, only the agent's
own thinking when it is a reasoning model."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..events import Delta, Failed, Finished, Thinking
from ..redact import StreamMask
from .errors import no_answer_note
from .narration import CONTENT, REASONING, Piece

if TYPE_CHECKING:
    from ..backends import Message, Tool
    from ..events import Event
    from ..fleet import Agent
    from ..result import AgentResult
    from .runs import Service

log = logging.getLogger("parallama.serve")

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


class AgentReply:
    """One agent's answer, followed: `await next()` gives the pieces ready to send (`[]` after a quiet
    `keepalive_s`), then None once `result` is in. Leaving the block early cancels the request and frees its slot.

        async with AgentReply(service, ask) as reply:
            while (pieces := await reply.next()) is not None: ...
    """

    def __init__(self, service: "Service", ask: AgentAsk) -> None:
        self.service = service
        self.ask = ask
        self.run_id = uuid.uuid4().hex[:12]
        self.result: AgentResult | None = None
        self.error: str | None = None
        "Why there is no answer (the agent failed), when there is none."
        self.error_status = 502
        self.started = time.perf_counter()
        self.sent_at: float | None = None
        self.first_at: float | None = None
        self.ended: float | None = None
        self._pending: list[Piece] = []
        self._done = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_sent = 0.0
        redact = service.redact
        self._answer_mask = StreamMask(redact) if redact.secrets else None
        self._thought_mask = StreamMask(redact) if redact.secrets else None

    async def __aenter__(self) -> "AgentReply":
        self.service.admit(self.run_id, self.ask.model)
        self._last_sent = asyncio.get_running_loop().time()
        self._task = self.service.launch(self.service.client.ask_agent(
            self.ask.agent, self.ask.messages, tools=self.ask.tools, on_event=self._on_event, run_id=self.run_id))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.settle(self.run_id, self._task, lambda: self.result is not None)

    def _on_event(self, event: "Event") -> None:
        if event.run_id != self.run_id:
            return
        kind = type(event)
        if kind is Delta or kind is Thinking:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            text = event.text  # type: ignore[union-attr]
            if kind is Thinking and not self.ask.thinking:
                return
            mask = self._answer_mask if kind is Delta else self._thought_mask
            if mask is not None:
                text = mask.feed(text)
            if text:
                self._pending.append((CONTENT if kind is Delta else REASONING, text))
                self._wake.set()
        elif kind is Finished or kind is Failed:
            self.ended = time.perf_counter()
            self.sent_at = self.ended - event.result.elapsed_s  # type: ignore[union-attr]
            self._pending += self._flush()
            self._done = True
            self._wake.set()

    def _flush(self) -> list[Piece]:
        out: list[Piece] = []
        if self._thought_mask is not None and self.ask.thinking and (text := self._thought_mask.flush()):
            out.append((REASONING, text))
        if self._answer_mask is not None and (text := self._answer_mask.flush()):
            out.append((CONTENT, text))
        return out

    async def next(self) -> list[Piece] | None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self._done:
                wait = self._last_sent + self.service.options.keepalive_s - loop.time()
                if wait <= 0:
                    self._last_sent = loop.time()
                    return []
                self._wake.clear()
                timer = loop.call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                continue
            if self._pending:
                pieces, self._pending = self._pending, []
                self._last_sent = loop.time()
                return pieces
            await self._settle()
            return None

    async def collect(self) -> tuple[str, str]:
        """Every piece to the end, for an answer sent whole: (reasoning, content)."""
        reasoning: list[str] = []
        content: list[str] = []
        while (pieces := await self.next()) is not None:
            for channel, text in pieces:
                (content if channel == CONTENT else reasoning).append(text)
        return "".join(reasoning), "".join(content)

    async def _settle(self) -> None:
        assert self._task is not None
        try:
            result = await self._task
        except Exception as exc:  # a bug: say so to the client (the call itself never raises for a failed request)
            log.exception("agent request %s failed", self.run_id)
            self.error_status = 500
            self.error = f"internal error in parallama: {type(exc).__name__}: {exc}"
            return
        if result.ok:
            self.result = result
        else:
            self.error = f"no answer: {result.error or result.status}"

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
        """As Ollama's final chunk gives them: waiting for the slot (`load_duration`), until the first token, the
        rest."""
        end = self.ended or time.perf_counter()
        sent = max(self.sent_at or end, self.started)
        token = max(self.first_at or end, sent)
        return {"total_duration": _ns(end - self.started), "load_duration": _ns(sent - self.started),
                "prompt_eval_duration": _ns(token - sent), "eval_duration": _ns(end - token)}


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))
