"""The web page's server side, over real HTTP against fake model servers: the page and its files (with their
Content-Security-Policy), a run as server-sent events, the history, the load, and who may call the page's API.
What a person sees in the browser is in test_ui_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from importlib import resources

import aiohttp
import pytest

from conftest import guide_fleet, worker
from fakes import FakeServer

HOSTILE = ('Look: <script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2"> '
           "and [a link](javascript:window.__pwned=3) and <b>bold</b>")


async def get(url: str, **kwargs) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False, **kwargs) as response:
            return response, await response.read()


async def start_run(url: str, body: dict, headers: dict | None = None) -> tuple[aiohttp.ClientResponse, list[dict]]:
    """POST a run as the page does; its events, read to the end of the stream."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/ui/api/runs", json=body, headers=headers or {}) as response:
            if response.content_type != "text/event-stream":
                return response, [await response.json()]
            return response, [json.loads(line[6:]) async for line in response.content if line.startswith(b"data: ")]


async def until(condition, timeout: float = 30.0) -> None:
    """Wait until `condition()` holds (a bound for a hang, with room for a loaded machine; the caller asserts)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def by_type(views: list[dict], kind: str) -> list[dict]:
    return [v for v in views if v["type"] == kind]


async def test_a_browser_is_sent_to_the_page_and_health_checks_keep_their_text(servers, serve):
    running = await serve(guide_fleet(servers))
    browser, _ = await get(running.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status == 302 and browser.headers["Location"] == "/ui/"
    for accept in ("*/*", "application/json", None):
        probe, text = await get(running.url + "/", headers={"Accept": accept} if accept else {})
        assert probe.status == 200 and text == b"parallama is running"
    bare, _ = await get(running.url + "/ui")
    assert bare.status == 302 and bare.headers["Location"] == "/ui/"


async def test_the_page_ships_in_the_package_and_no_inline_script_may_run(servers, serve):
    running = await serve(guide_fleet(servers))
    page, html = await get(running.url + "/ui/")
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    # Every script is a file of this server; no inline script or handler, nothing from elsewhere.
    assert re.findall(rb"<script[^>]*>", html) == [b'<script type="module" src="app.js">']
    assert not re.search(rb"\son[a-z]+=", html) and b"http" not in html
    shipped = resources.files("parallama.serve").joinpath("static")
    assert html == shipped.joinpath("index.html").read_bytes()
    # The script is ES modules: app.js and every module it imports, each served as JavaScript (a module script
    # with another type is refused), each checked by TypeScript's checker (`// @ts-check`).
    modules, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        modules.add(name)
        source = shipped.joinpath(name).read_text()
        assert source.startswith("// @ts-check\n")
        todo += [m for m in re.findall(r'^import [^;]* from "\./([a-z]+\.js)";', source, re.M) if m not in modules]
    assert modules == {"app.js", "run.js", "draw.js", "dom.js", "format.js"}
    for name, kind in [*((m, "text/javascript") for m in sorted(modules)), ("app.css", "text/css"),
                       ("favicon.svg", "image/svg+xml")]:
        response, body = await get(running.url + "/ui/" + name)
        assert response.status == 200 and response.content_type == kind and body == shipped.joinpath(name).read_bytes()
        assert "Content-Security-Policy" in response.headers
    # The script builds the page from text only: server-rendered Markdown is its one use of innerHTML.
    script = "".join(shipped.joinpath(m).read_text() for m in modules)
    assert script.count("innerHTML") == 1 and "eval(" not in script and "insertAdjacentHTML" not in script
    missing, body = await get(running.url + "/ui/secrets.txt")
    assert missing.status == 404 and "error" in json.loads(body)


async def test_a_run_streams_every_stage_to_the_page_and_is_kept_in_the_history(servers, serve):
    config = guide_fleet(servers)
    servers[2].model("rev", latency=0.1, text="The answer is **4**.")
    running = await serve(config, history=True)
    response, views = await start_run(running.url, {"prompt": "2 + 2?"})
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    [opened] = by_type(views, "run")
    assert views[0] is opened and opened["prompt"] == "2 + 2?" and opened["strategy"] == "synthesize"
    assert [w["name"] for w in opened["workers"]] == ["A", "B"] and opened["reviewers"][0]["name"] == "Rev"
    assert [(v["stage"], v["agent"]) for v in by_type(views, "queued")] == [("workers", "A"), ("workers", "B"),
                                                                            ("review", "Rev")]
    assert by_type(views, "queued")[1]["server"] == servers[1].url.replace("127.0.0.1", "localhost")
    streamed = {}
    for delta in by_type(views, "delta"):
        streamed[delta["agent"]] = streamed.get(delta["agent"], "") + delta["text"]
    assert streamed == {"A": "Alpha says four.", "B": "Beta says 4.", "Rev": "The answer is **4**."}
    ended = {v["agent"]: v for v in by_type(views, "ended")}
    assert ended["A"]["status"] == "ok" and ended["A"]["content"] == "Alpha says four."
    assert ended["B"]["completion_tokens"] > 0 and ended["B"]["elapsed_s"] >= 0.15
    times = [v["t"] for v in views if "t" in v]
    assert times == sorted(times) and ended["Rev"]["t"] >= max(ended["A"]["t"], ended["B"]["t"])
    [result] = by_type(views, "result")
    assert views[-1] is result and result["final"] == "The answer is **4**."
    assert result["final_html"] == "<p>The answer is <strong>4</strong>.</p>\n" and result["final_source"] == "review"

    async with aiohttp.ClientSession() as session:
        async with session.get(running.url + "/ui/api/history") as listed:
            [kept] = (await listed.json())["runs"]
        assert kept["id"] == opened["run_id"] == result["history_id"] and kept["origin"] == "serve"
        assert kept["status"] == "complete" and kept["workers_ok"] == 2
        async with session.get(running.url + "/ui/api/history/" + kept["id"]) as reopened:
            replayed = (await reopened.json())["events"]
    # Reopened: the same run, stage by stage, without the streamed pieces.
    assert [v["type"] for v in replayed] == [v["type"] for v in views if v["type"] not in ("delta", "thinking")]
    assert by_type(replayed, "result")[0]["final_html"] == result["final_html"]
    assert {v["agent"]: v["content"] for v in by_type(replayed, "ended")} == {a: v["content"] for a, v in ended.items()}


async def test_a_reopened_run_keeps_its_timeline(tmp_path):
    """A worker that waited for a slot behind another is drawn waiting, then running, in the reopened run."""
    with FakeServer(slots=1) as shared, FakeServer(slots=1) as other:
        shared.model("a", latency=0.3)
        shared.model("c", latency=0.2)
        other.model("b", latency=0.2)
        other.model("rev", latency=0.1)
        config = {"worker_agents": [worker(shared, "a", name="A"), worker(other, "b", name="B"),
                                    worker(shared, "c", name="C")],
                  "reviewer_agent": worker(other, "rev", name="Rev")}
        from parallama.config import as_fleet
        from parallama.serve import ServeOptions, start

        running = await start(as_fleet(config), ServeOptions(history=True), port=0)
        try:
            _, views = await start_run(running.url, {"prompt": "hi"})
            _, body = await get(running.url + "/ui/api/history/" + views[0]["run_id"])
        finally:
            await running.close()
    replayed = json.loads(body)["events"]
    spans = {}
    for view in replayed:
        if view["type"] in ("queued", "started", "ended"):
            spans.setdefault(view["agent"], {})[view["type"]] = view["t"]
    # The moments the history kept, as the run had them (not laid out afresh).
    assert all(spans[name]["queued"] == pytest.approx(0, abs=0.05) for name in "ABC")
    assert spans["C"]["started"] == pytest.approx(spans["A"]["ended"], abs=0.05)  # C waited for A's slot
    assert spans["Rev"]["queued"] == pytest.approx(spans["C"]["ended"], abs=0.05)  # the review after the workers
    assert spans["Rev"]["queued"] >= spans["C"]["ended"] - 0.005
    live = {v["agent"]: v["t"] for v in by_type(views, "started")}
    assert spans["C"]["started"] == pytest.approx(live["C"], abs=0.05)


async def test_answers_reach_the_page_as_text_and_markdown_without_markup(servers, serve):
    config = guide_fleet(servers)
    servers[0].model("m", latency=0.05, text=HOSTILE)
    servers[2].model("rev", latency=0.05, text=HOSTILE)
    running = await serve(config)
    _, views = await start_run(running.url, {"prompt": "<script>window.__pwned = 4</script>"})
    assert by_type(views, "run")[0]["prompt"] == "<script>window.__pwned = 4</script>"  # text; the page shows it so
    [result] = by_type(views, "result")
    worker_html = {v["agent"]: v["html"] for v in by_type(views, "ended")}["A"]
    for html in (result["final_html"], worker_html):
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html
        assert "<script" not in html and "<img" not in html and "<b>" not in html
        assert "<a" not in html  # a javascript: link is refused: left as text


async def test_the_fleets_keys_and_serves_own_key_never_reach_the_page(servers, serve, monkeypatch):
    key = "sk-fleet-0123456789abcdefXYZ"
    monkeypatch.setenv("FLEET_KEY", key)
    config = guide_fleet(servers)
    config["worker_agents"][0]["api_key_env"] = "FLEET_KEY"
    servers[0].model("m", latency=0.1, tokens=4, fault="echo")  # the answer repeats the key, in two pieces
    running = await serve(config, api_key="serve-own-key-abcdef123")
    headers = {"Authorization": "Bearer serve-own-key-abcdef123"}
    _, views = await start_run(running.url, {"prompt": "my key is serve-own-key-abcdef123"}, headers)
    text = json.dumps(views)
    assert key not in text and key[3:11] not in text and "serve-own-key" not in text
    streamed = "".join(v["text"] for v in by_type(views, "delta") if v["agent"] == "A")
    assert "you sent Bearer ***, thanks" in streamed and by_type(views, "run")[0]["prompt"] == "my key is ***"


async def test_with_an_api_key_the_page_loads_but_its_api_wants_the_key(servers, serve):
    running = await serve(guide_fleet(servers), api_key="sk-page-key-123456")
    for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui/favicon.svg"):
        response, _ = await get(running.url + path)
        assert response.status == 200, path
    for path in ("/ui/api/fleet", "/ui/api/load", "/ui/api/history"):
        response, body = await get(running.url + path)
        assert response.status == 401 and "API key" in json.loads(body)["error"]
        response, _ = await get(running.url + path, headers={"Authorization": "Bearer sk-page-key-123456"})
        assert response.status == 200
    refused, [body] = await start_run(running.url, {"prompt": "hi"})
    assert refused.status == 401 and not servers[0].requests
    answered, views = await start_run(running.url, {"prompt": "hi"}, {"Authorization": "Bearer sk-page-key-123456"})
    assert answered.status == 200 and by_type(views, "result")[0]["final"] == "The answer is 4."


async def test_other_sites_cannot_use_the_pages_api(servers, serve):
    running = await serve(guide_fleet(servers))
    port = running.url.rsplit(":", 1)[1]
    refused = [
        ({"Origin": "http://evil.example"}, 403, "another site"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "another site"),
        ({"Host": f"rebound.example:{port}"}, 403, "IP address or localhost"),  # DNS rebinding
    ]
    for headers, status, words in refused:
        response, [body] = await start_run(running.url, {"prompt": "hi"}, headers)
        assert response.status == status and words in body["error"], headers
        response, body = await get(running.url + "/ui/api/history", headers=headers)
        assert response.status == status
    async with aiohttp.ClientSession() as session:  # a form post from another page: not JSON
        async with session.post(running.url + "/ui/api/runs", data="prompt=hi",
                                headers={"Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 415
    assert not servers[0].requests
    same, _ = await get(running.url + "/ui/api/fleet", headers={
        "Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin", "Host": f"localhost:{port}"})
    assert same.status == 200


async def test_a_name_may_reach_the_page_when_the_server_wants_a_key(servers, serve):
    running = await serve(guide_fleet(servers), api_key="sk-page-key-123456")
    port = running.url.rsplit(":", 1)[1]
    response, _ = await get(running.url + "/ui/api/fleet", headers={
        "Host": f"mybox.lan:{port}", "Authorization": "Bearer sk-page-key-123456"})
    assert response.status == 200


async def test_closing_the_stream_cancels_the_run_and_frees_its_slots(servers, serve):
    a, b, c = servers
    a.model("m", latency=30)
    b.model("m", latency=30)
    c.model("rev", latency=0.1)
    config = {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
              "reviewer_agent": worker(c, "rev", name="Rev")}
    running = await serve(config)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/ui/api/runs", json={"prompt": "slow"}) as response:
            async for line in response.content:
                if line.startswith(b"data: ") and json.loads(line[6:])["type"] == "started":
                    break
            await until(lambda: all(s.requests and s.requests[0].started for s in (a, b)))  # both being answered
            load = await (await session.get(running.url + "/ui/api/load")).json()
            assert {s["server"]: s["in_flight"] for s in load["servers"]}[a.url.replace("127.0.0.1", "localhost")] == 1
            assert load["runs"] == 1
        # The page went away (closed its stream).
        await until(lambda: a.requests and a.requests[0].disconnected and b.requests and b.requests[0].disconnected)
        assert a.requests[0].disconnected and b.requests[0].disconnected and not c.requests
        load = await (await session.get(running.url + "/ui/api/load")).json()
        assert all(s["in_flight"] == 0 and s["waiting"] == 0 for s in load["servers"]) and load["runs"] == 0


async def test_the_load_shows_requests_in_flight_and_waiting_per_server(servers, serve):
    a, b, _ = servers
    held = threading.Event()  # A holds the one slot (C waits) until the test has read the load
    a.model("slow", latency=1.0, hold=held)
    a.model("next", latency=0.1)
    config = {"worker_agents": [worker(a, "slow", name="A"), worker(a, "next", name="C")]}
    running = await serve(config)
    run = asyncio.create_task(start_run(running.url, {"prompt": "hi"}))
    server = a.url.replace("127.0.0.1", "localhost")
    try:
        await until(lambda: a.requests and a.requests[0].started)
        _, body = await get(running.url + "/ui/api/load")
        load = {s["server"]: s for s in json.loads(body)["servers"]}
    finally:
        held.set()
    assert load[server] == {"server": server, "slots": 1, "in_flight": 1, "waiting": 1,
                            "own_in_flight": 1, "own_waiting": 1, "shared": "local", "benched": None}
    _, views = await run
    [result] = by_type(views, "result")
    # No reviewer: the answers, each under its worker's name.
    assert result["final_source"] == "workers" and "## A" in result["final"] and "## C" in result["final"]
    assert by_type(views, "run")[0]["strategy"] is None


async def test_a_follow_up_sends_the_conversation_to_the_workers(servers, serve):
    running = await serve(guide_fleet(servers))
    context = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    _, views = await start_run(running.url, {"prompt": "And times 3?", "context": context})
    opened = by_type(views, "run")[0]
    assert [t["role"] for t in opened["context"]] == ["user", "assistant"] and opened["context"][1]["html"] == "<p>4</p>\n"
    sent = servers[0].requests[0].messages
    assert [m["content"] for m in sent[-3:]] == ["2 + 2?", "4", "And times 3?"]
    response, [body] = await start_run(running.url, {"prompt": "  "})
    assert response.status == 400 and "prompt" in body["error"]
    response, [body] = await start_run(running.url, {"prompt": "hi", "strategy": "debate"})
    assert response.status == 400 and "strategy" in body["error"]


async def test_the_review_stage_as_it_happens_judge_and_council(servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", latency=0.05, text=json.dumps({"scores": [
        {"response": "A", "score": 4, "reason": "vague"}, {"response": "B", "score": 9, "reason": "exact"}]}))
    running = await serve(config)
    _, views = await start_run(running.url, {"prompt": "2 + 2?", "strategy": "judge"})
    [result] = by_type(views, "result")
    assert result["final_source"] == "judge:B" and result["final"] == "Beta says 4."
    assert [(s["name"], s["score"], s["reason"]) for s in result["details"]["scores"]] == [("A", 4, "vague"), ("B", 9, "exact")]

    def ranks(messages):
        return "Fine.\nFINAL RANKING:\n1. Response A" if "FINAL RANKING" in messages[0]["content"] else "An answer."
    a.model("m", latency=0.05, respond=ranks)
    b.model("m", latency=0.05, respond=ranks)
    c.model("rev", latency=0.05, text="The council says 4.")
    _, views = await start_run(running.url, {"prompt": "2 + 2?", "strategy": "council"})
    [ranked] = by_type(views, "ranked")
    reviewer_queued = next(i for i, v in enumerate(views) if v["type"] == "queued" and v["stage"] == "review")
    assert views.index(ranked) < reviewer_queued  # before the reviewer writes
    assert {r["ranker"] for r in ranked["rankings"]} == {"A", "B"} and len(ranked["ranking"]) == 2
    assert {v["stage"] for v in by_type(views, "ended")} == {"workers", "ranking", "review"}
    assert by_type(views, "result")[0]["details"]["ranking"] == ranked["ranking"]


async def test_each_round_of_a_multi_round_run_reaches_the_page(servers, serve):
    config = guide_fleet(servers, strategy="synthesize", rounds=2)
    running = await serve(config)
    _, views = await start_run(running.url, {"prompt": "2 + 2?"})
    assert by_type(views, "run")[0]["rounds"] == 2
    assert [v["stage"] for v in by_type(views, "ended")] == ["workers", "workers", "round 2", "round 2", "review"]


async def test_runs_beyond_the_queue_are_refused_before_the_stream_begins(servers, serve):
    a, _, _ = servers
    a.model("m", latency=2)
    running = await serve({"worker_agents": [worker(a, "m", name="A")]}, max_queue=0)
    first = asyncio.create_task(start_run(running.url, {"prompt": "one"}))
    await until(lambda: a.requests)
    refused, [body] = await start_run(running.url, {"prompt": "two"})
    assert refused.status == 429 and "busy" in body["error"] and refused.headers["Retry-After"]
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_history_search_and_history_turned_off(servers, serve):
    running = await serve(guide_fleet(servers), history=True)
    for prompt in ("Why is the sky blue?", "What is rain?"):
        await start_run(running.url, {"prompt": prompt})
    _, body = await get(running.url + "/ui/api/history", params={"q": "SKY"})
    assert [r["prompt"] for r in json.loads(body)["runs"]] == ["Why is the sky blue?"]
    _, body = await get(running.url + "/ui/api/history/nope")
    assert "no run 'nope'" in json.loads(body)["error"]
    off = await serve(guide_fleet(servers))  # history off (the fixture's default)
    _, body = await get(off.url + "/ui/api/history")
    assert json.loads(body) == {"enabled": False, "runs": []}
    _, body = await get(off.url + "/ui/api/fleet")
    fleet = json.loads(body)
    assert fleet["history"] is False and fleet["strategy"] == "synthesize" and len(fleet["workers"]) == 2


async def test_the_pages_polls_of_the_load_stay_out_of_the_access_log(servers, caplog):
    import logging

    from parallama.config import as_fleet
    from parallama.serve import ServeOptions, start

    access = logging.getLogger("parallama.test.access")
    running = await start(as_fleet(guide_fleet(servers)), ServeOptions(history=False), port=0, access_log=access)
    try:
        with caplog.at_level(logging.INFO, logger=access.name):
            for path in ("/ui/api/load", "/ui/api/load", "/ui/api/fleet", "/api/tags"):
                await get(running.url + path)
    finally:
        await running.close()
    logged = [r.getMessage() for r in caplog.records if r.name == access.name]
    assert len(logged) == 2 and "GET /ui/api/fleet" in logged[0] and "GET /api/tags" in logged[1]


async def test_a_quiet_run_gets_keepalives_and_thinking_streams_apart(servers, serve):
    a, b, _ = servers
    a.model("m", latency=0.6, tokens=2, ttft=0.5, text="Slow answer.")
    b.model("m", latency=0.1, text="Four.", thinking="Let me count: two and two.")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}, keepalive_s=0.2)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/ui/api/runs", json={"prompt": "hi"}) as response:
            lines = [line async for line in response.content]
    assert b": keepalive\n" in lines
    views = [json.loads(line[6:]) for line in lines if line.startswith(b"data: ")]
    thought = "".join(v["text"] for v in by_type(views, "thinking") if v["agent"] == "B")
    assert thought == "Let me count: two and two."
    ended = {v["agent"]: v for v in by_type(views, "ended")}
    assert ended["B"]["content"] == "Four." and ended["B"]["thinking_tokens"] > 0


async def test_history_api_bounds_its_search_cuts_prompts_and_takes_ids_whole(servers, serve):
    running = await serve(guide_fleet(servers), history=True)
    for prompt in ("Why is the sky blue?", "a NUL \x00 inside", "y" * 3000):
        await start_run(running.url, {"prompt": prompt})
    response, body = await get(running.url + "/ui/api/history", params={"q": " ".join(f"w{i}" for i in range(999))})
    assert response.status == 400  # SQLite's expression depth: it was a 500
    assert json.loads(body)["error"] == "a search takes at most 64 different words, not 999"
    _, body = await get(running.url + "/ui/api/history", params={"q": "\x00"})  # it matched every run
    assert [r["prompt"] for r in json.loads(body)["runs"]] == ["a NUL \x00 inside"]
    _, body = await get(running.url + "/ui/api/history")
    runs = json.loads(body)["runs"]
    assert [r["prompt"][:9] for r in runs[1:]] == ["a NUL \x00 i", "Why is th"] and len(runs[0]["prompt"]) == 500
    for wildcard in ("%25", "_" * len(runs[0]["id"]), runs[0]["id"][:8]):  # `%` loaded every stored prompt
        response, body = await get(running.url + "/ui/api/history/" + wildcard)
        assert response.status == 404, wildcard
    response, _ = await get(running.url + "/ui/api/history/" + runs[0]["id"])
    assert response.status == 200


async def test_stop_ends_the_run_as_stopped_in_the_stream_and_the_history(servers, serve):
    """The page's Stop: the run's requests close at once, the stream sends each request still going as stopped
    (not failed) and the run as stopped; the history says `stopped` at once and counts every worker of the run."""
    a, b, c = servers
    a.model("m", latency=0.1, text="Quick.")
    b.model("m", latency=30)
    c.model("m", latency=30)
    config = {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B"), worker(c, "m", name="C")]}
    running = await serve(config, history=True)
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/ui/api/runs", json={"prompt": "slow"}) as response:
            views: list[dict] = []
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                views.append(json.loads(line[6:]))
                if views[-1]["type"] == "ended" and views[-1]["agent"] == "A":
                    run_id = views[0]["run_id"]
                    stop_url = f"{running.url}/ui/api/runs/{run_id}/stop"
                    # Run ids are listed in /api/ps: another client knowing one cannot stop the run.
                    assert run_id in json.dumps(await (await session.get(running.url + "/api/ps")).json())
                    for forged in ({}, {"X-Parallama-Stop-Token": "guessed"}):
                        refused = await session.post(stop_url, json={}, headers=forged)
                        assert refused.status == 403 and "another page" in json.dumps(await refused.json())
                    token = response.headers["X-Parallama-Stop-Token"]
                    stopped = await session.post(stop_url, json={}, headers={"X-Parallama-Stop-Token": token})
                    assert stopped.status == 200
        ended = {v["agent"]: v["state"] for v in by_type(views, "ended")}
        assert ended == {"A": "done", "B": "stopped", "C": "stopped"}
        assert views[-1] == {"type": "error", "stopped": True, "message": "stopped: you pressed Stop; what had "
                                                                           "finished is kept in each agent's row "
                                                                           "(open one to read it)"}
        await until(lambda: b.requests[0].disconnected and c.requests[0].disconnected)  # the fakes see them close
        assert b.requests[0].disconnected and c.requests[0].disconnected
        history = await (await session.get(running.url + "/ui/api/history")).json()
        [run] = history["runs"]
        assert (run["status"], run["workers"], run["workers_ok"]) == ("stopped", 3, 1)
        replayed = (await (await session.get(f"{running.url}/ui/api/history/{run_id}")).json())["events"]
        assert replayed[-1]["stopped"] is True and "Stop was pressed" in replayed[-1]["message"]
        again = await session.post(f"{running.url}/ui/api/runs/{run_id}/stop", json={})
        assert again.status == 404


async def test_a_judge_and_rankers_whose_answers_were_unreadable_are_unusable_not_done(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, text="Four.")
    b.model("m", latency=0.05, text="4")
    c.model("rev", latency=0.05, text="I think they are both fine.")  # no scores, twice
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev")}, history=True)
    _, views = await start_run(running.url, {"prompt": "2 + 2?", "strategy": "judge"})
    for replayed in (False, True):
        if replayed:  # reopened from the history: the same states
            _, body = await get(running.url + "/ui/api/history/" + views[0]["run_id"])
            views = json.loads(body)["events"]
        reviews = [v for v in by_type(views, "ended") if v["stage"] == "review"]
        final = {v["attempt"]: v for v in reviews}  # the last word on each attempt
        assert [final[k]["state"] for k in sorted(final)] == ["unusable", "unusable"]
        assert "unreadable answer, twice" in final[2]["error"] or replayed
        assert by_type(views, "result")[0]["source"]["kind"] == "worker"

    def ranks(answer, order):
        return lambda messages: order if "FINAL RANKING" in messages[0]["content"] else answer
    a.model("m", latency=0.05, respond=ranks("Four.", "Fine.\nFINAL RANKING:\n1. Response A"))
    b.model("m", latency=0.05, respond=ranks("4", "nothing readable"))
    c.model("rev", latency=0.05, text="The council says 4.")
    _, views = await start_run(running.url, {"prompt": "2 + 2?", "strategy": "council"})
    rankers = {v["agent"]: v for v in by_type(views, "ended") if v["stage"] == "ranking"}
    assert rankers["A"]["state"] == "done"
    assert rankers["B"]["state"] == "unusable" and rankers["B"]["error"].startswith("ranking left out: ")
    assert [v["state"] for v in by_type(views, "ended") if v["stage"] == "review"] == ["done"]
