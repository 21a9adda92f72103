"""Replica pools: one agent whose `api_url` lists several servers of the same model. Each request goes to a replica
with a free slot, never more than its slots on any (the fakes count a request out only after its last line), the
rest wait in one queue for whichever frees first; a replica that fails before the first token is benched and the
request moves on; equal replicas share the work evenly."""

from __future__ import annotations

import asyncio
import collections
import time
from contextlib import ExitStack
from typing import Any

import pytest

from parallama import FleetClient
from parallama.backends import Message
from parallama.config import fleet_from_dict
from parallama.errors import ConfigError
from parallama.urls import server_of

from fakes import FakeServer


def pooled(fakes: list[FakeServer], model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"worker_agents": [{"name": "P", "api_url": [f.url for f in fakes], "model": model, **extra}]}


def replicas(count: int, stack: ExitStack, **behaviour: Any) -> list[FakeServer]:
    fakes = [stack.enter_context(FakeServer(strict=True)) for _ in range(count)]
    for fake in fakes:
        fake.model("m", **behaviour)
    return fakes


async def warmth_known(fakes: list[FakeServer]) -> None:
    """Until every replica's /api/ps (asked in the background on a pool's first look) has been read."""
    from parallama.pools import health_of

    deadline = time.monotonic() + 10
    while not all(health_of(server_of(f.url)).warm for f in fakes):
        assert time.monotonic() < deadline, "the replicas' /api/ps were never read"
        await asyncio.sleep(0.01)


async def ask(client: FleetClient, n: int) -> list[Any]:
    agent = client.fleet.workers[0]
    question = [Message(role="user", content="q")]
    return await asyncio.gather(*(client.ask_agent(agent, question) for _ in range(n)))


# ---------------------------------------------------------------- the config


def test_a_pool_loads_and_each_replica_keeps_its_own_slots():
    fleet = fleet_from_dict({
        "worker_agents": [{"api_url": ["http://localhost:11434", "http://localhost:11435/api/chat"], "model": "m"}],
        "servers": {"http://localhost:11435": {"parallel": 2}}})
    (agent,) = fleet.workers
    assert [r.server for r in agent.pool] == ["http://localhost:11434", "http://localhost:11435"]
    assert fleet.servers["http://localhost:11434"].parallel == 1
    assert fleet.servers["http://localhost:11435"].parallel == 2
    assert fleet.warnings == ()


@pytest.mark.parametrize("api_url, says", [
    ([], "worker_agents[0].api_url: an empty list"),
    (["http://localhost:1/v1", "http://localhost:2"], "worker_agents[0].api_url[1]: speaks ollama's API, but "
                                                      "worker_agents[0].api_url[0] speaks openai's"),
    (["http://localhost:1", 5], "worker_agents[0].api_url[1]: must be a string"),
    (["http://localhost:1", "http://127.0.0.1:1/api/chat"], "worker_agents[0].api_url[1]: lists the server "
                                                             "http://localhost:1 twice"),
    (["http://localhost:1", "ftp://x"], "worker_agents[0].api_url[1]: 'ftp://x' must start with http://"),
    (7, "worker_agents[0].api_url: must be a URL, or a list of URLs"),
])
def test_a_wrong_pool_is_one_line_at_its_json_path(api_url, says):
    with pytest.raises(ConfigError) as caught:
        fleet_from_dict({"worker_agents": [{"api_url": api_url, "model": "m"}]})
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_password_in_any_replica_url_is_a_secret_never_shown():
    fleet = fleet_from_dict({"worker_agents": [{"api_url": ["http://localhost:1", "http://u:hunter2@localhost:2"],
                                                "model": "m"}]})
    (agent,) = fleet.workers
    assert "hunter2" in agent.secrets()
    assert all("hunter2" not in r.api_url for r in agent.pool)


# ---------------------------------------------------------------- placement


