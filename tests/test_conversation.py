"""Multi-turn runs: earlier turns reach the workers as messages and the reviewers with the task; history keeps them."""

from __future__ import annotations

import json

from conftest import invoke, worker
from fakes import FakeServer
from parallama import FleetClient, run
from parallama.history import History, HistoryWriter
from parallama.result import FinalSource

CONTEXT = [
    {"role": "system", "content": "Answer in French."},
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "Sept."},
]


def fleet(fake: FakeServer, strategy: str = "synthesize") -> dict:
    fake.model("w", latency=0.02, text="Onze.")
    fake.model("judge", latency=0.02, text='{"scores": [{"response": "A", "score": 8, "reason": "ok"}]}')
    fake.model("r", latency=0.02, text="Onze, aussi premier.")
    reviewer = "judge" if strategy == "judge" else "r"
    return {"worker_agents": [worker(fake, "w", name="A", system="Be brief.")],
            "reviewer_agent": worker(fake, reviewer, name="Rev"), "review": {"strategy": strategy}}


async def test_workers_get_the_earlier_turns_as_messages_after_one_system_message(server):
    result = await run("Another one?", fleet(server), context=CONTEXT)
    assert result.final == "Onze, aussi premier." and result.prompt == "Another one?"
    [to_worker] = [r for r in server.requests if r.model == "w"]
    assert to_worker.messages == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},  # the agent's own first, then the user's
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Sept."},
        {"role": "user", "content": "Another one?"},
    ]


async def test_the_reviewer_reads_the_conversation_with_the_task(server):
    await run("Another one?", fleet(server), context=CONTEXT)
    [to_reviewer] = [r for r in server.requests if r.model == "r"]
    task = to_reviewer.messages[-1]["content"]
    assert task.index("Answer in French.") < task.index("User: Name a prime number.") < task.index(
        "Assistant: Sept.") < task.index("Another one?") < task.index("Onze.")


async def test_the_judge_and_later_rounds_read_it_too(server):
    config = fleet(server, "judge")
    config["review"]["rounds"] = 2
    result = await run("Another one?", config, context=CONTEXT)
    assert result.final_source == FinalSource("judge", "A")
    second_round = [r for r in server.requests if r.model == "w"][1]
    judge = next(r for r in server.requests if r.model == "judge")
    for request in (second_round, judge):
        assert "Assistant: Sept." in request.messages[-1]["content"]


async def test_without_context_the_requests_are_as_before(server):
    await run("Just this.", fleet(server))
    [to_worker] = [r for r in server.requests if r.model == "w"]
    assert to_worker.messages == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Just this."}]
    [to_reviewer] = [r for r in server.requests if r.model == "r"]
    assert to_reviewer.messages[-1]["content"].startswith("Task:\nJust this.\n")


async def test_history_keeps_the_context_and_where_the_run_came_from(server):
    with History() as store:
        async with FleetClient(fleet(server)) as client:
            client.subscribe(HistoryWriter(store, origin="serve"))
            result = await client.run("Another one?", context=CONTEXT)
        kept = store.run(result.run_id)
    assert kept["origin"] == "serve" and kept["context"] == CONTEXT and kept["prompt"] == "Another one?"
    listed = invoke("history")
    assert "(serve)" in listed.stdout
    shown = invoke("history", "show", result.run_id)
    assert "assistant: Sept." in shown.stdout and "via serve" in shown.stdout
    runs = json.loads(invoke("history", "--json").stdout)
    assert runs[0]["origin"] == "serve"
