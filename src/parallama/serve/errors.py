"""Errors `serve` answers with, in each API's own shape: Ollama's `{"error": "..."}`, OpenAI's
`{"error": {"message", "type", "param", "code"}}`; with the headers that tell an SDK whether a retry can help."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                405: "invalid_request_error", 413: "invalid_request_error", 429: "requests"}
OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


class ApiError(Exception):
    """A request `serve` answers with an error status; rendered in the shape of the API that was called."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or OPENAI_CODES.get(status)
        self.param = param
        self.retry_after = retry_after
        "Seconds, for 429: when a place in the queue is likely to be free (≤ 60, which every openai SDK honours)."

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None:
            # Retry-After takes whole seconds (RFC 9110); the openai SDKs read `retry-after-ms` first, to the ms.
            return {"Retry-After": str(math.ceil(self.retry_after)),
                    "retry-after-ms": str(round(self.retry_after * 1000)), "x-should-retry": "true"}
        # Retrying anything else would not help, and would run the whole ensemble again (twice, by default).
        headers = {"x-should-retry": "false"}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers

    def ollama_body(self) -> dict[str, Any]:
        return {"error": self.message}

    def openai_body(self) -> dict[str, Any]:
        kind = OPENAI_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self, *, openai: bool) -> web.Response:
        body = self.openai_body() if openai else self.ollama_body()
        return web.Response(status=self.status, text=json.dumps(body), content_type="application/json",
                            headers=self.headers())


def no_answer_note(headline: str, causes: list[str]) -> str:
    """What a streamed reply carries as content when there is no answer: what failed and each cause with its fix
    (as the terminal says them), as a short Markdown note. Chat front-ends (Open WebUI) show content but drop an
    error line at the end of a stream. Each cause reads as the progress shows it: its commands (in backticks) are
    code to copy, and the rest of a server's words is text (markup escaped: no links, no emphasis)."""
    return f"**parallama: no answer, {headline}.**\n\n" + "".join(f"- {markdown_text(cause)}\n" for cause in causes)


_CODE_SPAN = re.compile(r"(`[^`\n]+`)")
_MARKUP = re.compile(r"([\\`*_\[\]<>#|~!])")


def markdown_text(text: str) -> str:
    """One line of Markdown that shows `text` as it is: its `backticked` parts as code spans, every other character
    that Markdown would read as markup escaped."""
    text = " ".join(text.split())
    parts = _CODE_SPAN.split(text)
    return "".join(part if i % 2 else _MARKUP.sub(r"\\\1", part) for i, part in enumerate(parts))
