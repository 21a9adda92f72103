"""Hostile round 3 on tool calls: a model server that echoes the agent's key in a call, sends a lone surrogate in a
name, floods calls, ids and arguments, or sends arguments that are not a JSON object. Through the official `ollama`
and `openai` clients against `serve` (both APIs, streamed and whole) and through the library."""

from __future__ import annotations

import json

import ollama
import openai
import pytest

from conftest import guide_fleet, worker
from fakes import FakeServer, ReplayServer
from parallama import FleetClient

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
KEY = "sk-live-hunter2-0123456789abcdef"


def ollama_line(message: dict, done: bool = False) -> bytes:
    extra = {"done_reason": "stop", "eval_count": 3} if done else {}
    return (json.dumps({"model": "m", "created_at": "2025-10-01T10:00:00Z", "message": message, "done": done,
                        **extra}) + "\n").encode()


def openai_lines(*tool_call_fragments: dict) -> bytes:
    out = b""
    for fragment in tool_call_fragments:
        out += b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                       "choices": [{"index": 0, "delta": {"tool_calls": [fragment]},
                                                    "finish_reason": None}]}).encode() + b"\n\n"
    out += b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}).encode()
    return out + b"\n\ndata: [DONE]\n\n"


async def ask_with_tools(fake, path: str = "/api/chat", **agent) -> object:
    config = {"worker_agents": [{"api_url": fake.url + path, "model": "m", "name": "T", **agent}]}
    async with FleetClient(config) as client:
        return await client.ask_agent(client.fleet.workers[0], ASK, tools=[WEATHER])


# ---------------------------------------------------------------- the key echoed in a call (item 7)


async def test_a_key_echoed_in_a_tool_call_is_masked_in_both_apis_streamed_and_whole(servers, serve, monkeypatch):
    monkeypatch.setenv("TOOLS_KEY", KEY)
    a, b, c = servers
    config = guide_fleet(servers)
    echo = [("get_weather", {"city": f"Paris, as {KEY} asks", "token": KEY})]
    c.model("rev", tool_calls=lambda messages: echo)
    b.model("m", tool_calls=lambda messages: echo)
    config["reviewer_agent"]["api_key_env"] = "TOOLS_KEY"
    config["worker_agents"][1].update(api_url=b.url + "/v1", api_key_env="TOOLS_KEY")
    for tools_agent in ("Rev", "B"):  # an Ollama tools agent, then an OpenAI-compatible one
        config["serve"] = {"tools_agent": tools_agent}
        running = await serve(config)
        seen: list[str] = []
        client = ollama.AsyncClient(host=running.url)
        whole = await client.chat("parallama", messages=ASK, tools=[WEATHER], stream=False)
        seen.append(whole.model_dump_json())
        async for part in await client.chat("parallama", messages=ASK, tools=[WEATHER], stream=True):
            seen.append(part.model_dump_json())
        oa = openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        answer = await oa.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER])
        seen.append(answer.model_dump_json())
        async for chunk in await oa.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER],
                                                            stream=True):
            seen.append(chunk.model_dump_json())
        text = "\n".join(seen)
        assert "get_weather" in text and "Paris" in text
        assert KEY not in text and "hunter2" not in text, tools_agent
        [call] = answer.choices[0].message.tool_calls
        assert json.loads(call.function.arguments)["city"].startswith("Paris, as ")  # still JSON, masked inside


# ---------------------------------------------------------------- a lone surrogate (item 11)


@pytest.mark.parametrize("api", ["ollama", "openai"])
async def test_a_lone_surrogate_in_a_tool_call_becomes_u_fffd(api):
    if api == "ollama":
        body = (b'{"model":"m","created_at":"2025-10-01T10:00:00Z","message":{"role":"assistant","content":"",'
                b'"tool_calls":[{"function":{"name":"get\\ud800time","arguments":{"zone":"\\udfffUTC"}}}]},'
                b'"done":false}\n' + ollama_line({"role": "assistant", "content": ""}, done=True))
    else:
        body = openai_lines({"index": 0, "id": "call_\ud800", "function": {"name": "get\ud800time", "arguments": ""}},
                            {"index": 0, "function": {"arguments": '{"zone": "\\udfffUTC"}'}})
    with ReplayServer(body, content_type="application/x-ndjson" if api == "ollama" else "text/event-stream") as fake:
        result = await ask_with_tools(fake, "/api/chat" if api == "ollama" else "/v1")
    assert result.ok, result.error
    [call] = result.tool_calls
    assert call.name == "get\ufffdtime"
    assert json.loads(call.arguments) == {"zone": "\ufffdUTC"}
    json.dumps(call.openai()).encode("utf-8")  # every field is valid text now
    assert "\ud800" not in call.id


