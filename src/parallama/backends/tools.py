"""Tool calls across both protocols: the calls a model asks for (`ToolCall`), read from Ollama's whole
`message.tool_calls` or from OpenAI's `delta.tool_calls` fragments (`ToolCallParts`), and a conversation that carries
calls and their results written for Ollama (`ollama_messages`).

Inside parallama a conversation keeps OpenAI's shape, which says the most: an assistant message's `tool_calls`
(`{id, type: "function", function: {name, arguments: JSON text}}`) and `tool` messages answering a call by its
`tool_call_id`. Ollama's wire has no ids: arguments are an object, and a tool result names its tool (`tool_name`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .chunks import read_json

if TYPE_CHECKING:
    from .messages import Message

Tool = dict[str, Any]
"""A tool definition as both APIs take it: `{type: "function", function: {name, description, parameters}}`."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call a model asked for: its id, the tool's name and the arguments (JSON text, as OpenAI carries them)."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> dict[str, Any]:
        """The arguments as Ollama carries them: an object (text that is not a JSON object gives `{}`)."""
        try:
            value = read_json(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def ollama(self) -> dict[str, Any]:
        return {"function": {"name": self.name, "arguments": self.arguments_object()}}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallParts:
    """The tool calls of one streamed answer, as they arrive; `calls()` at the end. Raises ValueError on a call
    that is not the protocol's shape (the backend reports it as a broken stream)."""

    __slots__ = ("_whole", "_parts")

    def __init__(self) -> None:
        self._whole: list[ToolCall] = []
        self._parts: dict[int, list[str]] = {}  # OpenAI: index → [id, name, arguments so far]

    def __bool__(self) -> bool:
        return bool(self._whole or self._parts)

    def add_ollama(self, calls: object) -> None:
        """Ollama's `message.tool_calls`: whole calls, `{function: {name, arguments: {…}}}` (an `id` when given)."""
        if not isinstance(calls, list):
            raise ValueError("tool_calls is not a list")
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise ValueError("a tool call without a function name")
            arguments = function.get("arguments")  # type: ignore[union-attr]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
            given = call.get("id")
            self._whole.append(ToolCall(given if isinstance(given, str) and given else new_call_id(), name, text))

    def add_openai(self, deltas: object) -> None:
        """OpenAI's `delta.tool_calls`: fragments by `index`; the first names the call, `arguments` come in pieces."""
        if not isinstance(deltas, list):
            raise ValueError("tool_calls is not a list")
        for delta in deltas:
            if not isinstance(delta, dict):
                raise ValueError("a tool call fragment is not an object")
            index = delta.get("index", len(self._parts))
            if not isinstance(index, int):
                raise ValueError("a tool call fragment without an index")
            part = self._parts.setdefault(index, ["", "", ""])
            if isinstance(delta.get("id"), str):
                part[0] = delta["id"]
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise ValueError("a tool call's function is not an object")
            if isinstance(function.get("name"), str):
                part[1] += function["name"]
            if isinstance(function.get("arguments"), str):
                part[2] += function["arguments"]

    def calls(self) -> tuple[ToolCall, ...]:
        fragments = [self._parts[i] for i in sorted(self._parts)]
        if any(not name for _, name, _ in fragments):
            raise ValueError("a tool call without a function name")
        return (*self._whole, *(ToolCall(i or new_call_id(), name, args) for i, name, args in fragments))


def ollama_messages(messages: Sequence["Message"]) -> list[dict[str, Any]]:
    """A conversation with tool calls and results as Ollama's `/api/chat` takes it: arguments as objects, and each
    result naming its tool (`tool_name`), found from the call it answers."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message_out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
            message_out["tool_calls"] = []
            for call in calls:
                function = call["function"]
                names[call["id"]] = function["name"]
                message_out["tool_calls"].append(
                    ToolCall(call["id"], function["name"], function["arguments"]).ollama())
            out.append(message_out)
        elif message["role"] == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id", ""), "")
            out.append({"role": "tool", "content": message["content"], **({"tool_name": name} if name else {})})
        else:
            out.append(dict(message))
    return out
