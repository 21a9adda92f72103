"""A hostile or broken model server: one wrong-typed field in one chunk fails only that agent, as a `malformed`
stream error naming the agent, the URL and the field, through `run`, `serve` and `batch`; the run goes on."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer
from parallama import run

MESSAGE = '"message": {"role": "assistant", "content": ""}'
OLLAMA = [  # (chunk, the field the error names)
    ('{"message": {"role": "assistant", "content": 123}, "done": false}', "message.content"),
    ('{"message": {"role": "assistant", "content": ["a"]}, "done": false}', "message.content"),
    ('{"message": {"role": "assistant", "content": {"text": "a"}}, "done": false}', "message.content"),
    ('{"message": "hello", "done": false}', "message"),
    ('{"message": {"role": "assistant", "content": "", "thinking": 5}, "done": false}', "message.thinking"),
    ('{%s, "done": true, "eval_count": 3, "eval_duration": "abc"}' % MESSAGE, "eval_duration"),
    ('{%s, "done": true, "eval_count": "12", "eval_duration": 5}' % MESSAGE, "eval_count"),
    ('{%s, "done": true, "prompt_eval_count": "7", "eval_count": 3}' % MESSAGE, "prompt_eval_count"),
    ('{%s, "done": "yes"}' % MESSAGE, "done"),
    ('{%s, "done": true, "eval_count": -3, "eval_duration": 5}' % MESSAGE, "eval_count"),
]
OPENAI = [
    ('{"choices": "abc"}', "choices"),
    ('{"choices": ["x"]}', "choices[0]"),
    ('{"choices": [{"index": 0, "delta": "x"}]}', "choices[0].delta"),
    ('{"choices": [{"index": 0, "delta": {"content": 5}}]}', "choices[0].delta.content"),
    ('{"choices": [{"index": 0, "delta": {"reasoning_content": ["a"]}}]}', "choices[0].delta.reasoning_content"),
    ('{"choices": [{"index": 0, "delta": {"reasoning": 5}}]}', "choices[0].delta.reasoning"),
    ('{"choices": [], "usage": "x"}', "usage"),
    ('{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": "3"}}', "usage.completion_tokens"),
    ('{"choices": [], "usage": {"prompt_tokens": "7", "completion_tokens": 3}}', "usage.prompt_tokens"),
    ('{"choices": [], "usage": {"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": "1"}}}',
     "usage.completion_tokens_details.reasoning_tokens"),
    ('{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": -1}}', "usage.completion_tokens"),
]
VARIANTS = [("/api/chat", chunk, field) for chunk, field in OLLAMA] + [("/v1", chunk, field) for chunk, field in OPENAI]


def hostile_fleet(good: FakeServer, bad: FakeServer, reviewer: FakeServer,
                  variants=VARIANTS) -> tuple[dict, list[str]]:
    """A good worker, one worker per wrong-typed chunk (each its own model on the bad server), a good reviewer."""
    good.model("m", latency=0.05, text="The good answer.")
    reviewer.model("rev", latency=0.05, text="Reviewed answer.")
    names, agents = [], [worker(good, "m", name="Good")]
    for i, (path, chunk, _) in enumerate(variants):
        bad.model(f"bad{i}", latency=0.05, tokens=4, fault="raw_chunk", raw_chunk=chunk)
        names.append(f"Bad {i}")
        agents.append({"name": f"Bad {i}", "api_url": bad.url + path, "model": f"bad{i}"})
    return ({"worker_agents": agents, "reviewer_agent": worker(reviewer, "rev", name="Rev"),
             "servers": {bad.url: {"parallel": 4}}}, names)


def assert_malformed(row: dict, name: str, url: str, field: str) -> None:
    assert row["status"] == "error" and row["error_kind"] == "malformed", row
    assert row["error"].startswith(f"{name} ({url}): malformed chunk in stream: {field} should be "), row["error"]


@pytest.mark.parametrize("path,chunk,field", VARIANTS, ids=[f"{p}:{f}" for p, _, f in VARIANTS])
async def test_one_wrong_typed_field_fails_only_its_agent(servers, path, chunk, field):
    good, bad, reviewer = servers
    config, _ = hostile_fleet(good, bad, reviewer, [(path, chunk, field)])
    result = await run("hi", config)
    ok, broken = result.workers
    assert ok.ok and ok.content == "The good answer."
    url = bad.url + ("/api/chat" if path == "/api/chat" else "/v1/chat/completions")
    assert_malformed(dataclasses.asdict(broken), "Bad 0", url, field)
    assert result.final == "Reviewed answer." and result.final_source == "review"


def test_run_exits_0_with_the_reviewers_answer(tmp_path, servers):
    good, bad, reviewer = servers
    config, names = hostile_fleet(good, bad, reviewer)
    write_config(tmp_path / "c.json", config)
    result = invoke("run", "hi", "-c", "c.json", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["final"] == "Reviewed answer."
    good_row, *bad_rows = data["workers"]
    assert good_row["status"] == "ok"
    for row, name, (_path, _, field) in zip(bad_rows, names, VARIANTS):
        assert_malformed(row, name, row["api_url"].replace("/v1", "/v1/chat/completions"), field)
    assert "Traceback" not in result.stderr


async def answers_from_serve(running, model: str) -> list[str]:
    """The whole answer from serve's Ollama chat and from its OpenAI chat; any status but 200 fails the test."""
    ask = {"role": "user", "content": "task"}
    answers = []
    async with aiohttp.ClientSession() as session:
        for path in ("/api/chat", "/v1/chat/completions"):
            async with session.post(running.url + path, json={"model": model, "stream": False,
                                                              "messages": [ask]}) as response:
                assert response.status == 200, await response.text()
                body = await response.json()
            answers.append(body["message"]["content"] if path == "/api/chat" else
                           body["choices"][0]["message"]["content"])
    return answers


