"""`parallama serve` as a real process: the URLs it prints, its API key, history of served runs, its errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import ollama
import openai

from conftest import banner_of, guide_fleet, invoke, write_config
from fakes import FakeServer
from parallama.cli.serve import exposure_warning
from parallama.paths import history_db

KEY = "sk-serve-cli-secret-0123456789"


def start_serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `parallama serve` on a free port; return it, its URL and the lines it printed at start."""
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", *args],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    lines = banner_of(process)
    match = re.search(r"Ollama API  (http://127\.0\.0\.1:\d+)", "".join(lines))
    assert match, "".join(lines)
    return process, match.group(1), lines



def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    return err


def test_serve_prints_the_urls_answers_with_the_key_and_keeps_served_runs(tmp_path, servers):
    write_config(tmp_path / "c.json", guide_fleet(servers))
    process, url, banner = start_serve("-c", "c.json", "--api-key-env", "SERVE_KEY", env={"SERVE_KEY": KEY})
    try:
        text = "".join(banner)
        assert "parallama:latest, parallama:synthesize, parallama:judge, parallama:council" in text
        assert f"OpenAI API  {url}/v1" in text and "$SERVE_KEY" in text
        assert f"Web page    {url}/ui/   (it asks for the key)" in text
        client = ollama.Client(host=url, headers={"Authorization": f"Bearer {KEY}"})
        reply = client.chat("parallama", messages=[{"role": "user", "content": f"2 + 2? (my key is {KEY})"}],
                            stream=False)
        assert reply.message.content == "The answer is 4."
        try:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass
    finally:
        err = stop(process)
    assert process.returncode == 0 and "parallama serve stopped" in err
    assert '"POST /api/chat HTTP/1.1" 200' in err  # the access log …
    assert KEY not in text + err  # … never shows the key
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["origin"] == "serve" and run["final"] == "The answer is 4." and "***" in run["prompt"]
    assert KEY.encode() not in history_db().read_bytes()


def test_ctrl_c_stops_it_with_130(tmp_path, servers):
    write_config(tmp_path / "c.json", guide_fleet(servers))
    process, _, _ = start_serve("-c", "c.json", "--no-history", "--progress", "none")
    stop(process, signal.SIGINT)
    assert process.returncode == 130


def test_usage_errors(tmp_path, servers):
    result = invoke("serve")
    assert result.exit_code == 2 and "no config" in result.stderr
    write_config(tmp_path / "c.json", guide_fleet(servers))
    result = invoke("serve", "-c", "c.json", "--api-key-env", "NOT_SET_ANYWHERE")
    assert result.exit_code == 2 and "NOT_SET_ANYWHERE is not set" in result.stderr
    with FakeServer() as busy:
        result = invoke("serve", "-c", "c.json", "--port", str(busy.port), "--no-history")
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{busy.port}" in result.stderr


def serve_banner(*args: str) -> str:
    """What `parallama serve` prints at start (then it is stopped)."""
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", "--no-history", *args],
                               stderr=subprocess.PIPE, text=True)
    lines = banner_of(process)
    stop(process)
    return "".join(lines)


def test_serve_warns_off_loopback_only(tmp_path, servers):
    write_config(tmp_path / "c.json", guide_fleet(servers))
    loopback = serve_banner("-c", "c.json", "--host", "127.0.0.2")
    assert "Ollama API  http://127.0.0.2:" in loopback and "warning" not in loopback
    exposed = serve_banner("-c", "c.json", "--host", "0.0.0.0")
    assert "warning: listening on 0.0.0.0 with no API key" in exposed and "Ctrl-C" in exposed


def test_exposure_warning_only_off_loopback_without_a_key():
    assert exposure_warning("127.0.0.1", 11400, keyed=False) is None
    assert exposure_warning("::1", 11400, keyed=False) is None
    assert exposure_warning("127.0.0.2", 11400, keyed=False) is None
    assert exposure_warning("0.0.0.0", 11400, keyed=True) is None
    assert "anyone who can reach port 11400" in exposure_warning("0.0.0.0", 11400, keyed=False)
