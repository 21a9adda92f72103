"""The `llama-cpp` engine: llama.cpp's OpenAI-compatible server from `llama-cpp-python[server]`, one per instance.

Two facts of that server shape how it is started (llama_cpp/server/app.py, settings.py): it serves one request at
a time (a lock), and with `interrupt_requests` on — its default — a new request ends the stream in flight. So every
instance runs with `--interrupt_requests False` and is recorded as a 1-slot server. No `--chat_format` is given:
the server then uses the chat template inside the GGUF, which is what the model was trained with.

One fact of building it: pip compiles llama-cpp-python for the CPU it builds on (`GGML_NATIVE`), and on CPUs with
Intel AMX that build has crashed (SIGSEGV in `ggml_backend_amx_mul_mat`) on the first token. The README's commands
build it portably (`PORTABLE_CMAKE_ARGS`); a crash names the rebuild command (`REBUILD_HINT`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import SetupError
from . import LaunchSpec

EXTRA_HINT = "pip install 'parallama[embedded]'"
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
REBUILD_HINT = (f"this llama-cpp-python build crashes on this CPU; rebuild it portably: CMAKE_ARGS=\"{PORTABLE_CMAKE_ARGS}\" "
                "pip install --force-reinstall --no-deps --no-cache-dir 'llama-cpp-python[server]'")
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

    def launch(self, *, host: str, port: int, model: str | None, threads: int,
               parallel: int) -> LaunchSpec:  # noqa: ARG002 - the Engine protocol's; slots are the server's flag
        if model is None:
            from ..demo_model import model_path

            path = model_path()
        else:
            path = Path(model).expanduser()
            if not path.is_file():
                raise SetupError(f"model file {model}: no such GGUF file")
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(path), "--model_alias", path.stem,
            "--host", host, "--port", str(port),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--n_ctx", "2048",
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]
        return LaunchSpec(argv=argv, model=str(path), parallel=1, health_path="/v1/models", crash_hint=REBUILD_HINT)
