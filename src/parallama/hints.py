"""What to tell a user to run: the Ollama commands that bring up a missing server or model."""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
OLLAMA_DEFAULT_PORT = 11434


def is_local(url: str) -> bool:
    """Whether the URL's host is this machine."""
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def port_of(url: str) -> int:
    """The URL's port, or its scheme's default when it names none."""
    parts = urlsplit(url)
    return parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)


def http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_command(port: int) -> str:
    return f"`OLLAMA_HOST=127.0.0.1:{port} ollama serve`"


def pull_command(url: str, model: str) -> str:
    """`ollama pull M`, aimed at the server in `url` when it is not the default local one."""
    parts = urlsplit(url)
    if is_local(url) and parts.port == OLLAMA_DEFAULT_PORT:
        return f"`ollama pull {model}`"
    return f"`OLLAMA_HOST={parts.hostname}:{port_of(url)} ollama pull {model}`"
