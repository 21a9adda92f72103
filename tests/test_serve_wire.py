"""`serve`'s bytes on the wire: NDJSON lines that parse one by one, SSE chunks that share one id, usage only when
asked, keepalives while a worker is slow, errors in each API's shape, progress modes."""

from __future__ import annotations

import json

import aiohttp

from conftest import guide_fleet, worker

ASK = {"model": "parallama", "messages": [{"role": "user", "content": "2 + 2?"}]}


async def post(url: str, body: dict, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers=headers) as response:
            return response, await response.read()


def ndjson(raw: bytes) -> list[dict]:
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert all(line.strip() for line in lines)  # never a blank line: the ollama client parses every one
    return [json.loads(line) for line in lines]


def sse(raw: bytes) -> tuple[list[str], list[str]]:
    """(data payloads, comment lines) of an event stream."""
    events = raw.decode().split("\n\n")
    assert events[-1] == ""
    data, comments = [], []
    for event in events[:-1]:
        for line in event.split("\n"):
            if line.startswith("data: "):
                data.append(line[6:])
            else:
                assert line.startswith(":"), line
                comments.append(line)
    return data, comments


async def test_every_ndjson_line_parses_alone_and_carries_a_role(servers, serve):
    running = await serve(guide_fleet(servers))
    response, raw = await post(running.url + "/api/chat", ASK)
    assert response.status == 200 and response.content_type == "application/x-ndjson"
    lines = ndjson(raw)
    assert all(line["message"]["role"] == "assistant" and line["model"] == "parallama" for line in lines)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    last = lines[-1]
    for name in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                 "eval_duration"):
        assert isinstance(last[name], int) and last[name] >= 0, name
    assert last["done_reason"] == "stop" and last["message"]["content"] == ""


async def test_sse_chunks_share_one_id_and_usage_comes_only_when_asked(servers, serve):
    running = await serve(guide_fleet(servers))
    for include_usage in (False, True):
        body = {**ASK, "stream": True, **({"stream_options": {"include_usage": True}} if include_usage else {})}
        response, raw = await post(running.url + "/v1/chat/completions", body)
        assert response.content_type == "text/event-stream"
        data, _ = sse(raw)
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        usage = [c for c in chunks if "usage" in c]
        if include_usage:
            assert usage == [chunks[-1]] and chunks[-1]["choices"] == []
            assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        else:
            assert usage == [] and chunks[-1]["choices"][0]["finish_reason"] == "stop"
        for chunk in chunks:
            for choice in chunk["choices"]:
                assert not ("reasoning_content" in choice["delta"] and "content" in choice["delta"])


async def test_keepalives_while_a_worker_is_slow(servers, serve):
    config = guide_fleet(servers)
    servers[1].model("m", latency=1.2, tokens=2, ttft=1.0, text="Beta, slowly.")
    running = await serve(config, keepalive_s=0.2)
    _, raw = await post(running.url + "/api/chat", ASK)
    thinking = [line["message"].get("thinking", "") for line in ndjson(raw)]
    waiting = [t for t in thinking if t.startswith("…") and "waiting for B" in t]
    assert len(waiting) >= 3
    _, raw = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    _, comments = sse(raw)
    assert len(comments) >= 3 and any("waiting for B" in c for c in comments)


async def test_every_stream_keeps_alive_by_the_same_rule(servers, serve):
    """One feed follows every served run: a worker silent for 1.2 s gets a keepalive each 0.2 s on Ollama's chat,
    OpenAI's chat, the page's event stream and one agent's own model alike."""
    config = guide_fleet(servers)
    servers[1].model("m", latency=1.2, tokens=2, ttft=1.0, text="Beta, slowly.")
    running = await serve(config, keepalive_s=0.2)
    _, ollama = await post(running.url + "/api/chat", ASK)
    _, openai = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    await post(running.url + "/ui/api/runs", {"prompt": "2 + 2?"})  # the first page run loads the Markdown renderer
    _, page = await post(running.url + "/ui/api/runs", {"prompt": "2 + 2?"})
    _, alone = await post(running.url + "/v1/chat/completions", {**ASK, "model": "parallama/b", "stream": True})
    counts = {"ollama": sum(1 for line in ndjson(ollama) if line["message"].get("thinking", "").startswith("…")),
              "openai": len(sse(openai)[1]), "page": len(sse(page)[1]), "alone": len(sse(alone)[1])}
    assert all(3 <= n <= 7 for n in counts.values()), counts


