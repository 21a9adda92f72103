"""parallama: run several LLM agents in parallel on local model servers, and let a reviewer merge their answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Exports resolve on first use so `parallama --help` never imports aiohttp or pydantic.
_EXPORTS = {
    "run": "parallama.oneshot",
    "run_sync": "parallama.oneshot",
    "FleetClient": "parallama.client",
    "load_config": "parallama.config",
    "Fleet": "parallama.fleet",
    "Agent": "parallama.fleet",
    "Server": "parallama.fleet",
    "RunResult": "parallama.result",
    "AgentResult": "parallama.result",
    "FinalSource": "parallama.result",
    "RunTracker": "parallama.tracker",
    "ParallamaError": "parallama.errors",
    "ConfigError": "parallama.errors",
    "BackendError": "parallama.errors",
}

if TYPE_CHECKING:
    from .config import load_config
    from .errors import BackendError, ConfigError, ParallamaError
    from .fleet import Agent, Fleet, Server
    from .result import AgentResult, FinalSource, RunResult
    from .tracker import RunTracker
    from .client import FleetClient
    from .oneshot import run, run_sync


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'parallama' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = ["AgentResult", "BackendError", "ConfigError", "FinalSource", "Fleet", "FleetClient", "Agent",
           "ParallamaError", "RunResult", "RunTracker", "Server", "load_config", "run", "run_sync"]
"The names of `_EXPORTS`, written out so a reader (and ruff) sees what the package offers."
