"""Inline reasoning: some servers and model builds write the thinking into the answer as `<think>…</think>` at
its start. `ThinkSplitter` separates it as the chunks arrive, also when a tag is split across chunks."""

from __future__ import annotations

from typing import Callable

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feeds answer text to `on_answer` and inline thinking to `on_thinking`.

    Only a `<think>` at the very start of the answer (after white space) opens a thought; once answer text has
    been seen, the rest passes straight through — the hot path is one comparison per chunk.
    """

    __slots__ = ("on_answer", "on_thinking", "_mode", "_held")

    def __init__(self, on_answer: Callable[[str], None], on_thinking: Callable[[str], None]) -> None:
        self.on_answer = on_answer
        self.on_thinking = on_thinking
        self._mode = "start"  # start → (thinking → after) | answer
        self._held = ""

    def feed(self, text: str) -> None:
        if self._mode == "answer":
            self.on_answer(text)
            return
        self._held += text
        if self._mode == "start":
            stripped = self._held.lstrip()
            if not stripped:
                return
            if stripped.startswith(OPEN):
                self._mode, self._held = "thinking", stripped[len(OPEN):]
            elif OPEN.startswith(stripped):
                return  # could still become `<think>`: wait for more
            else:
                self._mode, held, self._held = "answer", self._held, ""
                self.on_answer(held)
                return
        if self._mode == "thinking":
            end = self._held.find(CLOSE)
            if end < 0:
                keep = _partial_tag_tail(self._held)
                ready = self._held[:len(self._held) - keep]
                self._held = self._held[len(self._held) - keep:]
                if ready:
                    self.on_thinking(ready)
                return
            thought, rest = self._held[:end], self._held[end + len(CLOSE):]
            if thought:
                self.on_thinking(thought)
            self._mode, self._held = "after", rest
        if self._mode == "after":
            # The answer after `</think>` usually starts with blank lines: drop them.
            rest = self._held.lstrip()
            if rest:
                self._mode, self._held = "answer", ""
                self.on_answer(rest)

    def close(self) -> None:
        """The stream ended: whatever is held was answer text (a `<think>` never closed stays thinking)."""
        held, self._held = self._held, ""
        if not held:
            return
        if self._mode == "thinking":
            self.on_thinking(held)
        elif self._mode == "start" and held.strip():
            self.on_answer(held)


def _partial_tag_tail(text: str) -> int:
    """How many characters at the end of `text` could be the start of `</think>`."""
    for size in range(min(len(CLOSE) - 1, len(text)), 0, -1):
        if CLOSE.startswith(text[-size:]):
            return size
    return 0
