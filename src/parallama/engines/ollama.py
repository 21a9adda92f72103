"""The `ollama` engine: `ollama serve` per port, all instances sharing one OLLAMA_MODELS directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import SetupError
from . import LaunchSpec

INSTALL_HINT = "install it from https://ollama.com/download (Linux: `curl -fsSL https://ollama.com/install.sh | sh`)"


def models_dir() -> str:
    """One models directory for every instance, so a model is downloaded once: Ollama's own default unless set."""
    return os.environ.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")


class OllamaEngine:
    name = "ollama"

    def binary(self) -> str:
        path = shutil.which("ollama")
        if not path:
            raise SetupError(f"the `ollama` command was not found on PATH: {INSTALL_HINT}, "
                             "or use `--engine llama-cpp`")
        return path

    def check(self) -> None:
        self.binary()

    def launch(self, *, host: str, port: int, model: str | None, threads: int,  # noqa: ARG002 - Ollama picks its threads
               parallel: int) -> LaunchSpec:
        env = {
            "OLLAMA_HOST": f"{host}:{port}",
            "OLLAMA_NUM_PARALLEL": str(parallel),
            "OLLAMA_MODELS": models_dir(),
        }
        return LaunchSpec(argv=[self.binary(), "serve"], env=env, model=model or "", parallel=parallel,
                          health_path="/api/version")