async def test_nine_requests_on_three_one_slot_replicas_take_three_rounds_and_never_overlap():
    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.4, tokens=4)
        async with FleetClient(pooled(fakes)) as client:
            began = time.perf_counter()
            (alone,) = await ask(client, 1)
            single = time.perf_counter() - began
            for fake in fakes:
                fake.reset()
            began = time.perf_counter()
            results = await ask(client, 9)
            makespan = time.perf_counter() - began
    assert all(r.ok for r in results), [r.error for r in results]
    assert [f.max_in_flight for f in fakes] == [1, 1, 1]
    # Each waiting request takes whichever replica frees first: three apiece when they answer alike, and on a
    # loaded machine one that lags may take one fewer (seen: [2, 3, 4]); none sits idle.
    counts = [len(f.requests) for f in fakes]
    assert sum(counts) == 9 and min(counts) >= 2, counts
    assert makespan / (3 * single) < 1.3, (makespan, single)  # three rounds, not more
    served = collections.Counter(server_of(r.api_url) for r in results)
    assert sorted(served.values()) == sorted(counts)  # the result says which replica answered
    assert alone.ok


async def test_a_waiting_request_takes_whichever_replica_frees_first():
    with ExitStack() as stack:
        fakes = replicas(2, stack, latency=0.1, tokens=2)
        slow, quick = fakes
        slow.model("m", latency=1.5, tokens=2)
        async with FleetClient(pooled(fakes)) as client:
            # Two requests fill both replicas; the next four all go to the quick one as it frees, none waits for
            # the slow one.
            results = await ask(client, 6)
    assert all(r.ok for r in results)
    assert len(slow.requests) == 1 and len(quick.requests) == 5
    assert slow.max_in_flight == 1 and quick.max_in_flight == 1


async def test_three_hundred_sequential_requests_split_evenly_over_equal_replicas():
    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.0, tokens=1)
        fakes[0].model("m", latency=0.3, tokens=1, ttft=0.3)
        async with FleetClient(pooled(fakes)) as client:
            agent = client.fleet.workers[0]
            await ask(client, 6)  # the first replica is measured slower to answer...
            for fake in fakes:
                fake.model("m", latency=0.0, tokens=1)  # ...then all are equal: the old measurement must not stick
                fake.reset()
            for _ in range(300):
                result = await client.ask_agent(agent, [Message(role="user", content="q")])
                assert result.ok
    counts = [len(f.requests) for f in fakes]
    # Within 30 % of an even 100: on a machine starved of CPU one stalled answer (0.3 s where the others take
    # milliseconds) counts a replica slower for the next 20 requests, as it should ([113, 78, 109] under load). A
    # measurement that stuck would leave the first replica next to nothing.
    assert all(70 <= c <= 130 for c in counts), counts


async def test_ties_are_broken_at_random_not_by_list_order():
    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.0, tokens=1)
        firsts = collections.Counter()
        for _ in range(30):
            async with FleetClient(pooled(fakes)) as client:
                (result,) = await ask(client, 1)
            firsts[server_of(result.api_url)] += 1
    assert len(firsts) == 3 and max(firsts.values()) < 25, firsts


async def test_a_replica_with_the_model_loaded_is_preferred():
    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.0, tokens=1)
        fakes[2].model("m", latency=0.0, tokens=1, loaded_bytes=5_000_000_000)
        async with FleetClient(pooled(fakes)) as client:
            await ask(client, 1)  # the first look asks every replica's /api/ps, in the background
            await warmth_known(fakes)
            for fake in fakes:
                fake.reset()
            agent = client.fleet.workers[0]
            for _ in range(10):
                await client.ask_agent(agent, [Message(role="user", content="q")])
    assert [len(f.requests) for f in fakes] == [0, 0, 10]


# ---------------------------------------------------------------- failures


