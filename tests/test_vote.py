"""vote: the majority among the workers' answers (compared as batch scoring compares them), stopping early once the
leader cannot be overtaken; with no majority, the reviewer synthesizes (or the first answer stands), and it says so."""

from __future__ import annotations

import asyncio
import json
import time


from conftest import invoke, worker, write_config
from fakes import FakeServer
from parallama import FleetClient
from parallama.review.vote import tally, vote_key, winner
from parallama.result import AgentResult


def five(fake: FakeServer, reviewer: bool = False) -> dict:
    """Three workers say 42 within 0.7 s (in three ways), two say 41 after 5 s."""
    fake.model("a", latency=0.3, text="The answer is 42.")
    fake.model("b", latency=0.5, text="42")
    fake.model("c", latency=0.7, text="I make it 42.0, I think")
    fake.model("d", latency=5.0, tokens=25, text="It is 41 " * 5)
    fake.model("e", latency=5.0, tokens=25, text="Surely 41 " * 5)
    fake.model("rev", latency=0.1, text="Synthesized: 42.")
    config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abcde"],
              "servers": {fake.url: {"parallel": 6}}, "review": {"strategy": "vote"}}
    if reviewer:
        config["reviewer_agent"] = worker(fake, "rev", name="Rev")
    return config


def answer(name: str, text: str) -> AgentResult:
    return AgentResult(name=name, model="m", api_url="http://x", protocol="ollama", status="ok", content=text)


def test_answers_vote_as_batch_scoring_compares_them():
    assert vote_key("The answer is 42.") == vote_key("42.0") == vote_key("$42") == "42"
    assert vote_key("3.5") == vote_key("It's 3.50") == "3.5"
    assert vote_key("Paris.") == vote_key(" paris ") == "paris"
    assert vote_key("Paris is the capital of France", "The capital of France?") == vote_key("Paris")
    counts = tally([answer("A", "Paris"), answer("B", "Rome"), answer("C", "paris!")])
    assert counts == [{"answer": "paris", "count": 2, "workers": ["A", "C"]},
                      {"answer": "rome", "count": 1, "workers": ["B"]}]
    assert winner(counts)["answer"] == "paris"
    assert winner(tally([answer("A", "1"), answer("B", "2")])) is None  # all different
    assert winner(tally([answer("A", "1"), answer("B", "2"), answer("C", "1"), answer("D", "2")])) is None  # a tie


async def test_a_settled_vote_returns_at_once_and_cuts_the_rest():
    with FakeServer() as fake:
        config = five(fake, reviewer=True)
        started = time.perf_counter()
        async with FleetClient(config) as client:
            result = await client.run("6 × 7?")
        took = time.perf_counter() - started
        assert took < 0.4 * 5.0  # about 0.7 s, not 5
        assert result.final == "The answer is 42." and result.final_source == "vote"
        assert [w.status for w in result.workers] == ["ok", "ok", "ok", "cut", "cut"]
        assert result.workers[3].error.startswith("cut: 3 of 5 agreed ('42')")
        assert result.cut == ["D", "E"]
        assert result.tally == [{"answer": "42", "count": 3, "workers": ["A", "B", "C"]}]
        assert not [r for r in fake.requests if r.model == "rev"]  # the reviewer was not asked
        await asyncio.sleep(0.3)
        assert all(r.disconnected for r in fake.requests if r.model in ("d", "e"))


async def test_the_early_stop_reads_the_answers_by_the_question_as_the_vote_does():
    # "The capital of Germany is Berlin." votes 'berlin' only when read with the question; the early stop once read
    # it without, saw two different answers and waited 5 s for the third.
    with FakeServer() as fake:
        fake.model("a", latency=0.2, text="Berlin.")
        fake.model("b", latency=0.3, text="The capital of Germany is Berlin.")
        fake.model("c", latency=5.0, tokens=25, text="Bonn " * 5)
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
                  "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote"}}
        started = time.perf_counter()
        async with FleetClient(config) as client:
            result = await client.run("What is the capital of Germany?")
        assert time.perf_counter() - started < 0.4 * 5.0
        assert result.final == "Berlin." and result.cut == ["C"]
        assert result.workers[2].error.startswith("cut: 2 of 3 agreed ('berlin')")


