"""What every backend shares: the Completion it returns, the request it sends, and how a server's errors read."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Callable, Protocol, TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError

from ..errors import AnswerTooLong, BackendError, HTTPStatus, Malformed, ModelNotFound, ServerBusy
from ..redact import Redactor
from .chunks import TokenLogprobs, read_json
from .tools import ToolCall, ToolCallParts
from .transport import READ_BUFSIZE, TransportErrors

if TYPE_CHECKING:
    from ..fleet import Agent


C = TypeVar("C")

DeltaSink = Callable[[str], None]
"Where each streamed piece of text goes (answer or thinking)."


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token and how likely the model found it (natural log), with its likeliest rivals."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    "(token, logprob) of the likeliest tokens at this place, the chosen one among them; empty unless asked."


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer with what the server reported about it."""

    text: str
    "The answer, without the thinking."
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    "Tokens of the answer (the server's count less the thinking, when its count includes both)."
    generation_s: float | None = None
    "Time the server spent generating, when it says (Ollama's eval_duration)."
    thinking: str = ""
    "What a reasoning model thought before answering (Ollama `message.thinking`, OpenAI-compatible"
    " `reasoning_content` / `reasoning`, or inline `<think>…</think>`)."
    thinking_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    "The tools the model asked to call (only when the request offered tools)."
    logprobs: tuple[TokenLogprob, ...] | None = None
    "Each generated token's logprob, in order (answer and thinking alike, as the server counts them): only when the"
    " request asked for them (`logprobs=`) and the server sent them; None otherwise."


def token_logprobs(items: "list[TokenLogprobs]") -> list[TokenLogprob]:
    """A chunk's typed tokens as `TokenLogprob`s (read only when the request asked for them)."""
    return [TokenLogprob(t["token"], t["logprob"],
                         tuple((r["token"], r["logprob"]) for r in t.get("top_logprobs") or ()))
            for t in items]


class Hints(Protocol):
    """What a backend tells a user whose server is not there or lacks the model."""

    def start_command(self, endpoint: str) -> str | None: ...

    def pull_command(self, endpoint: str, model: str) -> str | None: ...


class Stream:
    """Collects one streamed answer: answer text through the inline-thinking splitter, thinking apart."""

    __slots__ = ("parts", "thoughts", "feed", "calls", "logprobs", "_splitter", "_on_delta", "_on_thinking", "_agent", "_room",
                 "_answer_pieces", "_thought_pieces")

    def __init__(self, agent: "Agent", on_delta: "DeltaSink", on_thinking: "DeltaSink") -> None:
        from .thinking import ThinkSplitter

        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self._on_delta, self._on_thinking = on_delta, on_thinking
        self._agent = agent
        self._room = agent.max_answer_chars
        "Characters of answer and thinking still to be read before the answer is too long."
        self._answer_pieces = self._thought_pieces = 0  # chunks, which count tokens when the server does not
        self._splitter = ThinkSplitter(self._answer, self.think, self._was_thinking)
        self.feed = self._splitter.feed
        "Answer text as the server sent it (inline `<think>` separated here)."
        self.calls = ToolCallParts(self._charge)
        "The tool calls, as they come (their characters count toward max_answer_chars, as text does)."
        self.logprobs: list[TokenLogprob] | None = None
        "The tokens' logprobs as they come (a list once the server sent any)."

    def _charge(self, count: int) -> None:
        self._room -= count
        if self._room < 0:
            raise self._too_long()

    def _answer(self, text: str) -> None:
        self._room -= len(text)
        if self._room < 0:
            raise self._too_long()
        self.parts.append(text)
        self._answer_pieces += 1
        if not self._answer_pieces % PIECES_HELD:
            _compact(self.parts)
        self._on_delta(text)

    def _too_long(self) -> AnswerTooLong:
        limit = self._agent.max_answer_chars
        return AnswerTooLong(f"the answer ran past {limit:,} characters (max_answer_chars), so it was cut off "
                             "there", agent=self._agent.name, url=self._agent.endpoint,
                             hint="a model that does not stop; or raise max_answer_chars in the config")

    def _was_thinking(self) -> None:
        """An R1-style answer reached its `</think>`: what came so far was the thinking."""
        self.thoughts += self.parts
        self.parts = []
        self._thought_pieces += self._answer_pieces
        self._answer_pieces = 0

    def think(self, text: str) -> None:
        """Thinking the server sent apart from the answer."""
        self._room -= len(text)
        if self._room < 0:
            raise self._too_long()
        self.thoughts.append(text)
        self._thought_pieces += 1
        if not self._thought_pieces % PIECES_HELD:
            _compact(self.thoughts)
        self._on_thinking(text)

    def completion(self, *, prompt_tokens: int | None, generated_tokens: int | None,
                   thinking_tokens: int | None = None, generation_s: float | None = None) -> Completion:
        """The finished answer. `generated_tokens` is the server's count of everything it generated (thinking
        included, as Ollama's eval_count and OpenAI's completion_tokens are); None: count the chunks."""
        self._splitter.close()
        thinking_tokens = thinking_tokens if thinking_tokens is not None else (self._thought_pieces or None)
        if generated_tokens is None:
            answer_tokens: int | None = self._answer_pieces
        else:
            answer_tokens = max(0, generated_tokens - (thinking_tokens or 0))
        try:
            calls = self.calls.calls() if self.calls else ()
        except ValueError as exc:
            raise bad_tool_call(self._agent, exc) from exc
        return Completion(text="".join(self.parts), prompt_tokens=prompt_tokens, completion_tokens=answer_tokens,
                          generation_s=generation_s, thinking="".join(self.thoughts),
                          thinking_tokens=thinking_tokens, tool_calls=calls,
                          logprobs=tuple(self.logprobs) if self.logprobs is not None else None)

    def add_logprobs(self, tokens: list[TokenLogprob]) -> None:
        """Logprobs of the tokens a chunk carried."""
        if self.logprobs is None:
            self.logprobs = tokens
        else:
            self.logprobs += tokens


