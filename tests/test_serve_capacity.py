"""`serve` under load: one fleet client for every request (the servers' slots hold across clients of both APIs),
a bound on waiting runs, and a client that goes away cancels its run at once."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from conftest import guide_fleet

ASK = {"model": "parallama", "messages": [{"role": "user", "content": "2 + 2?"}]}


async def chat(session: aiohttp.ClientSession, url: str, path: str, body: dict) -> tuple[int, str]:
    """(status, the answer's text) of one whole request."""
    async with session.post(url + path, json={**body, "stream": False}) as response:
        data = await response.json()
    if response.status != 200:
        return response.status, ""
    if path == "/api/chat":
        return 200, data["message"]["content"]
    return 200, data["choices"][0]["message"]["content"]


async def test_concurrent_clients_of_both_apis_share_the_servers_slots(servers, serve):
    running = await serve(guide_fleet(servers), max_queue=20)
    async with aiohttp.ClientSession() as session:
        replies = await asyncio.gather(*(
            chat(session, running.url, "/api/chat" if i % 2 else "/v1/chat/completions", ASK) for i in range(12)))
    assert replies == [(200, "The answer is 4.")] * 12
    assert [fake.max_in_flight for fake in servers] == [1, 1, 1]
    assert [len(fake.requests) for fake in servers] == [12, 12, 12]


async def test_past_capacity_and_queue_the_rest_are_refused_at_once(servers, serve):
    config = guide_fleet(servers)
    servers[0].model("m", latency=0.5, text="Alpha says four.")
    running = await serve(config, max_queue=3)  # 1-slot servers: one run goes at a time, three may wait
    assert running.service.capacity == 1
    answered_at: list[tuple[float, int]] = []

    async def timed(session: aiohttp.ClientSession) -> tuple[int, str]:
        reply = await chat(session, running.url, "/api/chat", ASK)
        answered_at.append((time.perf_counter(), reply[0]))
        return reply

    async with aiohttp.ClientSession() as session:
        replies = await asyncio.gather(*(timed(session) for _ in range(10)))
    statuses = sorted(status for status, _ in replies)
    assert statuses == [200] * 4 + [429] * 6
    assert all(text == "The answer is 4." for status, text in replies if status == 200)
    assert len(servers[0].requests) == 4  # the refused ones never reached a server
    # At once: every refusal is back before the first run (its worker takes 0.5 s) has answered.
    assert max(t for t, status in answered_at if status == 429) < min(t for t, status in answered_at if status == 200)


async def test_a_client_that_goes_away_frees_its_slot_and_the_next_run_starts(servers, serve):
    config = guide_fleet(servers)
    a = servers[0]
    a.model("m", latency=10.0, tokens=20, text=" ".join(["slow"] * 20))
    running = await serve(config)
    async with aiohttp.ClientSession() as session:
        first = await session.post(running.url + "/api/chat", json=ASK)
        async for line in first.content:  # read until the slow worker is at work
            if "▸ A (m) started" in json.loads(line)["message"].get("thinking", ""):
                break
        while not (a.requests and a.requests[0].started):  # the slow request is at the server, not only sent
            await asyncio.sleep(0.01)
        a.model("m", latency=0.1, text="Alpha says four.")  # for the next run's request
        second = asyncio.create_task(chat(session, running.url, "/v1/chat/completions", ASK))
        while len(running.service.runs) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert len(a.requests) == 1  # the second run's worker waits for the slot, on parallama's side
        async with session.get(running.url + "/api/ps") as response:
            [entry] = (await response.json())["models"]
        assert entry["name"] == "parallama:latest" and len(entry["runs"]) == 2
        gone = time.perf_counter()
        first.close()  # the client goes away mid-run
        status, text = await second
    assert status == 200 and text == "The answer is 4."
    abandoned, next_one = a.requests
    # Closed at the model server, and the waiting run got the slot, at once: well before the slow answer (10 s)
    # would have ended, with room for a loaded machine.
    assert abandoned.disconnected and abandoned.ended - gone < 5.0
    assert next_one.started - gone < 5.0
    assert a.max_in_flight == 1
    assert running.service.runs == {}
