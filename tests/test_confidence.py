"""confidence: the workers' answers grouped by their short answer and weighed by exp(mean token logprob); the
weightiest group's surest answer is the reply. Against Ollama fakes that stream top-level `logprobs` (0.12.11 and
later), OpenAI-protocol fakes, servers that send none (neutral weight, or a plain vote, with a warning), and the real
embedded engine."""

from __future__ import annotations

import json
import math
import os

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer
from parallama import FleetClient

GERMANY = "What is the capital of Germany?"
LOGPROBS_OLLAMA = "0.13.0"


def three(fake: FakeServer, openai: bool = False, **logprob: float) -> dict:
    """A sure minority (A: Berlin) against an unsure majority (B, C: Bern)."""
    texts = {"a": "Berlin.", "b": "Bern", "c": "It's Bern!"}
    for name, text in texts.items():
        fake.model(name, latency=0.02, text=text, logprob=logprob.get(name, -0.25))
    url = fake.url + ("/v1/chat/completions" if openai else "/api/chat")
    return {"worker_agents": [{"api_url": url, "model": m, "name": m.upper()} for m in texts],
            "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "confidence"}}


@pytest.mark.parametrize("openai", [False, True], ids=["ollama", "openai"])
async def test_the_surest_group_wins_over_an_unsure_majority(openai):
    with FakeServer(version=LOGPROBS_OLLAMA) as fake:
        config = three(fake, openai, a=-0.05, b=-1.5, c=-1.5)
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    assert all(r.body.get("logprobs") is True for r in fake.requests)  # the workers were asked for them
    assert result.final == "Berlin." and result.final_source == "confidence" and result.strategy == "confidence"
    sure, unsure = round(math.exp(-0.05), 4), round(math.exp(-1.5), 4)
    assert result.tally == [
        {"answer": "berlin", "count": 1, "workers": ["A"], "confidence": sure, "weights": [sure]},
        {"answer": "bern", "count": 2, "workers": ["B", "C"], "confidence": round(2 * unsure, 4),
         "weights": [unsure, unsure]}]
    assert not [w for w in result.warnings if w.startswith("confidence:")]


async def test_agreeing_answers_add_up_and_the_surest_member_is_the_reply():
    with FakeServer(version=LOGPROBS_OLLAMA) as fake:
        config = three(fake, a=-0.5, b=-0.7, c=-0.1)  # Bern: 0.50 + 0.90 > Berlin 0.61
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    assert result.final == "It's Bern!" and result.final_source == "confidence"
    assert [c["answer"] for c in result.tally] == ["bern", "berlin"]


async def test_a_worker_without_logprobs_weighs_neutral_and_the_result_says_so():
    with FakeServer(version=LOGPROBS_OLLAMA) as new, FakeServer(version="0.12.6") as old:
        new.model("a", latency=0.02, text="Berlin", logprob=-0.1)
        new.model("b", latency=0.02, text="Bern", logprob=-0.3)
        old.model("c", latency=0.02, text="Bern.")
        config = {"worker_agents": [worker(new, "a", name="A"), worker(new, "b", name="B"), worker(old, "c", name="C")],
                  "review": {"strategy": "confidence"}}
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    neutral = (math.exp(-0.1) + math.exp(-0.3)) / 2
    bern = next(c for c in result.tally if c["answer"] == "bern")
    assert bern["weights"] == [round(math.exp(-0.3), 4), None]
    assert bern["confidence"] == pytest.approx(math.exp(-0.3) + neutral, abs=1e-3)
    assert result.final == "Bern" and result.final_source == "confidence"  # 0.74 + 0.82 beats 0.90
    assert "confidence: no token logprobs from C; their answers weighed the others' mean (neutral)" in result.warnings


async def test_no_logprobs_anywhere_is_a_plain_vote_with_a_warning():
    with FakeServer(version="0.12.6") as fake:
        config = three(fake)
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    assert result.final == "Bern" and result.final_source == "vote"  # the majority, by count
    assert result.warnings[0] == "confidence: no worker's server sent token logprobs; decided as a plain vote"
    assert [c["count"] for c in result.tally] == [2, 1]


def test_the_cli_json_and_history_show_the_confidences(tmp_path):
    with FakeServer(version=LOGPROBS_OLLAMA) as fake:
        write_config(tmp_path / "c.json", three(fake, a=-0.05, b=-1.5, c=-1.5))
        shown = invoke("run", "-c", "c.json", GERMANY)
        data = json.loads(invoke("run", "-c", "c.json", "--json", GERMANY).stdout)
        kept = invoke("history", "show", data["history_id"])
    assert shown.exit_code == 0 and "Berlin." in shown.stdout
    assert "- berlin: 1 (A) (confidence 0.95: 0.95)" in shown.stderr + shown.stdout
    assert data["final_source"] == "confidence" and data["tally"][0]["confidence"] == round(math.exp(-0.05), 4)
    assert "- bern: 2 (B, C) (confidence 0.45: 0.22, 0.22)" in kept.stdout


async def test_samples_are_weighed_too_and_asked_with_logprobs():
    with FakeServer(version=LOGPROBS_OLLAMA) as fake:
        config = three(fake, a=-0.05, b=-1.5, c=-1.5)
        config["review"]["samples"] = {"max": 2, "settle": 0.9}
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    assert len(fake.requests) == 6 and all(r.body.get("logprobs") is True for r in fake.requests)
    assert result.sampling["sample_rounds"] == 1 and result.final == "Berlin."
    assert result.tally[0]["workers"] == ["A", "A"]


@pytest.mark.skipif(not os.environ.get("CI") and not __import__("parallama.engines.llama_cpp", fromlist=["x"])
                    .llama_cpp_available(), reason="needs pip install '.[embedded]'")
async def test_confidence_on_the_real_embedded_engine():
    from parallama.embedded import demo_instances, embedded_fleet

    with demo_instances() as demo:  # one llama.cpp server, a slot per worker
        fleet = embedded_fleet(demo.instances)
        config_fleet = type(fleet)(**{**fleet.__dict__, "strategy": "confidence", "reviewers": ()})
        async with FleetClient(config_fleet) as client:
            result = await client.run("What is the capital of France? Answer in one word.")
    failed = [f"{w.name}: {w.error}" for w in result.workers if not w.ok] + result.warnings
    assert result.final_source == "confidence", failed
    weights = [w for c in result.tally for w in c["weights"]]
    assert len(weights) == 3 and all(w is not None and 0 < w <= 1 for w in weights), (result.tally, failed)
    assert not [w for w in result.warnings if w.startswith("confidence:")]
