"""The error tree: one transport-error mapper for chats, probes and pulls; kinds as class attributes; causes kept,
and still one line from the CLI."""

from __future__ import annotations

import json

import pytest

from conftest import invoke, run_process, worker, write_config
from fakes import ReplayServer, free_port
from parallama import errors

NOWHERE = "http://parallama-test.invalid:11434"  # .invalid never resolves (RFC 6761)


def test_kinds_are_class_attributes_like_status():
    kinds = {cls.__name__: cls.kind for cls in (errors.BackendError, errors.Unreachable, errors.HTTPStatus,
                                                errors.ModelNotFound, errors.ServerBusy, errors.StreamBroken,
                                                errors.AgentTimeout)}
    assert kinds == {"BackendError": "error", "Unreachable": "unreachable", "HTTPStatus": "http_status",
                     "ModelNotFound": "model_not_found", "ServerBusy": "server_busy",
                     "StreamBroken": "stream_broken", "AgentTimeout": "timeout"}
    assert errors.AgentTimeout.status == "timeout" and errors.Unreachable.status == "error"


def test_a_config_error_names_its_json_path_and_a_history_error_its_file(tmp_path):
    config = errors.ConfigError("must be > 0", source="c.json", json_path="worker_agents[1].timeout")
    assert config.json_path == "worker_agents[1].timeout" and str(config) == "c.json: worker_agents[1].timeout: must be > 0"
    history = errors.HistoryError("cannot open it", file=tmp_path / "h.db")
    assert history.file == str(tmp_path / "h.db") and str(history) == f"history database {tmp_path / 'h.db'}: cannot open it"
    assert not hasattr(config, "path") and not hasattr(history, "path")


def test_causes_are_kept_from_the_library(tmp_path):
    from parallama.config import load_config

    with pytest.raises(errors.ConfigError) as missing:
        load_config(tmp_path / "nope.json")
    assert isinstance(missing.value.__cause__, FileNotFoundError)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(errors.ConfigError) as directory:
        load_config(tmp_path / "dir.json")
    assert isinstance(directory.value.__cause__, IsADirectoryError)


async def test_a_malformed_line_keeps_its_cause_and_an_unresolvable_name_is_a_transport_error():
    import aiohttp

    from parallama.backends import backend_for
    from parallama.config import as_fleet

    with ReplayServer(b'{"message": {"content": "a"}}\nnot json\n') as fake:
        fleet = as_fleet({"worker_agents": [worker(fake, "m", name="w"),
                                            {"name": "far", "api_url": NOWHERE, "model": "m"}]})
        replayed, far = fleet.workers
        async with aiohttp.ClientSession() as session:
            with pytest.raises(errors.StreamBroken) as broken:
                await backend_for("ollama").chat(session, replayed, [{"role": "user", "content": "hi"}],
                                                 lambda _: None, lambda _: None)
            with pytest.raises(errors.Unreachable) as unresolved:
                await backend_for("ollama").chat(session, far, [{"role": "user", "content": "hi"}],
                                                 lambda _: None, lambda _: None)
    assert isinstance(broken.value.__cause__, json.JSONDecodeError)
    assert "malformed line in stream" in str(broken.value)
    assert isinstance(unresolved.value.__cause__, aiohttp.ClientConnectorError)
    assert "'parallama-test.invalid' could not be resolved" in unresolved.value.cause


def test_a_name_that_does_not_resolve_is_not_called_connection_refused(tmp_path, server):
    """The same mapper for a worker's chat, doctor's probe and pull: a DNS failure says the name did not resolve."""
    server.model("m", latency=0.05, text="fine")
    write_config(tmp_path / "c.json", {"worker_agents": [
        worker(server, "m", name="Good"), {"name": "Far", "api_url": NOWHERE + "/api/chat", "model": "m"}]})
    ran = invoke("run", "hi", "-c", "c.json", "--no-review", "--json")
    doctor = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    pull = invoke("pull", "m", "--url", NOWHERE)
    far = json.loads(ran.stdout)["workers"][1]
    assert ran.exit_code == 0 and far["error_kind"] == "unreachable"
    assert far["error"].startswith(f"Far ({NOWHERE}/api/chat): the host name 'parallama-test.invalid' could not "
                                   "be resolved")
    line = next(line for line in doctor.stdout.splitlines() if "parallama-test.invalid" in line)
    assert "could not be resolved" in line and doctor.exit_code == 1
    assert pull.exit_code == 1 and "'parallama-test.invalid' could not be resolved" in pull.stderr
    for text in (ran.stdout, doctor.stdout, pull.stderr):
        assert "connection refused" not in text and "nothing listens" not in text and "ollama serve" not in text


def test_pull_from_a_port_nobody_listens_on_says_so_in_one_line():
    port = free_port()
    result = run_process("pull", "m", "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: http://127.0.0.1:{port}/api/pull: connection refused: nothing listens on 127.0.0.1:{port} — start "
        "one with `parallama up --engine ollama`")
    assert "Traceback" not in result.stderr and "During handling" not in result.stderr


def test_the_cli_prints_one_line_not_the_chained_causes(tmp_path):
    write_config(tmp_path / "bad.json", '{"worker_agents": [')
    broken = run_process("run", "hi", "-c", "bad.json")
    missing = run_process("run", "hi", "-c", "missing.json")
    batch = run_process("batch", "missing.jsonl", "-c", "bad.json")
    for result in (broken, missing, batch):
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr and "cause" not in result.stderr
    assert missing.stderr == "error: missing.json: no such file\n"
