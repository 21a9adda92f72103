"""What chat front-ends (Open WebUI, Continue, the `llm` CLI) need of `serve`, through the official `ollama` and
`openai` clients and on the raw wire: every agent as its own model (a task model that waits its turn), tool calls
answered by the tools agent, and a reply with no answer that still says why, as content."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import ollama
import openai
import pytest

from conftest import guide_fleet, worker
from parallama.config import fleet_from_dict
from parallama.errors import ConfigErrors

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def weather_calls(messages: list[dict]) -> list[tuple[str, dict]]:
    """Call the tool until its result is in the conversation, then answer in text."""
    return [] if any(m.get("role") == "tool" for m in messages) else [("get_weather", {"city": "Paris"})]


def ollama_client(running) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.url)


def openai_client(running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)


# ---------------------------------------------------------------- every agent as its own model

def slug_fleet(servers) -> dict:
    a, b, c = servers
    a.model("m", latency=0.1, text="Alpha says four.")
    b.model("m", latency=0.1, text="Beta says 4.")
    c.model("rev", latency=0.1, text="The answer is 4.")
    return {"worker_agents": [worker(a, "m", name="Worker A (Llama 3 8B)"), worker(b, "m", name="worker a: llama-3 8b")],
            "reviewer_agent": worker(c, "rev", name="Ré-viewer")}


async def test_every_agent_is_a_model_listed_after_the_ensembles_with_colliding_slugs_numbered(servers, serve):
    running = await serve(slug_fleet(servers))
    agents = ["parallama/worker-a-llama-3-8b", "parallama/worker-a-llama-3-8b-2", "parallama/r-viewer"]
    listed = [m.model for m in (await ollama_client(running).list()).models]
    assert listed == ["parallama:latest", "parallama:synthesize", "parallama:judge", "parallama:council", "parallama:vote",
                      "parallama:confidence",
                      *agents]
    assert [m.id for m in (await openai_client(running).models.list()).data] == listed
    shown = await ollama_client(running).show("parallama/worker-a-llama-3-8b-2")
    assert "worker a: llama-3 8b" in shown.modelfile and "answering alone" in shown.modelfile
    assert shown.details.families == ["m"] and shown.capabilities == ["completion"]
    assert (await ollama_client(running).show("parallama/r-viewer")).capabilities == ["completion", "tools"]
    assert (await openai_client(running).models.retrieve("parallama/r-viewer")).id == "parallama/r-viewer"


async def test_an_agent_model_answers_alone_streamed_and_whole_in_both_apis(servers, serve):
    a, b, c = servers
    running = await serve(slug_fleet(servers))
    parts = [p async for p in await ollama_client(running).chat("parallama/worker-a-llama-3-8b-2", messages=ASK,
                                                                stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "Beta says 4."
    assert not any(p.message.thinking for p in parts)  # no progress
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count > 0
    whole = await openai_client(running).chat.completions.create(model="parallama/r-viewer:latest", messages=[
        {"role": "system", "content": "Title this chat."}, *ASK])
    assert whole.choices[0].message.content == "The answer is 4." and whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens > 0
    generated = await ollama_client(running).generate("parallama/worker-a-llama-3-8b", prompt="2 + 2?")
    assert generated.response == "Alpha says four."
    # One request each, with the messages as sent: no other worker, no reviewer.
    assert [len(s.requests) for s in servers] == [1, 1, 1]
    assert c.requests[0].messages == [{"role": "system", "content": "Title this chat."}, *ASK]


async def test_an_agent_model_waits_its_turn_behind_a_run_on_the_same_server(servers, serve):
    a, _, _ = servers
    config = guide_fleet(servers)
    a.model("m", latency=1.0, tokens=5, text="Alpha says four, slowly.")
    running = await serve(config)
    async with aiohttp.ClientSession() as session:
        run = asyncio.create_task(session.post(running.url + "/api/chat", json={
            "model": "parallama", "messages": ASK, "stream": False}))
        while not a.requests:  # the run's worker holds A's one slot
            await asyncio.sleep(0.01)
        async with session.post(running.url + "/api/chat", json={"model": "parallama/a", "messages": ASK,
                                                                 "stream": False}) as title:
            assert (await title.json())["message"]["content"] == "Alpha says four, slowly."
        await (await run).read()
    worker_request, title_request = a.requests
    assert a.max_in_flight == 1  # never sent beside the worker: it waited at serve's gate
    assert title_request.arrived >= worker_request.ended


# ---------------------------------------------------------------- tool calls

FIXTURES = Path(__file__).parent / "fixtures"
OPEN_WEBUI_TOOLS = json.loads((FIXTURES / "openwebui-0.12.4-builtin-tools.json").read_text(encoding="utf-8"))
CN_TOOLS = json.loads((FIXTURES / "continue-cn-1.5.47-tools.json").read_text(encoding="utf-8"))
TWO_AND_TWO = [{"role": "user", "content": "What is 2+2?"}]


def test_the_front_ends_payloads_are_what_they_send():
    assert len(OPEN_WEBUI_TOOLS) == 36 and 20_000 < len(json.dumps(OPEN_WEBUI_TOOLS)) < 30_000
    names = [t["function"]["name"] for t in OPEN_WEBUI_TOOLS]
    assert names[:2] == ["get_current_timestamp", "calculate_timestamp"] and "add_memory" in names
    assert [t["function"]["name"] for t in CN_TOOLS] == ["Read", "Edit", "MultiEdit", "Write", "List", "Search",
                                                         "Bash", "Fetch", "Checklist"]


async def test_open_webui_builtin_tools_run_the_ensemble_over_both_connection_kinds(servers, serve):
    """Open WebUI's defaults (native function calling, built-in tools on) attach 36 tools to every chat: the
    workers still answer, their progress shows as thinking, and the reviewer writes the reply with the tools."""
    a, b, c = servers
    running = await serve(guide_fleet(servers))
    parts = [p async for p in await ollama_client(running).chat("parallama", messages=TWO_AND_TWO,
                                                                tools=OPEN_WEBUI_TOOLS, stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "▸ A (m) started" in thinking and "✓ A answered" in thinking and "Alpha says four." in thinking
    assert "The request's 36 tools (get_current_timestamp, calculate_timestamp, ask_user and 33 more) go to Rev" \
        in thinking
    assert "".join(p.message.content or "" for p in parts) == "The answer is 4."
    assert parts[-1].done and not any(p.message.tool_calls for p in parts)
    stream = await openai_client(running).chat.completions.create(
        model="parallama", messages=TWO_AND_TWO, tools=OPEN_WEBUI_TOOLS, stream=True)
    chunks = [chunk async for chunk in stream]
    reasoning = "".join(getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in chunks)
    assert "✓ B answered" in reasoning and "Beta says 4." in reasoning
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "The answer is 4."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(a.requests) == len(b.requests) == 2  # the workers answered both times, without the tools
    assert not any("tools" in r.body for r in a.requests + b.requests)
    # The reviewer has them: as the `openai` client sent them, and by name as the `ollama` client did (its typed
    # tools drop what its model has no field for, such as `default`).
    assert c.requests[1].body["tools"] == OPEN_WEBUI_TOOLS
    assert [t["function"]["name"] for t in c.requests[0].body["tools"]] == [t["function"]["name"]
                                                                             for t in OPEN_WEBUI_TOOLS]
    assert "Alpha says four." in c.requests[0].body["messages"][-1]["content"]


async def test_a_reviewer_whose_model_takes_no_tools_is_asked_again_without_them(servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", latency=0.05, text="The answer is 4.", reject_tools=True)
    running = await serve(config)
    parts = [p async for p in await ollama_client(running).chat("parallama", messages=TWO_AND_TWO,
                                                                tools=OPEN_WEBUI_TOOLS, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "The answer is 4."  # the reviewer's, not a worker's
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "does not support tools" in thinking
    assert "▸ Rev (rev) is writing the final answer again, without the tools (its server refused them)" in thinking
    assert [bool(r.body.get("tools")) for r in c.requests] == [True, False]


async def test_continue_cn_tools_with_a_plain_question_run_the_ensemble(servers, serve):
    a, b, c = servers
    running = await serve(guide_fleet(servers))
    whole = await openai_client(running).chat.completions.create(model="parallama", messages=TWO_AND_TWO,
                                                                 tools=CN_TOOLS)
    assert whole.choices[0].message.content == "The answer is 4." and whole.choices[0].finish_reason == "stop"
    assert "✓ A answered" in whole.choices[0].message.reasoning_content
    assert len(a.requests) == len(b.requests) == len(c.requests) == 1
    assert c.requests[0].body["tools"] == CN_TOOLS


async def test_a_reviewers_tool_call_reaches_the_ollama_client_and_the_follow_up_asks_no_worker_again(servers,
                                                                                                        serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", text="Sunny in Paris, 24 °C.", tool_calls=weather_calls)
    running = await serve(config)
    client = ollama_client(running)
    parts = [p async for p in await client.chat("parallama", messages=ASK, tools=[WEATHER], stream=True)]
    [call] = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert "✓ A answered" in "".join(p.message.thinking or "" for p in parts)
    assert "↪ Rev calls get_weather" in "".join(p.message.thinking or "" for p in parts)
    assert parts[-1].done and parts[-1].done_reason == "stop" and not "".join(p.message.content for p in parts)
    review_request = c.requests[0].body["messages"]
    said = {"role": "assistant", "content": "", "tool_calls": [call.model_dump(exclude_none=True)]}
    follow_up = [*ASK, said, {"role": "tool", "content": "sunny, 24 °C", "tool_name": "get_weather"}]
    answer = await client.chat("parallama", messages=follow_up, tools=[WEATHER], stream=False)
    assert answer.message.content == "Sunny in Paris, 24 °C." and not answer.message.tool_calls
    assert "goes on with the tool results" in answer.message.thinking
    assert len(a.requests) == len(b.requests) == 1  # the workers answered once, for both requests
    sent = c.requests[-1].body
    assert sent["tools"] == [WEATHER]
    assert sent["messages"][:len(review_request)] == review_request  # the review's own request, continued
    assert sent["messages"][-2]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert sent["messages"][-1] == {"role": "tool", "content": "sunny, 24 °C", "tool_name": "get_weather"}


async def test_a_reviewers_tool_call_reaches_the_openai_client_whole_and_streamed_and_the_follow_up_continues(
        servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", text="Sunny in Paris, 24 °C.", tool_calls=weather_calls)
    config["reviewer_agent"]["api_url"] = c.url + "/v1"  # the reviewer speaks OpenAI's API
    running = await serve(config)
    client = openai_client(running)
    stream = await client.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER], stream=True,
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    deltas = [tc for c_ in chunks if c_.choices for tc in (c_.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather")]
    assert json.loads(deltas[0].function.arguments) == {"city": "Paris"}
    assert [c_.choices[0].finish_reason for c_ in chunks if c_.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None
    whole = await client.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER])
    [choice] = whole.choices
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    assert len(a.requests) == len(b.requests) == 2
    follow_up = [*ASK, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"}]
    stream = await client.chat.completions.create(model="parallama", messages=follow_up, tools=[WEATHER],
                                                  stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Sunny in Paris, 24 °C."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(a.requests) == len(b.requests) == 2  # no second worker round for the follow-up
    sent = c.requests[-1].body["messages"]
    assert "Alpha says four." in sent[-3]["content"]  # the review's task with the workers' answers
    assert sent[-2]["tool_calls"][0]["id"] == call.id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"}


async def test_tools_demanded_by_tool_choice_or_a_setting_go_to_the_tools_agent_alone(servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    b.model("m", text="Sunny in Paris, 24 °C.", tool_calls=weather_calls)
    config["worker_agents"][1]["api_url"] = b.url + "/v1"  # the tools agent speaks OpenAI's API
    config["serve"] = {"tools_agent": "B"}
    running = await serve(config)
    client = openai_client(running)
    whole = await client.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER],
                                                 tool_choice="required")
    [call] = whole.choices[0].message.tool_calls
    assert call.id == "call_fake0" and whole.choices[0].finish_reason == "tool_calls"
    assert not a.requests and not c.requests and len(b.requests) == 1
    config["serve"] = {"tools_agent": "B", "tools": "agent"}
    running = await serve(config)
    client = openai_client(running)
    whole = await client.chat.completions.create(model="parallama", messages=ASK, tools=[WEATHER])
    [call] = whole.choices[0].message.tool_calls
    follow_up = [*ASK, whole.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"}]
    answer = await client.chat.completions.create(model="parallama", messages=follow_up, tools=[WEATHER])
    assert answer.choices[0].message.content == "Sunny in Paris, 24 °C."
    assert not a.requests and not c.requests
    assert b.requests[-1].body["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"}


async def test_a_tool_result_no_run_here_knows_goes_to_the_tools_agent_with_ids(servers, serve):
    a, b, c = servers
    config = guide_fleet(servers)
    c.model("rev", text="Sunny.", tool_calls=weather_calls)
    config["reviewer_agent"]["api_url"] = c.url + "/v1"
    running = await serve(config)
    earlier = {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    answer = await ollama_client(running).chat("parallama", tools=[WEATHER], messages=[
        *ASK, earlier, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}])
    assert answer.message.content == "Sunny."
    assert not a.requests and not b.requests
    said, result = c.requests[-1].body["messages"][1:]
    assert said["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert result["tool_call_id"] == said["tool_calls"][0]["id"] and result["role"] == "tool"


async def test_tools_no_agent_here_can_take_are_left_out_and_the_progress_says_so(servers, serve):
    """Never a 400 for tools the user never chose: a fleet with no reviewer and no tools agent answers without
    them; so does `"tools": "ignore"`, and a judge (whose reply is a worker's answer)."""
    a, b, c = servers
    a.model("m", text="4")
    b.model("m", text="4")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "review": {"strategy": "vote"}})
    parts = [p async for p in await ollama_client(running).chat("parallama", messages=TWO_AND_TWO,
                                                                tools=OPEN_WEBUI_TOOLS, stream=True)]
    assert "".join(p.message.content for p in parts) == "4"
    assert "The request's tools are not used: with vote the reply is the majority's answer (name a tools agent" \
        in "".join(p.message.thinking or "" for p in parts)
    whole = await openai_client(running).chat.completions.create(model="parallama", messages=TWO_AND_TWO,
                                                                 tools=CN_TOOLS)
    assert whole.choices[0].message.content == "4"
    assert not any("tools" in r.body for r in a.requests + b.requests)
    config = guide_fleet(servers)
    config["serve"] = {"tools": "ignore"}
    running = await serve(config)
    whole = await openai_client(running).chat.completions.create(model="parallama", messages=TWO_AND_TWO,
                                                                 tools=CN_TOOLS)
    assert whole.choices[0].message.content == "The answer is 4."
    assert '"tools": "ignore"' in whole.choices[0].message.reasoning_content
    assert "tools" not in c.requests[-1].body
    whole = await openai_client(running).chat.completions.create(model="parallama:judge", messages=TWO_AND_TWO,
                                                                 tools=CN_TOOLS)
    assert "tools" not in c.requests[-1].body
    # A `parallama/<agent>` model takes the tools itself.
    a.model("m", tool_calls=weather_calls)
    called = await ollama_client(running).chat("parallama/a", messages=ASK, tools=[WEATHER])
    assert called.message.tool_calls[0].function.arguments == {"city": "Paris"}


