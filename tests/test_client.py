"""FleetClient: slot limits that hold across concurrent runs, fair gates, cancellation that frees slots at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import worker
from fakes import FakeServer

from parallama import FleetClient, run
from parallama.events import Queued, RunEnded, RunStarted
from parallama.result import FinalSource

LATENCY = 0.15


def one_slot_fleet(fake: FakeServer, *, timeout: float) -> dict:
    """A worker and a reviewer on the same 1-slot server, the worker's timeout a few times its latency."""
    fake.model("w", latency=LATENCY, tokens=3)
    fake.model("r", latency=LATENCY, tokens=3)
    return {"worker_agents": [worker(fake, "w", timeout=timeout)],
            "reviewer_agent": worker(fake, "r", timeout=timeout)}


async def test_eight_concurrent_runs_through_one_client_never_overload_a_one_slot_server():
    with FakeServer(slots=None) as fake:  # no queue of its own: overload would show as requests in flight
        config = one_slot_fleet(fake, timeout=4 * LATENCY)
        async with FleetClient(config) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(client.run(f"task {i}") for i in range(8)))
            wall = time.perf_counter() - started
            [load] = client.load().values()
    assert fake.max_in_flight == 1
    assert len(fake.requests) == 16
    # The gate counts what it let through and how long its slot was held: busy nearly all the time.
    assert load.served == 16 and (load.in_flight, load.waiting) == (0, 0)
    assert 0.8 * wall < load.busy_s <= wall
    assert all(r.final is not None and r.final_source == FinalSource("review") for r in results)
    assert not [w for r in results for w in r.workers if not w.ok]  # no spurious timeout: it starts when sent
    # Waiting is reported as queued: run k waits behind the k earlier runs' workers and reviewers.
    queued = [r.workers[0].queued_s for r in results]
    assert queued == sorted(queued)
    assert queued[-1] > 0.7 * 14 * LATENCY
    assert all(r.review.queued_s > 0 or i == 0 for i, r in enumerate(results))


async def test_eight_independent_run_calls_share_the_slots_too():
    with FakeServer(slots=None) as fake:
        config = one_slot_fleet(fake, timeout=4 * LATENCY)
        results = await asyncio.gather(*(run(f"task {i}", config) for i in range(8)))
    assert fake.max_in_flight == 1
    assert all(r.final is not None for r in results)
    assert not [w for r in results for w in r.workers if not w.ok]
    assert max(r.workers[0].queued_s for r in results) > 0.7 * 14 * LATENCY


async def test_slots_of_two_let_two_requests_in_at_once():
    with FakeServer(slots=None) as fake:
        config = one_slot_fleet(fake, timeout=4 * LATENCY)
        config["servers"] = {fake.url: {"parallel": 2}}
        async with FleetClient(config) as client:
            await asyncio.gather(*(client.run(f"task {i}") for i in range(6)))
    assert fake.max_in_flight == 2


async def test_cancelling_a_run_closes_its_request_and_frees_the_slot_at_once():
    with FakeServer(slots=None) as fake:
        fake.model("slow", latency=30, tokens=30)
        fake.model("quick", latency=0.1, tokens=2)
        slow = {"worker_agents": [worker(fake, "slow", timeout=60)]}
        quick = {"worker_agents": [worker(fake, "quick")]}
        async with FleetClient(slow) as first, FleetClient(quick) as second:
            running = asyncio.create_task(first.run("long"))
            while not fake.requests:
                await asyncio.sleep(0.01)
            waiting = asyncio.create_task(second.run("short"))
            await asyncio.sleep(0.2)
            assert len(fake.requests) == 1  # the second waits at the gate, not at the server
            assert second.load()[next(iter(second.load()))].waiting == 1
            cancelled_at = time.perf_counter()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            result = await waiting
        sent = fake.requests[1].arrived - cancelled_at
    assert fake.requests[0].disconnected  # the fake saw its connection closed
    assert sent < 0.3  # the next queued request went out at once
    assert result.workers[0].ok and result.workers[0].queued_s > 0.15
    assert fake.max_in_flight == 1


async def test_a_cancelled_run_leaves_the_queue():
    with FakeServer(slots=None) as fake:
        fake.model("slow", latency=1.0, tokens=5)
        config = {"worker_agents": [worker(fake, "slow")]}
        async with FleetClient(config) as client:
            holder = asyncio.create_task(client.run("first"))
            while not fake.requests:
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(client.run("second"))
            await asyncio.sleep(0.05)
            [load] = client.load().values()
            assert (load.in_flight, load.waiting) == (1, 1)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            [load] = client.load().values()
            assert (load.in_flight, load.waiting) == (1, 0)
            await holder
            [load] = client.load().values()
            assert (load.in_flight, load.waiting) == (0, 0)
    assert len(fake.requests) == 1  # the cancelled run's request was never sent