async def test_a_dead_replica_is_benched_its_requests_move_and_it_comes_back():
    from parallama.pools import health_of

    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.3, tokens=3, ttft=0.25)
        dead = fakes[0]
        port = dead.port
        async with FleetClient(pooled(fakes)) as client:
            dead.close()
            results = await ask(client, 9)
            assert all(r.ok for r in results), [r.error for r in results]
            assert all(server_of(r.api_url) != server_of(dead.url) for r in results)
            health = health_of(server_of(dead.url))
            assert health.benched == 1 and health.why  # benched once, however many requests found it down
            with FakeServer(strict=True, port=port) as back:
                back.model("m", latency=0.3, tokens=3)
                deadline = time.monotonic() + 10
                while health.is_benched():
                    assert time.monotonic() < deadline, "the replica was never probed back"
                    await asyncio.sleep(0.05)
                results = await ask(client, 9)
                assert all(r.ok for r in results)
                assert back.requests, "the replica that came back is used again"
                assert back.max_in_flight == 1


async def test_a_replica_answering_500_or_503_before_its_first_token_is_benched_and_the_request_moves():
    from parallama.pools import health_of

    for fault in ("500", "503"):
        with ExitStack() as stack:
            fakes = replicas(3, stack, latency=0.3, tokens=3, ttft=0.25)
            failing = fakes[1]
            failing.model("m", fault=fault)
            async with FleetClient(pooled(fakes)) as client:
                results = await ask(client, 6)
            assert all(r.ok for r in results), (fault, [r.error for r in results])
            assert all(server_of(r.api_url) != server_of(failing.url) for r in results), fault
            assert failing.requests, f"{fault}: the failing replica was tried"
            health = health_of(server_of(failing.url))
            assert health.benched == 1 and fault in health.why, (fault, health.why)


async def test_plan_counts_the_memory_of_every_replica():
    from parallama.plan import make_plan

    one = fleet_from_dict({"worker_agents": [{"api_url": "http://localhost:11434", "model": "llama3:8b"}]})
    three = fleet_from_dict({"worker_agents": [
        {"name": n, "api_url": ["http://localhost:11434", "http://localhost:11435", "http://localhost:11436"],
         "model": "llama3:8b"} for n in ("A", "B", "C", "D")]})
    single = await make_plan(one, probe=False)
    pooled = await make_plan(three, probe=False)
    assert [s.url for s in pooled.servers] == ["http://localhost:11434", "http://localhost:11435",
                                               "http://localhost:11436"]
    assert all(s.pooled == ["A", "B", "C", "D"] and s.models for s in pooled.servers)
    assert pooled.local_memory_gb == pytest.approx(3 * single.local_memory_gb)
    assert any("4 workers on a pool of 3 replicas with 3 slots in all" in f.text and "2 rounds" in f.text
               for f in pooled.parallel)


async def test_a_replica_killed_mid_run_loses_nothing_says_so_and_is_used_again_once_it_answers():
    with ExitStack() as stack:
        # A request's one token comes at its end, so the kill finds the one in flight before it: it moves on.
        fakes = replicas(3, stack, latency=0.3, tokens=1, ttft=0.3)
        dead = fakes[0]
        port = dead.port
        async with FleetClient(pooled(fakes)) as client:
            runs = [asyncio.create_task(client.run("q")) for _ in range(12)]
            while len(dead.requests) < 2:
                await asyncio.sleep(0.002)
            await asyncio.to_thread(dead.close)
            results = await asyncio.gather(*runs)
            answers = [r.workers[0] for r in results]
            assert all(a.ok for a in answers), [a.error for a in answers]  # none lost
            finished_there = [r for r in dead.requests if r.ended is not None and not r.disconnected]
            cut_there = [r for r in dead.requests if r.disconnected]
            assert cut_there, "the kill found a request in flight"
            on_dead = [a for a in answers if server_of(a.api_url) == server_of(dead.url)]
            assert len(on_dead) == len(finished_there)  # the one in flight there moved on, and every queued one
            assert sum(len(f.requests) for f in fakes[1:]) == 12 - len(finished_there)
            lines = [w for r in results for w in r.warnings if "benched" in w]
            assert len(lines) == 1, lines
            assert lines[0].startswith(f"P: replica {dead.url} benched until ")
            assert "its requests go to the other replicas" in lines[0]
            assert [f.max_in_flight for f in fakes[1:]] == [1, 1]
            with FakeServer(strict=True, port=port) as back:
                back.model("m", latency=0.3, tokens=2)
                from parallama.pools import health_of

                health = health_of(server_of(back.url))
                deadline = time.monotonic() + 15
                while health.is_benched():  # probed until it answers
                    assert time.monotonic() < deadline, "the replica was never probed back"
                    await asyncio.sleep(0.05)
                again = await asyncio.gather(*(client.run("q") for _ in range(6)))
                assert all(r.workers[0].ok for r in again)
                assert back.requests and back.max_in_flight == 1  # used again


