"""Quorum: once `min_answers` workers answered, the rest get `grace_s` more, then are cut — their requests closed at
the server, their slots handed on, their status `cut`, the result marked partial everywhere."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer
from parallama import FleetClient
from parallama.errors import ConfigErrors
from parallama.config import fleet_from_dict


def straggler_fleet(fakes: list[FakeServer], **review) -> dict:
    """Workers of 1.0, 1.2 and 6.0 s, each on its own 1-slot server, and a quick reviewer on a fourth."""
    a, b, c, r = fakes
    a.model("m", latency=1.0, tokens=10, text="A says 4")
    b.model("m", latency=1.2, tokens=10, text="B says 4")
    c.model("m", latency=6.0, tokens=30, text="C says five, slowly " * 3)
    r.model("rev", latency=0.1, text="The answer is 4.")
    return {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B"), worker(c, "m", name="C")],
            "reviewer_agent": worker(r, "rev", name="Rev"),
            "review": {"strategy": "synthesize", "quorum": {"min_answers": 2, "grace_s": 0.5}, **review}}


@pytest.fixture
def four():
    with FakeServer(slots=1) as a, FakeServer(slots=1) as b, FakeServer(slots=1) as c, FakeServer(slots=1) as r:
        yield [a, b, c, r]


async def wait_for(check, seconds: float = 3.0) -> bool:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_a_quorum_cuts_the_straggler_and_closes_its_request(four):
    config = straggler_fleet(four)
    events = []
    async with FleetClient(config) as client:
        result = await client.run("2+2?", on_event=events.append)
    review_s = result.review.queued_s + result.review.elapsed_s
    a, b, c = result.workers
    assert (a.status, b.status, c.status) == ("ok", "ok", "cut")
    assert c.error == "cut: 2 of 3 had answered; waited 0.5 s more"
    # About 1.2 s (the second answer) + 0.5 s of grace + the review, against 6 s without the quorum.
    assert result.wall_s - review_s < 0.5 * 6.0
    assert result.wall_s - review_s > 1.5
    assert c.elapsed_s < 0.5 * 6.0
    assert result.cut == ["C"] and result.partial
    assert result.warnings[0].startswith("partial result: C was cut (2 of 3 had answered")
    # The reviewer saw exactly the answers that arrived.
    [review_request] = four[3].requests
    assert "A says 4" in review_request.messages[-1]["content"]
    assert "C says" not in review_request.messages[-1]["content"]
    # Closed at the server: the fake saw the client go away, mid-stream (some of C's answer had arrived).
    assert await wait_for(lambda: four[2].requests[0].disconnected)
    assert c.content.startswith("C says")
    kinds = [type(e).__name__ for e in events if getattr(e, "agent", None) and e.agent.name == "C"]
    assert kinds[-1] == "Cut"
    assert result.to_dict()["cut"] == ["C"]


async def test_a_required_worker_is_waited_for(four):
    config = straggler_fleet(four)
    config["worker_agents"][2]["required"] = True
    async with FleetClient(config) as client:
        result = await client.run("2+2?")
    assert [w.status for w in result.workers] == ["ok", "ok", "ok"]
    assert result.wall_s > 6.0 and not result.cut
    assert not four[2].requests[0].disconnected


async def test_a_cut_hands_its_slot_on_at_once():
    """The straggler's server has one slot and another run waits for it: it is sent as soon as the cut happens."""
    with FakeServer(slots=None) as fast, FakeServer(slots=None) as shared:
        fast.model("m", latency=0.2, tokens=4)
        shared.model("slow", latency=10, tokens=40)
        shared.model("next", latency=0.1, tokens=2)
        cutting = {"worker_agents": [worker(fast, "m", name="F"), worker(shared, "slow", name="S")],
                   "review": {"quorum": {"min_answers": 1, "grace_s": 0.3}}}
        after = {"worker_agents": [worker(shared, "next", name="N")]}
        async with FleetClient(cutting) as first, FleetClient(after) as second:
            running = asyncio.create_task(first.run("go"))
            while not shared.requests:
                await asyncio.sleep(0.01)
            waiting = asyncio.create_task(second.run("then"))
            result = await running
            cut_at = time.perf_counter()
            other = await waiting
        sent_after_cut = shared.requests[1].arrived - cut_at
    assert result.workers[1].status == "cut"
    assert sent_after_cut < 0.3 and other.workers[0].ok
    assert shared.max_in_flight == 1


