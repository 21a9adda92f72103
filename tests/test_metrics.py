"""Prometheus metrics: `/metrics` on serve mid-run and after, the counters against the results, `--metrics-port` on
`run` and `batch`, and `--help` importing neither prometheus_client nor opentelemetry."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import guide_fleet, invoke, worker, write_config, write_jsonl
from fakes import FakeServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, the whole page read by Prometheus's own parser: (name, labels) → value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 when none)."""
    return sum(v for (n, ls), v in page.items() if n == name and set(labels.items()) <= set(ls))


async def scrape(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers=headers) as response:
            return response.status, await response.text()


class Waiter:
    """An event sink that lets a test wait until the events it needs have gone out."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, check, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while not check(self.events):
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout)


def count(events: list, kind: str) -> int:
    return sum(1 for e in events if type(e).__name__ == kind)


async def test_serve_mid_run_shows_the_busy_server_and_its_queue_then_the_stopped_requests(serve):
    with FakeServer(slots=1) as busy, FakeServer(slots=1) as other:
        busy.model("m", fault="hang", tokens=4)
        other.model("rev", text="never asked")
        config = {"worker_agents": [worker(busy, "m", name="A"), worker(busy, "m", name="B")],
                  "reviewer_agent": worker(other, "rev", name="Rev")}
        running = await serve(config)
        waiter = Waiter()
        running.service.client.subscribe(waiter)
        async with aiohttp.ClientSession() as session:
            async def ask() -> None:
                body = {"model": "parallama", "messages": [{"role": "user", "content": "q"}]}
                async with session.post(running.url + "/api/chat", json=body) as response:
                    await response.read()

            request = asyncio.ensure_future(ask())
            # One request sent and streaming (it hangs mid-answer), the other queued behind it for the one slot.
            await waiter.until(lambda ev: count(ev, "Queued") == 2 and count(ev, "Delta") >= 1)
            status, text = await scrape(running.url)
            assert status == 200
            page = samples(text)
            server = busy.url.replace("127.0.0.1", "localhost")
            assert value(page, "parallama_server_slots", server=server) == 1
            assert value(page, "parallama_server_requests_in_flight", server=server) == 1
            assert value(page, "parallama_server_requests_waiting", server=server) == 1
            # The default slot store is this machine's: every process sharing it, this one alone here.
            assert value(page, "parallama_server_shared_requests_in_flight", server=server, store="local") == 1
            assert value(page, "parallama_server_shared_requests_waiting", server=server, store="local") == 1
            assert value(page, "parallama_server_requests_in_flight", server=other.url.replace("127.0.0.1",
                                                                                               "localhost")) == 0
            assert value(page, "parallama_runs_in_progress") == 1
            assert value(page, "parallama_agent_requests_total") == 0
            request.cancel()  # the client leaves: its run is interrupted, both requests with it
            await waiter.until(lambda ev: count(ev, "RunEnded") == 1)
        page = samples((await scrape(running.url))[1])
        assert value(page, "parallama_agent_requests_total", outcome="stopped") == 2
        assert value(page, "parallama_agent_requests_total", outcome="stopped", agent="A") == 1
        assert value(page, "parallama_runs_total", strategy="synthesize", outcome="interrupted") == 1
        assert value(page, "parallama_server_requests_in_flight", server=server) == 0
        assert value(page, "parallama_server_requests_waiting", server=server) == 0
        assert value(page, "parallama_runs_in_progress") == 0


async def test_counters_rise_by_exactly_the_requests_made_and_match_the_json(servers):
    from parallama import FleetClient
    from parallama.observe.metrics import FleetMetrics

    config = guide_fleet(servers)
    a = servers[0]
    a.model("gone", fault="404")
    config["worker_agents"].append(worker(a, "gone", name="Gone"))
    metrics = FleetMetrics()
    async with FleetClient(config) as client:
        metrics.watch(client)
        before = samples(metrics.exposition()[0].decode())
        assert value(before, "parallama_agent_requests_total") == 0
        results = [await client.run(f"question {i}") for i in range(3)]
    # What `run --json` prints for each run.
    printed = [json.loads(json.dumps(r.to_dict())) for r in results]
    page = samples(metrics.exposition()[0].decode())
    requests = [agent for run in printed for agent in [*run["workers"], *run["review_attempts"],
                                                       *([run["review"]] if run["review"] else [])]]
    assert len(requests) == 3 * 4
    assert value(page, "parallama_agent_requests_total") == len(requests)
    assert value(page, "parallama_agent_requests_total", outcome="done") == sum(r["status"] == "ok" for r in requests)
    assert value(page, "parallama_agent_requests_total", outcome="failed", error_kind="model_not_found",
                 agent="Gone") == 3
    assert value(page, "parallama_agent_requests_total", outcome="done", agent="Rev", model="rev") == 3
    assert value(page, "parallama_agent_input_tokens_total") == sum(r["prompt_tokens"] or 0 for r in requests)
    assert value(page, "parallama_agent_output_tokens_total") == sum(
        (r["completion_tokens"] or 0) + (r["thinking_tokens"] or 0) for r in requests)
    assert value(page, "parallama_agent_time_to_first_token_seconds_count") == sum(
        r["status"] == "ok" for r in requests)
    assert value(page, "parallama_agent_request_duration_seconds_count", agent="A") == 3
    assert value(page, "parallama_server_slot_wait_seconds_count") == len(requests)
    assert value(page, "parallama_runs_total", strategy="synthesize", outcome="answered") == sum(
        run["final"] is not None for run in printed) == 3
    assert value(page, "parallama_run_duration_seconds_count", strategy="synthesize") == 3
    assert value(page, "parallama_runs_in_progress") == 0


async def test_vote_settled_early_and_a_reviewer_that_fell_back_are_counted(servers):
    from parallama import FleetClient
    from parallama.observe.metrics import FleetMetrics

    a, b, c = servers
    a.model("m", text="It is 4.")
    b.model("m", text="4")
    c.model("slow", latency=30, text="4")
    c.model("rev", fault="500")
    vote = {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B"), worker(c, "slow", name="C")],
            "review": {"strategy": "vote"}}
    metrics = FleetMetrics()
    async with FleetClient(vote) as client:
        metrics.watch(client)
        result = await client.run("2+2?")
    assert result.cut == ["C"]
    page = samples(metrics.exposition()[0].decode())
    assert value(page, "parallama_runs_settled_early_total", strategy="vote") == 1
    assert value(page, "parallama_runs_partial_total", strategy="vote") == 1
    assert value(page, "parallama_agent_requests_total", outcome="cut", agent="C") == 1

    broken_reviewer = {"worker_agents": [worker(a, "m", name="A")], "reviewer_agent": worker(c, "rev", name="Rev")}
    metrics = FleetMetrics()
    async with FleetClient(broken_reviewer) as client:
        metrics.watch(client)
        result = await client.run("2+2?")
    assert result.final_source == "worker:A"
    page = samples(metrics.exposition()[0].decode())
    assert value(page, "parallama_runs_reviewer_fell_back_total", strategy="synthesize") == 1
    assert value(page, "parallama_agent_requests_total", outcome="failed", error_kind="http_status", agent="Rev") == 1


async def test_metrics_are_behind_the_key_off_other_sites_and_hold_no_prompt_nor_key(serve, servers, monkeypatch):
    monkeypatch.setenv("WORKER_KEY", "sk-worker-secret-1234567890")
    config = guide_fleet(servers)
    config["worker_agents"][0]["api_key_env"] = "WORKER_KEY"
    config["worker_agents"][1]["api_url"] = servers[1].url.replace("http://", "http://user:hunter2-url-pw@") + "/api/chat"
    running = await serve(config, api_key="serve-secret-key-0987654321")
    assert (await scrape(running.url))[0] == 401
    auth = {"Authorization": "Bearer serve-secret-key-0987654321"}
    async with aiohttp.ClientSession(headers=auth) as session:
        async with session.post(running.url + "/v1/chat/completions", json={
                "model": "parallama", "messages": [{"role": "user", "content": "the secret prompt words"}]}) as r:
            assert r.status == 200
    status, text = await scrape(running.url, **auth)
    assert status == 200
    assert (await scrape(running.url, Origin="https://evil.example", **auth))[0] == 403
    page = samples(text)  # the whole page parses
    assert all(name.startswith("parallama_") for name, _ in page)
    assert value(page, "parallama_agent_requests_total", outcome="done") == 3
    for secret in ("secret prompt", "sk-worker-secret", "serve-secret-key", "Alpha says", "hunter2", "user:"):
        assert secret not in text
    assert value(page, "parallama_server_slots", server=servers[1].url.replace("127.0.0.1", "localhost")) == 1


async def test_serve_without_metrics_has_no_route(serve, servers):
    running = await serve(guide_fleet(servers), metrics=False)
    assert (await scrape(running.url))[0] == 404


def test_help_imports_neither_prometheus_nor_opentelemetry():
    code = ("import sys\nfrom parallama.cli import cli\n"
            "for args in (['--help'], ['serve', '--help'], ['batch', '--help'], ['run', '--help']):\n"
            "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prometheus_client', 'opentelemetry'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}).stdout
    assert out.strip().endswith("[]")


def read_metrics_url(process: subprocess.Popen) -> tuple[str, list[str]]:
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        found = re.search(r"metrics: (http://\S+)/metrics", line)
        if found:
            return found.group(1), lines
    raise AssertionError("no metrics line:\n" + "".join(lines))


def scrape_until(url: str, check, timeout: float = 30.0) -> dict:
    """Scrape until the page shows what `check` waits for (the process's state, read through its own metrics)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        page = samples(urllib.request.urlopen(url + "/metrics", timeout=5).read().decode())
        if check(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def test_run_metrics_port_shows_the_run_as_it_stands(tmp_path):
    with FakeServer(slots=1) as busy:
        busy.model("m", fault="hang", tokens=4)
        config = write_config(tmp_path / "c.json", {"worker_agents": [
            worker(busy, "m", name="A", timeout=10), worker(busy, "m", name="B", timeout=10)]})
        process = subprocess.Popen([sys.executable, "-m", "parallama", "run", "q", "-c", str(config), "--no-review",
                                    "--no-history", "--json", "--metrics-port", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url, _ = read_metrics_url(process)
            assert url.startswith("http://127.0.0.1:")
            server = busy.url.replace("127.0.0.1", "localhost")
            page = scrape_until(url, lambda p: value(p, "parallama_server_requests_in_flight", server=server) == 1
                                and value(p, "parallama_server_requests_waiting", server=server) == 1)
            assert value(page, "parallama_server_requests_in_flight", server=server) == 1
            assert value(page, "parallama_server_requests_waiting", server=server) == 1
            assert value(page, "parallama_server_slots", server=server) == 1
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 1, err
        assert [w["status"] for w in json.loads(out)["workers"]] == ["timeout", "timeout"]


def test_batch_metrics_port_warns_beyond_loopback_and_refuses_a_bad_value(tmp_path, servers):
    config = write_config(tmp_path / "c.json", guide_fleet(servers))
    prompts = write_jsonl(tmp_path / "in.jsonl", [{"id": "1", "prompt": "2+2?"}])
    done = subprocess.run([sys.executable, "-m", "parallama", "batch", str(prompts), "-c", str(config),
                           "-o", str(tmp_path / "out.jsonl"), "--metrics-port", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"metrics: http://0\.0\.0\.0:\d+/metrics", done.stderr)
    assert "warning: metrics on http://0.0.0.0:" in done.stderr and "reach other machines" in done.stderr
    result = invoke("batch", str(prompts), "-c", str(config), "--metrics-port", "nine")
    assert result.exit_code == 2
    assert "'nine' is not a port" in result.output


def test_metrics_port_in_use_is_one_line(tmp_path, servers):
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        config = write_config(tmp_path / "c.json", guide_fleet(servers))
        result = invoke("run", "q", "-c", str(config), "--no-history", "--metrics-port", str(port))
    finally:
        holder.close()
    assert result.exit_code == 2
    assert f"error: cannot serve metrics on http://127.0.0.1:{port}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("store", ["local", "redis"])
async def test_shared_gauges_count_the_other_process_on_the_same_slots(tmp_path, monkeypatch, store):
    """Another parallama process (a `run`; with Redis, as on another host: its own state directory) holds the 1-slot
    server: this process's request waits for it; the shared gauges count both processes, this process's gauges its
    own alone."""
    import os

    env = dict(os.environ)
    redis = None
    if store == "redis":
        from conftest import RedisServer, host_env

        redis = RedisServer(tmp_path / "redis")
        env.update(host_env(tmp_path, "other-host", redis.url))
        monkeypatch.setenv("PARALLAMA_SLOT_STORE", redis.url)
    try:
        await _shared_gauges(tmp_path, env, store)
    finally:
        if redis is not None:
            redis.stop()


async def _shared_gauges(tmp_path, env, store) -> None:
    from parallama import FleetClient
    from parallama.observe.metrics import FleetMetrics

    with FakeServer(slots=1) as busy:
        busy.model("m", fault="hang", tokens=4)
        config = {"worker_agents": [worker(busy, "m", name="A", timeout=30)]}
        other = subprocess.Popen([sys.executable, "-m", "parallama", "run", "q", "-c",
                                  str(write_config(tmp_path / "c.json", config)), "--no-review", "--no-history",
                                  "--metrics-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        try:
            url, _ = await asyncio.to_thread(read_metrics_url, other)
            server = busy.url.replace("127.0.0.1", "localhost")
            await asyncio.to_thread(scrape_until, url, lambda p: value(
                p, "parallama_server_requests_in_flight", server=server) == 1)
            metrics = FleetMetrics()
            async with FleetClient(config) as client:
                metrics.watch(client)
                waiter = Waiter()
                run = asyncio.ensure_future(client.run("q", review=False, on_event=waiter))
                await waiter.until(lambda ev: count(ev, "Queued") == 1)
                for _ in range(400):  # the local store's counts are read from its files: until they show both
                    page = samples(metrics.exposition()[0].decode())
                    if value(page, "parallama_server_shared_requests_waiting", server=server) == 1 and value(
                            page, "parallama_server_shared_requests_in_flight", server=server) == 1:
                        break
                    await asyncio.sleep(0.01)
                assert value(page, "parallama_server_requests_in_flight", server=server) == 0
                assert value(page, "parallama_server_requests_waiting", server=server) == 1
                assert value(page, "parallama_server_shared_requests_in_flight", server=server, store=store) == 1
                assert value(page, "parallama_server_shared_requests_waiting", server=server, store=store) == 1
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        finally:
            other.kill()
            other.wait()


async def test_a_pools_dead_replica_reads_benched_and_the_live_one_took_the_requests():
    from parallama import FleetClient
    from parallama.observe.metrics import FleetMetrics

    with FakeServer(slots=1) as live, FakeServer(slots=1) as dead:
        live.model("m", text="four")
        dead.model("m")
        dead_url = dead.url
        dead.close()  # nothing listens there any more: refused before the first token
        config = {"worker_agents": [{"name": "P", "api_url": [dead_url, live.url], "model": "m"}]}
        metrics = FleetMetrics()
        async with FleetClient(config) as client:
            metrics.watch(client)
            results = [await client.run("q", review=False) for _ in range(3)]
            assert all(r.workers[0].ok for r in results)
            page = samples(metrics.exposition()[0].decode())
    dead_server, live_server = (u.replace("127.0.0.1", "localhost") for u in (dead_url, live.url))
    assert value(page, "parallama_server_benched", server=dead_server) == 1
    assert value(page, "parallama_server_benched", server=live_server) == 0
    assert value(page, "parallama_agent_requests_total", agent="P", outcome="done") == 3
    assert value(page, "parallama_server_slot_wait_seconds_count", server=live_server) == 3
    assert value(page, "parallama_server_benchings_total", server=dead_server) == 1
    assert value(page, "parallama_pool_requests_total", pool=f"{dead_server} {live_server}") == 3
    assert value(page, "parallama_pool_hedges_total") == 0


def test_serve_names_its_metrics_at_start_and_scrapes_leave_no_access_log_line(tmp_path, servers):
    import signal
    import urllib.error
    import urllib.request

    from conftest import banner_of

    write_config(tmp_path / "c.json", guide_fleet(servers))
    key = "sk-metrics-cli-0123456789"
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", "-c", "c.json",
                                "--no-history", "--api-key-env", "SERVE_KEY"], stderr=subprocess.PIPE, text=True,
                               env={**__import__("os").environ, "SERVE_KEY": key})
    try:
        banner = "".join(banner_of(process))
        found = re.search(r"Metrics     (http://127\.0\.0\.1:\d+)/metrics  \(with Authorization: Bearer \$SERVE_KEY\)",
                          banner)
        assert found, banner
        url = found.group(1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/metrics", timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {key}"})
        page = samples(urllib.request.urlopen(request, timeout=30).read().decode())
        assert value(page, "parallama_server_slots") == 3
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert '"GET /metrics HTTP/1.1" 401' in err  # the refused scrape is logged, the answered one is not
    assert '"GET /metrics HTTP/1.1" 200' not in err
    assert key not in banner + err


async def test_an_agent_asked_alone_counts_its_request_not_a_run(serve, servers):
    running = await serve(guide_fleet(servers))
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/api/chat", json={
                "model": "parallama/A", "messages": [{"role": "user", "content": "title?"}], "stream": False}) as r:
            assert r.status == 200
    page = samples((await scrape(running.url))[1])
    assert value(page, "parallama_agent_requests_total", agent="A", outcome="done") == 1
    assert value(page, "parallama_agent_requests_total") == 1
    assert value(page, "parallama_runs_total") == 0


async def test_an_agent_asked_alone_and_stopped_counts_as_stopped_and_leaves_nothing_open():
    from parallama import FleetClient
    from parallama.backends import Message
    from parallama.observe.metrics import FleetMetrics

    with FakeServer(slots=1) as hanging:
        hanging.model("m", fault="hang", tokens=4)
        metrics = FleetMetrics()
        async with FleetClient({"worker_agents": [worker(hanging, "m", name="A")]}) as client:
            metrics.watch(client)
            waiter = Waiter()
            client.subscribe(waiter)
            asked = asyncio.ensure_future(client.ask_agent(client.fleet.workers[0],
                                                           [Message(role="user", content="q")]))
            await waiter.until(lambda ev: count(ev, "Delta") >= 1)
            asked.cancel()
            await asyncio.gather(asked, return_exceptions=True)
            await waiter.until(lambda ev: count(ev, "RunEnded") == 1)
        page = samples(metrics.exposition()[0].decode())
    assert value(page, "parallama_agent_requests_total", agent="A", outcome="stopped") == 1
    assert value(page, "parallama_runs_total") == 0
    assert not metrics._open and not metrics._framed
