"""Slots shared beyond one process: real `parallama` processes (CLI runs and `serve`) on one 1-slot fake server
never put two requests on it at once, nobody times out for waiting, and a SIGKILL'd holder frees its slot at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


from conftest import banner_of, worker, write_config
from fakes import FakeServer


def parallama(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "parallama", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def start_serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`parallama serve` on a free port: the process and its URL."""
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", "--no-history", *args],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    lines = banner_of(process)
    match = re.search(r"Ollama API  (http://127\.0\.0\.1:\d+)", "".join(lines))
    assert match, "".join(lines)
    assert process.stderr is not None
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its pipe from filling
    return process, match.group(1)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def post_json(url: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


HANG_S = 120.0
("How long an event may take before a test calls it a hang: generous, since a machine starved of CPU (load 30 on 2 "
 "cores) has taken over 30 s to start a `parallama` process. A bound on hanging, never a speed claim.")


def wait_for(condition, what: str, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def machine_load(fake: FakeServer) -> tuple[int, int]:
    """(in flight, waiting) on the fake's server across this machine's processes, as their slot files say."""
    from parallama.paths import state_dir
    from parallama.slots.local import LocalStore
    from parallama.urls import server_of

    slots = LocalStore(state_dir() / "slots").slots_for(server_of(fake.url), 1)
    try:
        return slots.counts()
    finally:
        slots.close()


def one_worker(tmp_path: Path, fake: FakeServer, timeout: float, **extra) -> Path:
    return write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "w", name="W", timeout=timeout)],
                                              **extra})


def test_cli_runs_and_serve_never_overfill_a_one_slot_server(tmp_path):
    with FakeServer(slots=1) as fake:
        # 9 requests of 0.4 s on one slot take 3.6 s; each may take 2 s once sent. Queued in the server, the last
        # ones would time out; queued in parallama, none does. They all start queued behind a holder (however
        # slowly a busy machine starts their processes), which is then killed.
        fake.model("hold", latency=600, text="held")
        fake.model("w", latency=0.4, text="shared answer")
        write_config(tmp_path / "h.json", {"worker_agents": [worker(fake, "hold", name="H", timeout=900)]})
        one_worker(tmp_path, fake, timeout=2.0,
                   reviewer_agent=worker(fake, "w", name="R", timeout=2.0))
        serve, url = start_serve("-c", "c.json")
        holder = parallama("run", "q", "-c", "h.json", "--no-review", "--no-history")
        try:
            wait_for(lambda: fake.requests, "the holder's request")
            runs = [parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history")
                    for _ in range(5)]
            replies: list[dict] = []
            posts = [threading.Thread(target=lambda: replies.append(post_json(
                url + "/api/chat", {"model": "parallama", "messages": [{"role": "user", "content": "q"}],
                                    "stream": False}, timeout=HANG_S))) for _ in range(2)]
            for post in posts:
                post.start()
            wait_for(lambda: machine_load(fake)[1] >= 7, "the 5 runs' and serve's 2 requests to queue")
            holder.kill()
            outputs = [run.communicate(timeout=HANG_S) for run in runs]
            for post in posts:
                post.join(HANG_S)
        finally:
            holder.kill()
            holder.wait()
            stop(serve)
        assert fake.max_in_flight == 1
        assert len(fake.requests) == 1 + 9
        for run, (out, err) in zip(runs, outputs):
            assert run.returncode == 0, err
            (result,) = json.loads(out)["workers"]
            # 4 turns of the slot at most (on a busy machine), where a queue in the server takes up to 9.
            assert result["status"] == "ok" and result["elapsed_s"] < 4 * 0.4
        assert max(json.loads(out)["workers"][0]["queued_s"] for out, _ in outputs) > 0.5  # they waited, not timed
        assert [r["message"]["content"] for r in replies] == ["shared answer"] * 2


def test_a_killed_holder_frees_its_slot_at_once(tmp_path):
    with FakeServer(slots=1) as fake:
        fake.model("w", latency=30, text="never")
        one_worker(tmp_path, fake, timeout=60)
        holder = parallama("run", "q", "-c", "c.json", "--no-review", "--no-history")
        try:
            wait_for(lambda: fake.requests, "the holder's request")
            fake.model("w", latency=0.2, text="second")
            waiter = parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history")
            wait_for(lambda: machine_load(fake) == (1, 1), "the waiter to queue behind the holder")
            assert len(fake.requests) == 1
            killed_at = time.perf_counter()
            holder.send_signal(signal.SIGKILL)
            out, err = waiter.communicate(timeout=30)
        finally:
            holder.kill()
            holder.wait()
        assert waiter.returncode == 0, err
        assert json.loads(out)["workers"][0]["content"] == "second"
        assert len(fake.requests) == 2
        assert fake.requests[1].arrived - killed_at < 1.0


def test_slot_store_none_turns_sharing_off(tmp_path):
    with FakeServer(slots=None) as fake:
        # Each request is held until both are in flight at once: they overlap however slowly the second process
        # starts, unless one waits for the other's slot.
        both = threading.Event()
        fake.model("w", latency=0.3, text="alone", hold=both)
        one_worker(tmp_path, fake, timeout=2 * HANG_S)
        runs = [parallama("run", "q", "-c", "c.json", "--no-review", "--no-history",
                          env={"PARALLAMA_SLOT_STORE": "none"}) for _ in range(2)]
        try:
            wait_for(lambda: fake.in_flight == 2, "both runs' requests in flight at once")
        finally:
            both.set()
        for run in runs:
            run.communicate(timeout=HANG_S)
            assert run.returncode == 0
        assert fake.max_in_flight == 2  # each process kept its one slot to itself