async def test_every_replica_down_fails_the_agent_with_one_line_naming_them_all():
    with ExitStack() as stack:
        fakes = replicas(2, stack)
        for fake in fakes:
            fake.close()
        async with FleetClient(pooled(fakes)) as client:
            result = await client.run("q")
    (answer,) = result.workers
    assert answer.status == "error" and answer.error_kind == "unreachable"
    assert "every replica of its pool is down" in answer.error and "\n" not in answer.error
    assert all(f.url in answer.error for f in fakes)


# ---------------------------------------------------------------- shown everywhere


async def test_which_replica_served_is_shown_in_the_result_the_progress_and_the_terminal(serve):
    import io

    import ollama
    from rich.console import Console

    from parallama.events import Started
    from parallama.report.live import LiveView, servers_line

    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.1, tokens=2)
        config = {"worker_agents": [{"name": n, "api_url": [f.url for f in fakes], "model": "m"}
                                    for n in ("A", "B", "C")]}
        running = await serve(config)
        reply = await ollama.AsyncClient(host=running.url).chat(
            "parallama:latest", messages=[{"role": "user", "content": "q"}], stream=False)
        thinking = reply.message.thinking or ""
        hosts = [f.url.split("://")[1].replace("127.0.0.1", "localhost") for f in fakes]
        started = [line for line in thinking.splitlines() if line.startswith("▸ ")]
        assert len(started) == 3 and sorted(line.split(" on ")[1] for line in started) == sorted(hosts), started

        async with FleetClient(config) as client:
            out = io.StringIO()
            view = LiveView(client.fleet, Console(file=out, width=120, color_system=None))
            seen: list[Any] = []
            view.server_load = client.load
            result = await client.run("q", on_event=lambda e: (view(e), seen.append(e)))
            view.console.print(view.render())
            sent = {e.agent.name: e.agent.server for e in seen if isinstance(e, Started)}
            drawn = out.getvalue()
            for name, server in sent.items():
                assert f"{name} @ {server.split('://')[1]}" in drawn  # the row says where it went
            assert {w.name: server_of(w.api_url) for w in result.workers} == sent  # and the result
            assert sorted(sent.values()) == sorted(server_of(f.url) for f in fakes)
            line = servers_line(client.load())
            assert all(h in line for h in hosts)  # every replica's slots on the servers line



# ---------------------------------------------------------------- hedging


