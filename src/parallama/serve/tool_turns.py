"""The runs whose reply was a tool call, kept so the client's follow-up continues them: a chat client runs the tools
and sends the conversation again with the calls and their results after the question. The conversation up to that
question (the last user message) is the run's key; the writer's request (`RunResult.continue_with`) is what the
follow-up continues, with the calls and results appended, so the workers are not asked again: they answered already.

Kept in memory, the newest `MAX_TURNS` for `KEEP_S`: a follow-up comes within seconds (the tools run on the client),
and one that comes after serve restarted goes to the tools agent instead."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .conversation import ROLES, without_reasoning

if TYPE_CHECKING:
    from ..backends import Message
    from ..fleet import Agent

MAX_TURNS = 256
KEEP_S = 3600.0


@dataclass(frozen=True)
class ToolTurn:
    """A run that ended in tool calls: who wrote the reply, and the request to continue."""

    agent: "Agent"
    messages: "tuple[Message, ...]"
    at: float


def question_end(messages: Sequence["Message"]) -> int:
    """The index just after the last user message (0 when there is none): what comes after it is the exchange of
    tool calls and their results."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            return i + 1
    return 0


def conversation_key(model: str, messages: Sequence["Message"]) -> str:
    """The same for the conversation a run answered and the follow-up that carries it before the tool exchange:
    roles as the fleet reads them, text without the reasoning clients fold into earlier answers."""
    canonical = []
    for m in messages:
        role = ROLES.get(m["role"], m["role"])
        text = without_reasoning(m["content"]) if role == "assistant" else m["content"]
        calls = [c["function"]["name"] for c in m.get("tool_calls") or ()]
        canonical.append((role, text.strip(), calls))
    return hashlib.sha256(json.dumps([model, canonical], ensure_ascii=False).encode()).hexdigest()


class ToolTurns:
    """The runs whose reply was a tool call, by conversation."""

    def __init__(self) -> None:
        self._turns: OrderedDict[str, ToolTurn] = OrderedDict()

    def remember(self, model: str, question: Sequence["Message"], agent: "Agent",
                 request: Sequence["Message"]) -> None:
        key = conversation_key(model, question)
        self._turns[key] = ToolTurn(agent, tuple(request), time.monotonic())
        self._turns.move_to_end(key)
        while len(self._turns) > MAX_TURNS:
            self._turns.popitem(last=False)

    def find(self, model: str, messages: Sequence["Message"]) -> "ToolTurn | None":
        """The run a follow-up continues (its messages: the question, then calls and results), or None."""
        end = question_end(messages)
        if end == 0:
            return None
        turn = self._turns.get(conversation_key(model, messages[:end]))
        if turn is None or time.monotonic() - turn.at > KEEP_S:
            return None
        return turn
