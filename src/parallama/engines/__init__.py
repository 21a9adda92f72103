"""Server engines parallama can start: one module per engine, one small interface (a command line and a health URL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one instance: argv, extra environment, and what to record about it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    model: str = ""
    parallel: int = 1
    health_path: str = "/"
    crash_hint: str | None = None
    "What to tell the user when the process dies of a signal (such as SIGSEGV in a miscompiled build)."


class Engine(Protocol):
    name: str

    def check(self) -> None:
        """Raise SetupError when the engine cannot run here (binary or extra missing)."""

    def launch(self, *, host: str, port: int, model: str | None, threads: int, parallel: int) -> LaunchSpec: ...


def engine_named(name: str) -> Engine:
    if name == "llama-cpp":
        from .llama_cpp import LlamaCppEngine

        return LlamaCppEngine()
    if name == "ollama":
        from .ollama import OllamaEngine

        return OllamaEngine()
    raise ValueError(f"unknown engine {name!r}")


ENGINES = ("llama-cpp", "ollama")
