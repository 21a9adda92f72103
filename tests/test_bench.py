"""`parallama bench`: sequential never overlaps, parallel does, and the speedup is computed right."""

from __future__ import annotations

import json
import os

import pytest

from conftest import invoke, run_process, worker, write_config
from fakes import FakeServer
from parallama.bench import WARMUP_PROMPT, bench, ideal_makespan
from parallama.config import load_config

LATENCIES = {"A": 0.6, "B": 0.4, "C": 0.5}


def three_server_config(tmp_path, servers):
    for fake, latency in zip(servers, LATENCIES.values()):
        fake.model("m", latency=latency, tokens=10)
    return write_config(tmp_path / "c.json", {"worker_agents": [
        worker(fake, "m", name=name) for fake, name in zip(servers, LATENCIES)]})


def chat_records(servers):
    return sorted((r for s in servers for r in s.requests if r.messages[-1]["content"] != WARMUP_PROMPT),
                  key=lambda r: r.arrived)


async def test_sequential_never_overlaps_and_parallel_does(tmp_path, servers):
    fleet = load_config(three_server_config(tmp_path, servers))
    result = await bench(fleet, ["hi"], repeat=1)
    warmups = [r for s in servers for r in s.requests if r.messages[-1]["content"] == WARMUP_PROMPT]
    assert len(warmups) == 3  # one per model and server, before the measured runs
    records = chat_records(servers)
    assert len(records) == 6
    sequential, parallel = records[:3], records[3:]
    for before, after in zip(sequential, sequential[1:]):
        assert after.arrived >= before.ended  # one at a time
    assert max(r.arrived for r in parallel) < min(r.ended for r in parallel)  # all at once
    assert result.sequential.makespan_s == pytest.approx(sum(LATENCIES.values()), abs=0.25)
    assert result.parallel.makespan_s == pytest.approx(max(LATENCIES.values()), abs=0.2)


async def test_speedup_on_known_latencies(tmp_path, servers):
    fleet = load_config(three_server_config(tmp_path, servers))
    result = await bench(fleet, ["hi"], repeat=2)
    assert result.ideal_speedup == pytest.approx(1.5 / 0.6, rel=0.15)
    assert result.speedup == pytest.approx(result.sequential.makespan_s / result.parallel.makespan_s, rel=0.01)
    assert result.speedup == pytest.approx(2.5, rel=0.3)  # load slows one mode more than the other
    assert [a.latency_s for a in result.sequential.agents] == pytest.approx(list(LATENCIES.values()), abs=0.25)
    assert result.flags == []


def test_ideal_makespan_follows_the_slots(tmp_path):
    data = {"worker_agents": [{"name": n, "api_url": f"http://localhost:{p}", "model": "m"}
                              for n, p in (("A", 1), ("B", 1), ("C", 1), ("D", 2))],
            "servers": {"http://localhost:1": {"parallel": 2}}}
    fleet = load_config(write_config(tmp_path / "c.json", data))
    # Server 1, two lanes in config order: A (3) | B (1) then C (2) → 3; server 2: D (1).
    assert ideal_makespan({"A": 3, "B": 1, "C": 2, "D": 1}, fleet) == 3
    assert ideal_makespan({"A": 1, "B": 1, "C": 1, "D": 5}, fleet) == 5


async def test_a_server_with_fewer_real_slots_is_flagged(tmp_path):
    with FakeServer(slots=1) as fake:  # the server takes one request at a time …
        fake.model("m", latency=0.4, tokens=8)
        fleet = load_config(write_config(tmp_path / "c.json", {
            "worker_agents": [worker(fake, "m", name=n) for n in "ABC"],
            "servers": {fake.url: {"parallel": 3}}}))  # … but the config says three
        result = await bench(fleet, ["hi"], repeat=1)
    assert result.ideal_speedup == pytest.approx(3.0, rel=0.1)
    assert result.speedup < 1.3
    assert any("slower than it should be" in f for f in result.flags)
    assert any("queued requests" in f and "OLLAMA_NUM_PARALLEL" in f for f in result.flags)


async def test_two_servers_that_are_one_process_are_flagged(tmp_path):
    with FakeServer(slots=1, extra_ports=1) as fake:  # one server, one slot, listening on two ports
        # Long requests: the ideal (1 + the shorter's latency / the longer's) stays near 2 when a busy machine adds
        # a few tenths of a second to one of them (at 0.4 s a request it read 1.77).
        fake.model("m", latency=1.0, tokens=8)
        urls = [fake.url, fake.other_urls[0]]
        fleet = load_config(write_config(tmp_path / "c.json", {
            "worker_agents": [{"name": f"w{i}", "api_url": url, "model": "m"} for i, url in enumerate(urls)]}))
        result = await bench(fleet, ["hi"], repeat=1)
    assert result.ideal_speedup == pytest.approx(2.0, abs=0.3)  # two 1-slot servers, as the config says
    assert result.speedup < 1.3
    same = [f for f in result.flags if "are the same process" in f]
    assert len(same) == 1
    assert all(url.replace("127.0.0.1", "localhost") in same[0] for url in urls)