def test_the_tools_agent_must_be_one_of_the_agents():
    config = {"worker_agents": [{"name": "Coder", "api_url": "http://localhost:11434", "model": "m"}],
              "serve": {"tools_agent": "Codre"}}
    with pytest.raises(ConfigErrors) as bad:
        fleet_from_dict(config)
    assert "serve.tools_agent" in str(bad.value) and "did you mean 'Coder'?" in str(bad.value)
    config["serve"] = {"tools_agnet": "Coder"}
    with pytest.raises(ConfigErrors, match="did you mean 'tools_agent'"):
        fleet_from_dict(config)
    config["serve"] = {"tools_agent": "Coder"}
    assert fleet_from_dict(config).tools_agent.name == "Coder"  # type: ignore[union-attr]


# ---------------------------------------------------------------- no answer, said as content

def failing_fleet(servers) -> dict:
    a, b, c = servers
    a.model("other")  # no "m" here: 404, with the pull to run as its fix
    b.model("m", fault="500")
    c.model("rev")
    return {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
            "reviewer_agent": worker(c, "rev", name="Rev")}


async def test_no_answer_streams_the_reason_as_content_and_ends_as_streams_end(servers, serve):
    running = await serve(failing_fleet(servers))
    parts = []
    with pytest.raises(ollama.ResponseError, match="every worker failed"):  # the error line, for clients that read it
        async for part in await ollama_client(running).chat("parallama", messages=ASK, stream=True):
            parts.append(part)
    content = "".join(p.message.content or "" for p in parts)
    assert "no answer, every worker failed" in content and "ollama pull m" in content and "HTTP 500" in content
    assert parts[-1].done and parts[-1].done_reason == "stop"
    # On an OpenAI stream the note is said once, as content: no error event after it (Open WebUI shows one as an
    # error box and a toast, the same words twice more).
    chunks = [chunk async for chunk in await openai_client(running).chat.completions.create(
        model="parallama", messages=ASK, stream=True)]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.count("no answer, every worker failed") == 1 and " ollama pull m`" in content
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_no_answer_on_the_raw_wire(servers, serve):
    running = await serve(failing_fleet(servers))
    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/api/chat", json={"model": "parallama", "messages": ASK}) as r:
            lines = [json.loads(line) for line in (await r.read()).splitlines()]
        async with session.post(running.url + "/v1/chat/completions",
                                json={"model": "parallama", "messages": ASK, "stream": True}) as r:
            events = [e for e in (await r.text()).split("\n\n") if e.startswith("data: ")]
    note, done, error = lines[-3:]
    assert note["message"]["content"].startswith("**parallama: no answer, every worker failed.**")
    causes = note["message"]["content"].splitlines()[2:]
    # As the progress shows them: each command its own code span (copyable whole), the server's words text.
    assert [line[:4] for line in causes] == ["- A ", "- B "]
    assert re.search(r" `OLLAMA_HOST=127\.0\.0\.1:\d+ ollama pull m`$", causes[0])
    assert not any("``" in line for line in causes)
    assert done["done"] is True and done["done_reason"] == "stop" and "every worker failed" in error["error"]
    assert not any(line.get("done") for line in lines[:-2])
    *_, reason, finish, end = events
    assert "no answer, every worker failed" in json.loads(reason[6:])["choices"][0]["delta"]["content"]
    assert json.loads(finish[6:])["choices"][0]["finish_reason"] == "stop" and end == "data: [DONE]"
    assert sum("every worker failed" in e for e in events) == 1  # said once: no error event after the note