async def test_hedging_copies_a_late_request_onto_an_idle_replica_within_its_budget():
    from parallama.pools import stats_of

    with ExitStack() as stack:
        late, quick = replicas(2, stack, latency=0.05, tokens=2)
        # The model is loaded on the late one only: every request goes there first; its first token takes 0.5 s,
        # its last 0.8 s. A copy sent at 0.1 s answers first by 0.4 s, and the late request is closed 0.7 s before
        # its end, even on a machine starved of CPU (with 0.3 s and 0.32 s a copy lost once under load).
        late.model("m", latency=0.8, tokens=2, ttft=0.5, loaded_bytes=5_000_000_000)
        config = pooled([late, quick], hedge={"after_s": 0.1})
        async with FleetClient(config) as client:
            await ask(client, 1)  # the first look learns which replica has the model loaded
            await warmth_known([late, quick])
            deadline = time.monotonic() + 30
            while late.in_flight or quick.in_flight:  # that first request's own copy, if any, has ended
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            late.reset()
            quick.reset()
            results = [await client.run("q") for _ in range(30)]
            stats = stats_of(client.fleet.workers[0])
    answers = [r.workers[0] for r in results]
    assert all(a.ok for a in answers)
    assert stats.requests == 31 and stats.hedges == 3  # 10 % of the requests, no more
    hedged = [r for r in results if any(w.startswith("P: hedged:") for w in r.warnings)]
    assert len(hedged) == 3
    assert all(server_of(r.workers[0].api_url) == server_of(quick.url) for r in hedged)  # the copy won
    assert "the pool's hedges: " in hedged[-1].warnings[0] and "at most 10%" in hedged[-1].warnings[0]
    closed = [r for r in late.requests if r.disconnected]
    assert len(closed) == 3  # each beaten request was closed on the late replica
    assert late.max_in_flight == 1 and quick.max_in_flight == 1


async def test_hedging_never_takes_a_slot_someone_waits_for():
    from parallama.pools import stats_of

    with ExitStack() as stack:
        late, quick = replicas(2, stack, latency=0.0, tokens=1)
        async with FleetClient(pooled([late, quick], hedge={"after_s": 0.05})) as client:
            for _ in range(30):  # a budget of 3 hedges
                await ask(client, 1)
            # The first token is late (past 0.05 s) for a while, but never so late that a replica freed at the end
            # could legitimately take a copy of the other's request.
            late.model("m", latency=0.6, tokens=2, ttft=0.25)
            quick.model("m", latency=0.6, tokens=2, ttft=0.25)
            late.reset()
            quick.reset()
            # Two requests fill both replicas and two wait: nothing is idle, so nothing is copied; as a replica
            # frees, its slot goes to a waiting request, not to a copy of the other's late one.
            results = await ask(client, 4)
            stats = stats_of(client.fleet.workers[0])
    assert all(r.ok for r in results)
    assert stats.hedges == 0
    assert len(late.requests) + len(quick.requests) == 4
    assert late.max_in_flight == 1 and quick.max_in_flight == 1


def test_hedge_needs_a_pool_and_one_threshold():
    with pytest.raises(ConfigError, match=r"worker_agents\[0\]\.hedge: hedging needs a pool"):
        fleet_from_dict({"worker_agents": [{"api_url": "http://localhost:1", "model": "m", "hedge": {"after_s": 1}}]})
    with pytest.raises(ConfigError, match="give after_s .* or percentile"):
        fleet_from_dict({"worker_agents": [{"api_url": ["http://localhost:1", "http://localhost:2"], "model": "m",
                                            "hedge": {}}]})


async def test_status_shows_each_replicas_slots_and_queue(tmp_path):
    import json

    from conftest import run_process, write_config

    with ExitStack() as stack:
        fakes = replicas(2, stack, latency=30, tokens=2)
        path = write_config(tmp_path / "pool.json", pooled(fakes))
        async with FleetClient(pooled(fakes)) as client:
            asking = asyncio.ensure_future(ask(client, 3))
            while sum(len(f.requests) for f in fakes) < 2:
                await asyncio.sleep(0.01)
            shown = await asyncio.to_thread(run_process, "status", "-c", str(path), "--json")
            text = await asyncio.to_thread(run_process, "status", "-c", str(path))
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
    assert shown.returncode == 0, shown.stderr
    servers = json.loads(shown.stdout)["servers"]
    assert [(s["server"], s["in_flight"], s["waiting"], s["pools"]) for s in servers] == [
        (server_of(f.url), 1, 1, ["P"]) for f in fakes]  # the third request waits for either replica
    for fake in fakes:
        assert f"server {server_of(fake.url)}  1/1 busy, 1 waiting (on this machine)  pool of P" in text.stdout