async def test_an_earlier_runs_reviewer_goes_before_a_later_runs_workers():
    """Both wait on one 1-slot server behind a long request: the earlier run's reviewer is served first, although
    the later run's worker reached the gate before it."""
    with FakeServer(slots=None) as shared, FakeServer(slots=None) as other:
        shared.model("blocker", latency=1.0, tokens=4)
        shared.model("reviewer", latency=0.1, tokens=2)
        shared.model("late-worker", latency=0.1, tokens=2)
        other.model("early-worker", latency=0.4, tokens=2)
        blocker = {"worker_agents": [worker(shared, "blocker")]}
        early = {"worker_agents": [worker(other, "early-worker")], "reviewer_agent": worker(shared, "reviewer")}
        late = {"worker_agents": [worker(shared, "late-worker")]}
        block = asyncio.create_task(run("block", blocker))
        while not shared.requests:
            await asyncio.sleep(0.01)
        first = asyncio.create_task(run("first", early))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(run("second", late))  # its worker waits at the gate from t≈0.1
        results = await asyncio.gather(block, first, second)  # the reviewer reaches the gate at t≈0.4
    order = [r.model for r in shared.requests]
    assert order == ["blocker", "reviewer", "late-worker"]
    assert shared.max_in_flight == 1
    assert all(r.answered for r in results)


async def test_every_event_names_its_run_and_stage_and_subscribers_see_every_run(servers):
    a, b, c = servers
    for fake in servers:
        fake.model("m", latency=0.05, tokens=2)
    config = {"worker_agents": [worker(a, "m"), worker(b, "m")], "reviewer_agent": worker(c, "m"),
              "review": {"strategy": "council", "rounds": 2}}
    seen: list = []
    async with FleetClient(config) as client:
        client.subscribe(seen.append)
        one, two = await asyncio.gather(client.run("one"), client.run("two"))
    assert one.run_id != two.run_id
    for result in (one, two):
        mine = [e for e in seen if e.run_id == result.run_id]
        assert isinstance(mine[0], RunStarted) and isinstance(mine[-1], RunEnded) and mine[-1].result is result
        stages = [e.stage for e in mine if isinstance(e, Queued)]
        assert stages == ["workers"] * 2 + ["round 2"] * 2 + ["ranking"] * 2 + ["review"]
    assert {w.stage for w in one.earlier_rounds[0]} == {"workers"} and {w.stage for w in one.workers} == {"round 2"}
    assert one.review is not None and one.review.stage == "review"


async def test_the_client_is_used_as_a_context_manager():
    client = FleetClient({"worker_agents": [{"api_url": "http://127.0.0.1:9/api/chat", "model": "m"}]})
    with pytest.raises(RuntimeError, match="async with"):
        await client.run("hi")


async def test_a_client_is_entered_once(server):
    """Like httpx's clients: entering a closed client again (or an open one) is a clear error, not a second life."""
    from parallama.history import History, HistoryWriter

    server.model("m", latency=0.01, text="hello")
    client = FleetClient({"worker_agents": [worker(server, "m")]})
    with History() as store:
        async with client:
            client.subscribe(HistoryWriter(store))
            first = await client.run("one")
            with pytest.raises(RuntimeError, match="this FleetClient is open: a client is entered once"):
                await client.__aenter__()
        with pytest.raises(RuntimeError, match="this FleetClient is closed: a client is entered once; make a new"):
            async with client:
                raise AssertionError("entered a closed client")
        with pytest.raises(RuntimeError, match="this FleetClient is closed: make a new one"):
            await client.run("two")
        async with FleetClient({"worker_agents": [worker(server, "m")]}) as again:
            again.subscribe(HistoryWriter(store))
            second = await again.run("two")
        assert {run["id"] for run in store.runs()} == {first.history_id, second.history_id}
        stored = [store.run(run_id, exact=True) for run_id in (first.history_id, second.history_id)]
    assert [len(run["agents"]) for run in stored if run] == [1, 1]  # each request kept once
    assert len(server.requests) == 2


