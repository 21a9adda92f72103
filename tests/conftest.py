"""Fixtures: every test gets its own working directory and environment, and fake model servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from fakes import FakeServer, free_port

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
"In CI (`CI=true`) a test whose tool is missing fails; elsewhere it skips, saying what to install."
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None and not IN_CI,
                                 reason="needs redis-server: apt-get install redis-server (.ci/run installs it)")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in its own empty directory with no parallama settings from the environment, and every file
    parallama keeps (state, logs, history) under `tmp_path/home` through `PARALLAMA_HOME`: platformdirs ignores
    `XDG_*` on macOS and Windows, so those alone would let the suite write into the user's real directories."""
    for name in list(os.environ):
        if name.startswith("PARALLAMA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PARALLAMA_HOME", str(tmp_path / "home"))
    for name in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):  # for the libraries we use
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


class RedisServer:
    """A real `redis-server` on a free port of 127.0.0.1, nothing saved to disk; `stop()` kills it."""

    START_S = 30.0
    "How long it may take to answer on its port: a bound on hanging, generous for a machine starved of CPU."

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        directory.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.START_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from exc
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real `redis-server` for this test, killed at its end."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


def host_env(tmp_path: Path, name: str, store: str) -> dict[str, str]:
    """A process that keeps its files apart, as on another host, with the slots in `store`."""
    home = tmp_path / name
    return {"PARALLAMA_HOME": str(home), "XDG_STATE_HOME": str(home / "xdg-state"), "PARALLAMA_SLOT_STORE": store}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    """Three independent 1-slot fake servers, like the guide's ports 11434/11435/11436."""
    with FakeServer(slots=1) as a, FakeServer(slots=1) as b, FakeServer(slots=1) as c:
        yield [a, b, c]


def write_config(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2), encoding="utf-8")
    return path


def worker(fake: FakeServer, model: str, **extra: Any) -> dict[str, Any]:
    return {"api_url": fake.url + "/api/chat", "model": model, **extra}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_lines(path: Path) -> list[dict]:
    """Every line of an output file, each of which must be whole JSON."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "the last line is cut off"
    return [json.loads(line) for line in text.splitlines()]


def banner_of(process: subprocess.Popen) -> list[str]:
    """The lines `serve` prints at start, up to its Ctrl-C line (or an error)."""
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C" in line or "error" in line:
            break
    return lines


def invoke(*args: str, input: str | None = None) -> Any:
    """Run the real CLI in-process; exceptions that escape it fail the test."""
    from parallama.cli import cli

    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def run_process(*args: str, input: str | None = None, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m parallama ...` as a real process (real stdin/stdout/stderr, real exit code)."""
    return subprocess.run([sys.executable, "-m", "parallama", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
async def serve() -> Any:
    """Start `parallama serve` in this test's event loop: `running = await serve(config, progress=...)`, on a free
    port of 127.0.0.1, history off unless asked; stopped at the end of the test."""
    from parallama.config import as_fleet
    from parallama.serve import ServeOptions, start

    started = []

    async def start_serving(config: Any, **options: Any) -> Any:
        running = await start(as_fleet(config), ServeOptions(**{"history": False, **options}), port=0)
        started.append(running)
        return running

    yield start_serving
    for running in started:
        await running.close()


def guide_fleet(servers: list[FakeServer], **review: Any) -> dict[str, Any]:
    """The guide's shape on the three 1-slot fakes: workers A and B on the first two, the reviewer on the third."""
    a, b, c = servers
    a.model("m", latency=0.1, text="Alpha says four.")
    b.model("m", latency=0.15, text="Beta says 4.")
    c.model("rev", latency=0.1, text="The answer is 4.")
    return {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
            "reviewer_agent": worker(c, "rev", name="Rev"), "review": review or {"strategy": "synthesize"}}
