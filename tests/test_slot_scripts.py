"""Quick unit tests of the Redis slot scripts on fakeredis (the real-Redis tests are in test_shared_slots_redis.py):
arrival order across stores, a lease that is not renewed expires, a cancelled waiter leaves the queue."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import pytest

from parallama.slots.local import LocalStore
from parallama.slots.redis_store import RedisStore

SERVER = "http://gpu1:11434"


async def store(server: fakeredis.FakeServer, tmp_path, name: str, **options) -> RedisStore:
    """One process's store on the shared fake Redis."""
    redis = RedisStore("redis://fake:6379/0", fallback=LocalStore(tmp_path / name), **options,
                       client=fakeredis.FakeAsyncRedis(server=server))
    await redis.start()
    return redis


async def counted(slots, expected: tuple[int, int], within: float = 5.0) -> None:
    """Wait until `slots` counts (held, waiting) as `expected` (its counts are asked of Redis again every 0.25 s)."""
    deadline = time.monotonic() + within
    while slots.counts() != expected:
        assert time.monotonic() < deadline, f"counts stayed {slots.counts()}, not {expected}"
        await asyncio.sleep(0.02)


async def test_waiting_requests_are_served_in_arrival_order_across_processes(tmp_path):
    server = fakeredis.FakeServer()
    one, two = await store(server, tmp_path, "one"), await store(server, tmp_path, "two")
    slots_one, slots_two = one.slots_for(SERVER, 1), two.slots_for(SERVER, 1)
    await slots_one.acquire()
    order: list[str] = []

    async def wait(slots, name: str) -> None:
        await slots.acquire()
        order.append(name)

    first = asyncio.create_task(wait(slots_two, "two, first to wait"))
    await counted(slots_one, (1, 1))  # process two's request is in the queue before process one's joins it
    second = asyncio.create_task(wait(slots_one, "one, second to wait"))
    await counted(slots_one, (1, 2))
    slots_one.release()  # process one's own waiter is woken at once, but the other process came first
    await asyncio.wait_for(first, 2)
    assert order == ["two, first to wait"] and not second.done()
    slots_two.release()
    await asyncio.wait_for(second, 2)
    assert order == ["two, first to wait", "one, second to wait"]
    slots_one.release()
    await one.aclose()
    await two.aclose()


async def test_a_lease_not_renewed_expires(tmp_path):
    server = fakeredis.FakeServer()
    crashed = await store(server, tmp_path, "crashed", lease_s=0.3, renew_s=60)
    alive = await store(server, tmp_path, "alive")
    await crashed.slots_for(SERVER, 1).acquire()
    began = time.monotonic()
    await asyncio.wait_for(alive.slots_for(SERVER, 1).acquire(), 3)
    assert 0.25 < time.monotonic() - began < 1.5  # the lease's 0.3 s, then the next poll
    await alive.aclose()
    await crashed.aclose()


async def test_a_cancelled_waiter_leaves_the_queue(tmp_path):
    server = fakeredis.FakeServer()
    one, two, three = [await store(server, tmp_path, name) for name in ("one", "two", "three")]
    holder, quitter, stayer = one.slots_for(SERVER, 1), two.slots_for(SERVER, 1), three.slots_for(SERVER, 1)
    await holder.acquire()
    gone = asyncio.create_task(quitter.acquire())
    await asyncio.sleep(0.05)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await two.settled()
    waiting = asyncio.create_task(stayer.acquire())
    await asyncio.sleep(0.05)
    holder.release()
    await asyncio.wait_for(waiting, 2)  # not stuck behind the cancelled ticket
    assert stayer.counts()[0] == 1
    for each in (one, two, three):
        await each.aclose()


async def test_a_lease_is_renewed_while_its_request_runs(tmp_path):
    server = fakeredis.FakeServer()
    holder = await store(server, tmp_path, "holder", lease_s=0.3, renew_s=0.1)
    other = await store(server, tmp_path, "other")
    held = holder.slots_for(SERVER, 1)
    await held.acquire()
    waiting = asyncio.create_task(other.slots_for(SERVER, 1).acquire())
    await asyncio.sleep(1.2)  # four lease lengths: renewed all along
    assert not waiting.done()
    held.release()
    await asyncio.wait_for(waiting, 2)
    await holder.aclose()
    await other.aclose()


def test_a_loopback_server_is_this_hosts_own_in_redis():
    import socket

    from parallama.slots.redis_store import server_key

    assert server_key("http://localhost:11434") == f"http://localhost:11434@{socket.gethostname()}"
    assert server_key("http://gpu1:11434") == "http://gpu1:11434"


async def test_redis_lost_says_so_once_and_the_slots_are_this_machines(tmp_path):
    server = fakeredis.FakeServer()
    said: list[str] = []
    redis = RedisStore("redis://:secretpw@fake:6379/0", fallback=LocalStore(tmp_path / "local"), on_lost=said.append,
                       client=fakeredis.FakeAsyncRedis(server=server))
    await redis.start()
    slots = redis.slots_for(SERVER, 1)
    await slots.acquire()
    assert slots.kind == "redis"
    server.connected = False
    slots.release()
    await redis.settled()
    await asyncio.wait_for(slots.acquire(), 2)  # this machine's slot
    assert slots.kind == "local" and slots.counts() == (1, 0)
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the local slot holds: one at a time still
    slots.release()
    await asyncio.wait_for(waiting, 2)
    assert len(said) == 1 and said[0].startswith("slot store redis://fake:6379/0 lost (")
    assert "secretpw" not in said[0]
    await redis.aclose()
