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
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..redact import valid_unicode
from .chunks import read_json

if TYPE_CHECKING:
    from .messages import Message

Tool = dict[str, Any]
"""A tool definition as both APIs take it: `{type: "function", function: {name, description, parameters}}`."""


MAX_TOOL_CALLS = 128
"The most calls one answer may ask for (OpenAI's own limit on a request's tools is 128)."
MAX_CALL_ID_CHARS = 256
"The longest call id or function name read (OpenAI's are about 30 characters; function names at most 64)."


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

    def cleaned(self, clean: Callable[[str], str]) -> "ToolCall":
        """The call with `clean` (masking secrets) applied to its id, name and arguments alike."""
        return ToolCall(clean(self.id), clean(self.name), clean(self.arguments))


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _no_charge(_count: int) -> None:
    return None


def _short_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a tool call's {what} is {type(value).__name__}, not text")
    if len(value) > MAX_CALL_ID_CHARS:
        raise ValueError(f"a tool call's {what} is longer than {MAX_CALL_ID_CHARS} characters")
    return value


def _arguments(value: object) -> str:
    """Arguments as JSON text of an object, lone surrogates replaced; ValueError for anything else."""
    if isinstance(value, str):
        try:
            value = read_json(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"a tool call's arguments are not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"a tool call's arguments are {type(value).__name__}, not a JSON object")
    return valid_unicode(json.dumps(value, ensure_ascii=False))[0]


class ToolCallParts:
    """The tool calls of one streamed answer, as they arrive; `calls()` at the end. Raises ValueError on a call
    that is not the protocol's shape (the backend reports it as a malformed stream). Every character read is
    charged to `charge` (the answer's bound, which raises when it is spent)."""

    __slots__ = ("_whole", "_parts", "_charge")

    def __init__(self, charge: Callable[[int], None] = _no_charge) -> None:
        self._whole: list[ToolCall] = []
        self._parts: dict[int, tuple[list[str], list[str]]] = {}
        "OpenAI: index → ([id, name], argument fragments, joined once at the end)."
        self._charge = charge

    def __bool__(self) -> bool:
        return bool(self._whole or self._parts)

    def _count(self, more: int) -> None:
        if len(self._whole) + len(self._parts) + more > MAX_TOOL_CALLS:
            raise ValueError(f"more than {MAX_TOOL_CALLS} tool calls in one answer")

    def add_ollama(self, calls: object) -> None:
        """Ollama's `message.tool_calls`: whole calls, `{function: {name, arguments: {…}}}` (an `id` when given)."""
        if not isinstance(calls, list):
            raise ValueError("tool_calls is not a list")
        self._count(len(calls))
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                raise ValueError("a tool call without a function name")
            name = _short_text(name, "name")
            given_arguments = function.get("arguments")  # type: ignore[union-attr]
            text = _arguments({} if given_arguments is None else given_arguments)
            given = call.get("id")
            ident = _short_text(given, "id") if given else new_call_id()
            self._charge(len(name) + len(text) + len(ident))
            self._whole.append(ToolCall(valid_unicode(ident)[0], valid_unicode(name)[0], text))

    def add_openai(self, deltas: object) -> None:
        """OpenAI's `delta.tool_calls`: fragments by `index`; the first names the call, `arguments` come in pieces."""
        if not isinstance(deltas, list):
            raise ValueError("tool_calls is not a list")
        for delta in deltas:
            if not isinstance(delta, dict):
                raise ValueError("a tool call fragment is not an object")
            index = delta.get("index", len(self._parts))
            if not isinstance(index, int) or isinstance(index, bool):
                raise ValueError("a tool call fragment without an index")
            part = self._parts.get(index)
            if part is None:
                self._count(1)
                part = self._parts[index] = (["", ""], [])
            named, arguments = part
            if delta.get("id") is not None:
                named[0] = _short_text(delta["id"], "id")
                self._charge(len(named[0]))
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise ValueError("a tool call's function is not an object")
            if function.get("name") is not None:
                named[1] = _short_text(named[1] + _short_text(function["name"], "name"), "name")
                self._charge(len(function["name"]))
            piece = function.get("arguments")
            if piece is not None:
                if not isinstance(piece, str):
                    raise ValueError(f"a tool call's arguments are {type(piece).__name__}, not JSON text")
                self._charge(len(piece))
                arguments.append(piece)

    def calls(self) -> tuple[ToolCall, ...]:
        fragments = [self._parts[i] for i in sorted(self._parts)]
        if any(not named[1] for named, _ in fragments):
            raise ValueError("a tool call without a function name")
        return (*self._whole, *(ToolCall(valid_unicode(named[0])[0] or new_call_id(), valid_unicode(named[1])[0],
                                         _arguments("".join(arguments)))
                                for named, arguments in fragments))


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