async def test_history_attaches_by_subscribing_and_the_result_is_whole_before_its_end_goes_out(server):
    """The client imports no history: a `HistoryWriter` is one more subscriber. The result the caller gets is the
    very one `RunEnded` carried, its `history_id` already in it; without a writer there is none."""
    from parallama.events import RunEnded
    from parallama.history import History, HistoryWriter

    server.model("m", latency=0.01, text="hello")
    ended: list = []
    with History() as store:
        async with FleetClient({"worker_agents": [worker(server, "m")]}) as client:
            unsubscribe = client.subscribe(HistoryWriter(store))
            client.subscribe(lambda e: ended.append(e.result) if isinstance(e, RunEnded) else None)
            kept = await client.run("one")
            unsubscribe()
            unkept = await client.run("two")
        assert store.run(kept.history_id or "", exact=True) is not None
    assert ended == [kept, unkept] and ended[0] is kept and ended[1] is unkept
    assert kept.history_id == kept.run_id and unkept.history_id is None


async def test_the_workers_alone_an_agent_alone_and_a_comparison_are_runs_to_their_subscribers(server):
    """`run_workers`, `ask_agent` and `compare` each send `RunStarted` (saying which it is) and `RunEnded` with
    the answers they got, so a view follows them as it follows a run; the history keeps none of them."""
    from parallama.events import RunEnded, RunStarted
    from parallama.history import History, HistoryWriter
    from parallama.tracker import RunTracker

    server.model("m", latency=0.01, text="hello")
    config = {"worker_agents": [worker(server, "m", name="A"), worker(server, "m", name="B")],
              "reviewer_agent": worker(server, "m", name="R")}
    events: list = []
    with History() as store:
        async with FleetClient(config) as client:
            client.subscribe(HistoryWriter(store))
            client.subscribe(events.append)
            await client.run_workers("hi")
            alone = RunTracker()
            await client.ask_agent(client.fleet.reviewers[0], [{"role": "user", "content": "title?"}], on_event=alone)
            await client.compare("hi", ["synthesize", "vote"])
        assert store.runs() == []
    framed = [(type(e).__name__, getattr(e, "kind", None)) for e in events if isinstance(e, (RunStarted, RunEnded))]
    assert framed == [("RunStarted", "workers"), ("RunEnded", None), ("RunStarted", "agent"), ("RunEnded", None),
                      ("RunStarted", "compare"), ("RunEnded", None)]
    ends = [e.result for e in events if isinstance(e, RunEnded)]
    assert [[w.name for w in result.workers] for result in ends] == [["A", "B"], ["R"], ["A", "B"]]
    assert [row.name for row in alone.attempts] == ["R"] and alone.over and alone.prompt == "title?"
    assert alone.result is not None and alone.result.reply == "hello"


async def test_the_live_view_has_a_row_per_stage(servers):
    """Later rounds and council rankings get rows of their own, labelled by stage, instead of reusing the
    worker's row; the reviewer's row comes last."""
    import io

    from rich.console import Console

    from parallama.config import as_fleet
    from parallama.report.live import LiveView

    a, b, c = servers
    for fake in servers:
        fake.model("m", latency=0.05, tokens=2)
    fleet = as_fleet({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                      "reviewer_agent": worker(c, "m", name="Judge Rev"),
                      "review": {"strategy": "council", "rounds": 2}})
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    view = LiveView(fleet, console)
    before = _rendered(console, out, view)
    assert ["A", "B", "↳ Judge Rev"] == [line.split("  ")[0] for line in before[1:]]
    async with FleetClient(fleet) as client:
        await client.run("q", on_event=view)
    lines = _rendered(console, out, view)
    labels = [line.split("  ")[0] for line in lines[1:]]
    assert labels == ["A", "B", "↳ A (round 2)", "↳ B (round 2)", "↳ A (ranking)", "↳ B (ranking)",
                      "↳ Judge Rev"]
    # The fake's answers are no rankings: each ranker answered, but its ranking was left out.
    states = {label: line[len(label):].split()[0] for label, line in zip(labels, lines[1:])}
    assert states == {"A": "done", "B": "done", "↳ A (round 2)": "done", "↳ B (round 2)": "done",
                      "↳ A (ranking)": "unusable", "↳ B (ranking)": "unusable", "↳ Judge Rev": "done"}


def _rendered(console, out, view) -> list[str]:
    out.seek(0)
    out.truncate()
    console.print(view.render())
    return [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]


def test_the_servers_line_shows_slots_in_use_and_the_queue():
    from parallama.gates import ServerLoad
    from parallama.report.live import servers_line

    line = servers_line({"http://localhost:11434": ServerLoad(1, 1, 2), "http://localhost:11435": ServerLoad(2, 0, 0)})
    assert line == "servers  localhost:11434 1/1 busy, 2 waiting · localhost:11435 0/2 busy"
    shared = ServerLoad(1, 1, 3, own_in_flight=0, own_waiting=1, shared="local")
    assert servers_line({"http://localhost:11434": shared}) == (
        "servers  localhost:11434 1/1 busy, 3 waiting (1 busy, 2 waiting in other processes)")
