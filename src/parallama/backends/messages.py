"""A conversation's messages as parallama keeps them, whatever the protocol: OpenAI's shape, which says the most."""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired  # typing has it from Python 3.11


class Message(TypedDict):
    role: str
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]
    "An assistant's tool calls, in OpenAI's shape (see `tools`)."
    tool_call_id: NotRequired[str]
    "A `tool` message: the call whose result it is."
    name: NotRequired[str]
    "A `tool` message: the tool's name (Ollama's `tool_name`)."
