"""The backends, one class per wire protocol, each carrying every fact of its protocol: which `api_url` it takes,
its request body and option fields, structured output, token logprobs, how to probe a server, its default context
and the hints it gives. Nothing outside `backends/` tests a protocol's name: it asks the agent's backend.

A new backend kind is one module defining its class, and one line in `_registered` below."""

from __future__ import annotations

from functools import cache

from ..urls import split_api_url
from .base import Completion, DeltaSink, TokenLogprob
from .kind import Backend
from .messages import Message
from .tools import Tool, ToolCall


@cache
def _registered() -> dict[str, Backend]:
    """Every backend, in the order an api_url's path is matched."""
    from .ollama import Ollama
    from .openai import OpenAICompatible

    return {b.name: b for b in (Ollama(), OpenAICompatible())}


def backends() -> tuple[Backend, ...]:
    """Every registered backend."""
    return tuple(_registered().values())


def backend_for(protocol: str) -> Backend:
    """The backend that speaks `protocol` (an `Agent.protocol`)."""
    try:
        return _registered()[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}") from None


def parse_api_url(url: str) -> tuple[str, str]:
    """Return (protocol, chat endpoint) for an agent's api_url, or raise ValueError saying why not."""
    base, path, raw_path = split_api_url(url)
    for backend in backends():
        endpoint = backend.endpoint_for(base, path)
        if endpoint is not None:
            return backend.name, endpoint
    hints = " or ".join(f"...{b.api_path} ({b.label})" for b in backends())
    raise ValueError(f"cannot tell the protocol from the path {raw_path!r}: use {hints}")


__all__ = ["Backend", "Completion", "DeltaSink", "Message", "TokenLogprob", "Tool", "ToolCall", "backend_for",
           "backends", "parse_api_url"]
