"""The `llama-cpp` engine: llama.cpp's OpenAI-compatible server from `llama-cpp-python[server]`, one per instance.

Two facts of that server shape how it is started (llama_cpp/server/app.py, settings.py): it serves one request at
a time (a lock), and with `interrupt_requests` on — its default — a new request ends the stream in flight. So every
instance runs with `--interrupt_requests False` and is recorded as a 1-slot server.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import SetupError
from . import LaunchSpec

EXTRA_HINT = "pip install 'parallama[embedded]'"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")


def llama_cpp_available() -> bool:
    """Whether `llama-cpp-python[server]` is importable here (checked without importing it: that is slow)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)
    except (ImportError, ValueError):
        return False


class LlamaCppEngine:
    name = "llama-cpp"

    def check(self) -> None:
        if not llama_cpp_available():
            raise SetupError(f"llama.cpp's server is not installed: {EXTRA_HINT} (builds llama-cpp-python, "
                             "about 5 minutes on 2 cores)")

    def launch(self, *, host: str, port: int, model: str | None, threads: int, parallel: int) -> LaunchSpec:
        chat_format: str | None = None
        if model is None:
            from ..embedded import CHAT_FORMAT, model_path

            path, chat_format = model_path(), CHAT_FORMAT
        else:
            path = Path(model).expanduser()
            if not path.is_file():
                raise SetupError(f"model file {model}: no such GGUF file")
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(path),
            "--host", host, "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--n_ctx", "2048",
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]
        if chat_format:
            argv += ["--chat_format", chat_format]
        return LaunchSpec(argv=argv, model=str(path), parallel=1, health_path="/v1/models")
