"""The wire side of asking a server what it is: what a probe found (`ServerProbe`), and GET/POST of a typed answer
with a probe's timeout. Each backend's `probe` uses these; `parallama.probe` turns their failures into data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

import aiohttp
from pydantic import TypeAdapter

from ..errors import HTTPStatus
from ..redact import Redactor
from .transport import TransportErrors

PROBE_TIMEOUT_S = 5.0

T = TypeVar("T")


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


def probe_transport(url: str, headers: Mapping[str, str]) -> TransportErrors:
    """Transport failures of a probe, in the words the backends use; the key it sends masked in what comes back."""
    return TransportErrors(url, redact=Redactor([headers.get("Authorization", "").partition(" ")[2]]),
                           timeout_s=PROBE_TIMEOUT_S)


async def get_json(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                   adapter: TypeAdapter[T]) -> T:
    return await _read(session.get(url, headers=headers), url, adapter)


async def post_json(session: aiohttp.ClientSession, url: str, body: dict, headers: Mapping[str, str],
                    adapter: TypeAdapter[T]) -> T:
    return await _read(session.post(url, json=body, headers=headers), url, adapter)


async def _read(request, url: str, adapter: TypeAdapter[T]) -> T:
    """The answer as `adapter`'s type; ValueError (pydantic's ValidationError is one) when it is not that."""
    async with request as response:
        if response.status >= 400:
            raise HTTPStatus(f"HTTP {response.status} from {url}", status_code=response.status, url=url)
        raw = await response.read()
    return adapter.validate_json(raw)
