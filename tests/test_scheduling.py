"""Scheduling: different servers run at once; a server never gets more requests than its slots; timeouts
count from sending, not from queueing; a deadline bounds the whole run."""

from __future__ import annotations

import time

import pytest

from conftest import worker
from fakes import FakeServer
from parallama import run
from parallama.result import FinalSource


async def test_three_servers_run_together_not_one_after_another(servers):
    for fake in servers:
        fake.model("m", latency=1.0, tokens=10)
    started = time.perf_counter()
    await run("hi", {"worker_agents": [worker(servers[0], "m")]})
    alone = time.perf_counter() - started
    for fake in servers:
        fake.reset()
    parallel = {"worker_agents": [worker(fake, "m") for fake in servers]}
    started = time.perf_counter()
    result = await run("hi", parallel)
    wall = time.perf_counter() - started
    assert [w.status for w in result.workers] == ["ok"] * 3
    # One after another would take three times one worker alone; together they take about one.
    assert wall < 1.6 * alone
    # And every server got its request at once, not after another's answer.
    arrivals = [fake.requests[0].arrived for fake in servers]
    assert max(arrivals) - min(arrivals) < 0.5 * alone


async def test_one_slot_server_serializes_without_spurious_timeouts():
    with FakeServer(slots=1) as fake:
        fake.model("m", latency=1.0, tokens=10)
        fleet = {"worker_agents": [worker(fake, "m", name=f"w{i}", timeout=1.5) for i in range(3)]}
        result = await run("hi", fleet)
    # 3 × 1 s on one slot would kill the third worker if its 1.5 s timeout counted from queueing.
    assert [w.status for w in result.workers] == ["ok"] * 3
    queued = [w.queued_s for w in result.workers]
    elapsed = [w.elapsed_s for w in result.workers]
    # Each waited exactly while the ones before it were served, and that wait did not count against its timeout.
    assert queued[0] < 0.2 * elapsed[0]
    assert queued[1] == pytest.approx(elapsed[0], rel=0.25)
    assert queued[2] == pytest.approx(elapsed[0] + elapsed[1], rel=0.25)
    assert queued[2] + elapsed[2] > 1.5
    assert fake.max_in_flight == 1
    assert not fake.overlapped()
    # They ran in config order.
    assert [r.arrived for r in fake.requests] == sorted(r.arrived for r in fake.requests)
    assert [m["content"] for r in fake.requests for m in r.messages] == ["hi"] * 3


async def test_slots_from_config_are_used_and_never_exceeded():
    with FakeServer() as fake:  # the fake itself does not limit: only the client's slots do
        fake.model("m", latency=0.5, tokens=5)
        fleet = {"worker_agents": [worker(fake, "m") for _ in range(5)],
                 "servers": {fake.url: {"parallel": 2}}}
        started = time.perf_counter()
        result = await run("hi", fleet)
        wall = time.perf_counter() - started
    assert all(w.ok for w in result.workers)
    assert fake.max_in_flight == 2
    # 5 requests over 2 slots: 3 waves of one request's time — not 1 wave (no cap) and not 5 (no parallelism).
    one = max(w.elapsed_s for w in result.workers)
    assert 2.2 < wall / one < 3.9


async def test_reviewer_waits_for_its_slot_behind_nothing_and_runs_after_workers(servers):
    a, b, c = servers
    for fake in servers:
        fake.model("m", latency=0.3)
    a.model("big", latency=0.3)
    fleet = {"reviewer_agent": worker(a, "big"), "worker_agents": [worker(f, "m") for f in servers]}
    result = await run("hi", fleet)
    review_request = next(r for r in a.requests if r.model == "big")
    assert review_request.arrived >= max(f.requests[0].ended for f in servers)
    assert result.final_source == FinalSource("review")


async def test_deadline_bounds_the_run_and_marks_unfinished_as_timeout():
    with FakeServer(slots=1) as fake:
        fake.model("quick", latency=0.2)
        fake.model("slow", latency=5.0)
        fleet = {"worker_agents": [worker(fake, "quick"), worker(fake, "slow"), worker(fake, "quick", name="never")]}
        deadline = 1.0
        started = time.perf_counter()
        result = await run("hi", fleet, deadline=deadline)
        wall = time.perf_counter() - started
    assert wall < 2 * deadline  # and not the slow worker's 5 s
    quick, slow, never = result.workers
    assert quick.status == "ok"
    assert slow.status == "timeout" and "deadline" in slow.error and slow.content  # partial text is kept
    assert never.status == "timeout" and never.elapsed_s == 0
    assert never.queued_s == pytest.approx(deadline, rel=0.3)


async def test_agent_timeout_counts_from_send():
    with FakeServer() as fake:
        fake.model("slow", latency=3.0, tokens=30)
        result = await run("hi", {"worker_agents": [worker(fake, "slow", timeout=0.5)]})
    [w] = result.workers
    assert w.status == "timeout"
    assert "timeout of 0.5 s" in w.error
    assert 0.8 * 0.5 < w.elapsed_s < 2 * 0.5  # its own timeout, not the answer's 3 s
    assert w.content  # what arrived before the timeout is kept


async def test_events_arrive_in_order_per_agent(server):
    from parallama.events import Delta, Finished, Queued, RunEnded, RunStarted, Started

    server.model("m", latency=0.2, tokens=4)
    seen: list = []
    result = await run("hi", {"worker_agents": [worker(server, "m")]}, on_event=seen.append)
    names = [type(e).__name__ for e in seen]
    assert names[0] == RunStarted.__name__ and names[-1] == RunEnded.__name__
    assert names[1] == Queued.__name__ and names[2] == Started.__name__
    assert names[3:-2] == [Delta.__name__] * 4 and names[-2] == Finished.__name__
    # Every event names its run; the agent events name their stage.
    assert {e.run_id for e in seen} == {result.run_id}
    assert {e.stage for e in seen[1:-1]} == {"workers"}
    assert seen[-1].result is result
