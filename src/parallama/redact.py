"""What must never leave parallama as written: API keys and URL passwords (whole or in part), and text that no
UTF-8 wire or file can carry (lone surrogates from undecodable bytes).

A key counts as shown when any 8 of its characters in a row are shown — a long enough run to identify it or to
narrow a search for it, and too long to turn up by chance in ordinary text (shorter runs of a random key such as
`sk-` or `2024` do, and masking those would garble answers). A key shorter than 8 characters counts only whole.
Servers that quote a key abbreviated (`sk-abc***xyz`, `sk-...wxyz`) give away its ends: a word made of a start of
the key, a row of `*`, `.` or `…`, and an end of the key is masked whole too, however short its visible parts.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "***"
RUN = 8
"Characters of a secret in a row that count as showing it."

_ABBREVIATED = re.compile(r"(?<![\w\-])[\w\-]*(?:[*…•]+|\.{2,})+[\w\-]*")
_SURROGATES = re.compile("[\ud800-\udfff]")


class Redactor:
    """Masks a set of secrets in text: whole, any run of 8 of their characters, or quoted abbreviated."""

    __slots__ = ("secrets", "_runs")

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        runs = {s[i:i + RUN] for s in self.secrets for i in range(max(1, len(s) - RUN + 1))}
        self._runs = re.compile("|".join(re.escape(r) for r in sorted(runs))) if runs else None

    def __call__(self, text: str) -> str:
        if not self.secrets or not text:
            return text
        if self._runs is not None and self._runs.search(text):
            text = self._mask_runs(text)
        if "*" in text or ".." in text or "…" in text or "•" in text:
            text = _ABBREVIATED.sub(self._mask_abbreviated, text)
        return text

    def _mask_runs(self, text: str) -> str:
        out: list[str] = []
        at = 0
        for match in self._runs.finditer(text):  # type: ignore[union-attr]
            start, end = match.span()
            if start < at:
                continue
            # Grow the match while it is still part of a secret, so no tail of the run is left showing.
            while end < len(text) and any(text[start:end + 1] in s for s in self.secrets):
                end += 1
            out += (text[at:start], MASK)
            at = end
        out.append(text[at:])
        return "".join(out)

    def _mask_abbreviated(self, match: re.Match[str]) -> str:
        word = match.group()
        head = re.match(r"[\w\-]*", word).group()  # type: ignore[union-attr]
        tail = re.search(r"[\w\-]*$", word).group()  # type: ignore[union-attr]
        for secret in self.secrets:
            if len(head) + len(tail) >= 3 and secret.startswith(head) and secret.endswith(tail):
                return MASK
        return word


class StreamMask:
    """Masks secrets in text that arrives in pieces: the end of a piece that could be the start of a secret waits
    for the next piece, so no secret is ever cut in two and shown in halves."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact
        self.longest = max((len(s) for s in redact.secrets), default=0)
        self.held = ""

    def feed(self, text: str) -> str:
        text = self.held + text
        keep = 0
        for k in range(min(len(text), self.longest), 0, -1):
            tail = text[-k:]
            if any(tail in secret for secret in self.redact.secrets):
                keep = k
                break
        self.held = text[len(text) - keep:] if keep else ""
        return self.redact(text[:len(text) - keep])

    def flush(self) -> str:
        text, self.held = self.held, ""
        return self.redact(text)


def valid_unicode(text: str) -> tuple[str, int]:
    """`text` with each lone surrogate (an undecodable byte, as Python reads argv and stdin) replaced by U+FFFD,
    and how many there were."""
    return _SURROGATES.subn("\ufffd", text)