async def test_an_agent_model_with_no_answer_says_why_as_content_or_502_when_whole(servers, serve):
    running = await serve(failing_fleet(servers))
    parts = []
    with pytest.raises(ollama.ResponseError):
        async for part in await ollama_client(running).chat("parallama/a", messages=ASK, stream=True):
            parts.append(part)
    content = "".join(p.message.content or "" for p in parts)
    assert "no answer, A failed" in content and "ollama pull m" in content and parts[-1].done_reason == "stop"
    with pytest.raises(openai.InternalServerError) as whole:
        await openai_client(running).chat.completions.create(model="parallama/b", messages=ASK)
    assert whole.value.status_code == 502 and "HTTP 500" in whole.value.message


# ---------------------------------------------------------------- the progress: every worker, ignored settings

async def test_the_progress_lists_a_worker_waiting_for_its_slot_before_the_first_answer(servers, serve):
    a, _, c = servers
    a.model("m", latency=0.8, tokens=4, text="Alpha says four.")
    a.model("m2", latency=0.1, text="Beta says 4.")
    c.model("rev", text="The answer is 4.")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(a, "m2", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev")})  # A and B share A's one slot
    parts = [p async for p in await ollama_client(running).chat("parallama", messages=ASK, stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    waiting = f"◦ B (m2) is waiting for a slot on localhost:{a.port}\n"
    assert thinking.count(waiting) == 1 and "◦ A " not in thinking  # A got the slot at once
    assert thinking.index("▸ A (m) started") < thinking.index(waiting) < thinking.index("✓ A answered")
    assert thinking.index("✓ A answered") < thinking.index("▸ B (m2) started after waiting")
    stream = await openai_client(running).chat.completions.create(model="parallama", messages=ASK, stream=True)
    reasoning = "".join([c_.choices[0].delta.model_extra.get("reasoning_content") or ""
                         async for c_ in stream if c_.choices])
    assert reasoning.count(waiting) == 1


async def test_a_reviewer_queued_soon_after_the_workers_is_said_to_wait_for_its_slot_too(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, text="Alpha says four.")
    b.model("m", latency=0.05, text="Beta says 4.")
    c.model("rev", latency=1.0, tokens=4, text="The answer is 4.")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev")})
    # Another client's request to the reviewer's model holds its server's one slot: the run's reviewer, queued a
    # moment after its workers (less than the progress's first look at who waits), waits for it to end.
    title = asyncio.create_task(ollama_client(running).chat("parallama/rev", messages=ASK))
    while not c.requests:
        await asyncio.sleep(0.01)
    parts = [p async for p in await ollama_client(running).chat("parallama", messages=ASK, stream=True)]
    await title
    thinking = "".join(p.message.thinking or "" for p in parts)
    waiting = f"◦ Rev (review) (rev) is waiting for a slot on localhost:{c.port}\n"
    assert thinking.count(waiting) == 1, thinking
    assert thinking.index("✓ B answered") < thinking.index(waiting) < thinking.index("▸ Rev (rev)"), thinking


async def test_ignored_settings_are_named_once_in_the_progress_and_in_the_header(servers, serve):
    running = await serve(guide_fleet(servers))
    parts = [p async for p in await ollama_client(running).chat(
        "parallama", messages=ASK, stream=True, options={"temperature": 0.2, "num_predict": 50}, format="json")]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert thinking.count("Not used: format, options.temperature, options.num_predict (each agent keeps") == 1
    raw = await openai_client(running).chat.completions.with_raw_response.create(
        model="parallama", messages=ASK, temperature=0.2, stop=["\n"])
    assert raw.headers["x-parallama-ignored"] == "temperature, stop"
    reasoning = raw.parse().choices[0].message.model_extra["reasoning_content"]
    assert reasoning.count("Not used: temperature, stop (") == 1
    quiet = await openai_client(running).chat.completions.create(model="parallama", messages=ASK)
    assert "Not used" not in quiet.choices[0].message.model_extra["reasoning_content"]


async def test_an_agent_model_request_is_a_run_in_api_ps_and_names_what_it_ignores(servers, serve):
    a, _, _ = servers
    config = guide_fleet(servers)
    a.model("m", latency=1.0, tokens=5, text="Alpha says four, slowly.")
    running = await serve(config)
    async with aiohttp.ClientSession() as session:
        title = asyncio.create_task(session.post(running.url + "/api/chat", json={
            "model": "parallama/a:latest", "messages": ASK, "stream": False, "options": {"temperature": 0.1}}))
        while not a.requests:
            await asyncio.sleep(0.01)
        ps = await (await session.get(running.url + "/api/ps")).json()
        answered = await title
        assert answered.headers["X-Parallama-Ignored"] == "options.temperature"
        assert (await answered.json())["message"]["content"] == "Alpha says four, slowly."
    [entry] = ps["models"]
    assert entry["name"] == "parallama/a" and len(entry["runs"]) == 1 and entry["details"]["families"] == ["m"]


async def test_with_judge_the_tools_agent_writes_the_reply_from_the_best_scored_answer_with_the_tools(servers,
                                                                                                       serve):
    """A strategy whose reply is a worker's answer (judge) has no reviewer that writes: the tools agent writes the
    reply from the judge's pick, with the tools; its tool call goes to the client and the follow-up continues it."""
    a, b, c = servers
    config = guide_fleet(servers, strategy="judge")
    a.model("m", latency=0.05, text="A short answer.")
    b.model("m", latency=0.05, text="Paris will be sunny.")
    scores = ('{"scores": [{"response": "A", "score": 3, "reason": "thin"}, '
              '{"response": "B", "score": 9, "reason": "right"}]}')

    def judge_or_write(messages):
        return "Sunny in Paris, 24 °C." if any(m.get("role") == "tool" for m in messages) else scores

    c.model("rev", latency=0.05, respond=judge_or_write, tool_calls=weather_calls)
    config["serve"] = {"tools_agent": "Rev"}
    running = await serve(config)
    client = ollama_client(running)
    parts = [p async for p in await client.chat("parallama:judge", messages=ASK, tools=[WEATHER], stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "✓ Rev scored them" in thinking and "▸ Rev (rev) writes the reply from it, with the request's tools" in thinking
    [call] = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert call.function.name == "get_weather"
    judged, written = c.requests
    assert "tools" not in judged.body and written.body["tools"] == [WEATHER]
    assert "Paris will be sunny." in written.body["messages"][0]["content"]  # the judge's pick, for the writer
    said = {"role": "assistant", "content": "", "tool_calls": [call.model_dump(exclude_none=True)]}
    answer = await client.chat("parallama:judge", messages=[*ASK, said, {"role": "tool", "content": "sunny, 24 °C",
                                                                           "tool_name": "get_weather"}])
    assert answer.message.content == "Sunny in Paris, 24 °C."
    assert len(a.requests) == len(b.requests) == 1 and len(c.requests) == 3
