"""`serve` through the official `ollama` and `openai` clients, against fake model servers: listing, chat streamed
and whole, conversations, the review strategies and failures, and errors as each SDK maps them."""

from __future__ import annotations

import json
import math

import ollama
import openai
import pytest

from conftest import guide_fleet, worker

ANSWER = "The answer is 4."


def ollama_client(running, **kwargs) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=running.url, **kwargs)


def openai_client(running, **kwargs) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.url + "/v1", api_key=kwargs.pop("api_key", "unused"),
                              **{"max_retries": 0, **kwargs})


async def test_both_apis_list_the_fleet_under_every_strategy_then_each_agent(servers, serve):
    running = await serve(guide_fleet(servers))
    names = ["parallama:latest", "parallama:synthesize", "parallama:judge", "parallama:council", "parallama:vote",
             "parallama:confidence",
             "parallama/a", "parallama/b", "parallama/rev"]
    listed = await ollama_client(running).list()
    assert [m.model for m in listed.models] == names
    assert all(m.digest and m.modified_at and m.details.family == "parallama" for m in listed.models)
    page = await openai_client(running).models.list()
    assert [m.id for m in page.data] == names and {m.owned_by for m in page.data} == {"parallama"}
    assert (await openai_client(running).models.retrieve("parallama:judge")).id == "parallama:judge"


async def test_show_describes_the_fleet_for_the_ollama_client(servers, serve):
    config = guide_fleet(servers)
    config["worker_agents"][0]["options"] = {"num_ctx": 8192}
    config["worker_agents"][1]["options"] = {"num_ctx": 4096}
    config["reviewer_agent"]["options"] = {"num_ctx": 16384}
    running = await serve(config)
    shown = await ollama_client(running).show("parallama")  # untagged: :latest
    assert shown.capabilities == ["completion", "tools"] and ".Suffix" not in shown.template
    assert shown.modelinfo["parallama.context_length"] == 4096 and shown.parameters == "num_ctx 4096"
    assert "worker A: m" in shown.modelfile and "reviewer Rev: rev" in shown.modelfile
    with pytest.raises(ollama.ResponseError) as missing:
        await ollama_client(running).show("llama3:8b")
    assert missing.value.status_code == 404 and "parallama:latest" in missing.value.error