async def test_every_view_counts_the_other_processes(tmp_path):
    from parallama import FleetClient
    from parallama.report.live import servers_line

    with FakeServer(slots=None) as fake:
        fake.model("w", latency=30.0, text="held")
        config = one_worker(tmp_path, fake, timeout=30)
        holder = parallama("run", "q", "-c", "c.json", "--no-review", "--no-history")
        serve, url = start_serve("-c", "c.json")
        try:
            wait_for(lambda: fake.requests, "the holder's request")
            fake.model("w", latency=0.1, text="after")
            (tmp_path / "prompts.txt").write_text("one\ntwo\n")
            batch = parallama("batch", "prompts.txt", "-c", "c.json", "--no-review", "-o", "out.jsonl")
            wait_for(lambda: machine_load(fake)[1] >= 1, "the batch to wait behind the holder")
            async with FleetClient(config) as client:
                (load,) = client.load().values()
            assert (load.in_flight, load.own_in_flight, load.shared) == (1, 0, "local")
            assert load.waiting >= 1 and load.own_waiting == 0
            assert "1/1 busy" in servers_line({fake.url: load}) and "in other processes" in servers_line(
                {fake.url: load})
            (ui,) = get_json(url + "/ui/api/load")["servers"]
            (ps,) = get_json(url + "/api/ps")["servers"]
            for shown in (ui, ps):
                assert shown["in_flight"] == 1 and shown["own_in_flight"] == 0 and shown["waiting"] >= 1
                assert shown["shared"] == "local"
            time.sleep(0.5)  # the batch has waited a while for the holder's slot
            holder.kill()  # its slot comes free at once; the batch goes on
            summary, err = batch.communicate(timeout=60)
        finally:
            stop(serve)
            holder.kill()
            holder.wait()
        assert batch.returncode == 0, err
        assert "other processes on these slots" in summary
        assert float(re.search(r"waited ([0-9.]+) s behind them", summary).group(1)) >= 0.4
        assert fake.max_in_flight == 1


def test_compose_adds_a_redis_for_the_replicas(tmp_path):
    import yaml

    from conftest import invoke

    result = invoke("compose", "-n", "2", "--redis", "-o", "dc.yml")
    assert result.exit_code == 0
    assert "PARALLAMA_SLOT_STORE=redis://127.0.0.1:6379/0" in result.stderr
    services = yaml.safe_load((tmp_path / "dc.yml").read_text())["services"]
    assert list(services) == ["ollama1", "ollama2", "redis"]
    assert services["redis"]["image"].startswith("redis:") and services["redis"]["ports"] == ["127.0.0.1:6379:6379"]
    assert "redis" not in yaml.safe_load(
        (invoke("compose", "-n", "1", "-o", "plain.yml"), tmp_path / "plain.yml")[1].read_text())["services"]


def test_a_busy_process_does_not_starve_another(tmp_path):
    with FakeServer(slots=1) as fake:
        fake.model("w", latency=0.2, text="busy")
        one_worker(tmp_path, fake, timeout=5)
        # More than a loaded machine gets through while it starts the run's process; stopped once the run is done.
        (tmp_path / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(500)))
        batch = parallama("batch", "prompts.txt", "-c", "c.json", "--no-review", "-o", "out.jsonl",
                          "--concurrency", "4")
        wait_for(lambda: len(fake.requests) >= 3, "the batch's first requests")
        run = parallama("run", "late", "-c", "c.json", "--no-review", "--json", "--no-history")
        # From when the run's request waits (the batch's three waiting and the run's one), not from its process's
        # start: a loaded machine takes seconds to start a process while the batch goes on.
        wait_for(lambda: machine_load(fake)[1] >= 4 or run.poll() is not None, "the run to wait behind the batch")
        served_when_it_waited = len(fake.requests)
        out, err = run.communicate(timeout=60)
        batch.send_signal(signal.SIGTERM)
        batch.communicate(timeout=60)
    assert run.returncode == 0 and batch.returncode == 130, err
    (result,) = json.loads(out)["workers"]
    assert result["status"] == "ok"
    served_before_it = next(i for i, r in enumerate(fake.requests)
                            if any(m.get("content") == "late" for m in r.messages))
    # The batch keeps 3 requests waiting the whole time; the run waits for a turn or two, not for the batch's end
    # (500 turns of 0.2 s): counted in turns, and in seconds with room for a machine starved of CPU.
    assert result["queued_s"] < 10
    assert served_before_it - served_when_it_waited <= 4, (served_when_it_waited, served_before_it)
    assert fake.max_in_flight == 1


def test_a_wrong_slot_store_is_one_line_and_exit_2(tmp_path, monkeypatch):
    from conftest import invoke

    with FakeServer() as fake:
        fake.model("w", text="x")
        one_worker(tmp_path, fake, timeout=5, slot_store="http://user:hunter2pw@cache:6379")
        in_config = invoke("run", "q", "-c", "c.json", "--no-history")
        one_worker(tmp_path, fake, timeout=5)
        monkeypatch.setenv("PARALLAMA_SLOT_STORE", "shared")
        in_env = invoke("run", "q", "-c", "c.json", "--no-history")
    assert in_config.exit_code == 2 and "hunter2pw" not in in_config.output
    assert in_config.stderr.strip() == ("error: c.json: slot_store: 'http://cache:6379' is not a slot store: use "
                                        "\"local\" (this machine, the default), \"none\" (this process only) or a "
                                        "Redis URL like \"redis://host:6379/0\"")
    assert in_env.exit_code == 2 and in_env.stderr.startswith("error: PARALLAMA_SLOT_STORE: 'shared' is not")
    assert not fake.requests
