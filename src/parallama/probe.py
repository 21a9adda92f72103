"""Ask model servers what they are and what they hold: Ollama's /api/version, /api/tags, /api/show, /api/ps,
or the OpenAI-compatible /v1/models. Every answer or failure is data; nothing here raises for a dead server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import aiohttp

from .backends.base import OTHER_PROGRAM_HINT, not_http, not_http_cause, tls_cause, tls_hint, where
from .redact import Redactor

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
    hint: str | None = None
    "What to do about `error`, when the probe can tell."
    notes: list[str] = field(default_factory=list)
    "Details that did not come (a hanging /api/show): the server is usable without them."

    def has_model(self, model: str) -> bool:
        return any(same_model(model, m) for m in self.models)


def same_model(a: str, b: str) -> bool:
    """`llama3` and `llama3:latest` are one Ollama model."""
    def norm(name: str) -> str:
        return name if ":" in name else name + ":latest"

    return norm(a) == norm(b) or a == b


async def probe_server(session: aiohttp.ClientSession, url: str, protocol: str, models: list[str],
                       headers: Mapping[str, str] | None = None) -> ServerProbe:
    """Version, latency and models of the server at `url` (scheme://host:port); details for `models` on Ollama.
    `headers` carry the agents' Authorization, as their requests will."""
    probe = ServerProbe(url=url, protocol=protocol)
    headers = dict(headers or {})
    try:
        started = time.perf_counter()
        if protocol == "ollama":
            version = await _get(session, url + "/api/version", headers)
            probe.latency_ms = (time.perf_counter() - started) * 1000
            probe.version = str(version.get("version", "?"))
            tags = await _get(session, url + "/api/tags", headers)
            probe.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
            probe.reachable = True
            await _details(session, url, headers, probe, models)
        else:
            listing = await _get(session, url + "/models", headers)  # url is the .../v1 base here
            probe.latency_ms = (time.perf_counter() - started) * 1000
            probe.models = [m.get("id", "") for m in listing.get("data", [])]
            probe.version = "OpenAI-compatible"
        probe.reachable = True
    except aiohttp.ClientSSLError as exc:  # before ClientConnectorError, which it is: here the port did answer
        probe.reachable = True
        probe.error, probe.hint = tls_cause(where(url), exc), tls_hint(exc)
    except aiohttp.ClientConnectorError as exc:
        probe.error = f"connection refused: nothing listens on {exc.host}:{exc.port}"
    except aiohttp.ClientResponseError as exc:
        probe.reachable = True
        if not_http(exc):
            redact = Redactor([headers.get("Authorization", "").partition(" ")[2]])
            probe.error, probe.hint = not_http_cause(where(url), exc, redact), OTHER_PROGRAM_HINT
        else:
            probe.error = f"HTTP {exc.status} from {exc.request_info.url}"
            if exc.status in (401, 403):
                probe.hint = ("check the key (api_key_env) or the user:password in api_url" if "Authorization" in
                              headers else "the server wants credentials: set api_key_env on the agents that use it")
    except aiohttp.ServerDisconnectedError:
        probe.reachable = True
        probe.error = f"{where(url)} closed the connection before answering"
        probe.hint = OTHER_PROGRAM_HINT
    except asyncio.TimeoutError:
        probe.error = f"no answer within {PROBE_TIMEOUT_S:g} s"
        probe.hint = "the host may be down or behind a firewall, or the server hung: check it, and its log"
    except (aiohttp.ClientError, ValueError) as exc:
        probe.error = f"no usable answer: {type(exc).__name__} {exc}".strip()
    return probe


async def _details(session: aiohttp.ClientSession, url: str, headers: dict[str, str], probe: ServerProbe,
                   models: list[str]) -> None:
    """What is loaded (/api/ps) and each model's details (/api/show): helpful for sizing, not needed to run, so a
    failure here is a note and the server stays usable."""
    async def ask(path: str, what: str, body: dict | None = None) -> dict | None:
        try:
            if body is None:
                return await _get(session, url + path, headers)
            return await _post(session, url + path, body, headers)
        except asyncio.TimeoutError:
            probe.notes.append(f"{path} did not answer {what}within {PROBE_TIMEOUT_S:g} s")
        except aiohttp.ClientResponseError as exc:
            probe.notes.append(f"{path} answered {what}with HTTP {exc.status}")
        except (aiohttp.ClientError, ValueError) as exc:
            probe.notes.append(f"{path} gave no usable answer {what}({type(exc).__name__})")
        return None

    present = [m for m in models if probe.has_model(m)]
    ps, *shown = await asyncio.gather(ask("/api/ps", ""),
                                      *(ask("/api/show", f"for {m} ", {"model": m}) for m in present))
    if ps is not None:
        probe.loaded = {m.get("name") or m.get("model", ""): int(m.get("size") or 0) for m in ps.get("models", [])}
    for model, details in zip(present, shown):
        if details is not None:
            probe.shown[model] = details


async def probe_servers(targets: Sequence[tuple[str, str, list[str], Mapping[str, str]]]) -> list[ServerProbe]:
    """Probe several servers at once: (url, protocol, models to look up, request headers)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(probe_server(session, u, p, m, h) for u, p, m, h in targets)))


async def _get(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str]) -> dict:
    return await _json(session.get(url, headers=headers), url)


async def _post(session: aiohttp.ClientSession, url: str, body: dict, headers: Mapping[str, str]) -> dict:
    return await _json(session.post(url, json=body, headers=headers), url)


async def _json(request, url: str) -> dict:
    async with request as response:
        response.raise_for_status()
        data = await response.json(content_type=None)
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer with a JSON object")
    return data
