"""Ask model servers what they are and what they hold: Ollama's /api/version, /api/tags, /api/show, /api/ps,
or the OpenAI-compatible /v1/models. Every answer or failure is data; nothing here raises for a dead server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from .backends.transport import TransportErrors
from .errors import AgentTimeout, BackendError, HTTPStatus, Unreachable
from .redact import Redactor

PROBE_TIMEOUT_S = 5.0

T = TypeVar("T")


class _Version(TypedDict, total=False):
    version: str


class _Model(TypedDict, total=False):
    name: str
    model: str
    size: int
    "Bytes in memory (/api/ps)."


class _Models(TypedDict, total=False):
    """Ollama's /api/tags and /api/ps."""

    models: List[_Model]


class _Served(TypedDict, total=False):
    id: str


class _Listing(TypedDict, total=False):
    """An OpenAI-compatible /v1/models."""

    data: List[_Served]


class _ShowDetails(TypedDict, total=False):
    parameter_size: str
    quantization_level: str


class _Show(TypedDict, total=False):
    """Ollama's /api/show, the parts `plan` reads (`model_info` values are checked where they are read)."""

    details: _ShowDetails
    model_info: Dict[str, Any]
    capabilities: List[str]


# What a server answers is typed where it is read, like every chunk of a chat: a wrong shape (or JSON nested too
# deep) is a ValueError here, "no usable answer", never a crash further on.
_VERSION, _MODELS, _LISTING = TypeAdapter(_Version), TypeAdapter(_Models), TypeAdapter(_Listing)
_SHOW = TypeAdapter(_Show)


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
        with _transport(url, headers):
            started = time.perf_counter()
            if protocol == "ollama":
                version = await _get(session, url + "/api/version", headers, _VERSION)
                probe.latency_ms = (time.perf_counter() - started) * 1000
                probe.version = version.get("version", "?")
                tags = await _get(session, url + "/api/tags", headers, _MODELS)
                probe.models = [m.get("name") or m.get("model", "") for m in tags.get("models", [])]
                probe.reachable = True
                await _details(session, url, headers, probe, models)
            else:
                listing = await _get(session, url + "/models", headers, _LISTING)  # url: the .../v1 base here
                probe.latency_ms = (time.perf_counter() - started) * 1000
                probe.models = [m.get("id", "") for m in listing.get("data", [])]
                probe.version = "OpenAI-compatible"
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


def _transport(url: str, headers: Mapping[str, str]) -> TransportErrors:
    """Transport failures of a probe, in the words the backends use; the key it sends masked in what comes back."""
    return TransportErrors(url, redact=Redactor([headers.get("Authorization", "").partition(" ")[2]]),
                           timeout_s=PROBE_TIMEOUT_S)


async def _details(session: aiohttp.ClientSession, url: str, headers: dict[str, str], probe: ServerProbe,
                   models: list[str]) -> None:
    """What is loaded (/api/ps) and each model's details (/api/show): helpful for sizing, not needed to run, so a
    failure here is a note and the server stays usable."""
    async def ask(path: str, what: str, adapter: TypeAdapter[Any], body: dict | None = None) -> Any:
        try:
            with _transport(url, headers):
                if body is None:
                    return await _get(session, url + path, headers, adapter)
                return await _post(session, url + path, body, headers, adapter)
        except AgentTimeout:
            probe.notes.append(f"{path} did not answer {what}within {PROBE_TIMEOUT_S:g} s")
        except HTTPStatus as exc:
            probe.notes.append(f"{path} answered {what}with HTTP {exc.status_code}")
        except BackendError as exc:
            probe.notes.append(f"{path} gave no usable answer {what}({type(exc.__cause__ or exc).__name__})")
        except ValueError as exc:
            probe.notes.append(f"{path} gave no usable answer {what}({type(exc).__name__})")
        return None

    present = [m for m in models if probe.has_model(m)]
    ps, *shown = await asyncio.gather(ask("/api/ps", "", _MODELS),
                                      *(ask("/api/show", f"for {m} ", _SHOW, {"model": m}) for m in present))
    if ps is not None:
        probe.loaded = {m.get("name") or m.get("model", ""): int(m.get("size") or 0) for m in ps.get("models", [])}
    for model, details in zip(present, shown):
        if details is not None:
            probe.shown[model] = dict(details)


async def probe_servers(targets: Sequence[tuple[str, str, list[str], Mapping[str, str]]]) -> list[ServerProbe]:
    """Probe several servers at once: (url, protocol, models to look up, request headers)."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(probe_server(session, u, p, m, h) for u, p, m, h in targets)))


async def _get(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], adapter: TypeAdapter[T]) -> T:
    return await _read(session.get(url, headers=headers), url, adapter)


async def _post(session: aiohttp.ClientSession, url: str, body: dict, headers: Mapping[str, str],
                adapter: TypeAdapter[T]) -> T:
    return await _read(session.post(url, json=body, headers=headers), url, adapter)


async def _read(request, url: str, adapter: TypeAdapter[T]) -> T:
    """The answer as `adapter`'s type; ValueError (pydantic's ValidationError is one) when it is not that."""
    async with request as response:
        if response.status >= 400:
            raise HTTPStatus(f"HTTP {response.status} from {url}", status_code=response.status, url=url)
        raw = await response.read()
    return adapter.validate_json(raw)