async def test_a_lone_surrogate_in_a_tool_call_reaches_the_clients_whole_and_streamed(servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", tool_calls=lambda messages: [("get\ud800time", {"zone": "\udfffUTC"})])
    running = await serve(config)
    client = ollama.AsyncClient(host=running.url)
    whole = await client.chat("parallama", messages=ASK, tools=[WEATHER], stream=False)
    parts = [p async for p in await client.chat("parallama", messages=ASK, tools=[WEATHER], stream=True)]
    oa = openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
    answer = await oa.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER])
    streamed = [chunk async for chunk in await oa.chat.completions.create(model="parallama", messages=ASK,
                                                                          tools=[WEATHER], stream=True)]
    assert whole.message.tool_calls[0].function.name == "get\ufffdtime"
    assert [tc.function.name for p in parts for tc in (p.message.tool_calls or [])] == ["get\ufffdtime"]
    assert parts[-1].done
    assert answer.choices[0].message.tool_calls[0].function.name == "get\ufffdtime"
    assert [c_.choices[0].finish_reason for c_ in streamed if c_.choices][-1] == "tool_calls"


# ---------------------------------------------------------------- bounds (item 14)


@pytest.mark.parametrize("path", ["/api/chat", "/v1"])
async def test_tool_call_arguments_count_toward_max_answer_chars(path):
    with FakeServer() as fake:
        fake.model("m", tool_calls=[("get_weather", {"city": "P" * 50_000})])
        result = await ask_with_tools(fake, path, max_answer_chars=10_000)
    assert result.status == "error" and result.error_kind == "too_long", result.error
    assert result.tool_calls == ()


@pytest.mark.parametrize("path", ["/api/chat", "/v1"])
async def test_more_tool_calls_than_any_api_allows_are_refused(path):
    with FakeServer() as fake:
        fake.model("m", tool_calls=[("f", {})] * 200)  # 10,000 held 10,000 calls before
        result = await ask_with_tools(fake, path, max_answer_chars=10_000_000)
    assert result.status == "error" and result.error_kind == "malformed" and "tool calls" in result.error


async def test_a_megabyte_call_id_is_refused():
    body = openai_lines({"index": 0, "id": "c" * 1_000_000, "function": {"name": "get_weather", "arguments": "{}"}})
    with ReplayServer(body, content_type="text/event-stream") as fake:
        result = await ask_with_tools(fake, "/v1", max_answer_chars=10_000_000)
    assert result.status == "error" and result.error_kind == "malformed" and "id" in result.error


# ---------------------------------------------------------------- arguments that are not an object (item 20)


@pytest.mark.parametrize("arguments", ['"just text"', "[1, 2]", "42", "null", "{not json", '{"city": "Par'])
async def test_openai_arguments_that_are_not_a_json_object_fail_the_agent_as_malformed(arguments):
    body = openai_lines({"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}},
                        {"index": 0, "function": {"arguments": arguments}})
    with ReplayServer(body, content_type="text/event-stream") as fake:
        result = await ask_with_tools(fake, "/v1")
    assert result.status == "error" and result.error_kind == "malformed", (arguments, result.error)
    assert "arguments" in result.error


@pytest.mark.parametrize("arguments", ["just text", [1, 2], 42, False, '{"city": "Par'])
async def test_ollama_arguments_that_are_not_a_json_object_fail_the_agent_as_malformed(arguments):
    body = ollama_line({"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": arguments}}]}) + ollama_line(
        {"role": "assistant", "content": ""}, done=True)
    with ReplayServer(body, content_type="application/x-ndjson") as fake:
        result = await ask_with_tools(fake)
    assert result.status == "error" and result.error_kind == "malformed", (arguments, result.error)


async def test_arguments_of_a_wrong_type_in_an_openai_fragment_fail_the_agent():
    body = openai_lines({"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "P"}}})
    with ReplayServer(body, content_type="text/event-stream") as fake:
        result = await ask_with_tools(fake, "/v1")
    assert result.status == "error" and result.error_kind == "malformed"


async def test_a_call_with_no_arguments_is_an_empty_object():
    body = openai_lines({"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}})
    with ReplayServer(body, content_type="text/event-stream") as fake:
        result = await ask_with_tools(fake, "/v1")
    assert result.ok and result.tool_calls[0].arguments == "{}"
    assert worker  # the shared helpers stay importable for the next round
