"""What every backend shares: the Completion it returns, and the one place transport errors become ours."""

from __future__ import annotations

import asyncio
import errno
import json
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, TypedDict
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from ..errors import BackendError, HTTPStatus, ModelNotFound, ServerBusy, StreamBroken, Unreachable
from ..hints import is_local, port_of, pull_command, serve_command
from ..redact import Redactor

if TYPE_CHECKING:
    from ..config import Agent
    from . import DeltaSink


class Message(TypedDict):
    role: str
    content: str


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


class Stream:
    """Collects one streamed answer: answer text through the inline-thinking splitter, thinking apart."""

    __slots__ = ("parts", "thoughts", "feed", "_splitter", "_on_delta", "_on_thinking")

    def __init__(self, on_delta: "DeltaSink", on_thinking: "DeltaSink") -> None:
        from .thinking import ThinkSplitter

        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self._on_delta, self._on_thinking = on_delta, on_thinking
        self._splitter = ThinkSplitter(self._answer, self.think)
        self.feed = self._splitter.feed
        "Answer text as the server sent it (inline `<think>` separated here)."

    def _answer(self, text: str) -> None:
        self.parts.append(text)
        self._on_delta(text)

    def think(self, text: str) -> None:
        """Thinking the server sent apart from the answer."""
        self.thoughts.append(text)
        self._on_thinking(text)

    def completion(self, *, prompt_tokens: int | None, generated_tokens: int | None,
                   thinking_tokens: int | None = None, generation_s: float | None = None) -> Completion:
        """The finished answer. `generated_tokens` is the server's count of everything it generated (thinking
        included, as Ollama's eval_count and OpenAI's completion_tokens are); None: count the chunks."""
        self._splitter.close()
        thinking_tokens = thinking_tokens if thinking_tokens is not None else (len(self.thoughts) or None)
        if generated_tokens is None:
            answer_tokens: int | None = len(self.parts)
        else:
            answer_tokens = max(0, generated_tokens - (thinking_tokens or 0))
        return Completion(text="".join(self.parts), prompt_tokens=prompt_tokens, completion_tokens=answer_tokens,
                          generation_s=generation_s, thinking="".join(self.thoughts),
                          thinking_tokens=thinking_tokens)


MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest stream line read (one NDJSON chunk or SSE `data:` line). Streaming servers send a token or a few per
line, a few hundred bytes; a proxy that sends a whole answer as one chunk may need a few hundred KiB (a 128k-token
answer, JSON-escaped). Beyond 4 MiB a line is not an answer worth waiting for, and the bound keeps one hostile
server from growing the client's memory without end."""


OTHER_PROGRAM_HINT = "is that the model server's port, and not another program's?"