async def test_no_keepalive_when_the_run_is_quick(servers, serve):
    running = await serve(guide_fleet(servers), keepalive_s=5)
    _, raw = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    assert sse(raw)[1] == []


async def test_think_tags_put_the_progress_in_the_content(servers, serve):
    running = await serve(guide_fleet(servers), progress="think-tags")
    _, raw = await post(running.url + "/api/chat", ASK)
    lines = ndjson(raw)
    assert not any("thinking" in line["message"] for line in lines)
    content = "".join(line["message"]["content"] for line in lines)
    assert content.startswith("<think>\nparallama: 2 workers")
    progress, _, answer = content.partition("\n</think>\n\n")
    assert "Alpha says four." in progress and answer == "The answer is 4."


async def test_progress_none_sends_the_answer_only(servers, serve):
    running = await serve(guide_fleet(servers), progress="none")
    _, raw = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    chunks = [json.loads(d) for d in sse(raw)[0][:-1]]
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "The answer is 4."
    _, raw = await post(running.url + "/v1/chat/completions", ASK)
    assert "reasoning_content" not in json.loads(raw)["choices"][0]["message"]


async def test_a_reviewer_cut_off_half_way_is_followed_by_a_note_and_the_answer_that_replaces_it(servers, serve):
    config = guide_fleet(servers)
    servers[2].model("rev", latency=0.2, tokens=6, text="one two three four five six", fault="cut")
    running = await serve(config)
    _, raw = await post(running.url + "/api/chat", ASK)
    lines = ndjson(raw)
    content = "".join(line["message"]["content"] for line in lines)
    partial, note, rest = content.partition("*[parallama: Rev stopped in the middle of its answer")
    assert partial.startswith("one two three") and note
    assert rest.endswith("the answer below replaces it]*\n\nAlpha says four.")
    assert lines[-1]["done"] is True


async def test_errors_after_the_stream_began_are_an_error_line_and_the_note_once_on_openai(servers, serve):
    a, b, c = servers
    a.model("m", fault="500")
    running = await serve({"worker_agents": [worker(a, "m", name="A")], "reviewer_agent": worker(c, "rev")})
    response, raw = await post(running.url + "/api/chat", ASK)
    assert response.status == 200  # the stream began with the progress
    last = ndjson(raw)[-1]
    assert list(last) == ["error"] and "every worker failed" in last["error"] and "HTTP 500" in last["error"]
    _, raw = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    data, _ = sse(raw)
    assert data[-1] == "[DONE]"
    # The note is the content, once; no error event after it (front-ends show one as two more copies of it).
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "stop"
    assert "every worker failed" in json.loads(data[-3])["choices"][0]["delta"]["content"]
    assert not any('"error"' in line for line in data)


async def test_bad_requests_are_answered_in_each_apis_shape(servers, serve):
    running = await serve(guide_fleet(servers))
    async with aiohttp.ClientSession() as session:
        async def call(method: str, path: str, **kwargs) -> tuple[int, dict, aiohttp.typedefs.LooseHeaders]:
            async with session.request(method, running.url + path, **kwargs) as response:
                return response.status, await response.json(), response.headers

        status, body, headers = await call("POST", "/api/chat", data=b"{not json")
        assert status == 400 and isinstance(body["error"], str) and headers["x-should-retry"] == "false"
        status, body, _ = await call("POST", "/api/chat", json={"messages": []})
        assert status == 400 and body["error"].startswith("model:")
        status, body, _ = await call("POST", "/v1/chat/completions", json={"model": "parallama", "messages": []})
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["param"]
        status, body, _ = await call("POST", "/v1/chat/completions", json={**ASK, "n": 2})
        assert status == 400 and body["error"]["param"] == "n"
        status, body, _ = await call("POST", "/v1/chat/completions",
                                     json={"model": "parallama", "messages": [{"role": "assistant", "content": "x"}]})
        assert status == 400 and "last message must be the user's" in body["error"]["message"]
        status, body, _ = await call("GET", "/v1/embeddings")
        assert status == 404 and body["error"]["code"] is None and "no such endpoint" in body["error"]["message"]
        status, body, _ = await call("POST", "/api/embed", json={})
        assert status == 404 and "no such endpoint" in body["error"]
        status, body, _ = await call("GET", "/api/chat")
        assert status == 405 and "GET is not allowed" in body["error"]
        status, body, _ = await call("POST", "/api/show", json={"name": "parallama:council"})
        assert status == 200 and body["capabilities"] == ["completion", "tools"] and "model_info" in body
        async with session.head(running.url + "/") as response:
            assert response.status == 200


