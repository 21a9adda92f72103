"""Ask model servers what they are and what they hold: Ollama's /api/version, /api/tags, /api/show, /api/ps,
or the OpenAI-compatible /v1/models. Every answer or failure is data; nothing here raises for a dead server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PROBE_TIMEOUT_S = 5.0


@dataclass
class ServerProbe:
    """What one server said (or why it said nothing)."""

    url: str
    protocol: str
    reachable: bool = False
    error: str | None = None
    version: str | None = None
    latency_ms: float | None = None
    models: list[str] = field(default_factory=list)
    "Models the server has (Ollama: pulled; OpenAI-compatible: served)."
    loaded: dict[str, int] = field(default_factory=dict)
    "Ollama /api/ps: model → bytes in memory now."
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)
    "Ollama /api/show per model asked about."

    def has_model(self, model: str) -> bool:
        return any(same_model(model, m) for m in self.models)


def same_model(a: str, b: str) -> bool:
    """`llama3` and `llama3:latest` are one Ollama model."""
    def norm(name: str) -> str:
        return name if ":" in name else name + ":latest"

    return norm(a) == norm(b) or a == b


async def probe_server(session: aiohttp.ClientSession, url: str, protocol: str, models: list[str]) -> ServerProbe:
    """Version, latency and models of the server at `url` (scheme://host:port); details for `models` on Ollama."""
    probe = ServerProbe(url=url, protocol=protocol)
    try:
        started = time.perf_counter()
        if protocol == "ollama":
            version = await _get(session, url + "/api/version")
            probe.latency_ms = (time.perf_counter() - started) * 1000
            probe.version = str(version.get("version", "?"))
            tags = await _get(session, url + "/api/tags")
            probe.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
            try:
                ps = await _get(session, url + "/api/ps")
                probe.loaded = {m.get("name") or m.get("model", ""): int(m.get("size", 0)) for m in ps.get("models", [])}
            except (aiohttp.ClientError, ValueError):
                pass
            for model in models:
                if probe.has_model(model):
                    try:
                        probe.shown[model] = await _post(session, url + "/api/show", {"model": model})
                    except (aiohttp.ClientError, ValueError):
                        pass
        else:
            listing = await _get(session, url + "/models")  # url is the .../v1 base here
            probe.latency_ms = (time.perf_counter() - started) * 1000
            probe.models = [m.get("id", "") for m in listing.get("data", [])]
            probe.version = "OpenAI-compatible"
        probe.reachable = True
    except aiohttp.ClientConnectorError as exc:
        probe.error = f"connection refused: nothing listens on {exc.host}:{exc.port}"
    except aiohttp.ClientResponseError as exc:
        probe.reachable = True
        probe.error = f"HTTP {exc.status} from {exc.request_info.url}"
    except (asyncio.TimeoutError, aiohttp.ClientError, ValueError) as exc:
        probe.error = f"no usable answer: {type(exc).__name__} {exc}".strip()
    return probe


async def probe_servers(targets: list[tuple[str, str, list[str]]]) -> list[ServerProbe]:
    """Probe several servers at once: (url, protocol, models to look up)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(probe_server(session, u, p, m) for u, p, m in targets)))


async def _get(session: aiohttp.ClientSession, url: str) -> dict:
    return await _json(session.get(url), url)


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    return await _json(session.post(url, json=body), url)


async def _json(request, url: str) -> dict:
    async with request as response:
        response.raise_for_status()
        data = await response.json(content_type=None)
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer with a JSON object")
    return data