def request_headers(agent: "Agent") -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson, text/event-stream"}
    authorization = agent.authorization()
    if authorization:
        headers["Authorization"] = authorization
    return headers


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession, agent: "Agent", body: dict
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST `body` to the agent's endpoint and yield the streaming response; every failure becomes a BackendError."""
    answered = False
    try:
        # aiohttp reads a line of up to twice its read buffer (LineTooLong beyond): that is the line bound.
        async with session.post(agent.endpoint, json=body, headers=request_headers(agent),
                                read_bufsize=MAX_LINE_BYTES // 2) as response:
            answered = True
            if response.status >= 400:
                raise await status_error(agent, response)
            yield response
    except LineTooLong as exc:
        raise _line_too_long(agent) from exc
    except ValueError as exc:
        if str(exc) != "Chunk too big":  # what aiohttp before LineTooLong raised for the same
            raise
        raise _line_too_long(agent) from exc
    except aiohttp.ClientSSLError as exc:  # a ClientConnectorError too, but the port answers: TLS does not work
        raise BackendError(tls_cause(where(agent.endpoint), exc), agent=agent.name, url=agent.endpoint,
                           hint=tls_hint(exc)) from exc
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(_connect_cause(exc), agent=agent.name, url=agent.endpoint,
                          hint=_start_hint(agent)) from exc
    except aiohttp.ServerDisconnectedError as exc:
        if not answered:
            raise StreamBroken(f"{where(agent.endpoint)} closed the connection before answering (it crashed, or "
                               "it is not an HTTP server)", agent=agent.name, url=agent.endpoint) from exc
        raise _cut_off(agent) from exc
    except aiohttp.ClientPayloadError as exc:
        raise _cut_off(agent) from exc
    except aiohttp.ClientResponseError as exc:
        if not_http(exc):
            cause = not_http_cause(where(agent.endpoint), exc, Redactor.for_agents([agent]))
            raise BackendError(cause, agent=agent.name, url=agent.endpoint, hint=OTHER_PROGRAM_HINT) from exc
        raise BackendError(_short(exc), agent=agent.name, url=agent.endpoint) from exc
    except aiohttp.ClientError as exc:
        raise BackendError(_short(exc), agent=agent.name, url=agent.endpoint) from exc
    except (ConnectionError, OSError) as exc:
        raise Unreachable(str(exc), agent=agent.name, url=agent.endpoint) from exc


def _line_too_long(agent: "Agent") -> StreamBroken:
    return StreamBroken(f"a line of the stream is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, the most "
                        "parallama reads as one line", agent=agent.name, url=agent.endpoint)


def _cut_off(agent: "Agent") -> StreamBroken:
    return StreamBroken("stream cut off: the connection closed before the answer was complete",
                        agent=agent.name, url=agent.endpoint)


def server_words(agent: "Agent", text: str) -> str:
    """Text the server sent, fit to show: the agent's key or URL password (whole or in part) masked, as servers
    quote the Authorization header back in their 401s and error lines."""
    return Redactor.for_agents([agent])(text)


def malformed(agent: "Agent", line: bytes) -> StreamBroken:
    text = server_words(agent, line.decode("utf-8", "replace").strip())
    return StreamBroken(f"malformed line in stream: {text[:80]!r}", agent=agent.name, url=agent.endpoint)


def parse_json_line(agent: "Agent", line: bytes) -> dict:
    try:
        chunk = json.loads(line)
    except ValueError:
        raise malformed(agent, line) from None
    if not isinstance(chunk, dict):
        raise malformed(agent, line)
    return chunk


def mid_stream_error(agent: "Agent", error: object) -> BackendError:
    """An `{"error": ...}` line after the stream began, in the server's own words."""
    return BackendError(f"server error mid-stream: {server_words(agent, error_text(error))}", agent=agent.name,
                        url=agent.endpoint)


def error_text(error: object) -> str:
    """The server's own words from an `{"error": ...}` value (Ollama: a string; OpenAI: an object)."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


async def status_error(agent: "Agent", response: aiohttp.ClientResponse) -> HTTPStatus:
    raw = await response.read()
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and ("error" in body or "detail" in body):
        said = error_text(body.get("error") or body.get("detail"))
    else:
        said = text[:200] or response.reason or ""
    said = server_words(agent, said)
    code = response.status
    where = dict(agent=agent.name, url=agent.endpoint)
    if code == 404 and "model" in said.lower():
        return ModelNotFound(f"model {agent.model!r} not found on the server ({said})", status_code=code,
                             hint=_pull_hint(agent), **where)
    if code == 503:
        return ServerBusy(f"server busy (HTTP 503: {said})", status_code=code, **where)
    if code == 404:
        return HTTPStatus(f"HTTP 404: {said} — is {agent.protocol} the protocol this server speaks?",
                          status_code=code, **where)
    if code in (401, 403):
        return HTTPStatus(f"HTTP {code}: {said}", status_code=code, hint=_auth_hint(agent), **where)
    return HTTPStatus(f"HTTP {code}: {said}", status_code=code, **where)


def _pull_hint(agent: "Agent") -> str | None:
    return f"run {pull_command(agent.endpoint, agent.model)}" if agent.protocol == "ollama" else None


def _auth_hint(agent: "Agent") -> str:
    if agent.api_key_env:
        return f"check the key in ${agent.api_key_env}"
    if agent.url_auth:
        return "check the user and password in api_url"
    return "the server wants a key: name the environment variable holding it in api_key_env"


def where(url: str) -> str:
    """`host:port` of a URL, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def tls_cause(where: str, exc: aiohttp.ClientSSLError) -> str:
    """Why https:// failed at `where` (host:port), which did answer: a certificate refused, or no TLS there."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        why = getattr(error, "verify_message", None) or error
        return f"{where} answers, but its TLS certificate was not accepted: {why}"
    error = exc.os_error
    return f"{where} answers, but the TLS handshake failed ({getattr(error, 'reason', None) or error})"


def tls_hint(exc: aiohttp.ClientSSLError) -> str | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return None
    return "if the server speaks plain HTTP (Ollama and llama.cpp do, unless behind a TLS proxy), use http:// in api_url"


def not_http(exc: aiohttp.ClientResponseError) -> bool:
    """Whether this "400" is aiohttp's own, for bytes that are not an HTTP answer, and not the server's."""
    return isinstance(exc.__cause__, HttpProcessingError)


def not_http_cause(where: str, exc: aiohttp.ClientResponseError, redact: Redactor) -> str:
    sent = re.search(r"b(['\"])(.{1,60}?)\1", str(exc.message))
    said = f" (it sent {redact(sent.group(2))!r})" if sent else ""
    return f"what answers on {where} does not speak HTTP{said}"


def _start_hint(agent: "Agent") -> str | None:
    if agent.protocol == "ollama" and is_local(agent.endpoint):
        return f"start it with {serve_command(port_of(agent.endpoint))}"
    return None


def _connect_cause(exc: aiohttp.ClientConnectorError) -> str:
    where = f"{exc.host}:{exc.port}"
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        return f"connection refused: nothing listens on {where}"
    if isinstance(os_error, asyncio.TimeoutError):
        return f"connecting to {where} timed out"
    reason = getattr(os_error, "strerror", None) or str(os_error)
    return f"cannot connect to {where}: {reason}"


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
