"""Hostile input to `serve`, second round (issue 20): DNS rebinding, secrets in the access log and in config errors,
small wrong-shape requests, think tags in answers, signals, a damaged history, slow and greedy clients, huge
answers and bodies. Each answer is in the API's own shape; nothing reaches a worker that should not."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from conftest import guide_fleet, invoke, write_config
from test_serve_cli import start_serve, stop

ASK = {"model": "parallama", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
KEY = "sk-serve-hostile-Zq8vN3xK7pL2mW9r"


async def request(method: str, url: str, body: dict | None = None, **headers: str) -> tuple[int, dict, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=body, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


# ---------------------------------------------------------------- 5. DNS rebinding on a keyless serve

async def test_a_keyless_loopback_serve_answers_only_its_own_names(servers, serve):
    running = await serve(guide_fleet(servers))
    port = running.port
    rebound = {"Host": f"evil.com:{port}", "Origin": f"http://evil.com:{port}"}
    probes = [("POST", "/api/chat", ASK), ("POST", "/v1/chat/completions", ASK), ("GET", "/api/ps", None),
              ("POST", "/api/show", {"model": "parallama"}), ("GET", "/api/tags", None), ("GET", "/ui/", None),
              ("GET", "/ui/api/fleet", None)]
    for method, path, body in probes:
        status, headers, raw = await request(method, running.url + path, body, **rebound)
        assert status == 403, (path, status)
        assert "Access-Control-Allow-Origin" not in headers
        assert "reached as 'evil.com" in (json.loads(raw)["error"]["message"] if path.startswith("/v1")
                                         else json.loads(raw)["error"])
    status, headers, _ = await request("OPTIONS", running.url + "/api/chat", **rebound,
                                       **{"Access-Control-Request-Method": "POST"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    # Without the Origin too: a rebound page's simple request must not run the fleet either.
    status, _, _ = await request("POST", running.url + "/api/chat", ASK, Host=f"evil.com:{port}")
    assert status == 403
    assert all(not s.requests for s in servers)  # no worker was asked
    # Its own names still work, with and without a port.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"app.localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        status, _, raw = await request("POST", running.url + "/api/chat", ASK, Host=host)
        assert status == 200, (host, raw)
        assert json.loads(raw)["message"]["content"] == "The answer is 4."


async def test_with_a_key_any_name_may_call(servers, serve):
    running = await serve(guide_fleet(servers), api_key=KEY)
    status, _, _ = await request("POST", running.url + "/api/chat", ASK, Host="evil.com",
                                 Authorization=f"Bearer {KEY}")
    assert status == 200  # a rebound page cannot know the key
    status, _, _ = await request("POST", running.url + "/api/chat", ASK, Host="evil.com")
    assert status == 401


async def test_allow_origin_star_stays_within_one_label(servers, serve):
    running = await serve(guide_fleet(servers), allow_origins=("https://*.example.com", "http://localhost:*"))
    for origin, allowed in (("https://app.example.com", True), ("https://.example.com", True),
                            ("https://evil.com/.example.com", False), ("https://evil.com?.example.com", False),
                            ("https://evil.com#.example.com", False), ("https://a.b.example.com", False),
                            ("https://evil.com:1.example.com", False), ("https://x@evil.example.com", False),
                            ("http://localhost:5173", True)):
        status, headers, _ = await request("GET", running.url + "/api/tags", Origin=origin)
        assert (status == 200) is allowed, origin
        assert (headers.get("Access-Control-Allow-Origin") == origin) is allowed, origin


# ---------------------------------------------------------------- 6. serve's key in a query string

def test_the_access_log_leaves_out_query_strings_and_masks_keys_in_paths(tmp_path, servers):
    write_config(tmp_path / "c.json", guide_fleet(servers))
    process, url, _ = start_serve("-c", "c.json", "--no-history", "--api-key-env", "SERVE_KEY",
                                  env={"SERVE_KEY": KEY})
    try:
        import urllib.error
        import urllib.request

        for path in (f"/api/tags?key={KEY}", f"/v1/models/{KEY}", f"/api/tags?q=1&api_key={KEY[:12]}x",
                     "/api/x%0Afake%20line"):
            try:
                urllib.request.urlopen(url + path, timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code in (401, 404)
    finally:
        err = stop(process)
    assert '"GET /api/tags?… HTTP/1.1" 401' in err
    assert '"GET /v1/models/*** HTTP/1.1" 401' in err
    assert '"GET /api/x\\nfake line HTTP/1.1" 401' in err  # one line per request, whatever the path holds
    assert KEY[:8] not in err and KEY[-8:] not in err


# ---------------------------------------------------------------- 7. a URL password in a config error

@pytest.mark.parametrize("password", ["pa/ss-Wq4tPz7L", "pa#ss-Wq4tPz7L", "pa?ss-Wq4tPz7L", "pa@ss/Wq4tPz7L"])
def test_a_config_error_never_shows_a_url_password(tmp_path, password):
    write_config(tmp_path / "c.json", {
        "worker_agents": [{"api_url": f"http://alice:{password}@host:1/api/chat", "model": "m"}],
        "servers": {f"http://bob:{password}@host:2": {"parallel": 2}}})
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 2
    shown = result.stdout + result.stderr
    assert "worker_agents[0].api_url" in shown and "%2F %3F %23" in shown
    assert "Wq4tPz7L" not in shown and "alice" not in shown and "bob" not in shown, shown


# ---------------------------------------------------------------- 11. small wrong-shape requests

async def test_a_content_part_whose_text_is_not_a_string_is_a_400_the_sdk_does_not_retry(servers, serve):
    import openai

    running = await serve(guide_fleet(servers))
    client = openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="none")  # retries: the SDK's default, 2
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="parallama", messages=[
            {"role": "user", "content": [{"type": "text", "text": 5}]}])  # type: ignore[list-item]
    assert refused.value.param == "messages.0.content.0.text" and "valid string" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert all(not s.requests for s in servers)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [980, 5000, 100_000])
async def test_json_nested_too_deep_is_a_400_in_each_apis_shape(servers, serve, depth):
    running = await serve(guide_fleet(servers))
    deep = '{"model": "parallama", "messages": [{"role": "user", "content": "hi"}], "options": {"x": %s}}' \
        % nested(depth)
    for path, openai_shape in (("/api/chat", False), ("/api/generate", False), ("/api/show", False),
                               ("/v1/chat/completions", True), ("/ui/api/runs", False)):
        async with aiohttp.ClientSession() as session:
            async with session.post(running.url + path, data=deep,
                                    headers={"Content-Type": "application/json"}) as response:
                body = await response.json()
                assert response.status == 400, (path, body)
        message = body["error"]["message"] if openai_shape else body["error"]
        assert "nested too deep" in message, (path, message)
    assert all(not s.requests for s in servers)


async def test_a_role_or_option_name_with_a_line_break_is_a_400_before_any_worker_runs(servers, serve):
    running = await serve(guide_fleet(servers))
    hi = {"role": "user", "content": "hi"}
    cases = [("/api/chat", {**ASK, "messages": [{"role": "x\r\nX-Evil: 1", "content": "a"}, hi]}, "messages.0.role"),
             ("/api/chat", {**ASK, "options": {"temperature\r\nX-Evil: 1": 1}}, "options"),
             ("/api/generate", {"model": "parallama", "prompt": "hi", "options": {"a b\n": 1}}, "options"),
             ("/v1/chat/completions", {**ASK, "messages": [{"role": "tool\n", "content": "a"}, hi]},
              "messages.0.role")]
    for path, body, where in cases:
        status, headers, raw = await request("POST", running.url + path, body)
        assert status == 400, (path, raw)
        error = json.loads(raw)["error"]
        message = error["message"] if path.startswith("/v1") else error
        assert message.startswith(where) and "is not a name" in message, message
    assert all(not s.requests for s in servers)
    # Roles the fleet leaves out are still named in the header.
    status, headers, _ = await request("POST", running.url + "/api/chat",
                                       {**ASK, "messages": [{"role": "tool", "content": "a"}, hi]})
    assert status == 200 and headers["X-Parallama-Ignored"] == "tool messages"


# ---------------------------------------------------------------- 17. think tags inside the progress

async def test_think_tags_in_a_workers_answer_neither_close_the_block_nor_come_back_next_turn(servers, serve):
    import openai

    config = guide_fleet(servers)
    # (An answer with a `</think>` and no `<think>` before it would be R1-style thinking: see test_thinking.py.)
    servers[0].model("m", latency=0.1, tokens=6, text="Tags: <THINK> then </think> and </Think")
    servers[1].model("m", latency=0.1, text="Beta says 4 <think></think>")
    running = await serve(config, progress="think-tags")
    client = openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="none")
    stream = await client.chat.completions.create(
        model="parallama", stream=True, messages=[{"role": "user", "content": "2 + 2?"}])
    content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    lowered = content.lower()
    assert content.startswith("<think>\n") and lowered.count("<think") == 1 and lowered.count("</think") == 1
    progress, answer = content.split("</think>")
    assert "Alpha" not in answer and answer.strip() == "The answer is 4."
    assert "Tags: <\u200bTHINK> then <\u200b/think> and <\u200b/Think" in progress  # shown, but only text
    # The next turn: the earlier answer goes back without serve's progress.
    for s in servers:
        s.reset()
    servers[0].model("m", latency=0.05, text="ok")
    servers[1].model("m", latency=0.05, text="ok")
    await client.chat.completions.create(model="parallama", messages=[
        {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": content},
        {"role": "user", "content": "and 3 + 3?"}])
    earlier = servers[0].requests[0].messages[-2]
    assert earlier == {"role": "assistant", "content": "The answer is 4."}


def test_only_the_blocks_an_answer_starts_with_are_reasoning():
    from parallama.serve.conversation import without_reasoning

    assert without_reasoning("<think>a</think>\n<details type=\"reasoning\">b</details> The <think>x</think> y") \
        == "The <think>x</think> y"
    assert without_reasoning("Use <think>…</think> tags.") == "Use <think>…</think> tags."


# ---------------------------------------------------------------- 18. SIGTERM with runs in progress

def test_sigterm_marks_running_and_queued_runs_interrupted(tmp_path, servers):
    import threading
    import time
    import urllib.request

    config = guide_fleet(servers)
    servers[0].model("m", latency=30.0, tokens=30, text="slow " * 30)
    write_config(tmp_path / "c.json", config)
    process, url, _ = start_serve("-c", "c.json")
    body = json.dumps({**ASK, "stream": True}).encode()

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/api/chat", data=body), timeout=30).read()
        except (OSError, http.client.HTTPException):  # the server went away mid-answer, as it should
            pass

    askers = [threading.Thread(target=ask, daemon=True) for _ in range(2)]  # one runs, one waits for the slots
    for asker in askers:
        asker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(json.loads(invoke("history", "--json").stdout or "[]")) < 2:
        time.sleep(0.1)
    err = stop(process)
    assert process.returncode == 0, err
    runs = json.loads(invoke("history", "--json").stdout)
    assert len(runs) == 2 and [r["status"] for r in runs] == ["interrupted", "interrupted"], runs


# ---------------------------------------------------------------- 19. a damaged history database

def test_serve_warns_about_a_damaged_history_and_serves_unrecorded(tmp_path, servers):
    from parallama.paths import history_db

    path = history_db()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database" * 100)
    write_config(tmp_path / "c.json", guide_fleet(servers))
    process, url, banner = start_serve("-c", "c.json")
    try:
        import urllib.request

        reply = json.loads(urllib.request.urlopen(urllib.request.Request(
            url + "/api/chat", data=json.dumps(ASK).encode()), timeout=30).read())
        assert reply["message"]["content"] == "The answer is 4."
    finally:
        err = stop(process)
    text = "".join(banner) + err
    assert process.returncode == 0
    assert "warning:" in text and str(path) in text and "--no-history" in text and "history: off" in text
    assert "Unclosed" not in text and "Traceback" not in text
    assert path.read_bytes() == b"this is not a database" * 100  # left as it was, for the user to look at


# ---------------------------------------------------------------- 13. slow and greedy connections

HALF_SENT = b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def closed_within(reader, seconds: float) -> bool:
    import asyncio

    async def until_closed() -> None:
        while await reader.read(65536):
            pass

    try:
        await asyncio.wait_for(until_closed(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_half_sent_requests_are_closed_in_time_and_cannot_lock_others_out(servers, serve):
    import asyncio
    import time

    import ollama

    running = await serve(guide_fleet(servers), idle_timeout_s=1.0, body_timeout_s=1.0, max_connections=32)
    held = []
    for _ in range(100):  # three times the cap, each a request whose headers never end
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(HALF_SENT)
        held.append((reader, writer))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    reply = await ollama.AsyncClient(host=running.url).chat(
        "parallama", messages=[{"role": "user", "content": "2 + 2?"}])
    assert reply.message.content == "The answer is 4." and time.perf_counter() - started < 10
    # Room was made by closing the oldest idle ones: no more than the cap are still open ...
    still_open = [r for r, _ in held if not r.at_eof()]
    assert len(still_open) <= 32
    # ... and those are closed once their headers are overdue.
    # The timeout is 1 s (30 s unless set): the bounds leave room for a loaded machine and still tell them apart.
    assert all(await asyncio.gather(*(closed_within(r, 12.0) for r in still_open)))
    for _, writer in held:
        writer.close()

    # A body that stops coming: a 408 in the API's shape after the body timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(HALF_SENT + b"Content-Length: 1000\r\n\r\n" + b'{"model": "parallama"')
    started = time.perf_counter()
    answer = await asyncio.wait_for(reader.read(65536), 15)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'{"error": "the request body stopped coming' in answer
    assert 0.8 < time.perf_counter() - started < 12
    writer.close()

    # An idle keep-alive connection is closed after the idle timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    assert await closed_within(reader, 12.0)
    writer.close()


def flood(port: int, count: int) -> list:
    """`count` connections to `port` opened all at once (none waits for another to be taken), each sending the
    start of a request whose headers never end; those the server took stay open for the caller to close."""
    import resource
    import selectors
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256  # this process's own files besides
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    selector = selectors.DefaultSelector()
    opened = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        opened.append(sock)
    pending = len(opened)
    while pending:
        ready = selector.select(timeout=60)
        assert ready, f"{pending} of {count} connections still not made after 60 s"
        for key, _ in ready:
            selector.unregister(key.fileobj)
            pending -= 1
            sock = key.fileobj
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:  # type: ignore[union-attr]
                try:
                    sock.send(HALF_SENT)  # type: ignore[union-attr]
                except OSError:  # already closed by the server for room
                    pass
    selector.close()
    return opened


def test_a_serve_under_a_low_open_file_limit_outlasts_a_flood_of_half_sent_requests(tmp_path, servers):
    import re
    import resource

    import ollama

    write_config(tmp_path / "c.json", guide_fleet(servers))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # serve caps its connections at 64

    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", "-c", "c.json",
                                "--no-history"], stderr=subprocess.PIPE, text=True, preexec_fn=low_limit,
                               env={**os.environ})
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    url = re.search(r"Ollama API  (http://127\.0\.0\.1:\d+)", "".join(lines)).group(1)  # type: ignore[union-attr]
    held = []
    try:
        # Four times the file limit, all at once: taken in bursts, they ran serve out of files before its cap
        # could close any (asyncio's "socket.accept() out of system resource", a traceback a time).
        held = flood(int(url.rsplit(":", 1)[1]), 1000)
        files = len(os.listdir(f"/proc/{process.pid}/fd"))
        assert files < 256 - 64, f"serve holds {files} files under a limit of 256 and a cap of 64 connections"
        client = ollama.Client(host=url, timeout=15)  # each answered in time, though the flood goes on
        for _ in range(3):
            assert client.chat("parallama", messages=[{"role": "user", "content": "2 + 2?"}]).message.content \
                == "The answer is 4."
    finally:
        for sock in held:
            sock.close()
        err = stop(process)
    assert process.returncode == 0
    assert "Too many open files" not in err and "Traceback" not in err, err[-2000:]


SERVE_WITH_FEW_FILES = """
import asyncio, json, logging, os, resource, signal, sys
from parallama.config import as_fleet
from parallama.serve import ServeOptions, start
logging.basicConfig(format="%(message)s")
async def main():
    with open(sys.argv[1]) as file:
        fleet = as_fleet(json.load(file))
    # A cap set far above what the file limit allows: the process runs out of files before the cap is reached.
    running = await start(fleet, ServeOptions(history=False, max_connections=4096), port=0)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    print(running.url, flush=True)
    await stopped.wait()
    await running.close()
    print("closed", flush=True)
