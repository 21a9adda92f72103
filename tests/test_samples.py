"""`review.samples`: the workers are asked again, each with another seed, only while their short answers disagree;
the vote then decides over every answer, and the result (and `batch`'s strategy table) says what it cost."""

from __future__ import annotations

import json
from itertools import count

from conftest import invoke, worker, write_config, write_jsonl
from fakes import FakeServer
from parallama import FleetClient


def answers(*texts: str):
    """A model that gives these answers in turn (the last one from then on)."""
    asked = count()

    def respond(messages: list[dict]) -> str:
        return texts[min(next(asked), len(texts) - 1)]
    return respond


def fleet(fake: FakeServer, samples: dict, **models) -> dict:
    for name, texts in models.items():
        fake.model(name, latency=0.02, respond=answers(*texts))
    # required: a settled vote would cut a third answer once two agree (these tests count every answer).
    return {"worker_agents": [worker(fake, m, name=m.upper(), options={"seed": 7}, required=True) for m in models],
            "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote", "samples": samples}}


async def test_three_agreeing_first_answers_cost_no_second_round():
    with FakeServer() as fake:
        config = fleet(fake, {"max": 5, "settle": 0.6}, a=["Berlin."], b=["It's Berlin!"],
                       c=["The capital of Germany is Berlin."])
        async with FleetClient(config) as client:
            result = await client.run("What is the capital of Germany?")
    assert len(fake.requests) == 3
    assert result.final == "Berlin." and result.final_source == "vote" and result.samples == []
    assert result.sampling == {"sample_rounds": 0, "sample_requests": 0, "sample_tokens": 0, "sample_s": 0,
                               "settled": True, "leader_share": 1.0}


async def test_disagreeing_workers_are_asked_again_with_other_seeds_until_the_leader_settles():
    with FakeServer() as fake:
        config = fleet(fake, {"max": 4, "settle": 0.6}, a=["12", "12"], b=["13", "12"], c=["14", "It is 12."])
        async with FleetClient(config) as client:
            result = await client.run("What is 3 times 4?")
    # Round 1: 12, 13, 14 (a third each); round 2: all three say 12 (4 of 6): settled, no third round.
    assert len(fake.requests) == 6
    assert [r.body["options"]["seed"] for r in fake.requests] == [7, 7, 7, 8, 8, 8]
    assert [(s.name, s.stage, s.content) for s in result.samples] == [
        ("A", "sample 2", "12"), ("B", "sample 2", "12"), ("C", "sample 2", "It is 12.")]
    assert result.final == "12" and result.final_source == "vote"
    assert result.tally[0] == {"answer": "12", "count": 4, "workers": ["A", "A", "B", "C"]}
    assert result.sampling["sample_rounds"] == 1 and result.sampling["sample_requests"] == 3
    assert result.sampling["settled"] is True and result.sampling["leader_share"] == 0.667
    assert result.to_dict()["sampling"] == result.sampling


async def test_sampling_stops_at_max_answers_each_when_the_workers_never_agree():
    with FakeServer() as fake:
        config = fleet(fake, {"max": 3}, a=["1", "2", "3"], b=["4", "5", "6"], c=["7", "8", "9"])
        async with FleetClient(config) as client:
            result = await client.run("Any number?")
    assert len(fake.requests) == 9  # three answers each, no more
    assert result.sampling["sample_rounds"] == 2 and result.sampling["settled"] is False
    assert result.final_source == "worker:A"  # no majority and no reviewer: the first answer


def test_samples_need_a_voting_strategy_and_one_round(tmp_path):
    with FakeServer() as fake:
        fake.model("m")
        for review, said in (({"strategy": "judge", "samples": {"max": 3}}, "samples need a strategy that votes"),
                             ({"strategy": "vote", "rounds": 2, "samples": {"max": 3}}, "rounds > 1"),
                             ({"strategy": "vote", "samples": {"max": 0}}, "review.samples.max")):
            write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "m")],
                                               "reviewer_agent": worker(fake, "m"), "review": review})
            result = invoke("run", "-c", "c.json", "hi")
            assert result.exit_code == 2 and said in result.stderr and "Traceback" not in result.stderr


def test_batch_compares_each_voting_strategy_with_and_without_samples_and_their_cost(tmp_path):
    with FakeServer() as fake:
        config = fleet(fake, {"max": 2, "settle": 0.6}, a=["12"], b=["13", "12"], c=["14", "12"])
        write_config(tmp_path / "c.json", config)
        write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "prompt": "What is 3 times 4?", "expected": 12}])
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--strategies", "vote", "--json")
    assert result.exit_code == 0, result.stderr
    [line] = map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    assert line["strategies"]["vote"]["final_source"] == "worker:A"
    assert "sample_requests" not in line["strategies"]["vote"]
    sampled = line["strategies"]["vote+samples"]
    assert sampled["final"] == "12" and sampled["sample_requests"] == 3 and sampled["sample_rounds"] == 1
    assert line["score"]["strategies"] == {"vote": True, "vote+samples": True}
    summary = json.loads(result.stdout)
    assert [s["name"] for s in summary["scoring"]["strategies"]] == ["vote", "vote+samples"]
    assert summary["review_cost"]["vote+samples"]["sample_requests"] == 3


def test_batch_prints_what_sampling_cost_in_the_strategy_table(tmp_path):
    with FakeServer() as fake:
        config = fleet(fake, {"max": 2, "settle": 0.6}, a=["12"], b=["13", "12"], c=["14", "12"])
        write_config(tmp_path / "c.json", config)
        write_jsonl(tmp_path / "in.jsonl", [{"id": "q", "prompt": "What is 3 times 4?", "expected": 12}])
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--strategies", "vote", "-q")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    rows = [line.split() for line in text.splitlines() if line.startswith(("vote ", "vote+samples"))]
    assert [row[:2] for row in rows] == [["vote", "1/1"], ["vote+samples", "1/1"]]
    assert "0 + 3" in " ".join(rows[1]) and "+ 3" not in " ".join(rows[0])


def test_the_run_and_its_history_say_what_sampling_did(tmp_path):
    with FakeServer() as fake:
        config = fleet(fake, {"max": 3, "settle": 0.6}, a=["12"], b=["13", "12"], c=["14", "12"])
        write_config(tmp_path / "c.json", config)
        as_json = json.loads(invoke("run", "-c", "c.json", "--json", "What is 3 times 4?").stdout)
        kept = invoke("history", "show", as_json["history_id"])
        again = invoke("run", "-c", "c.json", "What is 3 times 4?")  # now all three say 12 at once
    assert as_json["sampling"]["sample_requests"] == 3 and len(as_json["samples"]) == 3
    assert "samples: 1 more round (3 requests, " in kept.stdout and "settled, the leader at 67%" in kept.stdout
    assert "[sample 2] B" in kept.stdout
    assert again.exit_code == 0
    assert "samples: no more rounds; settled, the leader at 100%" in again.stderr + again.stdout
