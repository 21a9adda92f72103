"""Tool calls through both backends: the tools go out in the request, the calls come back parsed (Ollama's whole
`message.tool_calls`, OpenAI's `delta.tool_calls` fragments), and a follow-up with the tools' results reaches each
server in its own shape."""

from __future__ import annotations

import json

import pytest

from conftest import worker
from fakes import FakeServer, ReplayServer
from parallama import FleetClient

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}


def weather_calls(messages: list[dict]) -> list[tuple[str, dict]]:
    """Call the tool until its result is in the conversation; then answer in text."""
    return [] if any(m.get("role") == "tool" for m in messages) else [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("path", ["/api/chat", "/v1"])
async def test_tools_go_out_and_calls_come_back_then_the_results_follow_up(path):
    with FakeServer() as fake:
        fake.model("m", text="Sunny in Paris.", tool_calls=weather_calls)
        config = {"worker_agents": [{"api_url": fake.url + path, "model": "m", "name": "T"}]}
        async with FleetClient(config) as client:
            agent = client.fleet.workers[0]
            asked = [{"role": "user", "content": "Weather in Paris?"}]
            first = await client.ask_agent(agent, asked, tools=[WEATHER])
            assert first.ok and first.content == ""
            [call] = first.tool_calls
            assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"} and call.id
            follow_up = asked + [{"role": "assistant", "content": "", "tool_calls": [call.openai()]},
                                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"}]
            second = await client.ask_agent(agent, follow_up, tools=[WEATHER])
        assert second.ok and second.content == "Sunny in Paris." and second.tool_calls == ()
        sent = fake.requests[-1].body
        assert sent["tools"] == [WEATHER] and fake.requests[0].body["tools"] == [WEATHER]
        said, result = sent["messages"][1], sent["messages"][2]
        if path == "/api/chat":  # Ollama: arguments as an object, the result names its tool
            assert said["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
            assert result == {"role": "tool", "content": "sunny, 24 °C", "tool_name": "get_weather"}
        else:  # OpenAI: arguments as JSON text, the result answers the call by its id
            assert said["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
            assert result["tool_call_id"] == call.id == said["tool_calls"][0]["id"] == "call_fake0"


async def test_no_tools_no_tools_field_and_plain_text_as_before():
    with FakeServer() as fake:
        fake.model("m", text="Plain.", tool_calls=weather_calls)
        async with FleetClient({"worker_agents": [worker(fake, "m")]}) as client:
            result = await client.ask_agent(client.fleet.workers[0], [{"role": "user", "content": "hi"}])
    assert result.content == "Plain." and result.tool_calls == () and "tools" not in fake.requests[0].body


async def test_a_tool_call_without_a_name_is_a_broken_stream():
    body = (b'{"model":"m","created_at":"2025-10-01T10:00:00Z","message":{"role":"assistant","content":"",'
            b'"tool_calls":[{"function":{"arguments":{}}}]},"done":false}\n'
            b'{"model":"m","created_at":"2025-10-01T10:00:01Z","message":{"role":"assistant","content":""},'
            b'"done":true,"done_reason":"stop"}\n')
    with ReplayServer(body) as fake:
        async with FleetClient({"worker_agents": [worker(fake, "m", name="T")]}) as client:
            result = await client.ask_agent(client.fleet.workers[0], [{"role": "user", "content": "hi"}],
                                            tools=[WEATHER])
    assert result.status == "error" and result.error_kind == "malformed"
    assert "malformed tool call" in (result.error or "")