PIECES_HELD = 2048
"A server that sends a character a line: every this many pieces, the newest are joined into one to hold."


def _compact(parts: list[str]) -> None:
    """Join the newest PIECES_HELD pieces (or fewer) into one; the pieces joined before stay as they are."""
    parts[-PIECES_HELD:] = ["".join(parts[-PIECES_HELD:])]


def request_headers(agent: "Agent") -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson, text/event-stream"}
    authorization = agent.authorization()
    if authorization:
        headers["Authorization"] = authorization
    return headers


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession, agent: "Agent", body: dict, hints: Hints
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST `body` to the agent's endpoint and yield the streaming response; every failure becomes a BackendError
    (with the backend's `hints` on starting the server or pulling the model)."""
    with TransportErrors(agent.endpoint, agent=agent.name, redact=Redactor(agent.secrets()),
                         unreachable_hint=_run("start it with", hints.start_command(agent.endpoint))) as request:
        payload = await encoded(body)
        async with session.post(agent.endpoint, data=payload, headers=request_headers(agent),
                                read_bufsize=READ_BUFSIZE) as response:
            request.answered = True
            if response.status >= 400:
                raise await status_error(agent, response, hints)
            yield response


OFF_LOOP_CHARS = 256 * 1024
"A request body with more text than this (a long conversation, a pasted document) is encoded in a thread."


async def encoded(body: dict) -> bytes:
    """The request body as JSON bytes; a large one encoded in a thread, so the event loop goes on meanwhile."""
    messages = body.get("messages") or ()
    size = sum(len(m.get("content") or "") + 64 for m in messages)
    if size > OFF_LOOP_CHARS:
        return await asyncio.to_thread(lambda: json.dumps(body).encode())
    return json.dumps(body).encode()


def server_words(agent: "Agent", text: str) -> str:
    """Text the server sent, fit to show: the agent's key or URL password (whole or in part) masked, as servers
    quote the Authorization header back in their 401s and error lines."""
    return Redactor(agent.secrets())(text)


_TRACEBACK = re.compile(r"Traceback \(most recent call last\):")
_FRAME = re.compile(r'File "[^"]*", line \d+(?:, in \S+)?')
_PATH = re.compile(r"(?<![\w:/.~-])(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}[\\/]?")
CAUSE_CHARS = 200


def cause_line(text: str) -> str:
    """What a server said about an error, as one line of cause: a traceback (llama-cpp-python's server sends its
    own with an HTTP 500) gives its last line, the exception; local file paths become their last part; at most
    CAUSE_CHARS."""
    text = text.strip()
    if _TRACEBACK.search(text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = next((line for line in reversed(lines) if not _FRAME.match(line)), lines[-1] if lines else "")
    text = _PATH.sub(lambda m: "…/" + re.split(r"[\\/]", m.group(0).rstrip("/\\"))[-1], _FRAME.sub("", text))
    text = " ".join(text.split())
    return text if len(text) <= CAUSE_CHARS else text[: CAUSE_CHARS - 1] + "…"


def malformed(agent: "Agent", line: bytes) -> Malformed:
    """A line that is not the protocol at all (not JSON, not an object)."""
    text = server_words(agent, line.decode("utf-8", "replace").strip())
    return Malformed(f"malformed line in stream: {text[:80]!r}", agent=agent.name, url=agent.endpoint)


def parse_chunk(agent: "Agent", adapter: "TypeAdapter[C]", line: bytes) -> C:
    """One stream line as the protocol's typed chunk; a line that is not one fails the agent as `Malformed`,
    naming the field and what it held."""
    try:
        return adapter.validate_json(line)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise _wrong(agent, line, exc) from exc
    # pydantic's parser refuses what `json` reads: a lone surrogate escape (`"\ud800"`, replaced by U+FFFD where
    # a result is built) and NaN.
    try:
        data = read_json(line)
    except ValueError as exc:
        raise malformed(agent, line) from exc
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise _wrong(agent, line, exc) from exc


def _wrong(agent: "Agent", line: bytes, exc: ValidationError) -> Malformed:
    """`message.content should be a valid string, not 123`: the first field of the wrong type, and its value."""
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:  # not an object at all
        return malformed(agent, line)
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    what = error["msg"].removeprefix("Input ")
    value = server_words(agent, json.dumps(error["input"], ensure_ascii=False, default=str))
    shown = value if len(value) <= 60 else value[:59] + "…"
    return Malformed(f"malformed chunk in stream: {field} {what}, not {shown}", agent=agent.name,
                     url=agent.endpoint)


def bad_tool_call(agent: "Agent", exc: ValueError) -> Malformed:
    """A tool call that is not the protocol's shape."""
    return Malformed(f"malformed tool call in stream: {exc}", agent=agent.name, url=agent.endpoint)


def mid_stream_error(agent: "Agent", error: object) -> BackendError:
    """An `{"error": ...}` line after the stream began, in the server's own words."""
    return BackendError(f"server error mid-stream: {server_words(agent, error_text(error))}", agent=agent.name,
                        url=agent.endpoint)


def error_text(error: object) -> str:
    """The server's own words from an `{"error": ...}` value (Ollama: a string; OpenAI: an object)."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


async def status_error(agent: "Agent", response: aiohttp.ClientResponse, hints: Hints) -> HTTPStatus:
    raw = await response.read()
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = read_json(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        said = error_text(body.get("error") or body.get("detail"))
    else:
        said = text
    said = server_words(agent, cause_line(said) or response.reason or "")
    code = response.status
    where = dict(agent=agent.name, url=agent.endpoint)
    if code == 404 and "model" in said.lower():
        return ModelNotFound(f"model {agent.model!r} not found on the server ({said})", status_code=code,
                             hint=_run("run", hints.pull_command(agent.endpoint, agent.model)), **where)
    if code == 503:
        return ServerBusy(f"server busy (HTTP 503: {said})", status_code=code, **where)
    if code == 404:
        return HTTPStatus(f"HTTP 404: {said} — is {agent.protocol} the protocol this server speaks?",
                          status_code=code, **where)
    if code in (401, 403):
        return HTTPStatus(f"HTTP {code}: {said}", status_code=code, hint=_auth_hint(agent), **where)
    return HTTPStatus(f"HTTP {code}: {said}", status_code=code, **where)


def _run(words: str, command: str | None) -> str | None:
    return f"{words} {command}" if command else None


def _auth_hint(agent: "Agent") -> str:
    if agent.api_key_env:
        return f"check the key in ${agent.api_key_env}"
    if agent.url_auth:
        return "check the user and password in api_url"
    return "the server wants a key: name the environment variable holding it in api_key_env"

