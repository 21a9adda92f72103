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


def without_reasoning(text: str) -> str:
    """An earlier answer without its `<think>…</think>` and `<details type="reasoning">…</details>` blocks."""
    if "<" not in text:
        return text
    return REASONING_BLOCKS.sub("", text).strip()


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