async def test_ollama_chat_streams_progress_as_thinking_then_the_reviewers_answer(servers, serve):
    running = await serve(guide_fleet(servers))
    parts = [part async for part in await ollama_client(running).chat(
        "parallama:latest", messages=[{"role": "user", "content": "2 + 2?"}], stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    content = "".join(p.message.content or "" for p in parts)
    assert content == ANSWER
    assert "Alpha says four." in thinking and "Beta says 4." in thinking and "✓ A answered" in thinking
    assert all(not (p.message.thinking and p.message.content) for p in parts)  # never both in one line
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and not any(p.done for p in parts[:-1])
    assert last.eval_count > 0 and last.prompt_eval_count > 0
    assert last.total_duration >= last.load_duration + last.prompt_eval_duration + last.eval_duration - 10
    assert last.total_duration > 0.15e9  # the slower worker alone takes 0.15 s


async def test_ollama_chat_whole_and_without_thinking(servers, serve):
    running = await serve(guide_fleet(servers))
    client = ollama_client(running)
    whole = await client.chat("parallama", messages=[{"role": "user", "content": "2 + 2?"}], stream=False)
    assert whole.message.content == ANSWER and "Alpha says four." in whole.message.thinking and whole.done
    quiet = await client.chat("parallama", messages=[{"role": "user", "content": "2 + 2?"}], think=False)
    assert quiet.message.content == ANSWER and quiet.message.thinking is None


async def test_ollama_generate_and_the_load_request_of_ollama_run(servers, serve):
    running = await serve(guide_fleet(servers))
    client = ollama_client(running)
    loaded = await client.generate("parallama", prompt="")
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    answered = await client.generate("parallama", prompt="2 + 2?", system="Be terse.")
    assert answered.response == ANSWER and "Beta says 4." in answered.thinking
    to_worker = next(r for r in servers[0].requests if r.model == "m")
    assert to_worker.messages[0] == {"role": "system", "content": "Be terse."}


async def test_openai_stream_reasoning_chunks_carry_no_content_and_usage_comes_when_asked(servers, serve):
    running = await serve(guide_fleet(servers))
    stream = await openai_client(running).chat.completions.create(
        model="parallama:latest", messages=[{"role": "user", "content": "2 + 2?"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = [d.model_extra.get("reasoning_content") for d in deltas if d.model_extra.get("reasoning_content")]
    assert "Alpha says four." in "".join(reasoning)
    assert all(d.content is None for d in deltas if d.model_extra.get("reasoning_content"))
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


async def test_openai_whole_answer_with_reasoning_and_usage(servers, serve):
    running = await serve(guide_fleet(servers))
    completion = await openai_client(running).chat.completions.create(
        model="parallama", messages=[{"role": "user", "content": "2 + 2?"}], temperature=0.1)
    [choice] = completion.choices
    assert choice.message.content == ANSWER and choice.finish_reason == "stop"
    assert "Beta says 4." in choice.message.model_extra["reasoning_content"]
    assert completion.usage.completion_tokens > 0 and completion.model == "parallama"


async def test_a_conversation_reaches_the_workers_and_the_reviewer_without_earlier_reasoning(servers, serve):
    running = await serve(guide_fleet(servers))
    earlier = ('<details type="reasoning" done="true" duration="3">\n<summary>Thought for 3 seconds</summary>\n'
               "&gt; worker notes\n</details>\n<think>more notes</think>Four.")
    conversation = [{"role": "system", "content": "Answer in French."},
                    {"role": "user", "content": "2 + 2?"},
                    {"role": "assistant", "content": earlier},
                    {"role": "user", "content": "And 3 + 3?"}]
    reply = await ollama_client(running).chat("parallama", messages=conversation, stream=False)
    assert reply.message.content == ANSWER
    completion = await openai_client(running).chat.completions.create(model="parallama", messages=conversation)
    assert completion.choices[0].message.content == ANSWER
    to_a = [r for r in servers[0].requests if r.model == "m"]
    assert len(to_a) == 2 and to_a[0].messages == to_a[1].messages == [
        {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And 3 + 3?"}]
    task = next(r for r in servers[2].requests if r.model == "rev").messages[-1]["content"]
    assert "Answer in French." in task and "Assistant: Four." in task and "And 3 + 3?" in task
    assert "notes" not in task


async def test_judge_replies_with_the_best_scored_worker_answer(servers, serve):
    config = guide_fleet(servers)
    servers[2].model("rev", latency=0.05, text=json.dumps({"scores": [
        {"response": "A", "score": 3, "reason": "wordy"}, {"response": "B", "score": 9, "reason": "exact"}]}))
    running = await serve(config)
    parts = [p async for p in await ollama_client(running).chat(
        "parallama:judge", messages=[{"role": "user", "content": "2 + 2?"}], stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "Beta says 4."
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "B: 9/10, exact" in thinking and "The reply is B's answer, scored best." in thinking
    assert '"scores"' not in "".join(p.message.content or "" for p in parts)


async def test_a_failed_reviewer_leaves_the_best_worker_answer_and_the_progress_says_so(servers, serve):
    config = guide_fleet(servers)
    servers[2].model("rev", fault="500")
    running = await serve(config)
    stream = await openai_client(running).chat.completions.create(
        model="parallama", messages=[{"role": "user", "content": "2 + 2?"}], stream=True)
    deltas = [c.choices[0].delta async for c in stream if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Alpha says four."
    reasoning = "".join(d.model_extra.get("reasoning_content") or "" for d in deltas)
    assert "✗ Rev" in reasoning and "HTTP 500" in reasoning
    assert "the final answer is the first successful worker answer, A's" in reasoning


async def test_every_worker_failing_is_an_error_naming_each_cause(servers, serve):
    a, b, c = servers
    a.model("m", fault="404")
    b.model("m", fault="500")
    c.model("rev")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev")})
    with pytest.raises(ollama.ResponseError) as streamed:
        async for _ in await ollama_client(running).chat("parallama", messages=[{"role": "user", "content": "x"}],
                                                         stream=True):
            pass
    assert "every worker failed" in streamed.value.error
    assert "A (" in streamed.value.error and "not found" in streamed.value.error and "HTTP 500" in streamed.value.error
    with pytest.raises(ollama.ResponseError) as whole:
        await ollama_client(running).chat("parallama", messages=[{"role": "user", "content": "x"}], stream=False)
    assert whole.value.status_code == 502 and "every worker failed" in whole.value.error
    # The openai SDK retries 5xx twice by default: the server says not to, and the workers see one run only.
    before = len(a.requests)
    with pytest.raises(openai.InternalServerError) as refused:
        await openai_client(running, max_retries=2).chat.completions.create(
            model="parallama", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 502 and "every worker failed" in refused.value.message
    assert len(a.requests) == before + 1
    # Streamed, the reason is the content, once (an error event after it is what front-ends show twice more).
    chunks = [chunk async for chunk in await openai_client(running).chat.completions.create(
        model="parallama", messages=[{"role": "user", "content": "x"}], stream=True)]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.count("every worker failed") == 1 and "HTTP 500" in content


async def test_unknown_model_is_a_404_in_each_sdk(servers, serve):
    running = await serve(guide_fleet(servers))
    with pytest.raises(ollama.ResponseError) as by_ollama:
        await ollama_client(running).chat("llama3:8b", messages=[{"role": "user", "content": "x"}])
    assert by_ollama.value.status_code == 404 and "llama3:8b" in by_ollama.value.error
    with pytest.raises(openai.NotFoundError) as by_openai:
        await openai_client(running).chat.completions.create(model="gpt-4o",
                                                             messages=[{"role": "user", "content": "x"}])
    assert by_openai.value.code == "model_not_found" and "parallama:latest" in by_openai.value.message


async def test_with_a_key_every_endpoint_but_the_health_check_wants_it(servers, serve):
    running = await serve(guide_fleet(servers), api_key="sk-serve-test-key")
    with pytest.raises(ollama.ResponseError) as no_key:
        await ollama_client(running).list()
    assert no_key.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        await openai_client(running, api_key="sk-wrong").models.list()
    assert wrong_key.value.code == "invalid_api_key"
    keyed = ollama_client(running, headers={"Authorization": "Bearer sk-serve-test-key"})
    assert [m.model for m in (await keyed.list()).models][0] == "parallama:latest"
    reply = await openai_client(running, api_key="sk-serve-test-key").chat.completions.create(
        model="parallama", messages=[{"role": "user", "content": "2 + 2?"}])
    assert reply.choices[0].message.content == ANSWER


async def test_past_the_queue_bound_the_sdk_gets_429_with_retry_after(servers, serve):
    config = guide_fleet(servers)
    servers[0].model("m", latency=2.0, tokens=4, text="slow")
    running = await serve(config, max_queue=0)  # one run at a time on these 1-slot servers, none waiting
    client = openai_client(running)
    first = await client.chat.completions.create(model="parallama", messages=[{"role": "user", "content": "1"}],
                                                 stream=True)
    await first.__anext__()  # the run is in
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="parallama", messages=[{"role": "user", "content": "2"}])
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert refused.value.response.headers["x-should-retry"] == "true"
    assert refused.value.code == "rate_limit_exceeded"
    with pytest.raises(ollama.ResponseError) as by_ollama:
        await ollama_client(running).chat("parallama", messages=[{"role": "user", "content": "3"}])
    assert by_ollama.value.status_code == 429 and "busy" in by_ollama.value.error
    assert "".join([c.choices[0].delta.content or "" async for c in first if c.choices]) == ANSWER


async def test_refused_clients_are_told_to_come_back_at_different_moments_each_within_what_sdks_honour(servers,
                                                                                                       serve):
    config = guide_fleet(servers)
    servers[0].model("m", latency=2.0, tokens=4, text="slow")
    running = await serve(config, max_queue=0)
    client = openai_client(running)
    first = await client.chat.completions.create(model="parallama", messages=[{"role": "user", "content": "1"}],
                                                 stream=True)
    await first.__anext__()
    waits = []
    for _ in range(12):
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="parallama", messages=[{"role": "user", "content": "2"}])
        headers = refused.value.response.headers
        waits.append(int(headers["retry-after-ms"]) / 1000)
        assert int(headers["retry-after"]) == math.ceil(waits[-1])
    # The run started just now, and a run is taken to last 10 s until one has been timed: places free from
    # about 10 s on, and the refused are spread over one run's length after that.
    assert all(1 <= wait <= 60 for wait in waits) and all(8 <= wait <= 21 for wait in waits)
    assert len(set(waits)) >= 10 and len({math.ceil(w) for w in waits}) >= 4
    assert max(waits) - min(waits) >= 3
    await first.close()


async def test_reasoning_models_the_reviewers_thinking_is_shown_the_workers_thinking_is_not(servers, serve):
    config = guide_fleet(servers)
    servers[0].model("m", latency=0.1, text="Alpha says four.", thinking="alpha private musings")
    servers[2].model("rev", latency=0.1, text=ANSWER, thinking="weighing both answers")
    running = await serve(config)
    parts = [p async for p in await ollama_client(running).chat(
        "parallama", messages=[{"role": "user", "content": "2 + 2?"}], stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "".join(p.message.content or "" for p in parts) == ANSWER
    assert "weighing both answers" in thinking
    assert thinking.index("is writing the final answer") < thinking.index("weighing both answers")
    assert "alpha private musings" not in thinking and "tokens of thinking" in thinking
