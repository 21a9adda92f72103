"""Hostile input to `serve`, second round (issue 20): DNS rebinding, secrets in the access log and in config errors,
small wrong-shape requests, think tags in answers, signals, a damaged history, slow and greedy clients, huge
answers and bodies. Each answer is in the API's own shape; nothing reaches a worker that should not."""

from __future__ import annotations

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
