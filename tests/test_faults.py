"""Every fault becomes one per-agent error naming agent, URL and cause; the other agents go on."""

from __future__ import annotations

import json

import pytest

from conftest import invoke, worker, write_config
from fakes import free_port
from parallama import run
from parallama.result import FinalSource

FAULTS = [
    ("404", "model_not_found", "ollama pull"),
    ("500", "http_status", "HTTP 500"),
    ("503", "server_busy", "server busy"),
    ("cut", "stream_broken", "stream cut off"),
    ("truncated", "stream_broken", "before the final chunk"),
    ("garbage", "malformed", "malformed line"),
    ("error_line", "error", "unexpected EOF"),
    ("hang", "timeout", "timeout of 1 s"),
    ("empty", "error", "empty answer"),
]


@pytest.mark.parametrize("fault,kind,words", FAULTS)
async def test_fault_fails_one_agent_and_others_succeed(servers, fault, kind, words):
    good_a, bad, good_b = servers
    good_a.model("m", latency=0.2)
    good_b.model("m", latency=0.2)
    bad.model("m", latency=0.4, tokens=10, fault=fault)
    fleet = {"worker_agents": [worker(good_a, "m", name="A"), worker(bad, "m", name="Bad", timeout=1),
                               worker(good_b, "m", name="B")]}
    result = await run("hi", fleet)
    a, broken, b = result.workers
    assert a.ok and b.ok
    assert broken.error_kind == kind
    assert broken.status == ("timeout" if fault == "hang" else "error")
    assert broken.error.startswith(f"Bad ({bad.url}/api/chat): ")
    assert words in broken.error
    assert result.answered


async def test_refused_connection_names_the_port(server):
    server.model("m", latency=0.1)
    port = free_port()
    fleet = {"worker_agents": [worker(server, "m"), {"name": "dead", "api_url": f"http://127.0.0.1:{port}", "model": "m"}]}
    result = await run("hi", fleet)
    ok, dead = result.workers
    assert ok.ok and dead.error_kind == "unreachable"
    assert f"nothing listens on 127.0.0.1:{port}" in dead.error
    assert f"OLLAMA_HOST=127.0.0.1:{port} ollama serve" in dead.error


async def test_openai_faults_map_the_same_way(servers):
    ok, missing, busy = servers
    ok.model("m", latency=0.1)
    busy.model("m", fault="503")
    fleet = {"worker_agents": [{"api_url": s.url + "/v1", "model": "m"} for s in servers]}
    result = await run("hi", fleet)
    assert [w.error_kind for w in result.workers] == [None, "model_not_found", "server_busy"]
    assert "does not exist" in result.workers[1].error


def test_all_workers_failing_exits_1(tmp_path):
    port = free_port()
    write_config(tmp_path / "c.json", {"reviewer_agent": {"api_url": f"http://127.0.0.1:{port}", "model": "r"},
                                       "worker_agents": [{"api_url": f"http://127.0.0.1:{port}", "model": "m"}]})
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "connection refused" in result.stderr and "no answer" in result.stderr


async def test_reviewer_failure_falls_back_to_first_successful_worker(servers):
    a, b, c = servers
    a.model("m", fault="500")
    b.model("m", latency=0.1, text="answer from b")
    c.model("m", latency=0.1, text="answer from c")
    fleet = {"reviewer_agent": {"name": "Rev", "api_url": c.url, "model": "missing-model"},
             "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B"), worker(c, "m", name="C")]}
    result = await run("hi", fleet)
    assert result.review is not None and result.review.error_kind == "model_not_found"
    assert result.final == "answer from b"
    assert result.final_source == FinalSource("worker", "B")
    assert any("reviewer failed" in w for w in result.warnings)
    assert result.answered


def test_reviewer_failure_exits_0_with_warning(tmp_path, servers):
    a, b, _ = servers
    a.model("m", latency=0.1, text="the worker answer")
    write_config(tmp_path / "c.json", {"reviewer_agent": {"api_url": b.url, "model": "gone"},
                                       "worker_agents": [worker(a, "m")]})
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 0
    assert result.stdout == "the worker answer\n"
    assert "warning: the reviewer failed" in result.stderr and "gone" in result.stderr


async def test_reviewer_gets_every_successful_answer_labelled(servers):
    a, b, c = servers
    a.model("m", latency=0.1, text="Paris is the capital.")
    b.model("m", fault="404")
    c.model("m", latency=0.1, text="It is Paris, on the Seine.")
    c.model("judge", latency=0.1, text="Paris.")
    fleet = {"reviewer_agent": {"name": "Judge", "api_url": c.url, "model": "judge", "system": "Be brief."},
             "worker_agents": [worker(a, "m", name="Worker A"), worker(b, "m", name="Worker B"),
                               worker(c, "m", name="Worker C")]}
    result = await run("What is the capital of France?", fleet)
    assert result.final == "Paris." and result.final_source == FinalSource("review")
    review_request = next(r for r in c.requests if r.model == "judge")
    text = "\n".join(m["content"] for m in review_request.messages)
    assert "What is the capital of France?" in text
    assert "Worker A" in text and "Paris is the capital." in text
    assert "Worker C" in text and "It is Paris, on the Seine." in text
    assert "Worker B" not in text  # failed: nothing to review
    assert review_request.messages[0]["role"] == "system" and "Be brief." in review_request.messages[0]["content"]


async def test_openai_path_end_to_end_with_api_key(servers, monkeypatch):
    a, b, c = servers
    monkeypatch.setenv("MY_TEST_KEY", "sk-secret-123")
    for fake in (a, b):
        fake.model("gpt", latency=0.2, tokens=8)
    c.model("rev", latency=0.1, text="merged")
    fleet = {"reviewer_agent": {"api_url": c.url + "/v1/chat/completions", "model": "rev", "api_key_env": "MY_TEST_KEY"},
             "worker_agents": [{"api_url": a.url + "/v1", "model": "gpt", "options": {"temperature": 0.3, "num_predict": 50},
                                "api_key_env": "MY_TEST_KEY"},
                               {"api_url": b.url + "/v1", "model": "gpt", "system": "You are terse."}]}
    result = await run("hi", fleet)
    assert [w.status for w in result.workers] == ["ok", "ok"]
    assert result.workers[0].completion_tokens == 8 and result.workers[0].prompt_tokens is not None
    assert result.final == "merged"
    sent = a.requests[0]
    assert sent.headers["Authorization"] == "Bearer sk-secret-123"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.3 and sent.body["max_tokens"] == 50
    assert "Authorization" not in b.requests[0].headers
    assert b.requests[0].messages[0] == {"role": "system", "content": "You are terse."}
    assert "sk-secret-123" not in json.dumps(result.to_dict())


async def test_ollama_request_shape(server):
    server.model("m", latency=0.1)
    await run("hi", {"worker_agents": [worker(server, "m", options={"temperature": 0.1, "num_ctx": 2048})]})
    body = server.requests[0].body
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "options": {"temperature": 0.1, "num_ctx": 2048}}
