"""`up`/`status`/`down`/`pull`/`compose` with real processes: a stand-in `ollama` executable first on PATH."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import invoke
from fakes import free_port
from parallama.engines.state import Instance, InstanceStore

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Put a stand-in `ollama` first on PATH; return the folder where each instance records its env/args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "ollama"
    launcher.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(TESTS / 'stand_in_ollama.py')!r}\n"
                        f"runpy.run_path(sys.argv[0], run_name='__main__')\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "records"
    monkeypatch.setenv("STAND_IN_RECORD_DIR", str(record))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "shared-models"))
    yield record
    invoke("down", "--all")


def base_port() -> int:
    """A port with a few free ones after it."""
    while True:
        port = free_port()
        if port < 60000 and all(_free(p) for p in range(port, port + 4)):
            return port


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_status_down_ollama_instances(stand_in, tmp_path):
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "2", "--base-port", str(port), "--parallel", "3",
                    "--model", "llama3.2:1b", "--write-config", "fleet.json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [f"http://127.0.0.1:{port}/api/chat", f"http://127.0.0.1:{port + 1}/api/chat"]

    records = [json.loads((stand_in / f"{p}.json").read_text()) for p in (port, port + 1)]
    assert [r["argv"] for r in records] == [["serve"], ["serve"]]
    assert [r["env"]["OLLAMA_HOST"] for r in records] == [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
    assert {r["env"]["OLLAMA_NUM_PARALLEL"] for r in records} == {"3"}
    # One models directory for every instance: a model is downloaded once.
    assert {r["env"]["OLLAMA_MODELS"] for r in records} == {str(tmp_path / "shared-models")}

    status = json.loads(invoke("status", "--json").stdout)["instances"]
    assert [(i["url"], i["alive"]) for i in status] == [(f"http://127.0.0.1:{port}", True),
                                                        (f"http://127.0.0.1:{port + 1}", True)]
    assert all(i["rss_bytes"] > 0 for i in status)

    # The written config is one `run` accepts, and it runs against the instances.
    config = json.loads((tmp_path / "fleet.json").read_text())
    assert config["servers"] == {f"http://127.0.0.1:{port}": {"parallel": 3},
                                 f"http://127.0.0.1:{port + 1}": {"parallel": 3}}
    ran = invoke("run", "hi", "-c", "fleet.json", "--json")
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["final_source"] == "review"
    # One worker per slot (2 instances × 3), each different (system prompt, temperature, seed), each with a token
    # cap: copies would answer alike.
    workers = config["worker_agents"]
    assert [w["api_url"] for w in workers] == [f"http://127.0.0.1:{port}/api/chat"] * 3 + [
        f"http://127.0.0.1:{port + 1}/api/chat"] * 3
    assert len({w["system"] for w in workers}) == 4 and all(w["system"] for w in workers)
    assert len({(w["options"]["temperature"], w["options"]["seed"]) for w in workers}) == 6
    assert all(w["options"]["num_predict"] > 0 for w in workers)
    assert config["reviewer_agent"]["options"]["num_predict"] > 0

    pids = [r["pid"] for r in records]
    result = invoke("down", "--all")
    assert result.exit_code == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert json.loads(invoke("status", "--json").stdout)["instances"] == []


def test_busy_port_is_named_and_skipped(stand_in):
    port = base_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port))
        assert result.exit_code == 0, result.stderr
        assert f"port {port} is in use by" in result.stderr and f"pid {os.getpid()}" in result.stderr
        assert result.stdout.strip() == f"http://127.0.0.1:{port + 1}/api/chat"

        strict = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port), "--strict-ports")
        assert strict.exit_code == 2
        assert f"port {port} is in use" in strict.stderr


def test_server_that_crashes_at_start_is_named_by_its_signal(stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_MODE", "crash")
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(base_port()))
    assert result.exit_code == 1
    assert "crashed (SIGSEGV) before it was ready" in result.stderr and "see " in result.stderr
    assert json.loads(invoke("status", "--json").stdout)["instances"] == []


def test_missing_ollama_binary_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = invoke("up", "--engine", "ollama", "-n", "1")
    assert result.exit_code == 2
    assert "`ollama` command was not found" in result.stderr and "ollama.com" in result.stderr


def test_health_timeout_names_the_log_and_leaves_nothing_running(stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_MODE", "mute")
    port = base_port()
    # The timeout is no speed claim: it only has to outlast the stand-in's start (a Python process that writes its
    # log line before any heavy import: well under a second even at load 25 on two cores), so the line is there.
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port), "--ready-timeout", "5")
    assert result.exit_code == 1
    assert "did not answer" in result.stderr and f"ollama-{port}.log" in result.stderr
    assert "never finishing" in result.stderr  # the log's last lines are shown
    pid = json.loads((stand_in / f"{port}.json").read_text())["pid"]
    # `up` returns only once the process it stopped has ended (and is reaped): nothing to wait for here.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert json.loads(invoke("status", "--json").stdout)["instances"] == []


def test_a_port_taken_just_before_the_server_binds_it_is_passed_over(stand_in, monkeypatch):
    """Another server takes the port between `up`'s look and its server's bind (two `up`s, or two demo runs, starting
    at once): its answers on that port are not taken for ours, the port is said busy, and the server is started again
    on the next free one; the other server is left alone."""
    monkeypatch.setenv("STAND_IN_MODE", "lose-port")
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port))
    holder = json.loads((stand_in / "holder" / f"{port}.json").read_text())["pid"]
    try:
        assert result.exit_code == 0, result.stderr
        assert f"port {port} is in use by" in result.stderr and f"pid {holder}" in result.stderr
        assert result.stdout.strip() == f"http://127.0.0.1:{port + 1}/api/chat"
        [instance] = json.loads(invoke("status", "--json").stdout)["instances"]
        assert (instance["url"], instance["alive"]) == (f"http://127.0.0.1:{port + 1}", True)
        assert instance["pid"] == json.loads((stand_in / f"{port + 1}.json").read_text())["pid"]
        assert invoke("down", "--all").exit_code == 0
        assert psutil.Process(holder).status() != psutil.STATUS_ZOMBIE  # not ours: still serving
    finally:
        os.kill(holder, signal.SIGTERM)


def test_stale_pid_is_detected_and_cleaned():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    InstanceStore().add(Instance(engine="ollama", pid=dead.pid, host="127.0.0.1", port=11999, model="x",
                                 log="/dev/null", create_time=time.time() - 100))
    result = invoke("status")
    assert "dead" in result.stdout and "11999" in result.stdout and "removed" in result.stdout
    assert InstanceStore().load() == []


def test_down_needs_a_target():
    result = invoke("down")
    assert result.exit_code == 2 and "--all" in result.stderr


def test_binding_elsewhere_warns(stand_in):
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port), "--host", "0.0.0.0")
    assert result.exit_code == 0, result.stderr
    assert "warning: binding to 0.0.0.0" in result.stderr and "no authentication" in result.stderr


def test_binding_to_any_loopback_address_does_not_warn(stand_in):
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port), "--host", "127.0.0.2")
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr and f"http://127.0.0.2:{port}" in result.stdout + result.stderr


def test_pull_through_an_instance_with_progress(stand_in):
    port = base_port()
    assert invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port)).exit_code == 0
    result = invoke("pull", "qwen2.5:0.5b")
    assert result.exit_code == 0, result.stderr
    assert "success" in result.stderr
    failed = invoke("pull", "missing-model")
    assert failed.exit_code == 1 and "file does not exist" in failed.stderr


def test_compose_file(tmp_path):
    result = invoke("compose", "-n", "3", "--gpu", "-o", "dc.yml")
    assert result.exit_code == 0
    doc = yaml.safe_load((tmp_path / "dc.yml").read_text())
    services = doc["services"]
    assert len(services) == 3
    assert [s["ports"] for s in services.values()] == [["127.0.0.1:11434:11434"], ["127.0.0.1:11435:11434"],
                                                       ["127.0.0.1:11436:11434"]]
    assert all(s["image"] == "ollama/ollama" and s["restart"] == "unless-stopped" for s in services.values())
    assert {v for s in services.values() for v in s["volumes"]} == {"ollama-models:/root/.ollama"}
    assert "ollama-models" in doc["volumes"]
    assert all(s["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
               for s in services.values())
    plain = invoke("compose", "-n", "1", "-o", "plain.yml")
    assert plain.exit_code == 0
    assert "deploy" not in yaml.safe_load((tmp_path / "plain.yml").read_text())["services"]["ollama1"]


def _damage(path: Path, kind: str) -> None:
    """What a crash, a careless edit or another program may leave in place of the instances file."""
    if kind == "directory":
        path.unlink()
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    elif kind == "pid of the wrong type":
        data = json.loads(path.read_text())
        data["instances"][0]["pid"] = str(data["instances"][0]["pid"])
        path.write_text(json.dumps(data))
    else:
        path.write_text({"a list": "[1, 2]", "null": "null", "instances not a list": '{"instances": "x"}',
                         "garbage": '{"instances": [{"engine": "ollama", "pid": 12'}[kind])


DAMAGE = {  # kind → what the warning says about it
    "a list": 'is not a record of instances (expected {"instances": [...]}, found list)',
    "null": 'is not a record of instances (expected {"instances": [...]}, found NoneType)',
    "instances not a list": 'is not a record of instances (expected {"instances": [...]}, found "instances": str)',
    "garbage": "is not JSON (Expecting",
    "directory": "is a directory, not parallama's record of instances",
    "pid of the wrong type": ": instances[0].pid: Input should be a valid integer; that entry is left out",
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_instances_file_is_said_and_the_running_instances_found_again(stand_in, kind):
    """status and down on a damaged record: a warning naming the file and what is wrong, the damaged file kept
    aside, both live instances found by their command line, log and port — and `down --all` stops them."""
    port = base_port()
    assert invoke("up", "--engine", "ollama", "-n", "2", "--base-port", str(port)).exit_code == 0
    pids = [json.loads((stand_in / f"{p}.json").read_text())["pid"] for p in (port, port + 1)]
    store = InstanceStore()
    _damage(store.path, kind)
    damaged = None if kind == "directory" else store.path.read_bytes()

    status = invoke("status")
    assert status.exit_code == 0 and "Traceback" not in status.stderr
    [warning] = [line for line in status.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {store.path}") and DAMAGE[kind] in warning
    aside = store.path.with_name("instances.json.damaged-1")
    assert f"the damaged file is kept as {aside}" in warning
    if kind == "directory":
        assert (aside / "notes.txt").read_text() == "mine"
    else:
        assert aside.read_bytes() == damaged  # nothing lost
    # Found again by their processes: both, or the one whose entry was left out.
    found = [(port, pids[0])] + ([] if kind == "pid of the wrong type" else [(port + 1, pids[1])])
    assert warning.endswith("instances found running by their command line and port: " +
                            ", ".join(f"http://127.0.0.1:{p} (pid {pid})" for p, pid in found))
    alive = sorted(line.split()[1] for line in status.stdout.splitlines() if line.startswith("alive"))
    assert alive == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    # The record is sound again: a second look says nothing more.
    assert "warning" not in invoke("status").stderr

    down = invoke("down", "--all")
    assert down.exit_code == 0
    assert sorted(line for line in down.stderr.splitlines()) == sorted(
        f"stopped http://127.0.0.1:{p} (pid {pid})" for p, pid in zip((port, port + 1), pids))
    time.sleep(0.2)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_a_recorded_pid_that_is_not_ours_is_never_signalled(tmp_path):
    """A foreign process under a recorded pid — no start time on record, another start time, another command
    line: `down --all` leaves it running, says why, and forgets the record."""
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    foreign = [subprocess.Popen(command) for _ in range(3)]
    try:
        # Popen returns before the kernel has put the new program's arguments in place (a loaded machine shows an
        # empty command line for a while): wait until each one runs its command, as a long-lived process would.
        deadline = time.monotonic() + 60
        while any(psutil.Process(p.pid).cmdline() != command for p in foreign):
            assert time.monotonic() < deadline, [psutil.Process(p.pid).cmdline() for p in foreign]
            time.sleep(0.01)
        started = [psutil.Process(p.pid).create_time() for p in foreign]
        records = [
            Instance(engine="ollama", pid=foreign[0].pid, host="127.0.0.1", port=11901, model="", log="/dev/null"),
            Instance(engine="ollama", pid=foreign[1].pid, host="127.0.0.1", port=11902, model="", log="/dev/null",
                     create_time=started[1] - 3600),
            Instance(engine="ollama", pid=foreign[2].pid, host="127.0.0.1", port=11903, model="", log="/dev/null",
                     create_time=started[2], cmdline=["/usr/bin/ollama", "serve"]),
        ]
        InstanceStore().save(records)
        down = invoke("down", "--all")
        assert down.exit_code == 0 and "stopped" not in down.stderr
        assert down.stderr.splitlines() == [
            f"note: http://127.0.0.1:11901: pid {foreign[0].pid} has no start time on record, so it cannot be told "
            "from another process; not signalled, removed from the record",
            f"note: http://127.0.0.1:11902: pid {foreign[1].pid} now belongs to another process (it started at "
            "another time); not signalled, removed from the record",
            f"note: http://127.0.0.1:11903: pid {foreign[2].pid} now runs another command ({sys.executable} -c "
            "'import time; time.sleep(60)'); not signalled, removed from the record"]
        assert all(p.poll() is None for p in foreign)
        assert InstanceStore().load() == []
    finally:
        for p in foreign:
            p.kill()
            p.wait()


def test_up_with_an_unwritable_config_path_starts_nothing(stand_in, tmp_path):
    (tmp_path / "a-file").write_text("")
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "1", "--base-port", str(port), "--model", "m",
                    "--write-config", "a-file/fleet.json")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --write-config a-file/fleet.json: cannot write there (Not a directory)"
    assert not stand_in.exists() or not list(stand_in.iterdir())  # no instance was started
    assert InstanceStore().load() == []


def test_compose_refuses_ports_past_65535(tmp_path):
    result = invoke("compose", "--base-port", "65534", "-n", "3", "-o", "dc.yml")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: ports 65534–65536 go past 65535: use a --base-port of at most 65533 "
                                     "for 3 containers")
    assert not (tmp_path / "dc.yml").exists()
    assert invoke("compose", "--base-port", "65533", "-n", "3", "-o", "dc.yml").exit_code == 0


def test_pull_sends_a_url_password_but_never_shows_it(server):
    """`pull --url http://user:pw@host` authenticates with it, and a failure names the URL without it."""
    result = invoke("pull", "missing-model", "--url", server.url.replace("http://", "http://bob:s3cret-pw@"))
    assert result.exit_code == 1 and "file does not exist" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout and server.url in result.stderr
    [request] = server.requests
    assert request.headers["Authorization"].startswith("Basic ")


def test_plain_workers_are_copies_and_need_write_config(tmp_path):
    from parallama.engines.fleet_config import fleet_config
    from parallama.engines.state import Instance

    instances = [Instance(engine="ollama", pid=1, host="127.0.0.1", port=p, model="llama3.2:1b", log="x.log")
                 for p in (11434, 11435, 11436, 11437, 11438)]
    shaped = fleet_config(instances)["worker_agents"]
    assert len({(w["system"], w["options"]["temperature"], w["options"]["seed"]) for w in shaped}) == 5
    assert shaped[0]["name"] == "Worker A (careful)" and shaped[4]["options"]["seed"] != shaped[0]["options"]["seed"]
    plain = fleet_config(instances, plain=True)
    assert all(set(w) == {"name", "api_url", "model"} for w in plain["worker_agents"])
    assert "options" not in plain["reviewer_agent"]
    assert "review" not in fleet_config(instances)  # a real model follows the default review template
    demo = [Instance(engine="llama-cpp", pid=1, host="127.0.0.1", port=p, model="/m/SmolLM2.gguf", log="x.log")
            for p in (8080, 8081)]
    written = fleet_config(demo)
    review = written["review"]  # the demo's tiny model gets numbered notes, no `### Answer from` headers
    assert "{answer_list}" in review["system"] and review["prompt"] == "{task}"
    # On llama.cpp (the CPU), a whole capped answer at two tokens a second fits in its agent's timeout.
    for agent in [*written["worker_agents"], written["reviewer_agent"]]:
        assert agent["timeout"] >= agent["options"]["num_predict"] / 2, agent
    assert all(w["timeout"] >= 256 for w in fleet_config(demo, plain=True)["worker_agents"])
    assert "timeout" not in shaped[0] and fleet_config(instances)["reviewer_agent"]["timeout"] == 120  # Ollama's
    result = invoke("up", "--engine", "ollama", "--plain-workers")
    assert result.exit_code == 2 and "--plain-workers shapes the config --write-config writes" in result.stderr


def test_up_writes_the_instances_as_one_pool(stand_in, tmp_path):
    port = base_port()
    result = invoke("up", "--engine", "ollama", "-n", "3", "--base-port", str(port), "--model", "llama3.2:1b",
                    "--write-config", "fleet.json", "--pool")
    assert result.exit_code == 0, result.stderr
    try:
        config = json.loads((tmp_path / "fleet.json").read_text())
        urls = [f"http://127.0.0.1:{p}/api/chat" for p in (port, port + 1, port + 2)]
        assert [w["api_url"] for w in config["worker_agents"]] == [urls] * 3
        assert config["reviewer_agent"]["api_url"] == urls
        ran = invoke("run", "hi", "-c", "fleet.json", "--json")
        assert ran.exit_code == 0, ran.stderr
        served = {w["api_url"] for w in json.loads(ran.stdout)["workers"]}
        assert served <= set(urls) and len(served) == 3  # three workers at once: one per replica
    finally:
        invoke("down", "--all")


def test_pool_needs_write_config():
    result = invoke("up", "--engine", "ollama", "--pool")
    assert result.exit_code == 2 and "--pool shapes the config --write-config writes" in result.stderr
