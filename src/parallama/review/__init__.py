"""Review strategies: how the reviewer's messages are built from the workers' answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..backends import Message
    from ..result import AgentResult


def review_messages(strategy: str, task: str, answers: list["AgentResult"], system: str | None) -> list["Message"]:
    """The reviewer's chat messages for `strategy`."""
    if strategy == "synthesize":
        from .synthesize import messages

        return messages(task, answers, system)
    raise ValueError(f"unknown review strategy {strategy!r}")
