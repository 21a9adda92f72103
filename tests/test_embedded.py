"""Against the real engine: llama.cpp's server from llama-cpp-python on the GGUF shipped on PyPI.

These start real server processes (about 1–2 s each) and generate real tokens. They need the `[embedded]`
extra, which the README's test command installs; they are skipped only outside CI when it is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import invoke
from parallama.engines.llama_cpp import llama_cpp_available
from parallama.engines.state import InstanceStore

if not llama_cpp_available() and not os.environ.get("CI"):
    pytest.skip("needs pip install '.[embedded]'", allow_module_level=True)


def llama_servers() -> list[psutil.Process]:
    """llama.cpp server processes started from this test's state directory's runs."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if "llama_cpp.server" in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


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
        # Threads split between instances: cores ÷ 2, at least 1; no interrupting of in-flight streams.
        for pid in pids:
            cmd = psutil.Process(pid).cmdline()
            assert cmd[cmd.index("--interrupt_requests") + 1] == "False"
            assert cmd[cmd.index("--n_threads") + 1] == str(max(1, (os.cpu_count() or 1) // 2))

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

        # With no config, the demo fleet reuses the two instances already up and starts only the third.
        before = {p.pid for p in llama_servers()}
        demo = invoke("run", "Name a primary colour.", "--json")
        assert demo.exit_code == 0, demo.stderr
        assert "reusing 2 instance(s)" in demo.stderr
        assert len(json.loads(demo.stdout)["workers"]) == 3
        assert {p.pid for p in llama_servers()} == before  # its own third instance is gone, ours still run
        assert all(not gone(pid) for pid in pids)
    finally:
        down = invoke("down", "--all")
    assert down.exit_code == 0
    assert all(gone(pid) for pid in pids)
    assert InstanceStore().load() == []


def test_embedded_default_with_no_config(tmp_path):
    """The README's first command: no config anywhere, no Ollama; a real multi-agent run on the tiny model."""
    before = {p.pid for p in llama_servers()}
    proc = subprocess.run([sys.executable, "-m", "parallama", "run", "Why is the sky blue?", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "embedded demo fleet" in proc.stderr
    data = json.loads(proc.stdout)
    assert len(data["workers"]) == 3
    for worker in data["workers"]:
        assert worker["status"] == "ok", worker
        assert worker["content"].strip()
    assert data["final_source"] == "review" and data["final"].strip()
    # The instances it started are stopped: no llama.cpp server is left behind.
    time.sleep(0.5)
    assert {p.pid for p in llama_servers()} <= before


def test_ctrl_c_during_embedded_run_stops_its_instances(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "Write a long story about a dragon."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 120
    started: list[int] = []
    while time.time() < deadline and len(started) < 3:
        started = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)
                   if "llama_cpp.server" in " ".join(p.cmdline())]
        time.sleep(0.2)
    assert len(started) == 3
    time.sleep(2.5)  # servers up, requests in flight
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert all(gone(pid) for pid in started)