async def test_a_cut_during_a_refinement_round(four):
    """Round 2 respects the quorum too: its straggler is cut, and the review reads round 2's answers."""
    a, b, c, r = four
    config = straggler_fleet(four, rounds=2)
    c.model("m", latency=0.3, text="C says 4")  # round 1: everyone answers in time
    async with FleetClient(config) as client:
        task = asyncio.create_task(client.run("2+2?"))
        while len(c.requests) < 1 or c.requests[0].ended is None:
            await asyncio.sleep(0.01)
        c.model("m", latency=6.0, tokens=30, text="C refines slowly " * 3)  # round 2: a straggler
        result = await task
    assert [w.status for w in result.earlier_rounds[0]] == ["ok", "ok", "ok"]
    assert [w.status for w in result.workers] == ["ok", "ok", "cut"]
    assert result.workers[2].stage == "round 2"
    assert result.cut == ["C"] and "cut in round 2" in result.warnings[0]
    assert result.wall_s < 6.0
    assert await wait_for(lambda: c.requests[1].disconnected)


def test_quorum_settings_are_checked_with_their_json_path(four):
    a = four[0]
    base = {"worker_agents": [worker(a, "m"), worker(a, "m")]}
    for quorum, path, words in [({"min_answers": 3}, "review.quorum.min_answers", "at most the number of workers (2)"),
                                ({"min_answers": 0}, "review.quorum.min_answers", "at least 1"),
                                ({"min_answers": 1, "grace_s": -1}, "review.quorum.grace_s", "at least 0"),
                                ({"min_answer": 1}, "review.quorum", "did you mean 'min_answers'")]:
        with pytest.raises(ConfigErrors) as caught:
            fleet_from_dict({**base, "review": {"quorum": quorum}})
        text = str(caught.value)
        assert path in text and words in text, text
    with pytest.raises(ConfigErrors) as caught:
        fleet_from_dict({**base, "reviewer_agent": worker(a, "m", required=True)})
    assert "reviewer_agent.required" in str(caught.value)
    fleet = fleet_from_dict({**base, "review": {"quorum": {"min_answers": 2, "grace_s": 0.25}}})
    assert (fleet.quorum.min_answers, fleet.quorum.grace_s) == (2, 0.25)


def test_the_terminal_json_and_history_say_the_result_is_partial(four, tmp_path):
    config = write_config(tmp_path / "fleet.json", straggler_fleet(four))
    out = invoke("run", "-c", str(config), "--json", "2+2?")
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert data["cut"] == ["C"]
    assert [w["status"] for w in data["workers"]] == ["ok", "ok", "cut"]
    plain = invoke("run", "-c", str(config), "--no-history", "2+2?")
    lines = plain.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert warnings[0].startswith("warning: partial result: C was cut (2 of 3 had answered")
    assert "✂ C cut: 2 of 3 had answered; waited 0.5 s more" in lines
    shown = invoke("history", "show", data["run_id"])
    assert shown.stdout.splitlines()[1] == "partial: C cut (the answer was made without them)"
    assert "— cut" in shown.stdout and "2 of 3 had answered" in shown.stdout


async def test_serves_progress_and_the_page_show_the_cut(four, serve):
    import aiohttp
    import ollama

    running = await serve(straggler_fleet(four), history=True)
    parts = [part async for part in await ollama.AsyncClient(host=running.url).chat(
        "parallama:latest", messages=[{"role": "user", "content": "2 + 2?"}], stream=True)]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert "✂ C cut: 2 of 3 had answered; waited 0.5 s more" in thinking
    assert "".join(p.message.content or "" for p in parts) == "The answer is 4."

    async with aiohttp.ClientSession() as session:
        async with session.post(running.url + "/ui/api/runs", json={"prompt": "2 + 2?"}) as response:
            views = [json.loads(line[6:]) async for line in response.content if line.startswith(b"data: ")]
        [ended] = [v for v in views if v["type"] == "ended" and v["agent"] == "C"]
        assert ended["status"] == "cut" and ended["error"].startswith("cut: 2 of 3")
        [result] = [v for v in views if v["type"] == "result"]
        assert result["cut"] == ["C"] and result["warnings"][0].startswith("partial result")
        async with session.get(running.url + "/ui/api/history/" + result["history_id"]) as reopened:
            replayed = (await reopened.json())["events"]
    assert [v for v in replayed if v["type"] == "result"][0]["cut"] == ["C"]
    assert [v["status"] for v in replayed if v["type"] == "ended" and v["agent"] == "C"] == ["cut"]
