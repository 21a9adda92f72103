"""Review strategies (judge, council, rounds, prompt templates) and the reviewer fallback chain, checked on the
requests the fake servers recorded."""

from __future__ import annotations

import json
import re

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer, free_port
from parallama import run
from parallama.review import council, judge
from parallama.result import AgentResult
from parallama.result import FinalSource

QUALITY = {"Alpha": 3, "Beta": 9, "Gamma": 6, "Delta": 1}


def answer_of(name: str) -> str:
    return f"{name} says: the answer, quality {QUALITY[name]}."


def is_ranking_request(messages) -> bool:
    return "FINAL RANKING" in messages[0]["content"]


def shown_responses(messages) -> list[tuple[str, str]]:
    """(label, text) pairs from a ranking or judging request."""
    return re.findall(r"### Response ([A-Z])\n(.*?)(?=\n\n### Response|\Z)", messages[-1]["content"], re.DOTALL)


def honest_ranker(name: str):
    """A worker that answers with its own text, and ranks what it is shown by the quality written in it."""
    def respond(messages):
        if not is_ranking_request(messages):
            return answer_of(name)
        shown = shown_responses(messages)
        best_first = sorted(shown, key=lambda pair: -int(re.search(r"quality (\d+)", pair[1]).group(1)))
        return "Some thoughts.\nFINAL RANKING:\n" + "\n".join(
            f"{i + 1}. Response {label}" for i, (label, _) in enumerate(best_first))
    return respond


@pytest.fixture
def council_fleet(tmp_path):
    with FakeServer() as fake:
        for name in QUALITY:
            fake.model(name.lower(), latency=0.05, respond=honest_ranker(name))
        fake.model("chair", latency=0.05, text="The council's final answer.")
        config = {"reviewer_agent": worker(fake, "chair", name="Chair"),
                  "worker_agents": [worker(fake, n.lower(), name=n) for n in QUALITY],
                  "servers": {fake.url: {"parallel": 4}}, "review": {"strategy": "council"}}
        yield fake, config


async def test_council_prompts_are_anonymized_shuffled_and_exclude_self(council_fleet):
    fake, config = council_fleet
    result = await run("What is it?", config, seed=7)
    ranking_requests = [r for r in fake.requests if r.messages and is_ranking_request(r.messages)]
    assert len(ranking_requests) == 4
    orders = {}
    for request in ranking_requests:
        ranker = next(n for n in QUALITY if n.lower() == request.model)
        text = request.messages[-1]["content"]
        assert answer_of(ranker) not in text  # its own answer is left out
        for other in QUALITY:
            if other != ranker:
                assert answer_of(other).split(" says")[1] in text  # the others' answers are there …
        assert not any(f"from {n}" in text for n in QUALITY)  # … with no author names
        labels = [label for label, _ in shown_responses(request.messages)]
        assert labels == ["A", "B", "C"]
        orders[ranker] = [re.search(r"^(\w+) says", body).group(1) for _, body in shown_responses(request.messages)]
        assert sorted(orders[ranker]) == sorted(n for n in QUALITY if n != ranker)
    # Shuffled per ranker: not everyone saw the others in config order.
    assert any(order != [n for n in QUALITY if n in order] for order in orders.values())
    # Every ranking was read, and the Borda count follows the qualities.
    assert all(r["error"] is None for r in result.rankings)
    assert [r["name"] for r in result.ranking] == ["Beta", "Gamma", "Alpha", "Delta"]
    review_request = next(r for r in fake.requests if r.model == "chair")
    assert "Borda count over 4 rankings" in review_request.messages[-1]["content"]
    assert "1. Beta" in review_request.messages[-1]["content"]
    assert result.final == "The council's final answer." and result.strategy == "council"


async def test_council_reports_and_leaves_out_unreadable_rankings(council_fleet):
    fake, config = council_fleet
    fake.model("delta", latency=0.05,
               respond=lambda m: "I like them all." if is_ranking_request(m) else answer_of("Delta"))
    result = await run("What is it?", config, seed=1)
    delta = next(r for r in result.rankings if r["ranker"] == "Delta")
    assert delta["error"] == "no FINAL RANKING section" and delta["ranking"] == []
    assert any("ranking by Delta was left out" in w for w in result.warnings)
    assert "Borda count over 3 rankings" in next(r for r in fake.requests if r.model == "chair").messages[-1]["content"]


