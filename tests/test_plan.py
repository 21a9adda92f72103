"""`plan`, `doctor`, `recommend` against fake Ollama/OpenAI servers answering in the real shapes."""

from __future__ import annotations

import json

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer, free_port
from parallama.config import load_config
from parallama.memory import Machine
from parallama.plan import make_plan
from parallama.recommend import recommend


def test_plan_warns_when_workers_share_a_one_slot_server(tmp_path, server):
    for model in ("llama3:8b", "mistral", "deepseek-coder"):
        server.model(model)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, m) for m in ("llama3:8b", "mistral",
                                                                                      "deepseek-coder")]})
    result = invoke("plan", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert result.exit_code == 0, result.stderr
    assert f"3 workers share {server.url.replace('127.0.0.1', 'localhost')} with 1 slot" in result.stdout
    assert "one after another" in result.stdout and "parallama up -n 3" in result.stdout
    data = json.loads(invoke("plan", "-c", "c.json", "--json", "--ram", "64", "--vram", "0").stdout)
    assert data["truly_parallel"] is False and data["servers"][0]["waves"] == 3


def test_plan_says_when_the_fleet_is_truly_parallel(tmp_path, servers):
    for fake in servers:
        fake.model("m")
    write_config(tmp_path / "c.json", {"worker_agents": [worker(f, "m") for f in servers]})
    data = json.loads(invoke("plan", "-c", "c.json", "--json", "--ram", "64", "--vram", "0").stdout)
    assert data["truly_parallel"] is True
    assert "all 3 workers run at once on 3 servers" in data["parallel"][0]


def test_slots_in_config_make_a_shared_server_parallel(tmp_path, server):
    server.model("m")
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")] * 3,
                                       "servers": {server.url: {"parallel": 3}}})
    data = json.loads(invoke("plan", "-c", "c.json", "--json", "--ram", "64", "--vram", "0").stdout)
    assert data["truly_parallel"] is True


async def test_memory_from_the_servers_own_answers(tmp_path, servers):
    a, b, c = servers
    a.model("llama3:8b", parameter_size="8.0B", quantization="Q4_0", layers=32, kv_heads=8)
    b.model("custom-model", parameter_size="13B", quantization="Q8_0", layers=40, kv_heads=40)
    c.model("mistral", loaded_bytes=6_000_000_000)
    fleet = load_config(write_config(tmp_path / "c.json", {"worker_agents": [
        worker(a, "llama3:8b"), worker(b, "custom-model", options={"num_ctx": 2048}), worker(c, "mistral")]}))
    plan = await make_plan(fleet, machine=Machine(ram_gb=64, ram_available_gb=60))
    models = {m.model: m for s in plan.servers for m in s.models}
    # /api/show: 8.0B at Q4_0 (4.55 bits per weight) → 4.55 GB; KV 2 × 32 layers × 8 heads × 128 × 2 B × 4096.
    assert models["llama3:8b"].source == "server (/api/show)"
    assert models["llama3:8b"].weights_gb == pytest.approx(8.0 * 4.55 / 8, rel=0.01)
    assert models["llama3:8b"].kv_gb_per_slot == pytest.approx(2 * 32 * 8 * 128 * 2 * 4096 / 1e9, rel=0.01)
    # A model the catalogue does not know is still sized from the server, with the agent's num_ctx.
    assert models["custom-model"].weights_gb == pytest.approx(13 * 8.5 / 8, rel=0.01)
    assert models["custom-model"].context == 2048
    # /api/ps: the size of what is loaded now wins.
    assert models["mistral"].source.startswith("server (/api/ps") and models["mistral"].weights_gb == 6.0
    assert plan.fits is True


def test_memory_verdicts_fit_and_not_fit(tmp_path):
    # Three llama3:8b instances on this machine (servers down: sizes come from the catalogue).
    ports = [free_port() for _ in range(3)]
    write_config(tmp_path / "c.json", {
        "reviewer_agent": {"api_url": f"http://localhost:{ports[0]}", "model": "llama3:70b"},
        "worker_agents": [{"api_url": f"http://localhost:{p}", "model": "llama3:8b"} for p in ports]})
    big = json.loads(invoke("plan", "-c", "c.json", "--json", "--ram", "128", "--vram", "0").stdout)
    assert big["fits"] is True
    small = invoke("plan", "-c", "c.json", "--ram", "16", "--vram", "0")
    assert "does not fit" in small.stdout
    assert "3 servers each hold llama3:8b" in small.stdout and "OLLAMA_NUM_PARALLEL=3" in small.stdout
    # The three llama3:8b take more than the 14 GB usable: no smaller reviewer would make it fit.
    assert "no model in the catalogue fits in place of llama3:70b: the other models leave nothing" in small.stdout
    gpu = invoke("plan", "-c", "c.json", "--ram", "128", "--vram", "24")
    assert "does not fit in VRAM" in gpu.stdout and "num_gpu" in gpu.stdout