async def test_tags_entries_have_both_name_and_model_and_version_is_numeric(servers, serve):
    running = await serve(guide_fleet(servers))
    async with aiohttp.ClientSession() as session:
        async with session.get(running.url + "/api/tags") as response:
            models = (await response.json())["models"]
        async with session.get(running.url + "/api/version") as response:
            version = (await response.json())["version"]
        async with session.get(running.url + "/api/ps") as response:
            ps = await response.json()
    assert ps["models"] == [] and {s["in_flight"] for s in ps["servers"]} == {0}  # servers: each one's load (ours)
    assert all(m["name"] == m["model"] and {"modified_at", "size", "digest", "details"} <= set(m) for m in models)
    assert tuple(map(int, version.split("."))) >= (0, 1, 16)  # how Open WebUI reads it


async def test_ignored_request_options_are_named_in_a_header(servers, serve):
    running = await serve(guide_fleet(servers))
    response, _ = await post(running.url + "/v1/chat/completions", {**ASK, "temperature": 0.2, "max_tokens": 5})
    assert response.headers["X-Parallama-Ignored"] == "temperature, max_tokens"
    response, _ = await post(running.url + "/api/chat", {**ASK, "options": {"temperature": 0.2, "seed": 3}})
    assert response.headers["X-Parallama-Ignored"] == "options.temperature"
    assert "temperature" not in json.dumps([r.body for r in servers[0].requests])


async def test_a_fleet_key_in_the_reviewers_streamed_answer_is_masked_even_cut_in_pieces(servers, serve, monkeypatch):
    key = "sk-fleet-0123456789abcdefXYZ"
    monkeypatch.setenv("FLEET_KEY", key)
    config = guide_fleet(servers)
    config["reviewer_agent"]["api_key_env"] = "FLEET_KEY"
    # Inline thinking is cut into 5-character chunks: the key reaches serve in pieces.
    servers[2].model("rev", latency=0.1, tokens=1, text=f"Your key {key} is set.", thinking="checking",
                     thinking_style="inline")
    running = await serve(config)
    _, raw = await post(running.url + "/api/chat", ASK)
    content = "".join(line["message"]["content"] for line in ndjson(raw))
    assert content == "Your key *** is set."  # masked, and once: not repeated whole at the end
    _, raw = await post(running.url + "/v1/chat/completions", {**ASK, "stream": True})
    chunks = [json.loads(d) for d in sse(raw)[0][:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == content


async def test_another_sites_page_cannot_make_this_machine_run_the_fleet(servers, serve):
    """Like Ollama's OLLAMA_ORIGINS: a browser page from another site is refused before any worker is asked;
    pages on this machine and app shells get CORS headers; --allow-origin lets a named site in."""
    running = await serve(guide_fleet(servers))
    response, raw = await post(running.url + "/api/chat", ASK, Origin="https://evil.example")
    assert response.status == 403 and "evil.example" in json.loads(raw)["error"]
    response, raw = await post(running.url + "/v1/chat/completions", ASK, Origin="https://evil.example")
    assert response.status == 403 and json.loads(raw)["error"]["message"]
    assert not any(fake.requests for fake in servers)  # refused before any worker was asked

    for origin in ("http://localhost:3000", "http://127.0.0.1:8080", "vscode-webview://abc"):
        response, raw = await post(running.url + "/api/chat", {**ASK, "stream": False}, Origin=origin)
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == origin
        assert json.loads(raw)["message"]["content"]
    # Programs send no Origin and get no CORS headers.
    response, _ = await post(running.url + "/api/chat", {**ASK, "stream": False})
    assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers

    async with aiohttp.ClientSession() as session:
        async with session.options(running.url + "/v1/chat/completions", headers={
                "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as preflight:
            assert preflight.status == 204
            assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
            assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"

    allowed = await serve(guide_fleet(servers), allow_origins=("https://*.example.org",))
    response, _ = await post(allowed.url + "/api/chat", {**ASK, "stream": False}, Origin="https://chat.example.org")
    assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "https://chat.example.org"
    response, _ = await post(allowed.url + "/api/chat", {**ASK, "stream": False}, Origin="https://evil.example")
    assert response.status == 403
