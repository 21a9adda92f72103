"""Hostile servers and careless input (issue 11): a line too long to read, a prompt that is not UTF-8, a key quoted
back by the server, a password in api_url, and probes that must not mislead. Each fails one agent with a line
naming it, the URL and the cause; the run goes on; no secret is printed or stored."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from io import StringIO

from conftest import invoke, run_process, worker, write_config
from fakes import BannerServer, FakeServer, free_port
from parallama.paths import history_db

KEY = "sk-proj-Zq8vN3xK7pL2mW9rT4yB6cD1fG5hJ0aS"
PASSWORD = "Wq4tPz7Lm2Xc9Rv"


def leaks(text: str, secret: str) -> list[str]:
    """Every run of 8 characters of `secret` found in `text` (what parallama counts as showing it)."""
    return sorted({secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8] in text})


def stored_bytes() -> bytes:
    """The history database and its -wal / -shm files, raw."""
    path = history_db()
    return b"".join(p.read_bytes() for p in [path, *path.parent.glob(path.name + "-*")] if p.is_file())


def assert_kept_secret(secret: str, *texts: str) -> None:
    for text in texts:
        assert not leaks(text, secret), leaks(text, secret)
    raw = stored_bytes()
    assert raw, "the run was not kept in history"
    assert not [r for r in leaks(raw.decode("utf-8", "replace"), secret)]


def outputs_of_history() -> list[str]:
    """What `history`, `history show` (text and JSON) and `history export` print, for every run kept."""
    texts = [invoke("history").stdout, invoke("history", "export").stdout]
    for run in json.loads(invoke("history", "--json").stdout):
        texts += [invoke("history", "show", run["id"]).stdout, invoke("history", "show", run["id"], "--json").stdout]
    return texts


# ---------------------------------------------------------------- 1. one stream line longer than the bound

def test_a_line_too_long_fails_that_worker_and_the_run_goes_on(tmp_path, servers):
    good, long_ollama, long_openai = servers
    good.model("m", latency=0.1, text="the good answer")
    good.model("rev", latency=0.1, respond=lambda messages: "merged: " + messages[-1]["content"][-40:])
    long_ollama.model("m", latency=0.2, tokens=4, fault="long_line")
    long_openai.model("m", latency=0.2, tokens=4, fault="long_unterminated")
    write_config(tmp_path / "c.json", {
        "reviewer_agent": {"api_url": good.url, "model": "rev"},
        "worker_agents": [worker(good, "m", name="Good"), worker(long_ollama, "m", name="Long"),
                          {"name": "Unterminated", "api_url": long_openai.url + "/v1", "model": "m"}]})
    result = invoke("run", "hi", "-c", "c.json", "--json")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    good_row, long_row, unterminated = data["workers"]
    assert good_row["status"] == "ok" and good_row["content"] == "the good answer"
    for row, fake, path in ((long_row, long_ollama, "/api/chat"), (unterminated, long_openai, "/v1/chat/completions")):
        assert row["error_kind"] == "stream_broken"
        assert row["error"].startswith(f"{row['name']} ({fake.url}{path}): a line of the stream is longer than 4 MiB")
        assert len(row["content"]) < 1000  # the pieces before the long line, not the line
    assert data["final_source"] == "review" and data["final"].startswith("merged:")
    assert "✗ Long (" in result.stderr and "longer than 4 MiB" in result.stderr
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["status"] == "complete" and run["workers_ok"] == 1


# ---------------------------------------------------------------- 2. a prompt that is not UTF-8

def test_undecodable_prompt_bytes_are_replaced_with_a_warning(tmp_path, server):
    server.model("m", latency=0.05, text="an answer")
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    # In argv (as `parallama run "$(printf 'caf\xe9')"` passes it) and on stdin, with and without history.
    from_argv = run_process("run", os.fsdecode(b"caf\xe9 au lait"), "-c", "c.json")
    from_stdin = subprocess.run([sys.executable, "-m", "parallama", "run", "-c", "c.json", "--no-history", "--json"],
                                input=b"th\xe9 \xff vert", capture_output=True, timeout=60)
    assert from_argv.returncode == 0 and from_stdin.returncode == 0
    assert from_argv.stdout == "## m\nan answer\n"
    assert "warning: the prompt had 1 undecodable byte(s) (not UTF-8); each was sent as U+FFFD" in from_argv.stderr
    stderr = from_stdin.stderr.decode()
    assert "Traceback" not in from_argv.stderr + stderr
    assert "warning: the prompt had 2 undecodable byte(s)" in stderr
    assert json.loads(from_stdin.stdout)["prompt"] == "th\ufffd \ufffd vert"
    # On the wire: U+FFFD, never a lone surrogate (`\udce9`).
    sent = [r.messages[-1]["content"] for r in server.requests]
    assert sent == ["caf\ufffd au lait", "th\ufffd \ufffd vert"]
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["prompt"] == "caf\ufffd au lait" and run["status"] == "complete"
    assert "U+FFFD" in invoke("history", "show", run["id"]).stdout


# ---------------------------------------------------------------- 3. a key quoted back by the server

def test_a_key_the_server_quotes_back_is_never_shown_or_stored(tmp_path, servers, monkeypatch):
    a, b, c = servers
    monkeypatch.setenv("HOSTED_KEY", KEY)
    a.model("echo", latency=0.1, tokens=3, fault="echo")  # answers, quoting the key split over two chunks
    a.model("plain", latency=0.1, text="a plain answer")
    b.model("m", fault="401_echo")
    b.model("partial", fault="401_partial")
    c.model("m", latency=0.2, tokens=4, fault="error_echo")
    c.model("rev-401", fault="401_echo")
    c.model("rev", latency=0.1, tokens=3, fault="echo")

    def agent(fake, model, name):
        return {"name": name, "api_url": fake.url + "/v1", "model": model, "api_key_env": "HOSTED_KEY"}

    workers = [agent(a, "echo", "Echo"), agent(a, "plain", "Plain"), agent(b, "m", "Quoted"),
               agent(b, "partial", "Abbreviated"), agent(c, "m", "ErrorLine")]
    write_config(tmp_path / "two.json", {"reviewer_agent": [agent(c, "rev-401", "Rev401"), agent(c, "rev", "RevEcho")],
                                         "worker_agents": workers})
    write_config(tmp_path / "one.json", {"reviewer_agent": agent(c, "rev-401", "Rev401"), "worker_agents": workers})
    as_json = invoke("run", "hi", "-c", "two.json", "--json")
    as_text = invoke("run", "hi", "-c", "one.json")  # the reviewer fails: its error is in the warning line
    assert as_json.exit_code == 0 and as_text.exit_code == 0
    # The servers really were sent the key, and quoted it back.
    assert {r.authorization for f in servers for r in f.requests} == {f"Bearer {KEY}"}
    data = json.loads(as_json.stdout)
    echo, plain, quoted, abbreviated, error_line = data["workers"]
    assert plain["content"] == "a plain answer"
    assert echo["status"] == "ok" and echo["content"].endswith("you sent Bearer ***, thanks")
    assert quoted["error_kind"] == abbreviated["error_kind"] == "http_status"
    assert "Incorrect API key provided: ***. You can find" in quoted["error"]
    assert "Incorrect API key provided: ***. You can find" in abbreviated["error"]
    assert "check the key in $HOSTED_KEY" in quoted["error"]
    assert error_line["error_kind"] == "error" and "credentials expired: Bearer ***" in error_line["error"]
    assert data["final_source"] == "review" and "you sent Bearer ***" in data["final"]
    assert "warning: the reviewer failed" in as_text.stderr and "Incorrect API key provided: ***" in as_text.stderr
    abbreviated_form = KEY[:7] + "*" * (len(KEY) - 11) + KEY[-4:]
    everything = [as_json.stdout, as_json.stderr, as_text.stdout, as_text.stderr, *outputs_of_history()]
    assert not [t for t in everything if abbreviated_form in t or KEY[-4:] + "." in t]
    assert_kept_secret(KEY, *everything)


def test_what_counts_as_showing_a_key():
    from parallama.redact import Redactor

    redact = Redactor([KEY, "short"])
    assert redact(f"key={KEY}.") == "key=***."
    assert redact(f"prefix {KEY[:12]} and a middle {KEY[15:23]}") == "prefix *** and a middle ***"
    assert redact(f"quoted {KEY[:6]}***{KEY[-3:]} or {KEY[:3]}...{KEY[-4:]}") == "quoted *** or ***"
    # Shorter runs are ordinary text (and a short secret counts only whole).
    plain = f"{KEY[:7]} {KEY[10:17]} shor e.g... 3 *** stars"
    assert redact(plain) == plain
    assert redact("a short one") == "a *** one"


def test_the_live_view_masks_a_key_while_it_streams(servers, monkeypatch):
    from rich.console import Console

    from parallama.config import fleet_from_dict
    from parallama.events import Delta
    from parallama.report.live import LiveView

    monkeypatch.setenv("HOSTED_KEY", KEY)
    fleet = fleet_from_dict({"worker_agents": [{"name": "W", "api_url": servers[0].url + "/v1", "model": "m",
                                                "api_key_env": "HOSTED_KEY"}]})
    view = LiveView(fleet, Console(file=StringIO(), force_terminal=True, width=200))
    for piece in ("the key is ", KEY[:20], KEY[20:], " ok"):
        view(Delta("run", "workers", fleet.workers[0], piece))
    out = StringIO()
    Console(file=out, width=200, color_system=None).print(view.render())
    assert "the key is *** ok" in out.getvalue() and not leaks(out.getvalue(), KEY)


# ---------------------------------------------------------------- 4. a password in api_url

def test_a_password_in_api_url_is_sent_but_never_shown_or_stored(tmp_path):
    token = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    with FakeServer(require_authorization=f"Basic {token}") as guarded, FakeServer() as plain:
        guarded.model("m", latency=0.1, text="guarded answer")
        guarded.model("rev", latency=0.1, text="reviewed")
        plain.model("m", fault="500")

        def at(fake_url: str) -> str:
            return fake_url.replace("http://", f"http://bob:{PASSWORD}@")

        dead = f"http://127.0.0.1:{free_port()}"
        write_config(tmp_path / "c.json", {
            "reviewer_agent": {"name": "Rev", "api_url": at(guarded.url) + "/api/chat", "model": "rev"},
            "worker_agents": [{"name": "Guarded", "api_url": at(guarded.url) + "/api/chat", "model": "m"},
                              {"name": "Dead", "api_url": at(dead) + "/api/chat", "model": "m"},
                              {"name": "Broken", "api_url": at(plain.url) + "/v1", "model": "m"}]})
        as_json = invoke("run", "hi", "-c", "c.json", "--json")
        as_text = invoke("run", "hi", "-c", "c.json")
        plan = invoke("plan", "-c", "c.json", "--json", "--ram", "64", "--vram", "0")
        doctor = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
        probes = [r.path for r in guarded.requests]
    assert as_json.exit_code == 0 and as_text.exit_code == 0 and as_text.stdout == "reviewed\n"
    data = json.loads(as_json.stdout)
    guarded_row, dead_row, broken_row = data["workers"]
    assert guarded_row["content"] == "guarded answer"  # the password was sent, as Basic auth
    assert guarded_row["api_url"] == f"{guarded.url}/api/chat"
    assert dead_row["error"].startswith(f"Dead ({dead}/api/chat): connection refused")
    assert broken_row["error"].startswith(f"Broken ({plain.url}/v1/chat/completions): HTTP 500")
    # doctor and plan probe with it too: the guarded server answers them (no 401).
    assert "/api/show" in probes
    assert f"✓ {guarded.url.replace('127.0.0.1', 'localhost')}: 0.12.6 answers" in doctor.stdout
    assert "HTTP 401" not in doctor.stdout
    config = json.loads(invoke("history", "show", data["history_id"], "--json").stdout)["config"]
    assert config["worker_agents"][0]["api_url"] == f"{guarded.url}/api/chat"
    everything = [as_json.stdout, as_json.stderr, as_text.stdout, as_text.stderr, plan.stdout, plan.stderr,
                  doctor.stdout, doctor.stderr, *outputs_of_history()]
    assert not [t for t in everything if "bob:" in t or PASSWORD in t or token in t]
    assert_kept_secret(PASSWORD, *everything)
    assert b"bob:" not in stored_bytes() and token.encode() not in stored_bytes()


def test_a_password_in_api_url_and_a_key_variable_are_one_too_many(tmp_path, monkeypatch):
    monkeypatch.setenv("K", KEY)
    write_config(tmp_path / "c.json", {"worker_agents": [
        {"api_url": f"http://bob:{PASSWORD}@localhost:1/v1", "model": "m", "api_key_env": "K"}]})
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 2
    assert "worker_agents[0].api_key_env: api_url has a user:password and api_key_env names a key" in result.stderr
    assert PASSWORD not in result.stderr


# ---------------------------------------------------------------- 9. probes that must not mislead

def test_doctor_sends_the_key_and_a_slow_show_is_only_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTED_KEY", KEY)
    with FakeServer(require_authorization=f"Bearer {KEY}") as keyed, FakeServer() as slow:
        keyed.model("m")
        slow.model("m", show_delay=30)
        write_config(tmp_path / "c.json", {"worker_agents": [
            {"api_url": keyed.url + "/v1", "model": "m", "api_key_env": "HOSTED_KEY"}, worker(slow, "m")]})
        result = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    lines = result.stdout.splitlines()
    keyed_url, slow_url = (f.url.replace("127.0.0.1", "localhost") for f in (keyed, slow))
    assert any(line.startswith(f"✓ {keyed_url}: OpenAI-compatible answers") for line in lines), result.stdout
    assert any(line.startswith(f"✓ {slow_url}: 0.12.6 answers") for line in lines), result.stdout
    assert f"⚠ {slow_url}: /api/show did not answer for m within 5 s; memory is estimated without it" in lines
    assert f"✓ m: m is on {keyed_url}" in lines and f"✓ m (2): m is on {slow_url}" in lines
    assert "unusable" not in result.stdout and "ollama serve" not in result.stdout and "is this an" not in result.stdout
    assert result.exit_code == 0 and not leaks(result.stdout + result.stderr, KEY)


def test_https_to_a_plain_http_server_and_a_port_that_is_not_http(tmp_path, server):
    server.model("m", latency=0.05, text="fine")
    with BannerServer() as banner:
        tls = server.url.replace("http://", "https://")
        write_config(tmp_path / "c.json", {"worker_agents": [
            worker(server, "m", name="Good"), {"name": "TLS", "api_url": tls + "/api/chat", "model": "m"},
            {"name": "SSH", "api_url": banner.url + "/api/chat", "model": "m"}]})
        run = invoke("run", "hi", "-c", "c.json", "--no-review")
        doctor = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert run.exit_code == 0 and "## Good\nfine" in run.stdout
    tls_line = next(line for line in run.stderr.splitlines() if line.startswith("✗ TLS"))
    ssh_line = next(line for line in run.stderr.splitlines() if line.startswith("✗ SSH"))
    assert f"127.0.0.1:{server.port} answers, but the TLS handshake failed" in tls_line
    assert "use http:// in api_url" in tls_line
    assert f"what answers on 127.0.0.1:{banner.port} does not speak HTTP (it sent 'SSH-2.0-OpenSSH" in ssh_line
    assert "another program" in ssh_line
    for text in (run.stderr, doctor.stdout):
        assert "ollama serve" not in text and "parallama up" not in text
        # aiohttp's own words ("400, message='Bad status line'"): a whole 400, not one inside a random port number
        assert "Bad status line" not in text and not re.search(r"\b400\b", text) and "Traceback" not in text
    assert doctor.exit_code == 1
    assert "answers, but the TLS handshake failed" in doctor.stdout and "use http:// in api_url" in doctor.stdout
    assert "does not speak HTTP (it sent 'SSH-2.0-OpenSSH" in doctor.stdout
