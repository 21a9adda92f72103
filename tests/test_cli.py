"""The `parallama run` command as a user meets it: prompt sources, output modes, exit codes, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import invoke, run_process, worker, write_config
from fakes import FakeServer

JSON_AGENT_FIELDS = {"name", "model", "api_url", "protocol", "status", "content", "error", "queued_s", "elapsed_s",
                     "prompt_tokens", "completion_tokens", "tokens_per_s"}


def fleet_with_review(servers):
    a, b, c = servers
    a.model("m", latency=0.1, text="alpha answer")
    b.model("m", latency=0.1, text="beta answer")
    c.model("rev", latency=0.1, text="the final word")
    return {"reviewer_agent": {"name": "Rev", "api_url": c.url, "model": "rev"},
            "worker_agents": [worker(a, "m", name="Alpha"), worker(b, "m", name="Beta")]}


def test_piped_stdout_gets_the_final_answer_alone(tmp_path, servers):
    write_config(tmp_path / "c.json", fleet_with_review(servers))
    result = invoke("run", "question?", "-c", "c.json")
    assert result.exit_code == 0
    assert result.stdout == "the final word\n"
    # Non-terminal stderr gets one line per agent.
    assert "✓ Alpha" in result.stderr and "✓ Beta" in result.stderr and "✓ Rev" in result.stderr


def test_quiet_prints_nothing_but_the_answer(tmp_path, servers):
    write_config(tmp_path / "c.json", fleet_with_review(servers))
    result = invoke("run", "question?", "-c", "c.json", "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "the final word\n"
    assert result.stderr == ""


def test_json_output_shape(tmp_path, servers):
    fleet = fleet_with_review(servers)
    fleet["worker_agents"].append(worker(servers[0], "absent", name="Gamma"))
    write_config(tmp_path / "c.json", fleet)
    result = invoke("run", "question?", "-c", "c.json", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"prompt", "workers", "review", "final", "final_source", "wall_s"} <= set(data)
    assert data["prompt"] == "question?"
    assert data["final"] == "the final word" and data["final_source"] == "review"
    assert [w["status"] for w in data["workers"]] == ["ok", "ok", "error"]
    for agent in data["workers"] + [data["review"]]:
        assert JSON_AGENT_FIELDS <= set(agent)
    assert data["workers"][0]["content"] == "alpha answer" and data["workers"][0]["protocol"] == "ollama"
    assert "ollama pull absent" in data["workers"][2]["error"]
    assert data["wall_s"] > 0


def test_no_review_prints_every_answer_under_its_name(tmp_path, servers):
    write_config(tmp_path / "c.json", fleet_with_review(servers))
    result = invoke("run", "question?", "-c", "c.json", "--no-review", "--json")
    data = json.loads(result.stdout)
    assert data["review"] is None and data["final"] is None and data["final_source"] is None
    assert not any(r.model == "rev" for r in servers[2].requests)
    result = invoke("run", "question?", "-c", "c.json", "--no-review")
    assert result.exit_code == 0
    assert result.stdout == "## Alpha\nalpha answer\n\n## Beta\nbeta answer\n"


def test_workers_only_config_prints_each_answer(tmp_path, servers):
    fleet = fleet_with_review(servers)
    del fleet["reviewer_agent"]
    write_config(tmp_path / "c.json", fleet)
    result = invoke("run", "question?", "-c", "c.json")
    assert result.exit_code == 0
    assert "## Alpha\nalpha answer" in result.stdout and "## Beta\nbeta answer" in result.stdout


def test_prompt_from_stdin(tmp_path, server):
    server.model("m", latency=0.1)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    assert invoke("run", "-", "-c", "c.json", input="from a pipe\n").exit_code == 0
    assert invoke("run", "-c", "c.json", input="no dash either\n").exit_code == 0
    assert [r.messages[-1]["content"] for r in server.requests] == ["from a pipe", "no dash either"]


def test_empty_prompt_is_a_usage_error(tmp_path, server):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    result = invoke("run", "-", "-c", "c.json", input="   \n")
    assert result.exit_code == 2 and "prompt is empty" in result.stderr
    assert server.requests == []


def test_bad_option_is_exit_2(tmp_path):
    assert invoke("run", "x", "--deadline", "-1").exit_code == 2
    assert invoke("run", "x", "--frobnicate").exit_code == 2


def test_help_does_not_import_heavy_libraries():
    code = ("import sys\nfrom parallama.cli import cli\n"
            "try:\n    cli(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'pydantic', 'rich', 'asyncio', 'sqlite3', 'markdown_it'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_ctrl_c_exits_130_and_cancels_requests(tmp_path):
    with FakeServer() as fake:
        fake.model("slow", latency=30, tokens=30)
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "slow"), worker(fake, "slow")],
                                           "servers": {fake.url: {"parallel": 2}}})
        proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "hi", "-c", "c.json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60  # a busy machine may take long to start the process
        while fake.in_flight < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert fake.in_flight == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "interrupted" in err and "Traceback" not in err
        # The server saw both streams closed: nothing of ours is left running against it.
        deadline = time.time() + 5
        while fake.in_flight and time.time() < deadline:
            time.sleep(0.05)
        assert fake.in_flight == 0


def test_real_process_end_to_end(tmp_path, servers):
    write_config(tmp_path / "c.json", fleet_with_review(servers))
    proc = run_process("run", "question?", "-c", str(tmp_path / "c.json"), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["final"] == "the final word"


def test_every_help_stands_on_its_own_and_serve_names_its_models():
    """Each command's `--help` reads without the guide our users came from (a reader of the README never met it),
    and serve's names the models a client picks from: the strategies (`:vote`, …) and `parallama/<agent>`."""
    import click

    from parallama.cli import cli

    def commands(group: click.Group, path: list[str]):
        yield path
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                yield from commands(command, [*path, name])
            else:
                yield [*path, name]
    for path in commands(cli, []):
        shown = invoke(*path, "--help")
        assert shown.exit_code == 0, path
        assert "the guide" not in shown.stdout.lower(), path
    serve = invoke("serve", "--help").stdout
    from parallama.review import STRATEGIES

    flat = " ".join(serve.split())
    assert all(f":{name}" in flat for name in STRATEGIES) and "parallama/<agent>" in flat, flat
