"""What to tell a user to run: the Ollama commands that bring up a missing server or model."""

from __future__ import annotations

from urllib.parse import urlsplit

from .urls import is_local, port_of

OLLAMA_DEFAULT_PORT = 11434


def serve_command(port: int) -> str:
    return f"`OLLAMA_HOST=127.0.0.1:{port} ollama serve`"


def pull_command(url: str, model: str) -> str:
    """`ollama pull M`, aimed at the server in `url` when it is not the default local one."""
    parts = urlsplit(url)
    if is_local(url) and parts.port == OLLAMA_DEFAULT_PORT:
        return f"`ollama pull {model}`"
    return f"`OLLAMA_HOST={parts.hostname}:{port_of(url)} ollama pull {model}`"
