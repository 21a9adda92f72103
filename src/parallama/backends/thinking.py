"""Inline reasoning: some servers and model builds write the thinking into the answer as `<think>…</think>` at
its start. `ThinkSplitter` separates it as the chunks arrive, also when a tag is split across chunks.

Two more shapes are read: tags in any case (`<THINK>`), and R1-style templates, which put the `<think>` into the
prompt so that the model's output is `thought…</think>answer` with no opening tag."""

from __future__ import annotations

from typing import Callable

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feeds answer text to `on_answer` and inline thinking to `on_thinking`.

    Only a `<think>` at the very start of the answer (after white space) opens a thought. An answer that did not
    open one is watched for a `</think>` (R1-style): when one comes, the text before it was thinking, already given
    to `on_answer` as it came, and `on_was_thinking` is told so (the caller moves it); the text after the tag is
    the answer. Once a thought has closed, the rest passes straight through — one comparison per chunk.
    """

    __slots__ = ("on_answer", "on_thinking", "on_was_thinking", "_mode", "_held", "_recent")

    def __init__(self, on_answer: Callable[[str], None], on_thinking: Callable[[str], None],
                 on_was_thinking: Callable[[], None] | None = None) -> None:
        self.on_answer = on_answer
        self.on_thinking = on_thinking
        self.on_was_thinking = on_was_thinking
        self._mode = "start"  # start → (thinking → after) | watching (→ after) → answer
        self._held = ""
        self._recent = ""  # the end of what was given on while watching (a `<think>` may straddle two chunks)

    def feed(self, text: str) -> None:
        if self._mode == "answer":
            self.on_answer(text)
            return
        self._held += text
        if self._mode == "start":
            stripped = self._held.lstrip()
            if not stripped:
                return
            head = stripped[:len(OPEN)].lower()
            if head == OPEN:
                self._mode, self._held = "thinking", stripped[len(OPEN):]
            elif OPEN.startswith(head):
                return  # could still become `<think>`: wait for more
            else:
                self._mode = "watching" if self.on_was_thinking is not None else "answer"
                if self._mode == "answer":
                    held, self._held = self._held, ""
                    self.on_answer(held)
                    return
        if self._mode == "watching":
            window = (self._recent + self._held).lower()
            end = window.find(CLOSE)
            if OPEN in (window if end < 0 else window[:end]):  # a tag pair inside the answer: only text
                self._mode, held, self._held = "answer", self._held, ""
                self.on_answer(held)
                return
            if end < 0:
                self._recent = (self._recent + self._pass_on(self.on_answer))[-(len(OPEN) - 1):]
                return
            end -= len(self._recent)
            before, self._held = self._held[:end], self._held[end + len(CLOSE):]
            if before:
                self.on_answer(before)
            assert self.on_was_thinking is not None
            self.on_was_thinking()
            self._mode = "after"
        if self._mode == "thinking":
            end = self._held.lower().find(CLOSE)
            if end < 0:
                self._pass_on(self.on_thinking)
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

    def _pass_on(self, to: Callable[[str], None]) -> str:
        """Give on what is held, less a tail that could be the start of `</think>`; return what was given."""
        keep = _partial_tag_tail(self._held)
        ready = self._held[:len(self._held) - keep]
        self._held = self._held[len(self._held) - keep:]
        if ready:
            to(ready)
        return ready

    def close(self) -> None:
        """The stream ended: whatever is held was answer text (a `<think>` never closed stays thinking)."""
        held, self._held = self._held, ""
        if not held:
            return
        if self._mode == "thinking":
            self.on_thinking(held)
        elif self._mode == "watching" or (self._mode == "start" and held.strip()):
            self.on_answer(held)


def _partial_tag_tail(text: str) -> int:
    """How many characters at the end of `text` could be the start of `</think>` (in any case)."""
    tail = text[-(len(CLOSE) - 1):].lower()
    for size in range(min(len(CLOSE) - 1, len(tail)), 0, -1):
        if CLOSE.startswith(tail[-size:]):
            return size
    return 0
