"""The strategies' registry, as a contract: every registered strategy answers every question the rest of parallama
asks of it (its facts, its cut-off rule, its review over a real fleet, and a summary of the details that review
left), so a strategy added to the registry is checked without a test of its own being written first."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from conftest import worker
from fakes import FakeServer
from parallama import run
from parallama.fleet import Fleet
from parallama.review import DEFAULT_STRATEGY, REGISTRY, STRATEGIES, Strategy, strategy_named, summary

NAMES = ["A", "B", "C"]


def worker_answer(name: str):
    """A worker that answers 42, and ranks what it is shown in the order shown when asked to rank."""
    def respond(messages):
        if "FINAL RANKING" in messages[0]["content"]:
            labels = re.findall(r"### Response ([A-Z])\n", messages[-1]["content"])
            return "Fine answers.\nFINAL RANKING:\n" + "\n".join(f"{i + 1}. Response {x}" for i, x in enumerate(labels))
        return f"{name} thinks: the answer is 42."
    return respond


def reviewer_answer(messages):
    """A reviewer that scores every response 7 when asked to judge, and otherwise writes an answer."""
    if "JSON" in messages[0]["content"]:
        labels = re.findall(r"### Response ([A-Z])\n", messages[-1]["content"])
        return json.dumps({"scores": [{"response": x, "score": 7, "reason": "fine"} for x in labels]})
    return "The reviewer's answer: 42."


@pytest.fixture
def fleet_config():
    with FakeServer() as fake:
        for name in NAMES:
            fake.model(name.lower(), latency=0.02, respond=worker_answer(name))
        fake.model("chair", latency=0.02, respond=reviewer_answer)
        yield {"reviewer_agent": worker(fake, "chair", name="Chair"),
               "worker_agents": [worker(fake, n.lower(), name=n) for n in NAMES],
               "servers": {fake.url: {"parallel": 4}}}


def test_the_registry_names_each_strategy_once_the_default_first():
    assert list(REGISTRY) == list(STRATEGIES) and len(set(STRATEGIES)) == len(STRATEGIES)
    assert DEFAULT_STRATEGY == STRATEGIES[0] == Fleet.__dataclass_fields__["strategy"].default
    assert all(strategy_named(name).name == name for name in STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy 'debate': use one of synthesize, judge, council, vote"):
        strategy_named("debate")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_carries_all_of_its_facts(name):
    strategy = REGISTRY[name]
    assert isinstance(strategy, Strategy)
    assert re.fullmatch(r"[a-z][a-z0-9_-]*", strategy.name)
    assert strategy.description and "\n" not in strategy.description
    for reviewer in ("Chair", ""):
        sentence = strategy.plan_sentence(reviewer)
        assert sentence.startswith("then ") and "{" not in sentence and "\n" not in sentence
    assert strategy.needs_reviewer or not strategy.reviewer_writes_reply  # a reply written by no reviewer?
    assert all(isinstance(flag, bool) for flag in (strategy.needs_reviewer, strategy.reviewer_writes_reply,
                                                   strategy.wants_logprobs))
    assert strategy.reviewer_does.startswith("is ")
    rule = strategy.cutoff()
    assert rule is None or callable(rule.cut_at)
    assert inspect.iscoroutinefunction(strategy.review)
    assert strategy.summary({}) == [] and summary(name, {}) == []


@pytest.mark.parametrize("name", STRATEGIES)
async def test_every_strategy_reviews_a_real_fleet_and_says_its_details(fleet_config, name):
    result = await run("What is six times seven?", {**fleet_config, "review": {"strategy": name}}, seed=1)
    assert result.strategy == name and result.final is not None and "42" in result.final
    assert result.final_source is not None and result.final_source.kind != "worker", result.warnings
    assert json.loads(json.dumps(result.final_source)) == str(result.final_source)
    lines = summary(name, result.details)
    assert all(isinstance(line, str) and "\n" not in line for line in lines)
    assert bool(lines) == bool(result.details), "a strategy that keeps details says them for people"
    data = json.loads(json.dumps(result.to_dict()))
    for key, value in result.details.items():
        assert data["details"][key] == data[key] == json.loads(json.dumps(value))


def test_a_final_source_is_its_written_form_for_json_and_comparisons():
    from parallama.result import FinalSource

    source = FinalSource("judge", "Worker B (Mistral)")
    assert json.dumps({"source": source}) == '{"source": "judge:Worker B (Mistral)"}'
    assert source == "judge:Worker B (Mistral)" and (source.kind, source.agent) == ("judge", "Worker B (Mistral)")
    assert FinalSource.read(json.loads(json.dumps(source))) == source and FinalSource("review").agent is None
    assert {source: 1}["judge:Worker B (Mistral)"] == 1
    # A strategy added later that picks a worker's answer by its own rule names itself as the source.
    own = FinalSource.read("longest:Worker B")
    assert own is not None and (own.kind, own.agent) == ("longest", "Worker B")
    assert FinalSource.read("judge") is None and FinalSource.read("vote:A") is None and FinalSource.read("X y") is None
