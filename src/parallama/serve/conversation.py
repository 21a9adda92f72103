"""A chat request's messages as a run takes them: earlier turns (context) and the prompt (the last user message),
with reasoning that chat clients fold into earlier answers left out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from .errors import ApiError

if TYPE_CHECKING:
    from ..backends import Message

REASONING_BLOCKS = re.compile(
    r"<think>.*?</think>"  # what reasoning models (and `--progress think-tags`) put before an answer
    r"|<details\s+type=\"reasoning\"[^>]*>.*?</details>",  # how Open WebUI keeps reasoning in a saved answer
    re.DOTALL | re.IGNORECASE)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
LEADING_BLOCKS = re.compile(r"\s*(?:" + REASONING_BLOCKS.pattern + r")", re.DOTALL | re.IGNORECASE)
REASONING_TAG = re.compile(r"<(/?)(think|thinking|thought|reasoning|reason|details)\b", re.IGNORECASE)
"The opening of a tag that chat clients (Open WebUI, LibreChat, …) read as the start or end of reasoning."
ZWSP = "\u200b"


class TagGuard:
    """Text that goes inside serve's own `<think>…</think>` (`--progress think-tags`), made unable to close or open
    a block: a zero-width space after the `<` of every reasoning tag (`<\u200b/think>` looks the same, is read as
    text). A tag cut across two pieces is held until the next one."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        cut = text.rfind("<")
        if cut >= 0 and len(text) - cut <= len("</reasoning") and ">" not in text[cut:] \
                and not REASONING_TAG.match(text, cut):
            self._held, text = text[cut:], text[:cut]
        else:
            self._held = ""
        return neutralised(text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return neutralised(text)


def neutralised(text: str) -> str:
    return REASONING_TAG.sub(lambda m: f"<{ZWSP}{m.group(1)}{m.group(2)}", text) if "<" in text else text


def without_reasoning(text: str) -> str:
    """An earlier answer without the `<think>…</think>` and `<details type="reasoning">…</details>` blocks it
    starts with (where clients and `--progress think-tags` put reasoning); tags later in the answer are its text."""
    if "<" not in text:
        return text
    end = 0
    while match := LEADING_BLOCKS.match(text, end):
        end = match.end()
    return text[end:].strip() if end else text


def for_agent(messages: Iterable["Message"]) -> tuple[list["Message"], list[str]]:
    """A conversation one agent answers as it is, tool calls and their results kept → (the messages, roles left
    out). Earlier answers lose the reasoning they start with; the last message must be the user's or a tool's
    result."""
    kept: list[Message] = []
    dropped: list[str] = []
    for message in messages:
        role = "tool" if message["role"] == "tool" else ROLES.get(message["role"])
        if role is None:
            dropped.append(message["role"])
            continue
        message = {**message, "role": role}
        if role == "assistant":
            message["content"] = without_reasoning(message["content"])
            if not message["content"] and not message.get("tool_calls"):
                continue
        kept.append(message)
    if not kept:
        raise ApiError(400, "messages: no system, user, assistant or tool message to answer", param="messages")
    if kept[-1]["role"] not in ("user", "tool"):
        raise ApiError(400, f"messages: the last message must be the user's or a tool's result (it is the "
                            f"{kept[-1]['role']}'s)", param="messages")
    return kept, sorted(set(dropped))


def split(turns: Iterable[tuple[str, str]]) -> tuple[tuple["Message", ...], str, list[str]]:
    """(role, text) pairs, oldest first → (earlier turns, the prompt, roles left out). Tool messages have no
    place in a run and are left out; the last message must be the user's."""
    kept: list[Message] = []
    dropped: list[str] = []
    for role, text in turns:
        mapped = ROLES.get(role)
        if mapped is None:
            dropped.append(role)
            continue
        if mapped == "assistant":
            text = without_reasoning(text)
            if not text:
                continue
        kept.append({"role": mapped, "content": text})
    if not kept:
        raise ApiError(400, "messages: no system, user or assistant message to answer", param="messages")
    last = kept[-1]
    if last["role"] != "user":
        raise ApiError(400, f"messages: the last message must be the user's (it is the {last['role']}'s): the fleet "
                            "answers a user message", param="messages")
    if not last["content"].strip():
        raise ApiError(400, "messages: the last user message is empty", param="messages")
    return tuple(kept[:-1]), last["content"], sorted(set(dropped))