async def test_a_single_one_slot_server_allows_no_speedup(tmp_path, server):
    server.model("m", latency=0.2)
    fleet = load_config(write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")] * 2}))
    result = await bench(fleet, ["hi"], repeat=1)
    assert result.ideal_speedup == pytest.approx(1.0, abs=0.05)
    assert any("allows no speedup" in f for f in result.flags)


def test_bench_cli_json_and_plot(tmp_path, servers):
    three_server_config(tmp_path, servers)
    (tmp_path / "prompts.txt").write_text("first prompt\n\nsecond prompt\n")
    result = invoke("bench", "-c", "c.json", "--prompts", "prompts.txt", "--repeat", "1", "--json",
                    "--plot", "t.png")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"prompts", "repeat", "warmup", "sequential", "parallel", "speedup", "ideal_speedup", "flags",
            "timelines"} <= set(data)
    assert data["prompts"] == ["first prompt", "second prompt"]
    for mode in ("sequential", "parallel"):
        assert {"makespan_s", "makespan_min_s", "makespan_max_s", "agents"} <= set(data[mode])
        assert {"name", "latency_s", "ttft_s", "tokens_per_s", "failures"} <= set(data[mode]["agents"][0])
        assert [s["agent"] for s in data["timelines"][mode]] == ["A", "B", "C"]
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "t.png").stat().st_size > 5000
    assert "[" in result.stderr and "done" in result.stderr  # progress lines on a non-terminal stderr
    sent = [r.messages[-1]["content"] for s in servers for r in s.requests]
    assert sent.count("first prompt") == 6 and sent.count("second prompt") == 6  # 3 workers × 2 modes


def test_bench_table(tmp_path, servers):
    three_server_config(tmp_path, servers)
    result = invoke("bench", "-c", "c.json", "--repeat", "1")
    assert result.exit_code == 0
    assert "speedup" in result.stdout and "sequential" in result.stdout and "parallel" in result.stdout
    assert "warm-up" in result.stdout


def test_bench_piped_keeps_each_agent_on_one_line(tmp_path, servers):
    """Piped into a file or `less`, the per-agent table is not cut to 80 columns: each agent's row and the header
    stay whole lines that a script (or a reader) can take apart by column."""
    three_server_config(tmp_path, servers)
    done = run_process("bench", "-c", str(tmp_path / "c.json"), "--repeat", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [header] = [line for line in lines if line.lstrip().startswith("agent")]
    assert header.split() == ["agent", "latency", "seq", "latency", "par", "TTFT", "seq", "TTFT", "par", "tok/s",
                              "seq", "tok/s", "par", "failed"]
    rows = [line.split() for line in lines if line.split()[:1] in (["A"], ["B"], ["C"])]
    assert [row[0] for row in rows] == ["A", "B", "C"] and all(len(row) == 8 for row in rows), rows
    assert "\x1b[" not in done.stdout  # no colour codes in a file


def test_bench_bad_usage(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    both = invoke("bench", "--prompt", "a", "--prompts", "empty.txt")
    assert both.exit_code == 2 and "not both" in both.stderr
    write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": "http://localhost:1", "model": "m"}]})
    result = invoke("bench", "-c", "c.json", "--prompts", "empty.txt")
    assert result.exit_code == 2 and "no prompts" in result.stderr


def test_plot_without_matplotlib_is_refused_before_the_benchmark(tmp_path, servers):
    """With matplotlib not importable (a stand-in package that fails to import, first on the path), `bench --plot`
    fails at once with the extra to install, and no request is sent: no benchmark is run and thrown away."""
    three_server_config(tmp_path, servers)
    broken = tmp_path / "no-matplotlib" / "matplotlib"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    path = os.pathsep.join([str(broken.parent), os.environ.get("PYTHONPATH", "")])
    proc = run_process("bench", "-c", "c.json", "--plot", "t.png", env={"PYTHONPATH": path})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: --plot needs matplotlib (No module named 'matplotlib'): "
                                   "pip install 'parallama[plot]'")
    assert all(not s.requests for s in servers) and not (tmp_path / "t.png").exists()
    # An unwritable plot path, likewise, before anything is sent.
    (tmp_path / "a-file").write_text("")
    result = invoke("bench", "-c", "c.json", "--plot", "a-file/t.png")
    assert result.exit_code == 2 and result.stderr.startswith("error: --plot a-file/t.png: cannot write there (")
    assert all(not s.requests for s in servers)


def test_prompts_file_that_is_not_utf8_is_a_usage_error(tmp_path, servers):
    three_server_config(tmp_path, servers)
    (tmp_path / "prompts.txt").write_bytes(b"first prompt\ncaf\xe9 au lait?\n")
    result = invoke("bench", "-c", "c.json", "--prompts", "prompts.txt")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --prompts prompts.txt:2: not UTF-8 text (byte 0xe9); save it as UTF-8")
    assert all(not s.requests for s in servers)
