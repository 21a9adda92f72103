"""The terminal's live view at the widths terminals have: rich's recorded console at 60, 80 and 120 columns, and a
real `parallama run` in a tmux pane of 80 columns. Columns go by importance (the name and the state always, then
elapsed and queued, then tokens and tok/s, the stream's tail last); a header is whole or left out."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from conftest import worker
from fakes import FakeServer
from parallama.config import as_fleet
from parallama.events import Cut, Delta, Failed, Queued, RunEnded, Started, Thinking
from parallama.report.live import LiveView
from parallama.result import AgentResult

SRC = Path(__file__).resolve().parent.parent / "src"
HEADERS = ("agent", "state", "elapsed", "queued", "tokens", "tok/s", "stream")
NAMES = ["Worker A (Llama 3 8B)", "Worker B (DeepSeek R1)", "Worker C (Mistral)", "Worker D (Qwen 2.5)",
         "Worker E (Gemma 2)"]
STATES = ["running", "thinking", "failed", "cut", "queued"]


def _result(name: str, status: str, error: str, kind: str) -> AgentResult:
    return AgentResult(name=name, model="m", api_url="http://localhost:11434/api/chat", protocol="ollama",
                       status=status, content="", error=error, error_kind=kind,  # type: ignore[arg-type]
                       queued_s=0.0, elapsed_s=3.2, ttft_s=None, prompt_tokens=None, completion_tokens=12,
                       tokens_per_s=None, stage="workers")


def _mid_run(width: int) -> list[str]:
    """The view of a run with one row in each state, drawn at `width` columns (no colour: the words must say it)."""
    fleet = as_fleet({
        "reviewer_agent": {"name": "Reviewer (Llama 3 70B)", "api_url": "http://localhost:11439/api/chat",
                           "model": "llama3:70b"},
        "worker_agents": [{"name": name, "api_url": f"http://localhost:1143{i}/api/chat", "model": "llama3:8b"}
                          for i, name in enumerate(NAMES)]})
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    # One moment of the run, the same on any machine: the events at 1 s, the drawing at 3 s (on the wall clock a
    # loaded machine drew slower rates, narrow enough to fit a column a quiet one left out).
    now = [1.0]
    view = LiveView(fleet, console, clock=lambda: now[0])
    a, b, c, d, e = fleet.workers
    for agent in fleet.workers:
        view(Queued("r", "workers", agent))
    for agent in (a, b, c, d):
        view(Started("r", "workers", agent, 0.0))
    for _ in range(30):
        view(Delta("r", "workers", a, "word "))
    for _ in range(7):
        view(Thinking("r", "workers", b, "hmm "))
    view(Failed("r", "workers", c, _result(c.name, "error", "model 'm' not found — ollama pull m", "model_not_found")))
    view(Cut("r", "workers", d, _result(d.name, "cut", "cut: 2 answers were enough", "cut")))
    now[0] = 3.0
    console.print(view.render())
    return out.getvalue().rstrip("\n").split("\n")


def _check_rows(lines: list[str], width: int) -> None:
    assert all(len(line) <= width for line in lines), lines
    header = lines[0].split()
    assert all(word in HEADERS for word in header) and "…" not in lines[0]  # whole headers only
    assert header[:2] == ["agent", "state"]
    for name, state, line in zip(NAMES, STATES, lines[1:6]):
        assert line.split("  ")[0].strip() in name or line.startswith(name[:10]), line
        assert f" {state} " in f"{line} ", line  # the state is a whole word on every row
    assert "waiting" in lines[6] and lines[6].startswith("↳ Rev")


@pytest.mark.parametrize("width, shown, dropped", [
    (48, ["agent", "state", "elapsed", "queued"], ["tokens", "tok/s", "stream"]),
    (56, ["agent", "state", "elapsed", "queued", "tokens"], ["tok/s", "stream"]),
    (60, ["agent", "state", "elapsed", "queued", "tokens", "tok/s"], ["stream"]),
    (80, ["agent", "state", "elapsed", "queued", "tokens", "tok/s"], []),
    (120, list(HEADERS), []),
])
def test_columns_go_by_importance_as_the_terminal_narrows(width, shown, dropped):
    lines = _mid_run(width)
    _check_rows(lines, width)
    header = lines[0].split()
    assert header[:len(shown)] == shown
    assert not set(dropped) & set(header)
    if width >= 80:  # names whole once there is room
        assert all(line.startswith(name) for name, line in zip(NAMES, lines[1:6]))


def test_at_120_columns_the_stream_shows_each_rows_tail_or_its_failure():
    lines = _mid_run(120)
    assert "word word" in lines[1] and "hmm hmm" in lines[2] and "model_not_found" in lines[3]


def test_a_stopped_run_shows_its_requests_as_stopped_not_failed():
    fleet = as_fleet({"worker_agents": [{"name": "A", "api_url": "http://localhost:11434/api/chat", "model": "m"},
                                        {"name": "B", "api_url": "http://localhost:11435/api/chat", "model": "m"}]})
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    view = LiveView(fleet, console, review=False)
    a, b = fleet.workers
    view(Queued("r", "workers", a))
    view(Queued("r", "workers", b))
    view(Started("r", "workers", a, 0.0))
    view(RunEnded("r", None, stopped=True))
    console.print(view.render())
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines[1:3]] == ["stopped", "stopped"]
    assert "failed" not in out.getvalue()


def test_the_servers_line_shows_while_the_run_goes_and_is_not_left_bare_at_its_end():
    from parallama.gates import ServerLoad

    fleet = as_fleet({"worker_agents": [{"name": "A", "api_url": "http://localhost:11434/api/chat", "model": "m"}]})
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    view = LiveView(fleet, console, review=False)
    loads = [{"http://localhost:11434": ServerLoad(1, 1, 0)}]
    view.server_load = lambda: loads[0]
    view(Queued("r", "workers", fleet.workers[0]))
    console.print(view.render())
    assert "servers  localhost:11434 1/1 busy" in out.getvalue()
    loads[0] = {}  # the client is closed: no load to show
    view(RunEnded("r", None))
    out.truncate(0)
    console.print(view.render())
    assert "servers" not in out.getvalue()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_real_run_in_an_80_column_tmux_pane(tmp_path):
    with FakeServer(slots=1) as a, FakeServer(slots=1) as b, FakeServer(slots=1) as c:
        a.model("m", latency=6.0, tokens=60, text="The sky is blue because of Rayleigh scattering. " * 4)
        a.model("n", latency=6.0, tokens=10, text="Queued behind m on the same one-slot server.")
        b.model("r1", latency=6.0, tokens=30, thinking="Let me think about light and air. " * 6, text="Blue.")
        config = {"worker_agents": [worker(a, "m", name="Worker A (Llama 3 8B)"),
                                    worker(b, "r1", name="Worker B (DeepSeek R1)"),
                                    worker(a, "n", name="Worker C (Mistral)"),
                                    worker(c, "gone", name="Worker D (missing)")]}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        socket = f"parallama-test-{uuid.uuid4().hex[:8]}"
        command = (f"env PYTHONPATH={SRC} PARALLAMA_HOME={tmp_path / 'home'} {sys.executable} -m parallama run "
                   f"-c {path} --no-review 'Why is the sky blue?'; sleep 60")
        tmux = ["tmux", "-L", socket]
        subprocess.run([*tmux, "new-session", "-d", "-x", "80", "-y", "24", "-s", "live", command], check=True,
                       env={**os.environ, "TERM": "xterm-256color"})
        try:
            deadline = time.monotonic() + 20
            screen = ""
            while time.monotonic() < deadline:
                screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "live"], capture_output=True,
                                        text=True).stdout
                if "thinking" in screen and "queued" in screen and "failed" in screen and "running" in screen:
                    break
                time.sleep(0.2)
            lines = [line for line in screen.splitlines() if line.strip()]
            header = next(line for line in lines if line.startswith("agent"))
            assert header.split()[:6] == ["agent", "state", "elapsed", "queued", "tokens", "tok/s"], screen
            row = {line.split("  ")[0]: line for line in lines if line.startswith("Worker")}
            assert " running " in row["Worker A (Llama 3 8B)"], screen
            assert " thinking " in row["Worker B (DeepSeek R1)"], screen
            assert " queued " in row["Worker C (Mistral)"], screen
            assert " failed " in row["Worker D (missing)"], screen
            assert "…" not in header and all(len(line) <= 80 for line in lines)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)
