"""One module per wire protocol behind one small interface: send a chat, stream deltas, return a Completion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, Sequence

from .base import Completion
from .messages import Message
from .tools import Tool, ToolCall

if TYPE_CHECKING:
    import aiohttp

    from ..fleet import Agent

DeltaSink = Callable[[str], None]


class Backend(Protocol):
    """Sends one chat request and streams its answer."""

    def chat(
        self, session: "aiohttp.ClientSession", agent: "Agent", messages: list[Message], on_delta: DeltaSink,
        on_thinking: DeltaSink, *, tools: Sequence[Tool] = (),
    ) -> Awaitable[Completion]: ...


def backend_for(protocol: str) -> Backend:
    """The backend module that speaks `protocol` (`ollama` or `openai`)."""
    if protocol == "ollama":
        from . import ollama

        return ollama
    if protocol == "openai":
        from . import openai

        return openai
    raise ValueError(f"unknown protocol {protocol!r}")


__all__ = ["Backend", "Completion", "DeltaSink", "Message", "Tool", "ToolCall", "backend_for"]
