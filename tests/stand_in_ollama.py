"""A stand-in for the `ollama` executable: `ollama serve` serves the Ollama API (the fake) on $OLLAMA_HOST.

Tests write a tiny `ollama` launcher for it first on PATH. It records its argv and OLLAMA_* environment to
$STAND_IN_RECORD_DIR/<port>.json so tests check the real process management and the real env/args.
$STAND_IN_MODE=mute binds nothing and never answers (for health-timeout tests); crash dies of SIGSEGV at start;
lose-port loses its port to another server just before its bind (that one, a plain stand-in recording to
$STAND_IN_RECORD_DIR/holder, answers on it and stays), then fails as Ollama does; the next start serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
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
    if os.environ.get("STAND_IN_MODE") == "lose-port" and not (record_dir / "holder").exists():  # once
        # Not a child of this one (started through a process that exits at once): another program's server.
        subprocess.run([sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1:], "
                        "start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)",
                        sys.executable, __file__, "serve"], check=True,
                       env={**os.environ, "STAND_IN_MODE": "", "STAND_IN_RECORD_DIR": str(record_dir / "holder")})
        while True:
            try:
                urllib.request.urlopen(f"http://{host}:{port}/api/version", timeout=2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(1)  # still starting, as a server loading its model is, while the other one answers
        print(f"Error: listen tcp {host}:{port}: bind: address already in use", flush=True)
        return 1
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
