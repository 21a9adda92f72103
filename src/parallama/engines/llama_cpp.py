"""The `llama-cpp` engine: llama.cpp's own HTTP server from the prebuilt `xllamacpp` wheel, one launcher process of
ours per instance (`python -m parallama.engines.llama_server`).

That server has real parallel slots: `--parallel N` decodes N requests together over one copy of the weights
(continuous batching), and llama.cpp splits the context between the slots, so each gets `CONTEXT_PER_SLOT` tokens
(the instance's `n_ctx` is N × that). It streams token logprobs, binds `response_format` with a JSON schema by a
grammar, and serves `/metrics` (Prometheus) and `/slots`. No `--chat-template` is given: the server then uses the
chat template inside the GGUF, which is what the model was trained with. Nothing is compiled at install time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..errors import SetupError
from . import LaunchSpec

EXTRA_HINT = "pip install 'parallama[embedded]'"
CONTEXT_PER_SLOT = 2048
"Tokens of context each slot has (prompt and answer together): the demo's prompts and answers fit well within."
CRASH_HINT = ("llama.cpp (the xllamacpp wheel) crashed on this machine: its log says where; reinstalling it "
              "(pip install --force-reinstall --no-deps xllamacpp) rules out a damaged install")
LAUNCHER = "parallama.engines.llama_server"


def llama_cpp_available() -> bool:
    """Whether `xllamacpp` is importable here (checked without importing it: that loads llama.cpp)."""
    try:
        return importlib.util.find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        return False


class LlamaCppEngine:
    name = "llama-cpp"

    def check(self) -> None:
        if not llama_cpp_available():
            raise SetupError(f"llama.cpp's server is not installed: {EXTRA_HINT} (a prebuilt wheel, no compiling)")

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
            sys.executable, "-m", LAUNCHER,
            "--model", str(path), "--alias", path.stem,
            "--host", host, "--port", str(port),
            "--threads", str(threads), "--parallel", str(parallel),
            "--ctx-per-slot", str(CONTEXT_PER_SLOT),
        ]
        return LaunchSpec(argv=argv, model=str(path), parallel=parallel, health_path="/health",
                          crash_hint=CRASH_HINT)
