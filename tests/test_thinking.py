"""Reasoning models: thinking read from every shape a server sends, kept out of the answers, shown live, and
switched on or off per agent."""

from __future__ import annotations

import io
import json

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer

from parallama import FleetClient, run
from parallama.backends.thinking import ThinkSplitter
from parallama.events import Thinking

THOUGHT = "Rayleigh scattering goes as one over wavelength to the fourth so blue wins"
ANSWER = "Blue light scatters most in the air"


def split(chunks: list[str]) -> tuple[str, str]:
    answer: list[str] = []
    thought: list[str] = []
    splitter = ThinkSplitter(answer.append, thought.append)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return "".join(answer), "".join(thought)


def test_inline_think_is_separated_wherever_the_chunks_cut_the_tags():
    text = f"  <think>{THOUGHT}</think>\n\n{ANSWER}"
    for i in range(1, len(text)):
        for j in range(i, min(len(text), i + 12)):
            assert split([text[:i], text[i:j], text[j:]]) == (ANSWER, THOUGHT), (i, j)


def test_text_that_only_looks_like_a_tag_is_answer():
    assert split(["<thi", "s is not a tag"]) == ("<this is not a tag", "")
    assert split(["<b>bold</b> and <think>later</think>"]) == ("<b>bold</b> and <think>later</think>", "")
    assert split(["The answer. <think>x</think>"]) == ("The answer. <think>x</think>", "")
    assert split(["<think>never closed"]) == ("", "never closed")


def reasoning_fleet(thinker: FakeServer, reviewer: FakeServer, *, protocol: str, **thinking) -> dict:
    thinker.model("r1", text=ANSWER, tokens=7, thinking=THOUGHT, **thinking)
    reviewer.model("rev", text="Final: the sky is blue.", tokens=5)
    url = thinker.url + ("/v1" if protocol == "openai" else "/api/chat")
    return {"worker_agents": [{"api_url": url, "model": "r1", "name": "R1"}],
            "reviewer_agent": worker(reviewer, "rev", name="Rev")}


@pytest.mark.parametrize("protocol,shape", [
    ("ollama", {}),
    ("openai", {"reasoning_field": "reasoning_content"}),
    ("openai", {"reasoning_field": "reasoning"}),
    ("ollama", {"thinking_style": "inline"}),
    ("openai", {"thinking_style": "inline"}),
])
def test_thinking_is_kept_apart_from_the_answer(tmp_path, servers, protocol, shape):
    thinker, reviewer, _ = servers
    write_config(tmp_path / "c.json", reasoning_fleet(thinker, reviewer, protocol=protocol, **shape))
    out = invoke("run", "Why is the sky blue?", "-c", "c.json", "--json")
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    [w] = data["workers"]
    assert w["content"] == ANSWER
    assert w["thinking"].strip() == THOUGHT
    # The reviewer read the answer only.
    [review_request] = reviewer.requests
    prompt = json.dumps(review_request.messages)
    assert ANSWER in prompt and "Rayleigh" not in prompt and "<think>" not in prompt
    assert "Rayleigh" not in data["final"]
    # Token counts are split: the answer's own count, the thinking's apart.
    if shape.get("thinking_style") != "inline":
        assert w["thinking_tokens"] == len(THOUGHT.split())
        assert w["completion_tokens"] == 7


async def test_think_false_reaches_ollama_and_the_model_answers_without_thinking(servers):
    thinker, reviewer, _ = servers
    config = reasoning_fleet(thinker, reviewer, protocol="ollama")
    config["worker_agents"][0]["think"] = False
    config["reviewer_agent"]["think"] = "high"
    result = await run("q", config)
    assert thinker.requests[0].body["think"] is False
    assert reviewer.requests[0].body["think"] == "high"
    assert result.workers[0].thinking is None and result.workers[0].content == ANSWER


async def test_levels_go_as_reasoning_effort_and_switches_as_enable_thinking_on_openai(servers):
    thinker, reviewer, _ = servers
    config = reasoning_fleet(thinker, reviewer, protocol="openai")
    config["worker_agents"][0]["think"] = "low"
    await run("q", config, review=False)
    assert thinker.requests[-1].body["reasoning_effort"] == "low"
    config["worker_agents"][0]["think"] = False
    result = await run("q", config, review=False)
    assert thinker.requests[-1].body["chat_template_kwargs"] == {"enable_thinking": False}
    assert result.workers[0].thinking is None


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
async def test_a_server_that_refuses_the_field_is_asked_again_without_it(servers, protocol):
    thinker, reviewer, _ = servers
    config = reasoning_fleet(thinker, reviewer, protocol=protocol, reject_think=True)
    config["worker_agents"][0]["think"] = True
    async with FleetClient(config) as client:
        first = await client.run("q")
        second = await client.run("q")
    assert first.workers[0].ok and first.workers[0].content == ANSWER
    assert [r.body.get("think", r.body.get("chat_template_kwargs")) is not None for r in thinker.requests] == [
        True, False, False]  # refused once, then asked plainly — and the client remembers
    [warning] = [w for w in first.warnings if "thinking" in w]
    assert "R1" in warning and "asked again without it" in warning and "400" in warning
    assert not [w for w in second.warnings if "thinking" in w]


