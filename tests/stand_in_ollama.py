"""A stand-in for the `ollama` executable: `ollama serve` serves the Ollama API (the fake) on $OLLAMA_HOST.

Tests write a tiny `ollama` launcher for it first on PATH. It records its argv and OLLAMA_* environment to
$STAND_IN_RECORD_DIR/<port>.json so tests check the real process management and the real env/args.
$STAND_IN_MODE=mute binds nothing and never answers (for health-timeout tests); crash dies of SIGSEGV at start.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:1] != ["serve"]:
        print(f"stand-in ollama: only `serve` is supported, got {argv}", file=sys.stderr)
        return 2
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    record_dir = Path(os.environ.get("STAND_IN_RECORD_DIR", "."))
    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / f"{port}.json").write_text(json.dumps({
        "argv": argv, "pid": os.getpid(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("OLLAMA_")}}))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if os.environ.get("STAND_IN_MODE") == "crash":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    if os.environ.get("STAND_IN_MODE") == "mute":
        print("stand-in ollama: loading (and never finishing)", flush=True)
        stop.wait()
        return 0
    # Imported only now: the fakes bring aiohttp, which takes a loaded machine seconds to import, and the mute
    # stand-in's log line must be written well within the short --ready-timeout its test gives.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fakes import FakeServer

    with FakeServer(host=host or "127.0.0.1", port=int(port)) as server:
        server.model("llama3.2:1b", latency=0.1)
        print(f"Listening on {host}:{port} (version {server.version})", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