async def test_council_announces_the_rankings_before_its_reviewer_writes(council_fleet):
    from parallama.events import Ranked, RunEnded, Started

    fake, config = council_fleet
    seen = []
    result = await run("What is it?", config, seed=3, on_event=seen.append)
    [ranked] = [e for e in seen if isinstance(e, Ranked)]
    reviewer_started = next(i for i, e in enumerate(seen) if isinstance(e, Started) and e.stage == "review")
    assert seen.index(ranked) < reviewer_started and isinstance(seen[-1], RunEnded)
    assert ranked.rankings == result.rankings and ranked.ranking == result.ranking
    assert ranked.run_id == result.run_id and ranked.stage == "ranking"


def test_borda_on_known_rankings():
    ballots = [council.Ballot("w1", {}, order=["B", "C", "D"]), council.Ballot("w2", {}, order=["C", "B", "A"]),
               council.Ballot("w3", {}, order=["B", "A", "D"]), council.Ballot("w4", {}, order=["C", "B", "A"])]
    # B: 2+1+2+1 = 6, C: 1+2+0+2 = 5, A: 0+0+1+0 = 1, D: 0+0+0 = 0
    assert council.borda(ballots, ["A", "B", "C", "D"]) == [("B", 6), ("C", 5), ("A", 1), ("D", 0)]
    # Ties keep config order.
    assert council.borda([council.Ballot("x", {}, order=["A", "B"]), council.Ballot("y", {}, order=["B", "A"])],
                         ["B", "A"]) == [("B", 1), ("A", 1)]


@pytest.mark.parametrize("reply,error", [
    ("FINAL RANKING:\n1. Response B\n2. Response A", None),
    ("Thoughts about Response A.\nFINAL RANKING:\n1. Response A\n2. Response B", None),
    ("FINAL RANKING:\n1. Response B", "leaves out Response A"),
    ("FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B", "ranks Response C, which it was not shown"),
    ("B is better than A.", "no FINAL RANKING section"),
])
def test_reading_a_ranking(reply, error):
    ballot = council.Ballot("r", {"A": "Alpha", "B": "Beta"})
    council.read_ranking(reply, ballot)
    assert ballot.error == error
    if error is None:
        assert set(ballot.order) == {"Alpha", "Beta"}


def results(*names: str) -> list[AgentResult]:
    return [AgentResult(n, "m", "u", "ollama", "ok", f"answer {n}") for n in names]


@pytest.mark.parametrize("reply,scores", [
    ('{"scores": [{"response": "A", "score": 4, "reason": "thin"}, {"response": "B", "score": 9, "reason": "good"}]}',
     [4, 9]),
    ('Here you go:\n```json\n{"scores": [{"response": "Response B", "score": 7, "reason": "x"}, '
     '{"response": "a", "score": 8.0, "reason": "y"}]}\n```', [8, 7]),
])
def test_judge_parses_good_output(reply, scores):
    assert [s["score"] for s in judge.parse(reply, results("X", "Y"))] == scores


@pytest.mark.parametrize("reply,words", [
    ("I think B is best.", "no JSON object"),
    ('{"scores": [{"response": "A", "score": 4, "reason": ""}]}', "no score for response B"),
    ('{"scores": [{"response": "A", "score": 11, "reason": ""}, {"response": "B", "score": 2, "reason": ""}]}',
     "not a number from 1 to 10"),
    ('{"ratings": []}', 'no "scores" list'),
    ('{"scores": [{"response": "Q", "score": 3, "reason": ""}]}', "unknown response"),
])
def test_judge_rejects_bad_output(reply, words):
    with pytest.raises(judge.ScoresUnreadable, match=re.escape(words)):
        judge.parse(reply, results("X", "Y"))


async def test_judge_scores_and_picks_the_best(servers):
    a, b, c = servers
    a.model("m", latency=0.05, text="A short answer.")
    b.model("m", latency=0.05, text="A complete, correct answer.")
    scores = ('{"scores": [{"response": "A", "score": 5, "reason": "too short"}, '
              '{"response": "B", "score": 9, "reason": "complete and correct"}]}')
    c.model("judge", latency=0.05, text=scores)
    config = {"reviewer_agent": {"name": "Judge", "api_url": c.url, "model": "judge"},
              "worker_agents": [worker(a, "m", name="W1"), worker(b, "m", name="W2")]}
    result = await run("task", config, strategy="judge")
    assert result.final == "A complete, correct answer." and result.final_source == FinalSource("judge", "W2")
    assert result.scores == [{"name": "W1", "score": 5, "reason": "too short"},
                             {"name": "W2", "score": 9, "reason": "complete and correct"}]
    request = c.requests[0]
    assert request.body["format"] == judge.schema_for(2)  # structured output asked of Ollama: two scores, A and B
    assert request.body["format"]["properties"]["scores"]["items"]["properties"]["response"]["enum"] == ["A", "B"]
    assert "Response A" in request.messages[-1]["content"] and "W1" not in request.messages[-1]["content"]