async def test_no_majority_falls_back_to_the_reviewer_or_the_first_answer():
    with FakeServer() as fake:
        fake.model("a", latency=0.1, text="12")
        fake.model("b", latency=0.1, text="13")
        fake.model("c", latency=0.1, text="14")
        fake.model("rev", latency=0.1, text="Synthesized: 13.")
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
                  "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote"}}
        async with FleetClient(config) as client:
            alone = await client.run("which?")
        assert alone.final == "12" and alone.final_source == "worker:A" and alone.strategy == "vote"
        assert alone.warnings[0].startswith("vote: no majority (all answers differ) and no reviewer")
        config["reviewer_agent"] = worker(fake, "rev", name="Rev")
        async with FleetClient(config) as client:
            reviewed = await client.run("which?")
        assert reviewed.final == "Synthesized: 13." and reviewed.final_source == "review"
        assert reviewed.warnings[0] == "vote: no majority (all answers differ); the reviewer synthesized the answers"
        assert [c["count"] for c in reviewed.tally] == [1, 1, 1]
        [asked] = [r for r in fake.requests if r.model == "rev"]
        assert all(text in asked.messages[-1]["content"] for text in ("12", "13", "14"))


async def test_a_required_worker_is_still_heard_by_a_settled_vote():
    with FakeServer() as fake:
        config = five(fake)
        fake.model("d", latency=1.5, text="41")
        config["worker_agents"][3]["required"] = True
        async with FleetClient(config) as client:
            result = await client.run("6 × 7?")
    assert [w.status for w in result.workers] == ["ok", "ok", "ok", "ok", "cut"]
    assert result.final_source == "vote" and result.tally[0]["count"] == 3 and result.tally[1]["workers"] == ["D"]


def test_the_cli_json_and_history_carry_the_tally(tmp_path):
    with FakeServer() as fake:
        config = write_config(tmp_path / "fleet.json", five(fake))
        out = invoke("run", "-c", str(config), "--json", "6 × 7?")
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout)
        assert data["final_source"] == "vote" and data["strategy"] == "vote" and data["cut"] == ["D", "E"]
        assert data["tally"][0] == {"answer": "42", "count": 3, "workers": ["A", "B", "C"]}
        shown = invoke("history", "show", data["run_id"], "--json")
        assert json.loads(shown.stdout)["details"]["tally"] == data["tally"]
        assert "Votes:\n- 42: 3 (A, B, C)\n" in invoke("history", "show", data["run_id"]).stdout
        plain = invoke("run", "-c", str(config), "--no-history", "6 × 7?")
        assert plain.stdout.strip() == "The answer is 42."
        assert "Votes:\n- 42: 3 (A, B, C)\n" in plain.stderr
        choices = invoke("run", "--help").stdout
        assert "vote" in choices


async def test_serve_offers_parallama_vote_and_shows_the_votes(serve):
    import ollama

    with FakeServer() as fake:
        running = await serve(five(fake, reviewer=True))
        client = ollama.AsyncClient(host=running.url)
        assert "parallama:vote" in [m.model for m in (await client.list()).models]
        parts = [p async for p in await client.chat("parallama:vote", messages=[{"role": "user", "content": "6×7?"}],
                                                     stream=True)]
        thinking = "".join(p.message.thinking or "" for p in parts)
        assert "".join(p.message.content or "" for p in parts) == "The answer is 42."
        assert "Votes:\n- 42: 3 (A, B, C)" in thinking and "✂ D cut: 3 of 5 agreed" in thinking


async def test_serve_lists_vote_even_with_no_reviewer(serve):
    with FakeServer() as fake:
        config = five(fake)
        running = await serve(config)
        import ollama

        names = [m.model for m in (await ollama.AsyncClient(host=running.url).list()).models]
    assert names[:3] == ["parallama:latest", "parallama:vote", "parallama:confidence"]
    assert not any(":" in n for n in names[3:])


async def test_the_page_gets_the_tally_live_and_reopened(serve):
    import aiohttp

    with FakeServer() as fake:
        running = await serve(five(fake, reviewer=True), history=True)
        async with aiohttp.ClientSession() as session:
            async with session.post(running.url + "/ui/api/runs", json={"prompt": "6×7?", "strategy": "vote"}) as r:
                views = [json.loads(line[6:]) async for line in r.content if line.startswith(b"data: ")]
            [result] = [v for v in views if v["type"] == "result"]
            async with session.get(running.url + "/ui/api/history/" + result["history_id"]) as reopened:
                replayed = (await reopened.json())["events"]
    assert views[0]["strategy"] == "vote"
    assert result["final_source"] == "vote" and result["details"]["tally"][0]["workers"] == ["A", "B", "C"]
    assert result["summary"][:2] == ["Votes:", "- 42: 3 (A, B, C)"]
    assert result["cut"] == ["D", "E"]
    assert [v for v in replayed if v["type"] == "result"][0]["details"] == result["details"]