async def test_serve_answers_both_apis_without_a_500(servers, serve):
    good, bad, reviewer = servers
    config, _ = hostile_fleet(good, bad, reviewer)
    running = await serve(config)
    assert await answers_from_serve(running, "parallama") == ["Reviewed answer."] * 2


def test_batch_writes_every_line(tmp_path, servers):
    good, bad, reviewer = servers
    config, names = hostile_fleet(good, bad, reviewer)
    write_config(tmp_path / "c.json", config)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"prompt {i}"}) + "\n"
                                               for i in range(3)))
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["q0", "q1", "q2"]
    for line in lines:
        assert line["final"] == "Reviewed answer."
        kinds = [w["error_kind"] for w in line["workers"]]
        assert kinds == [None] + ["malformed"] * len(VARIANTS)


# ---------------------------------------------------------------- a reviewer's reply nested too deep to read

DEEP = 5000
NESTED = {  # a judge's "scores" and a ranker's reply, each nested DEEP levels
    "judge": '{"scores": ' + "[" * DEEP + "]" * DEEP + "}",
    "judge_objects": '{"scores": [{"response": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + ', "score": 5}]}',
    "council": "FINAL RANKING: " + "[" * DEEP + "Response A" + "]" * DEEP,
}


def nested_fleet(servers, reply: str) -> dict:
    a, b, c = servers
    a.model("m", latency=0.05, text="first answer")
    b.model("m", latency=0.05, text="second answer", respond=lambda m: reply if "FINAL RANKING" in str(m) else
            "second answer")
    c.model("rev", latency=0.05, text=reply)
    return {"reviewer_agent": worker(c, "rev", name="Rev"), "worker_agents": [worker(a, "m", name="F"),
                                                                             worker(b, "m", name="S")]}


@pytest.mark.parametrize("shape", ["judge", "judge_objects"])
async def test_a_judge_reply_nested_too_deep_is_unreadable_and_the_fallback_answers(servers, shape):
    result = await run("task", nested_fleet(servers, NESTED[shape]), strategy="judge")
    assert result.final == "first answer" and result.final_source == "worker:F"
    [attempt] = result.review_attempts
    assert attempt.error_kind == "unreadable" and "nested too deep" in attempt.error
    assert len(servers[2].requests) == 2  # asked again once, more strictly