def guide_config(path, reviewer_model: str = "llama3:70b") -> None:
    """The guide's config (its models, one server per port) on ports where nothing answers: sizes from the catalogue."""
    a, b, c = (f"http://localhost:{free_port()}/api/chat" for _ in range(3))
    write_config(path, {
        "reviewer_agent": {"name": "Reviewer", "api_url": a, "model": reviewer_model, "timeout": 120},
        "worker_agents": [{"name": "Worker A", "api_url": a, "model": "llama3:8b"},
                          {"name": "Worker B", "api_url": b, "model": "mistral"},
                          {"api_url": c, "model": "deepseek-coder"}]})


def test_a_smaller_model_suggested_instead_fits_beside_the_others(tmp_path):
    import re

    guide_config(tmp_path / "c.json")
    text = invoke("plan", "-c", "c.json", "--ram", "24", "--vram", "0").stdout
    assert "does not fit: ≈ 56.3 GB needed" in text
    found = re.search(r"a smaller model instead of llama3:70b that fits the ≈ ([\d.]+) GB the others leave: (\S+) ",
                      text)
    assert found, text
    assert float(found.group(1)) == pytest.approx(22.0 - (56.3 - 44.1 - 0.0), abs=0.2)
    # The plan with the suggestion in its place fits.
    guide_config(tmp_path / "c2.json", reviewer_model=found.group(2))
    assert json.loads(invoke("plan", "-c", "c2.json", "--json", "--ram", "24", "--vram", "0").stdout)["fits"] is True

    # With less memory than the others take, nothing replaces it, and the plan says so.
    text = invoke("plan", "-c", "c.json", "--ram", "8", "--vram", "0").stdout
    assert ("no model in the catalogue fits in place of llama3:70b: the other models leave nothing; on its own, "
            "the largest that fits is llama3.1:8b") in text
    assert "a smaller model instead" not in text


def test_remote_servers_do_not_count_against_this_machine(tmp_path):
    write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": "http://gpu-box.invalid:11434",
                                                          "model": "llama3:70b"}]})
    data = json.loads(invoke("plan", "-c", "c.json", "--json", "--ram", "8", "--vram", "0").stdout)
    assert data["fits"] is True and data["local_memory_gb"] == 0


def test_doctor_all_good_exits_0(tmp_path, servers):
    a, b, c = servers
    for fake in servers:
        fake.model("llama3.2:3b")
    write_config(tmp_path / "c.json", {"reviewer_agent": worker(a, "llama3.2:3b"),
                                       "worker_agents": [worker(f, "llama3.2:3b") for f in servers]})
    result = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert result.exit_code == 0, result.stdout
    assert "✗" not in result.stdout
    assert result.stdout.count("✓") >= 3 + 4  # three servers, four agents' models
    assert "0.12.6 answers in" in result.stdout


def test_doctor_refused_and_missing_model_exit_1(tmp_path, server):
    server.model("llama3:8b")
    dead = free_port()
    write_config(tmp_path / "c.json", {"worker_agents": [
        worker(server, "llama3:8b"), worker(server, "mistral"),
        {"api_url": f"http://127.0.0.1:{dead}/api/chat", "model": "phi"}]})
    result = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert result.exit_code == 1
    assert f"✗ http://localhost:{dead}: nothing listens on {dead}" in result.stdout
    assert f"OLLAMA_HOST=127.0.0.1:{dead} ollama serve" in result.stdout and "parallama up" in result.stdout
    assert "✗ mistral: mistral is not on" in result.stdout and "ollama pull mistral" in result.stdout
    assert "✓ llama3:8b: llama3:8b is on" in result.stdout
    data = json.loads(invoke("doctor", "-c", "c.json", "--json", "--ram", "64", "--vram", "0").stdout)
    assert data["ok"] is False
    assert {(c["check"], c["status"]) for c in data["checks"]} >= {("server", "fail"), ("model", "fail"),
                                                                   ("model", "pass"), ("server", "pass")}


def test_doctor_explains_ollama_num_gpu_layers(tmp_path, server, monkeypatch):
    server.model("m")
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    monkeypatch.setenv("OLLAMA_NUM_GPU_LAYERS", "20")
    result = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert "OLLAMA_NUM_GPU_LAYERS=20 is set, but Ollama does not read it" in result.stdout
    assert '"options": {"num_gpu": 20}' in result.stdout
    assert result.exit_code == 0  # a misleading setting, not a failure


