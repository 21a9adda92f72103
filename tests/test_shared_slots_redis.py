"""Slots shared through a real `redis-server` (started on a free port for each test): two `serve` replicas with their
own state directories (as two hosts) share a 2-slot server, a killed replica's leases come back, and a Redis that
goes away mid-run leaves the run on this machine's slots. Outside CI these tests skip when `redis-server` is missing
(`apt-get install redis-server`); in CI (`CI=true`) they fail."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from conftest import host_env, needs_redis, worker, write_config
from fakes import FakeServer, free_port
from test_shared_slots import get_json, parallama, post_json, start_serve, stop

pytestmark = needs_redis


def two_slot_fleet(tmp_path: Path, fake: FakeServer, timeout: float) -> Path:
    return write_config(tmp_path / "c.json", {
        "worker_agents": [worker(fake, "w", name="W", timeout=timeout)],
        "reviewer_agent": worker(fake, "w", name="R", timeout=timeout),
        "servers": {fake.url: {"parallel": 2}}})


def ask_in_threads(url: str, count: int, replies: list, errors: list) -> list[threading.Thread]:
    def ask() -> None:
        try:
            replies.append(post_json(url + "/api/chat", {"model": "parallama", "stream": False,
                                                         "messages": [{"role": "user", "content": "q"}]}))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_two_replicas_share_a_two_slot_server(tmp_path, redis_server):
    with FakeServer(slots=2) as fake:
        # 16 requests of 0.6 s on 2 slots take 4.8 s; each may take 2 s once sent.
        fake.model("w", latency=0.6, text="the answer")
        two_slot_fleet(tmp_path, fake, timeout=2.0)
        a, url_a = start_serve("-c", "c.json", env=host_env(tmp_path, "a", redis_server.url))
        b, url_b = start_serve("-c", "c.json", env=host_env(tmp_path, "b", redis_server.url))
        try:
            replies: list = []
            errors: list = []
            threads = ask_in_threads(url_a, 4, replies, errors) + ask_in_threads(url_b, 4, replies, errors)
            # Each replica sees both replicas' requests: 2 in flight, and the other replica's waiting ones.
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                loads = [get_json(url + "/ui/api/load")["servers"][0] for url in (url_a, url_b)]
                if all(load["in_flight"] == 2 and load["waiting"] > load["own_waiting"] for load in loads):
                    break
                time.sleep(0.05)
            for thread in threads:
                thread.join(60)
        finally:
            stop(a)
            stop(b)
        assert not errors
        assert fake.max_in_flight == 2
        assert len(fake.requests) == 16
        assert [r["message"]["content"] for r in replies] == ["the answer"] * 8
        for load in loads:
            assert load["in_flight"] == 2 and load["slots"] == 2 and load["shared"] == "redis"
            assert load["waiting"] > load["own_waiting"]


def test_a_killed_replica_does_not_strand_the_other(tmp_path, redis_server):
    with FakeServer(slots=None) as fake:
        fake.model("w", latency=60, text="never")
        two_slot_fleet(tmp_path, fake, timeout=90)
        a, url_a = start_serve("-c", "c.json", env=host_env(tmp_path, "a", redis_server.url))
        b, url_b = start_serve("-c", "c.json", env=host_env(tmp_path, "b", redis_server.url))
        try:
            ask_in_threads(url_a, 2, [], [])  # both slots, for a minute
            deadline = time.monotonic() + 20
            while len(fake.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            fake.model("w", latency=0.2, text="from b")
            replies: list = []
            errors: list = []
            threads = ask_in_threads(url_b, 2, replies, errors)
            time.sleep(1.0)
            assert len(fake.requests) == 2  # b waits for a's slots
            killed_at = time.monotonic()
            a.send_signal(signal.SIGKILL)
            for thread in threads:
                thread.join(60)
            waited = time.monotonic() - killed_at
        finally:
            a.kill()
            stop(b)
        assert not errors
        assert [r["message"]["content"] for r in replies] == ["from b"] * 2
        assert waited < 10 + 3 + 2  # a's leases expire 10 s after their last renewal (every 3 s)


def test_redis_unreachable_at_start_is_one_line_and_exit_2(tmp_path):
    with FakeServer() as fake:
        fake.model("w", text="x")
        two_slot_fleet(tmp_path, fake, timeout=5)
        url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
        run = parallama("run", "q", "-c", "c.json", env={"PARALLAMA_SLOT_STORE": url})
        out, err = run.communicate(timeout=30)
    assert run.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "redis://127.0.0.1:" in lines[0] and "Redis does not answer" in lines[0]
    assert "hunter2secret" not in err
    assert not fake.requests


def test_the_config_names_the_store_and_the_environment_wins(tmp_path, redis_server):
    with FakeServer() as fake:
        fake.model("w", text="x")
        config = json.loads(two_slot_fleet(tmp_path, fake, timeout=5).read_text())
        write_config(tmp_path / "c.json", {**config, "slot_store": f"redis://127.0.0.1:{free_port()}/0"})
        refused = parallama("run", "q", "-c", "c.json", "--no-history")
        refused.communicate(timeout=30)
        ok = parallama("run", "q", "-c", "c.json", "--no-history", env={"PARALLAMA_SLOT_STORE": redis_server.url})
        _, err = ok.communicate(timeout=30)
    assert refused.returncode == 2
    assert ok.returncode == 0, err


def test_redis_lost_mid_run_says_so_once_and_goes_on(tmp_path, redis_server):
    with FakeServer(slots=1) as fake:
        fake.model("w", latency=1.0, text="still answered")
        write_config(tmp_path / "c.json", {
            "worker_agents": [worker(fake, "w", name="A", timeout=5), worker(fake, "w", name="B", timeout=5)],
            "reviewer_agent": worker(fake, "w", name="R", timeout=5)})
        run = parallama("run", "q", "-c", "c.json", "--json", "--no-history",
                        env={"PARALLAMA_SLOT_STORE": redis_server.url})
        deadline = time.monotonic() + 20
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        redis_server.stop()
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert err.count("lost") == 1 and "going on with this machine's slots" in err
    assert fake.max_in_flight == 1
    assert all(w["status"] == "ok" for w in json.loads(out)["workers"])