async def test_a_replica_slower_to_first_token_is_left_while_a_faster_one_is_free():
    with ExitStack() as stack:
        slow, quick = replicas(2, stack, latency=0.03, tokens=2, ttft=0.01)
        slow.model("m", latency=0.32, tokens=2, ttft=0.3)
        async with FleetClient(pooled([slow, quick])) as client:
            agent = client.fleet.workers[0]
            for _ in range(20):
                assert (await client.ask_agent(agent, [Message(role="user", content="q")])).ok
    assert len(slow.requests) <= 2 and len(quick.requests) >= 18, (len(slow.requests), len(quick.requests))


async def test_doctor_checks_the_model_on_every_replica_and_batch_fills_every_replicas_slots():
    from parallama.batch.pipeline import default_concurrency
    from parallama.doctor import diagnose

    with ExitStack() as stack:
        fakes = replicas(3, stack)
        fakes[1].models.clear()  # this replica does not have the model
        fleet = fleet_from_dict(pooled(fakes))
        diagnosis = await diagnose(fleet)
    models = [c for c in diagnosis.checks if c.check == "model"]
    assert [c.status for c in models] == ["pass", "fail", "pass"]
    assert server_of(fakes[1].url) in models[1].message
    assert default_concurrency(fleet) == 3 + 1  # one per slot of every replica, plus one


def test_a_percentile_hedge_waits_for_enough_first_tokens():
    from parallama.fleet import Hedge
    from parallama.pools import PoolStats

    stats = PoolStats(("a", "b"))
    hedge = Hedge(percentile=90)
    stats.ttfts.extend([0.1] * 10)
    assert stats.threshold(hedge) is None  # too few known yet
    stats.ttfts.extend([0.1] * 8 + [1.0, 2.0])
    assert stats.threshold(hedge) == 1.0
    assert stats.threshold(Hedge(after_s=0.5)) == 0.5
    stats.requests = 19
    assert stats.may_hedge()
    stats.hedges = 1
    assert not stats.may_hedge()  # 2 of 19 would pass 10 %


async def test_the_page_is_told_the_pool_while_queued_and_the_replica_once_started(serve):
    import json

    import aiohttp

    with ExitStack() as stack:
        fakes = replicas(3, stack, latency=0.1, tokens=2)
        running = await serve(pooled(fakes))
        async with aiohttp.ClientSession() as session:
            async with session.post(running.url + "/ui/api/runs", json={"prompt": "hi"}) as response:
                views = [json.loads(line[6:]) async for line in response.content if line.startswith(b"data: ")]
            async with session.get(running.url + "/ui/api/load") as response:
                load = await response.json()
    hosts = [server_of(f.url).split("://")[1] for f in fakes]
    (queued,) = [v for v in views if v["type"] == "queued"]
    assert queued["server"] == "its pool (" + " · ".join(hosts) + ")"
    (started,) = [v for v in views if v["type"] == "started"]
    assert started["server"] in [server_of(f.url) for f in fakes]
    assert sorted(s["server"] for s in load["servers"]) == sorted(server_of(f.url) for f in fakes)
    assert all(s["benched"] is None for s in load["servers"])


async def test_after_the_first_token_a_failure_is_not_retried():
    with ExitStack() as stack:
        broken, other = replicas(2, stack, latency=0.1, tokens=6)
        broken.model("m", latency=0.1, tokens=6, fault="cut", loaded_bytes=1)  # preferred: loaded
        async with FleetClient(pooled([broken, other])) as client:
            await ask(client, 1)
            await warmth_known([broken, other])
            broken.reset()
            other.reset()
            result = await client.run("q")
    (answer,) = result.workers
    assert answer.status == "error" and answer.error_kind == "stream_broken"
    assert answer.content  # what had streamed is kept
    assert len(broken.requests) == 1 and not other.requests  # not sent again elsewhere
    assert not any("benched" in w for w in result.warnings)