asyncio.run(main())
"""


def test_a_serve_out_of_files_says_so_once_and_answers_again_when_they_close(tmp_path, servers):
    import ollama

    write_config(tmp_path / "c.json", guide_fleet(servers))
    process = subprocess.Popen([sys.executable, "-c", SERVE_WITH_FEW_FILES, str(tmp_path / "c.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), process.communicate(timeout=60)
    held = flood(int(url.rsplit(":", 1)[1]), 300)  # far more than the 40 files left
    for sock in held:
        sock.close()
    reply = ollama.Client(host=url, timeout=30).chat("parallama", messages=[{"role": "user", "content": "2 + 2?"}])
    assert reply.message.content == "The answer is 4."
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert err.count("serve cannot take a new connection (out of open files") == 1, err[-2000:]
    assert "Traceback" not in err and "closed" in out, err[-2000:]



# ---------------------------------------------------------------- 14. an answer that never ends, a client that does not read

def test_an_endless_answer_fails_that_worker_too_long_and_serves_memory_stays_bounded(tmp_path, servers):
    import socket
    import threading
    import time

    import ollama
    import psutil

    a, b, c = servers
    config = guide_fleet(servers)
    a.model("m", latency=0.1, tokens=4, fault="endless")
    write_config(tmp_path / "c.json", config)
    process, url, _ = start_serve("-c", "c.json", "--no-history")
    serving = psutil.Process(process.pid)
    peak = [serving.memory_info().rss]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                peak.append(serving.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # A client that does not read its stream for a while …
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({**ASK, "stream": True}).encode()
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        # … while another asks the same and waits for the whole answer.
        started = time.perf_counter()
        # Not cut, the endless answer would never end: the client's bound only says "it ends" (a loaded machine
        # takes many seconds to stream and read a million characters).
        reply = ollama.Client(host=url, timeout=180).chat("parallama", messages=ASK["messages"], stream=False)
        took = time.perf_counter() - started
        assert reply.message.content == "The answer is 4."
        assert "✗ A (" in reply.message.thinking and "ran past 1,000,000 characters" in reply.message.thinking
        assert "too_long" not in reply.message.thinking  # the kind is for --json; the words are for people
        idle.settimeout(120)
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            chunk = idle.recv(1 << 16)
            assert chunk, received[-500:]
            received += chunk
        assert b'"done": true' in received and b"ran past 1,000,000 characters" in received
        idle.close()
    finally:
        done.set()
        stop(process)
    grew = (max(peak) - peak[0]) / 2**20
    print(f"serve's RSS: {peak[0] / 2**20:.0f} MiB at start, {max(peak) / 2**20:.0f} MiB at most; run {took:.1f} s")
    assert grew < 150, f"serve grew by {grew:.0f} MiB"


def test_max_answer_chars_in_the_config_and_the_kind_in_json(tmp_path, servers):
    a, b, c = servers
    config = guide_fleet(servers)
    a.model("m", latency=0.1, tokens=4, fault="endless")
    config["worker_agents"][0]["max_answer_chars"] = 5000
    write_config(tmp_path / "c.json", config)
    result = invoke("run", "2 + 2?", "-c", "c.json", "--json", "--no-history")
    data = json.loads(result.stdout)
    row = data["workers"][0]
    assert row["status"] == "error" and row["error_kind"] == "too_long"
    assert "ran past 5,000 characters (max_answer_chars)" in row["error"] and len(row["content"]) <= 5000
    assert data["final"] == "The answer is 4." and result.exit_code == 0


# ---------------------------------------------------------------- 15. heavy work off the event loop

class Pinger:
    """Asks `/api/version` over and over on one keep-alive connection, keeping the longest wait."""

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/api/version")
            connection.getresponse().read()
            self.waits.append(time.perf_counter() - started)
            time.sleep(0.01)

    def __enter__(self) -> "Pinger":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers={
                "Content-Type": "application/json"}), timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_big_bodies_and_long_replays_do_not_stall_other_clients(tmp_path, servers):
    import time
    import urllib.request

    for fake in servers:
        fake.model("m", latency=0.05, text="Alpha says four.")
    config = guide_fleet(servers)
    write_config(tmp_path / "c.json", config)
    process, url, _ = start_serve("-c", "c.json")
    try:
        turns = [{"role": "user" if i % 2 == 0 else "assistant",
                  "content": f"turn {i}" if i % 2 == 0 else f"**answer** {i}\n\n- a\n- b `c`"}
                 for i in range(100_000)] + [{"role": "user", "content": "and now?"}]
        status, reply = post_json(url + "/api/chat", json.dumps({**ASK, "messages": turns}).encode())
        assert status == 200, reply
        [latest] = json.loads(urllib.request.urlopen(url + "/ui/api/history?limit=1", timeout=30).read())["runs"]
        # 15 MiB to read and parse (refused only once parsed: the last message is not the user's), 40 MiB refused
        # as it comes, and the long conversation laid out for the page.
        big = json.dumps({**ASK, "messages": [{"role": "user", "content": "word " * (3 * 2**20)},
                                              {"role": "assistant", "content": "no"}]}).encode()
        too_big = b'{"model": "parallama", "messages": [{"role": "user", "content": "' + b"x" * (40 * 2**20) + b'"}]}'
        with Pinger(url) as busy:
            took = {}
            started = time.perf_counter()
            status, reply = post_json(url + "/api/chat", big)
            took["15 MiB body"] = time.perf_counter() - started
            assert status == 400 and "the last message must be the user's" in reply["error"]
            started = time.perf_counter()
            status, reply = post_json(url + "/api/chat", too_big)
            took["40 MiB body"] = time.perf_counter() - started
            assert status == 413 and "larger than 16 MiB" in reply["error"]
            started = time.perf_counter()
            events = json.loads(urllib.request.urlopen(url + f"/ui/api/history/{latest['id']}", timeout=120)
                                .read())["events"]
            took["replay"] = time.perf_counter() - started
        context = events[0]["context"]
        assert len(context) == 100_000
        rendered = [turn for turn in context if "html" in turn]
        assert len(rendered) == 20 and rendered[-1]["html"].startswith("<p><strong>answer</strong> 99999</p>")
    finally:
        stop(process)
    longest, slowest = max(busy.waits), max(took.values())
    print(f"pings: {len(busy.waits)}, longest {longest * 1000:.0f} ms; "
          + ", ".join(f"{what} {s:.2f} s" for what, s in took.items()))
    # Done in the loop, a piece of this work would hold every other client for all of its time (it was 4.6 s for
    # a 50 MB body, 1.5 s for the replay): a ping then waits about as long as the slowest piece takes. A ping
    # waits well under half of that, measured in the same run (a loaded machine slows both), or under 0.6 s.
    assert longest < max(0.6, slowest / 2), (longest, took)
