"""The one place where transport failures become parallama's errors, as httpx's `map_httpcore_exceptions` is for
httpx: every request to a model server (a chat, a probe, a pull) runs inside `TransportErrors`, which turns
aiohttp's and the operating system's exceptions into the `BackendError` tree, `from` the original.

    with TransportErrors(url, agent=agent.name, redact=redact) as request:
        async with session.post(...) as response:
            request.answered = True
            ...
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
from types import TracebackType
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from ..errors import AgentTimeout, BackendError, StreamBroken, Unreachable

MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest stream line read (one NDJSON chunk or SSE `data:` line). Streaming servers send a token or a few per
line, a few hundred bytes; a proxy that sends a whole answer as one chunk may need a few hundred KiB (a 128k-token
answer, JSON-escaped). Beyond 4 MiB a line is not an answer worth waiting for, and the bound keeps one hostile
server from growing the client's memory without end. aiohttp reads a line of up to twice its read buffer
(`read_bufsize`), so requests that stream lines pass `READ_BUFSIZE`."""

READ_BUFSIZE = MAX_LINE_BYTES // 2

OTHER_PROGRAM_HINT = "is that the model server's port, and not another program's?"

_DNS_ERRORS: tuple[type[BaseException], ...] = tuple(
    t for t in (socket.gaierror, getattr(aiohttp, "ClientConnectorDNSError", None)) if t is not None)


class TransportErrors:
    """A context manager for one request to `url`: a transport failure inside it is raised again as the matching
    `BackendError` (`Unreachable`, `StreamBroken`, `AgentTimeout`, ...) naming `agent` and `url`, with the
    original as its cause. Our own errors, and anything that is not a transport failure, pass through unchanged.

    `url` is the one shown (never with a password); `redact` masks secrets in what a server sent; `unreachable_hint`
    says how to start a server nobody listens for; `timeout_s` is the time limit the caller set on its session, for
    the message when it runs out. Set `answered` once the server's status line arrived: a connection closed after
    it cut the answer off, before it the server crashed or is not an HTTP server."""

    __slots__ = ("url", "agent", "redact", "unreachable_hint", "timeout_s", "answered")

    def __init__(self, url: str, *, agent: str = "", redact: Callable[[str], str] | None = None,
                 unreachable_hint: str | None = None, timeout_s: float | None = None) -> None:
        self.url = url
        self.agent = agent
        self.redact = redact or _same
        self.unreachable_hint = unreachable_hint
        self.timeout_s = timeout_s
        self.answered = False

    def __enter__(self) -> "TransportErrors":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None or isinstance(exc, BackendError) or not isinstance(exc, Exception):
            return
        error = self.translate(exc)
        if error is not None:
            raise error from exc

    def translate(self, exc: Exception) -> BackendError | None:
        """The error `exc` is in parallama's tree; None when it is not a transport failure (a bug: let it show)."""
        at = dict(agent=self.agent, url=self.url)
        host = where(self.url)
        if isinstance(exc, LineTooLong) or (isinstance(exc, ValueError) and str(exc) == "Chunk too big"):
            # ("Chunk too big": what aiohttp before LineTooLong raised for the same.)
            return StreamBroken(f"a line of the stream is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, the "
                                "most parallama reads as one line", **at)
        if isinstance(exc, aiohttp.ClientSSLError):  # a ClientConnectorError too, but the port answers
            return BackendError(_tls_cause(host, exc), hint=_tls_hint(exc), **at)
        if isinstance(exc, aiohttp.ClientConnectorError):
            if isinstance(exc, _DNS_ERRORS) or isinstance(exc.os_error, _DNS_ERRORS):
                reason = getattr(exc.os_error, "strerror", None) or exc.os_error
                return Unreachable(f"the host name {exc.host!r} could not be resolved ({reason})",
                                   hint="check the host name in the URL", **at)
            return Unreachable(_connect_cause(exc), hint=self.unreachable_hint, **at)
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            if not self.answered:
                return StreamBroken(f"{host} closed the connection before answering (it crashed, or it is not an "
                                    "HTTP server)", **at)
            return _cut_off(at)
        if isinstance(exc, aiohttp.ClientPayloadError):
            return _cut_off(at)
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp's own time limits (ServerTimeoutError is one)
            within = f" within {self.timeout_s:g} s" if self.timeout_s else " in time"
            return AgentTimeout(f"{host} did not answer{within}",
                                hint="the host may be down or behind a firewall, or the server hung: check it, and "
                                     "its log", **at)
        if isinstance(exc, aiohttp.ClientResponseError):
            if isinstance(exc.__cause__, HttpProcessingError):  # aiohttp's own "400": these bytes are not HTTP
                sent = re.search(r"b(['\"])(.{1,60}?)\1", str(exc.message))
                said = f" (it sent {self.redact(sent.group(2))!r})" if sent else ""
                return BackendError(f"what answers on {host} does not speak HTTP{said}", hint=OTHER_PROGRAM_HINT,
                                    **at)
            return BackendError(self.redact(_short(exc)), **at)
        if isinstance(exc, aiohttp.ClientError):
            return BackendError(self.redact(_short(exc)), **at)
        if isinstance(exc, OSError):
            return Unreachable(_short(exc), hint=self.unreachable_hint, **at)
        return None


def where(url: str) -> str:
    """`host:port` of a URL, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _cut_off(at: dict[str, str]) -> StreamBroken:
    return StreamBroken("stream cut off: the connection closed before the answer was complete", **at)


def _tls_cause(host: str, exc: aiohttp.ClientSSLError) -> str:
    """Why https:// failed at `host` (host:port), which did answer: a certificate refused, or no TLS there."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        why = getattr(error, "verify_message", None) or error
        return f"{host} answers, but its TLS certificate was not accepted: {why}"
    error = exc.os_error
    return f"{host} answers, but the TLS handshake failed ({getattr(error, 'reason', None) or error})"


def _tls_hint(exc: aiohttp.ClientSSLError) -> str | None:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return None
    return "if the server speaks plain HTTP (Ollama and llama.cpp do, unless behind a TLS proxy), use http:// in api_url"


def _connect_cause(exc: aiohttp.ClientConnectorError) -> str:
    at = f"{exc.host}:{exc.port}"
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        return f"connection refused: nothing listens on {at}"
    if isinstance(os_error, asyncio.TimeoutError):
        return f"connecting to {at} timed out"
    reason = getattr(os_error, "strerror", None) or str(os_error)
    return f"cannot connect to {at}: {reason}"


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _same(text: str) -> str:
    return text
