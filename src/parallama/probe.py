"""Ask model servers what they are and what they hold, each through its backend's probe (Ollama's /api/version,
/api/tags, /api/show, /api/ps; an OpenAI-compatible /v1/models). Every answer or failure is data; nothing here
raises for a dead server."""

from __future__ import annotations

import asyncio
from typing import Mapping, Sequence

import aiohttp
from pydantic import ValidationError

from .backends import backend_for
from .backends.probing import PROBE_TIMEOUT_S, ServerProbe, probe_transport, same_model
from .errors import AgentTimeout, BackendError, HTTPStatus, Unreachable

__all__ = ["PROBE_TIMEOUT_S", "ServerProbe", "probe_server", "probe_servers", "same_model"]


async def probe_server(session: aiohttp.ClientSession, url: str, protocol: str, models: list[str],
                       headers: Mapping[str, str] | None = None) -> ServerProbe:
    """Version, latency and models of the server at `url` (its backend's probe base: `scheme://host:port` for
    Ollama, `…/v1` for OpenAI-compatible); details for `models` where the server has them. `headers` carry the
    agents' Authorization, as their requests will."""
    probe = ServerProbe(url=url, protocol=protocol)
    headers = dict(headers or {})
    try:
        with probe_transport(url, headers):
            await backend_for(protocol).probe(session, url, headers, probe, models)
            probe.reachable = True
    except HTTPStatus as exc:
        probe.reachable = True
        probe.error = exc.cause
        if exc.status_code in (401, 403):
            probe.hint = ("check the key (api_key_env) or the user:password in api_url" if "Authorization" in
                          headers else "the server wants credentials: set api_key_env on the agents that use it")
    except BackendError as exc:
        # Something answered on the port unless nothing listens there or nothing came in time.
        probe.reachable = probe.reachable or not isinstance(exc, (Unreachable, AgentTimeout))
        probe.error, probe.hint = exc.cause, exc.hint
    except ValueError as exc:
        probe.error = f"no usable answer: {_why(exc)}"
    return probe


def _why(exc: ValueError) -> str:
    """What was wrong with an answer, in a line: the first field of the wrong type, or why it is not JSON."""
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else error["msg"]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def probe_servers(targets: Sequence[tuple[str, str, list[str], Mapping[str, str]]]) -> list[ServerProbe]:
    """Probe several servers at once: (url, protocol, models to look up, request headers)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(probe_server(session, u, p, m, h) for u, p, m, h in targets)))