def test_doctor_openai_server_models(tmp_path, server):
    server.model("served-model")
    write_config(tmp_path / "c.json", {"worker_agents": [
        {"api_url": server.url + "/v1", "model": "served-model"},
        {"api_url": server.url + "/v1", "model": "other"}]})
    data = json.loads(invoke("doctor", "-c", "c.json", "--json", "--ram", "64", "--vram", "0").stdout)
    statuses = [(c["check"], c["status"]) for c in data["checks"] if c["check"] in ("server", "model")]
    assert statuses == [("server", "pass"), ("model", "pass"), ("model", "fail")]


def test_doctor_memory_failure(tmp_path, server):
    server.model("llama3:70b", parameter_size="70.6B", quantization="Q4_K_M", layers=80)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "llama3:70b")]})
    result = invoke("doctor", "-c", "c.json", "--ram", "16", "--vram", "0")
    assert result.exit_code == 1
    assert "✗ does not fit" in result.stdout


@pytest.mark.parametrize("ram,layout", [(8, "slots"), (16, "slots"), (64, "instances"), (128, "instances")])
def test_recommend_per_tier(ram, layout):
    choice = recommend(Machine(ram_gb=ram, ram_available_gb=ram), workers=3)
    assert choice.layout == layout
    assert choice.memory_gb <= choice.budget_gb <= ram
    assert len(choice.workers) == 3
    assert all(w.params_b <= choice.reviewer.params_b for w in choice.workers)  # the reviewer is the biggest
    if layout == "instances":
        assert len({w.tag for w in choice.workers}) == 3
    else:
        assert len({w.tag for w in choice.workers}) == 1
    assert any("OLLAMA_NUM_PARALLEL" in r or "one Ollama instance each" in r for r in choice.reasons)


def test_recommend_more_memory_never_picks_a_smaller_reviewer():
    reviewers = [recommend(Machine(ram_gb=ram, ram_available_gb=ram)).reviewer.params_b for ram in (8, 16, 32, 64)]
    assert reviewers == sorted(reviewers) and reviewers[0] < reviewers[-1]


def test_recommend_writes_a_config_run_accepts(tmp_path):
    result = invoke("recommend", "--ram", "16", "--vram", "0", "--write", "rec.json")
    assert result.exit_code == 0
    assert "why:" in result.stdout and "OLLAMA_NUM_PARALLEL=3" in result.stdout
    fleet = load_config(tmp_path / "rec.json")
    assert len(fleet.workers) == 3 and fleet.reviewer is not None
    assert fleet.servers["http://localhost:11434"].parallel == 3
    # The workers differ (a prompt, a temperature, a seed each), and the reviewer has a server of its own.
    assert len({(w.system, w.options["temperature"], w.options["seed"]) for w in fleet.workers}) == 3
    assert fleet.reviewer.server == "http://localhost:11435" and fleet.reviewer.server not in {
        w.server for w in fleet.workers}
    assert "speed: on a CPU" in result.stdout and "few tokens per second" in result.stdout
    # And `run` accepts it: no server listens here, so every worker fails cleanly (exit 1, not a config error).
    run = invoke("run", "hi", "-c", "rec.json", "--deadline", "5")
    assert run.exit_code == 1 and "connection refused" in run.stderr


def test_recommend_written_config_runs_on_servers_that_have_the_models(tmp_path):
    invoke("recommend", "--ram", "128", "--vram", "0", "--write", "rec.json")
    config = json.loads((tmp_path / "rec.json").read_text())
    with FakeServer() as a, FakeServer() as b, FakeServer() as c, FakeServer() as d:
        fakes = {11434: a, 11435: b, 11436: c, 11437: d}  # three workers' servers and the reviewer's
        for agent in config["worker_agents"] + [config["reviewer_agent"]]:
            port = int(agent["api_url"].split(":")[2].split("/")[0])
            fakes[port].model(agent["model"], latency=0.05)
            agent["api_url"] = agent["api_url"].replace(f"localhost:{port}", f"127.0.0.1:{fakes[port].port}")
        write_config(tmp_path / "rec.json", config)
        result = invoke("run", "hi", "-c", "rec.json", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["final_source"] == "review"


def test_recommend_too_little_memory_is_a_clear_error():
    result = invoke("recommend", "--ram", "2.1", "--vram", "0")
    assert result.exit_code == 2 and "not enough" in result.stderr


@pytest.mark.parametrize("option, value", [("--ram", "nan"), ("--ram", "inf"), ("--vram", "nan")])
def test_memory_that_is_not_a_number_is_refused(tmp_path, server, option, value):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    result = invoke("plan", "-c", "c.json", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}': '{value}' is not a finite number." in result.stderr
    assert "GB" not in result.stdout