async def test_judge_retries_once_with_a_stricter_prompt(servers):
    a, b, c = servers
    a.model("m", latency=0.05, text="one")
    b.model("m", latency=0.05, text="two")
    good = '{"scores": [{"response": "A", "score": 3, "reason": "r"}, {"response": "B", "score": 6, "reason": "s"}]}'
    c.model("judge", latency=0.05, respond=lambda m: good if len(m) > 2 else "B wins, clearly.")
    config = {"reviewer_agent": {"api_url": c.url + "/v1", "model": "judge"},
              "worker_agents": [worker(a, "m"), worker(b, "m", name="second")]}
    result = await run("task", config, strategy="judge")
    assert result.final == "two" and result.final_source == FinalSource("judge", "second")
    first, retry = c.requests
    assert first.body["response_format"]["type"] == "json_schema"
    assert "response_format" not in retry.body  # the retry does not rely on structured output
    assert "could not be read" in retry.messages[-1]["content"]


@pytest.mark.parametrize("path", ["/api/chat", "/v1"])
async def test_judge_on_a_server_without_structured_output(servers, path):
    a, b, c = servers
    a.model("m", latency=0.05, text="one")
    b.model("m", latency=0.05, text="two")
    c.model("judge", latency=0.05, reject_structured_output=True,
            text='{"scores": [{"response": "A", "score": 9, "reason": "r"}, {"response": "B", "score": 4, "reason": "s"}]}')
    config = {"reviewer_agent": {"api_url": c.url + path, "model": "judge"},
              "worker_agents": [worker(a, "m", name="first"), worker(b, "m")]}
    result = await run("task", config, strategy="judge")
    assert result.final_source == FinalSource("judge", "first") and result.review_attempts == []
    refused, plain = c.requests
    assert ("format" in refused.body) or ("response_format" in refused.body)
    assert "format" not in plain.body and "response_format" not in plain.body


async def test_judge_unreadable_twice_falls_back(servers):
    a, b, c = servers
    a.model("m", latency=0.05, text="first answer")
    b.model("m", latency=0.05, text="second answer")
    c.model("judge", latency=0.05, text="no idea")
    config = {"reviewer_agent": {"api_url": c.url, "model": "judge"}, "worker_agents": [worker(a, "m", name="F"),
                                                                                          worker(b, "m")]}
    result = await run("task", config, strategy="judge")
    assert result.final == "first answer" and result.final_source == FinalSource("worker", "F")
    assert result.review_attempts[0].error_kind == "unreadable"
    assert len(c.requests) == 2


async def test_reviewer_list_is_tried_in_order(servers):
    a, b, c = servers
    a.model("m", latency=0.05, text="worker answer")
    c.model("good", latency=0.05, text="reviewed")
    dead = free_port()
    config = {"reviewer_agent": [{"name": "R1", "api_url": f"http://127.0.0.1:{dead}", "model": "x"},
                                 {"name": "R2", "api_url": b.url, "model": "missing"},
                                 {"name": "R3", "api_url": c.url, "model": "good"}],
              "worker_agents": [worker(a, "m")]}
    result = await run("task", config)
    assert result.final == "reviewed" and result.final_source == FinalSource("review") and result.review.name == "R3"
    assert [r.name for r in result.review_attempts] == ["R1", "R2"]
    assert [r.error_kind for r in result.review_attempts] == ["unreachable", "model_not_found"]
    assert b.requests[0].arrived < c.requests[0].arrived


async def test_every_reviewer_failing_falls_back_to_the_best_ranked(council_fleet):
    fake, config = council_fleet
    config["reviewer_agent"] = [worker(fake, "gone1", name="R1"), worker(fake, "gone2", name="R2")]
    result = await run("task", config, seed=3)
    assert result.final_source == FinalSource("worker", "Beta")  # best in the Borda count, not the first in config order
    assert any("every reviewer (2) failed" in w and "best-scored" in w for w in result.warnings)