async def test_a_ranking_nested_too_deep_is_left_out(servers):
    result = await run("task", nested_fleet(servers, NESTED["council"]), strategy="council")
    assert result.final == NESTED["council"] and result.final_source == "review"  # the reviewer's text, as is
    assert result.answered


def test_run_and_batch_fall_back_from_a_judge_nested_too_deep(tmp_path, servers):
    write_config(tmp_path / "c.json", nested_fleet(servers, NESTED["judge"]))
    ran = invoke("run", "task", "-c", "c.json", "--strategy", "judge")
    assert ran.exit_code == 0 and ran.stdout == "first answer\n"
    assert "unreadable answer, twice" in ran.stderr and "Traceback" not in ran.stderr
    (tmp_path / "in.jsonl").write_text('{"id": "q1", "prompt": "task"}\n{"id": "q2", "prompt": "again"}\n')
    batch = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--strategy", "judge")
    assert batch.exit_code == 0, batch.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ["q1", "q2"]
    assert all(line["final"] == "first answer" and line["final_source"] == "worker:F" for line in lines)


async def test_serve_falls_back_from_a_judge_nested_too_deep(servers, serve):
    running = await serve(nested_fleet(servers, NESTED["judge"]))
    assert await answers_from_serve(running, "parallama:judge") == ["first answer"] * 2


# ---------------------------------------------------------------- what a server answers doctor's probes

class OddAnswers(FakeServer):
    """Answers /api/tags, or /api/show, with the bytes given: a wrong shape, or JSON nested too deep."""

    def __init__(self, *, tags: bytes | None = None, show: bytes | None = None) -> None:
        super().__init__()
        self.tags, self.show = tags, show

    async def _tags(self, request):
        return await super()._tags(request) if self.tags is None else self._odd(self.tags)

    async def _show(self, request):
        return await super()._show(request) if self.show is None else self._odd(self.show)

    def _odd(self, body: bytes):
        from aiohttp import web

        return web.Response(body=body, content_type="application/json")


@pytest.mark.parametrize("body,why", [
    (b'{"models": "x"}', "models: Input should be a valid array"),
    (b'{"models": [{"name": 5}]}', "models.0.name: Input should be a valid string"),
    (b'{"models": ' + b"[" * DEEP + b"]" * DEEP + b"}", "recursion limit exceeded"),
])
def test_doctor_says_a_probe_answer_is_unusable_instead_of_crashing(tmp_path, body, why):
    with OddAnswers(tags=body) as odd:
        write_config(tmp_path / "c.json", {"worker_agents": [worker(odd, "m")]})
        result = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    line = next(line for line in result.stdout.splitlines() if "no usable answer" in line)
    assert why in line, line


@pytest.mark.parametrize("body", [
    b'{"details": "x"}',
    b'{"capabilities": "thinking"}',
    b'{"model_info": {"general.architecture": "llama", "general.parameter_count": 8000000000, '
    b'"llama.block_count": "x", "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8, '
    b'"llama.embedding_length": [4096]}}',
])
def test_plan_estimates_without_a_show_answer_of_the_wrong_shape(tmp_path, body):
    with OddAnswers(show=body) as odd:
        odd.model("llama3:8b")
        write_config(tmp_path / "c.json", {"worker_agents": [worker(odd, "llama3:8b")]})
        plan = invoke("plan", "-c", "c.json", "--ram", "64", "--vram", "0", "--json")
        doctor = invoke("doctor", "-c", "c.json", "--ram", "64", "--vram", "0")
    assert plan.exit_code == 0 and doctor.exit_code == 0, plan.stderr + doctor.stdout
    assert "Traceback" not in plan.stderr + doctor.stderr
    assert json.loads(plan.stdout)["fits"] is True