async def test_the_live_view_shows_a_thinking_worker(servers):
    from rich.console import Console

    from parallama.config import as_fleet
    from parallama.report.live import LiveView

    thinker, reviewer, _ = servers
    thinker.model("r1", text=ANSWER, tokens=4, thinking=THOUGHT, latency=0.6, ttft=0.05)
    fleet = as_fleet({"worker_agents": [worker(thinker, "r1", name="R1")]})
    out = io.StringIO()
    console = Console(file=out, width=140, color_system=None)
    view = LiveView(fleet, console, review=False)
    screens: list[str] = []

    def watch(event) -> None:
        view(event)
        if isinstance(event, Thinking) and view.rows[("workers", "R1")].thought_pieces == 5:
            out.seek(0)
            out.truncate()
            console.print(view.render())
            screens.append(out.getvalue())

    async with FleetClient(fleet) as client:
        result = await client.run("q", on_event=watch, review=False)
    [screen] = screens
    row = next(line for line in screen.splitlines() if line.startswith("R1"))
    assert " thinking " in row and "+5 think" in row
    assert row.endswith("scattering goes as one")  # the tail of its thoughts so far
    assert result.workers[0].thinking_tokens == len(THOUGHT.split())


async def test_history_keeps_the_thinking(servers):
    from parallama.history import History

    thinker, reviewer, _ = servers
    result = await run("q", reasoning_fleet(thinker, reviewer, protocol="ollama"), history=True)
    with History() as store:
        stored = store.run(result.history_id)
    assert stored is not None
    [r1] = [a for a in stored["agents"] if a["name"] == "R1"]
    assert r1["thinking"].strip() == THOUGHT and r1["content"] == ANSWER


def test_a_wrong_think_value_is_a_config_error(tmp_path, server):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m", think="extreme")]})
    out = invoke("run", "q", "-c", "c.json")
    assert out.exit_code == 2
    assert "worker_agents[0].think" in out.stderr


def test_doctor_and_plan_warn_when_a_thinking_model_has_a_short_timeout(tmp_path, servers):
    thinker, reviewer, _ = servers
    config = reasoning_fleet(thinker, reviewer, protocol="ollama")
    config["worker_agents"][0]["timeout"] = 30
    write_config(tmp_path / "c.json", config)
    doctor = invoke("doctor", "-c", "c.json", "--ram", "64")
    line = next(x for x in doctor.stdout.splitlines() if "thinks before it answers" in x)
    assert "R1" in line and "30 s" in line and '"think": false' in doctor.stdout
    plan = invoke("plan", "-c", "c.json", "--ram", "64")
    assert "Timeouts" in plan.stdout and "thinking counts toward its timeout of 30 s" in plan.stdout
    # Thinking switched off, or a long timeout: nothing to say.
    config["worker_agents"][0]["think"] = False
    write_config(tmp_path / "c.json", config)
    assert "thinks before" not in invoke("doctor", "-c", "c.json", "--ram", "64").stdout


def split_r1(chunks: list[str]) -> tuple[str, str]:
    """As a Stream does: what turns out to be R1-style thinking moves from the answer to the thinking."""
    answer: list[str] = []
    thought: list[str] = []

    def was_thinking() -> None:
        thought.extend(answer)
        answer.clear()

    splitter = ThinkSplitter(answer.append, thought.append, was_thinking)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return "".join(answer), "".join(thought)


def test_r1_style_thinking_without_an_opening_tag_and_tags_in_any_case_are_read():
    text = f"{THOUGHT}</think>\n\n{ANSWER}"
    for i in range(1, len(text)):
        for j in range(i, min(len(text), i + 12)):
            assert split_r1([text[:i], text[i:j], text[j:]]) == (ANSWER, THOUGHT), (i, j)
    assert split_r1([f"<THINK>{THOUGHT}</Think>{ANSWER}"]) == (ANSWER, THOUGHT)
    assert split_r1([f"{THOUGHT}</THINK>", ANSWER]) == (ANSWER, THOUGHT)
    # Text that only mentions the tags stays answer.
    assert split_r1(["The answer. <thi", "nk>x</think> and on"]) == ("The answer. <think>x</think> and on", "")
    assert split_r1(["no tags at all, a </thin", "g> of a kind"]) == ("no tags at all, a </thing> of a kind", "")
    assert split_r1(["<think>never closed"]) == ("", "never closed")


async def test_an_r1_style_worker_answers_apart_from_its_thinking(servers):
    thinker, reviewer, _ = servers
    thinker.model("r1", text=f"{THOUGHT} </think>\n\n{ANSWER}", tokens=9)
    reviewer.model("rev", text="Final.", tokens=2)
    result = await run("why blue?", {"worker_agents": [worker(thinker, "r1", name="R1")],
                                     "reviewer_agent": worker(reviewer, "rev")})
    [r1] = result.workers
    assert r1.content == ANSWER and r1.thinking.strip() == THOUGHT
    assert THOUGHT not in reviewer.requests[0].messages[-1]["content"]