async def test_rounds_refine_and_respect_slots():
    with FakeServer(slots=1) as fake:
        fake.model("m", latency=0.05, respond=lambda m: "refined" if "previous round" in m[-1]["content"] else "draft")
        fake.model("rev", latency=0.05, text="final")
        config = {"reviewer_agent": worker(fake, "rev"), "worker_agents": [worker(fake, "m", name=f"w{i}")
                                                                            for i in range(3)],
                  "review": {"rounds": 3}}
        result = await run("task", config)
    chats = [r for r in fake.requests if r.model == "m"]
    assert len(chats) == 3 * 3  # N rounds × workers …
    assert len([r for r in fake.requests if r.model == "rev"]) == 1  # … + one reviewer
    assert fake.max_in_flight == 1
    round2 = chats[3].messages[-1]["content"]
    assert "previous round" in round2 and round2.count("draft") == 3
    assert [w.content for w in result.workers] == ["refined"] * 3
    assert len(result.earlier_rounds) == 2
    review = next(r for r in fake.requests if r.model == "rev").messages[-1]["content"]
    assert "refined" in review and "draft" not in review


async def test_review_prompt_template(server):
    server.model("m", latency=0.05, text="forty-two")
    server.model("rev", latency=0.05, text="ok")
    config = {"reviewer_agent": worker(server, "rev"), "worker_agents": [worker(server, "m")],
              "review": {"prompt": "Q: {task}\nCandidates:\n{answers}\nPick one. Literal braces: {{ok}}"}}
    await run("the question", config)
    sent = next(r for r in server.requests if r.model == "rev").messages
    assert sent == [{"role": "user", "content": "Q: the question\nCandidates:\n### Answer from m\nforty-two\n"
                                                "Pick one. Literal braces: {ok}"}]


async def test_review_system_template_and_numbered_answers(server):
    """The answers as numbered notes in the system message, the bare question as the user's turn (the demo's way)."""
    server.model("m", latency=0.05, text="forty-two")
    server.model("rev", latency=0.05, text="ok")
    config = {"reviewer_agent": worker(server, "rev", system="Be brief."),
              "worker_agents": [worker(server, "m", name="a"), worker(server, "m", name="b")],
              "review": {"system": "Notes:\n{answer_list}", "prompt": "{task}"}}
    await run("the question", config)
    sent = next(r for r in server.requests if r.model == "rev").messages
    assert sent == [{"role": "system", "content": "Be brief.\n\nNotes:\n1. forty-two\n\n2. forty-two"},
                    {"role": "user", "content": "the question"}]


@pytest.mark.parametrize("prompt,words", [
    ("Review {task} and {answrs}", "unknown placeholder {answrs}"),
    ("Review {task}", "must contain {answers}"),
    ("Review {answers", "broken template"),
    ("{task}", "must contain {answers} or {answer_list}"),
])
def test_bad_review_prompt_is_a_config_error(tmp_path, prompt, words):
    write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": "http://localhost:1", "model": "m"}],
                                       "review": {"prompt": prompt}})
    result = invoke("run", "x", "-c", "c.json")
    assert result.exit_code == 2
    assert "review.prompt" in result.stderr and words in result.stderr


def test_strategy_on_the_command_line_and_in_json(tmp_path, servers):
    a, b, c = servers
    a.model("m", latency=0.05, text="one")
    b.model("m", latency=0.05, text="two")
    c.model("judge", latency=0.05, text='{"scores": [{"response": "A", "score": 2, "reason": "meh"}, '
                                         '{"response": "B", "score": 8, "reason": "fine"}]}')
    write_config(tmp_path / "c.json", {"reviewer_agent": worker(c, "judge"),
                                       "worker_agents": [worker(a, "m"), worker(b, "m", name="B")]})
    result = invoke("run", "task", "-c", "c.json", "--strategy", "judge", "--json")
    data = json.loads(result.stdout)
    assert data["strategy"] == "judge" and data["final"] == "two"
    assert data["scores"][1] == {"name": "B", "score": 8, "reason": "fine"}
    text = invoke("run", "task", "-c", "c.json", "--strategy", "judge")
    assert "Scores:\n- m: 2/10, meh\n- B: 8/10, fine\n" in text.stderr
    assert "✓ judge " in text.stderr  # the judge's own progress line, though its request carried extra fields
    assert invoke("run", "task", "-c", "c.json", "--strategy", "debate").exit_code == 2


def test_bad_review_system_template_is_a_config_error(tmp_path):
    write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": "http://localhost:1", "model": "m"}],
                                       "review": {"system": "Notes: {answer_lst}"}})
    result = invoke("run", "x", "-c", "c.json")
    assert result.exit_code == 2
    assert "review.system" in result.stderr and "unknown placeholder {answer_lst}" in result.stderr
