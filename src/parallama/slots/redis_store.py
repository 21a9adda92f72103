"""Slots shared by every host on one Redis: each slot a lease (a sorted-set member scored by its expiry, Redis's own
clock), taken and given back by one Lua script each, renewed while its request runs.

Waiting requests hold tickets in an arrival-ordered queue; a ticket gets a slot when fewer than `slots` leases are
held and fewer tickets than the free slots are ahead of it, so every host is served in arrival order. A release
hands the freed slot straight to the first ticket in the queue and publishes which one on the server's channel, so
its process sends that request at once, with no second round trip. Every `POLL_S` a waiting process asks again,
which is how a crashed holder's expired lease is found. Tickets expire like leases, so a crashed waiter does not
block the queue for longer than `LEASE_S`.

Each request also holds one of this machine's slots (`local`'s lock files) while it holds its lease, so the
processes of one machine never overfill a server between them, whatever Redis does: one that lost Redis and one
that came after it still see each other. A lease that vanished while its request runs (`FLUSHALL`, a key deleted)
is put back at the next renewal, and Redis hands out no slot until every holder had its turn to do so.

Redis unreachable at start, or refusing a right the store needs (scripts, its keys, its channels), is a SetupError
naming the URL (without its password). Lost later (an error, or no answer within `SOCKET_TIMEOUT_S`, shorter than
a lease can outlive a missed renewal), the store says so once and every server goes on with this machine's slots
(`local`) for the rest of the process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
import weakref
from typing import Any, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors import SetupError
from ..urls import is_local, public_url
from .base import ProcessSlots, SharedSlots, SlotStore
from .local import LocalStore
from .redis_scripts import ACQUIRE, LEASE_MS, RELEASE, RENEW, TAKE_IF_FREE

LEASE_S = LEASE_MS / 1000
"How long a lease (or a waiting ticket) lives without renewal: a crashed holder's slot comes back after this."
RENEW_S = 3.0
"How often the leases and tickets of this process are renewed."
POLL_S = 0.5
"How often a waiting process asks again without having been handed a slot (a crashed holder's lease expires)."
COUNTS_FRESH_S = 0.25
"Counts older than this are asked for again when someone looks (the answer shows on the next look)."
CONNECT_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 3.0
("How long Redis may take to answer before it counts as lost: less than `LEASE_S - RENEW_S`, so a stall long "
 "enough to let a renewed lease expire is always noticed first.")
PREFIX = "parallama:slots:"

def server_key(server: str) -> str:
    """The server's name in Redis: its `scheme://host:port`; a loopback server is this host's own, so its key
    carries the host's name (`localhost` on two hosts is two servers)."""
    return f"{server}@{socket.gethostname()}" if is_local(server) else server


def say_lost(text: str) -> None:
    print(f"parallama: {text}", file=sys.stderr, flush=True)


class RedisStore(SlotStore):
    """Leases in one Redis, for every server this loop's clients use."""

    kind = "redis"

    def __init__(self, url: str, *, fallback: LocalStore | None, on_lost: Callable[[str], None] = say_lost,
                 lease_s: float = LEASE_S, renew_s: float = RENEW_S, client: Any = None) -> None:
        """`fallback`: this machine's slots (None: a folder for them could not be made, so each process keeps only
        its own count once Redis is lost). `client`: an asyncio Redis client to use instead of one made from
        `url`."""
        self.url = url
        self.where = public_url(url)
        self.fallback = fallback
        self.on_lost = on_lost
        self.lease_ms = int(lease_s * 1000)
        self.renew_s = renew_s
        self.hold_back_ms = int(2000 * max(renew_s, RENEW_S))
        "How long grants wait after leases vanished, for every holder to renew (and so put back) its own."
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost: str | None = None
        "Why Redis was given up (None while it answers)."
        self._client: Any = None
        self._given_client = client
        self._scripts: dict[str, Any] = {}
        self._servers: "weakref.WeakValueDictionary[str, RedisSlots]" = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect and check that Redis answers; SetupError naming the URL when it does not."""
        client = self._given_client or aioredis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                                         socket_timeout=SOCKET_TIMEOUT_S)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise SetupError(f"slot store {self.where}: Redis does not answer ({_cause(exc)}); start it, or set "
                             "PARALLAMA_SLOT_STORE=local to share slots on this machine only") from exc
        self._client = client
        self._scripts = {name: client.register_script(text)
                         for name, text in (("acquire", ACQUIRE), ("release", RELEASE), ("renew", RENEW),
                                            ("take_if_free", TAKE_IF_FREE))}
        try:
            await self._check_rights()
        except BaseException:
            await client.aclose()
            raise
        self._background = [asyncio.get_running_loop().create_task(self._listen()),
                            asyncio.get_running_loop().create_task(self._renew())]

    async def _check_rights(self) -> None:
        """Try once what the store will do (its scripts on its keys, publishing and subscribing on its channels);
        SetupError naming the right Redis refuses (an ACL user made without it), so no process runs on half a
        store."""
        probe = RedisSlots(self, "start-check", 1)
        ticket = f"{self.process_id}:start-check"
        steps: list[tuple[str, Any]] = [
            ("running scripts (EVAL/EVALSHA) on keys parallama:slots:*",
             lambda: self._scripts["acquire"](keys=probe.keys, args=[ticket, 1, self.lease_ms, self.process_id,
                                                                      0, self.hold_back_ms])),
            ("publishing on channels parallama:slots:* from a script",
             lambda: self._scripts["release"](keys=[*probe.keys, probe.channel],
                                              args=[ticket, 1, self.lease_ms, self.process_id])),
            ("subscribing to channels parallama:slots:* (PSUBSCRIBE)", self._check_subscribe)]
        for right, step in steps:
            try:
                await step()
            except (RedisError, OSError) as exc:
                raise SetupError(f"slot store {self.where}: Redis refuses {right} ({_cause(exc)}); grant it to "
                                 "this user (ACL SETUSER … +@scripting +@pubsub ~parallama:slots:* "
                                 "&parallama:slots:*), or set PARALLAMA_SLOT_STORE=local") from exc

    async def _check_subscribe(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.psubscribe(PREFIX + "*")
            await pubsub.get_message(timeout=SOCKET_TIMEOUT_S)  # a refused channel is an error here
        finally:
            await pubsub.aclose()

    def slots_for(self, server: str, slots: int) -> SharedSlots:
        slot = RedisSlots(self, server, slots)
        _ = slot.machine  # opened now: a slot file that cannot be opened stops the start, not a request
        self._servers[slot.key] = slot
        return slot

    async def script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of the scripts; None (and the store switched to this machine's slots) when Redis is lost."""
        if self.lost is not None:
            return None
        try:
            reply = await self._scripts[name](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.give_up(exc)
            return None
        # redis-py may hand back the reply to a task cancelled while it was reading it, the cancellation lost: a
        # `run` told to stop (SIGTERM) just as its ticket was queued then waited for its slot, forever.
        task = asyncio.current_task()
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise asyncio.CancelledError
        return reply

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background, kept alive until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def give_up(self, exc: BaseException) -> None:
        """Redis stopped answering: say so once, and move every server to this machine's slots."""
        if self.lost is not None:
            return
        self.lost = _cause(exc)
        self.on_lost(f"slot store {self.where} lost ({self.lost}); going on with this machine's slots")
        for slot in list(self._servers.values()):
            slot.fall_back()

    async def _listen(self) -> None:
        """Start this process's requests that a release (on any host) handed a slot."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.psubscribe(PREFIX + "*")
            while self.lost is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                channel, data = message["channel"], message["data"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                slot = self._servers.get(channel[len(PREFIX):].rpartition(":freed")[0])
                if slot is not None:
                    slot.granted((data.decode() if isinstance(data, bytes) else str(data)).split())
        except (RedisError, OSError) as exc:
            self.give_up(exc)
        finally:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass

    async def _renew(self) -> None:
        """Keep this process's leases and tickets alive, and everyone's counts fresh."""
        while self.lost is None:
            await asyncio.sleep(self.renew_s)
            for slot in list(self._servers.values()):
                await slot.renew()

    async def settled(self) -> None:
        """Wait until the scripts sent in the background (releases) are done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.settled()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, *self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def _cause(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class RedisSlots(SharedSlots):
    """One server's leases, as this loop holds them, each with one of this machine's slots."""

    def __init__(self, store: RedisStore, server: str, slots: int) -> None:
        self.store = store
        self.server = server
        self.key = server_key(server)
        base = PREFIX + self.key
        self.keys = [base + ":held", base + ":queue", base + ":alive", base + ":seq", base + ":gates"]
        self.channel = base + ":freed"
        self.slots = slots
        self.leases: list[str] = []
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        "Tickets waiting in this process, oldest first; each one's result: True for a lease, False for a slot of "
        "this machine handed over once Redis was lost."
        self._asked: set[str] = set()
        "Tickets Redis has queued (a queued ticket gone from its queue means Redis lost its state)."
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._gate_waiting = 0
        self._counts = (0, 0, 0)
        "(held, queued, others' gate waiting) as Redis last said."
        self._counted_at = 0.0
        self._order = asyncio.Lock()
        "Renewals and releases reach Redis in the order they were decided (a renewal must not put back a lease "
        "released after it was sent)."
        self._machine: SharedSlots | None = None
        "This machine's slots, held with every lease (opened with the first request)."
        self._local: SharedSlots | None = None
        "This machine's slots alone, once Redis is lost."

    @property
    def kind(self) -> str:
        return "redis" if self._local is None else self.machine.kind

    @property
    def machine(self) -> SharedSlots:
        if self._machine is None:
            fallback = self.store.fallback
            self._machine = fallback.slots_for(self.server, self.slots) if fallback is not None else ProcessSlots()
            self._machine.report_waiting(self._gate_waiting)
        return self._machine

    def fall_back(self) -> None:
        if self._local is None:
            self._local = self.machine  # requests in flight hold this machine's slots already
            self._local.report_waiting(self._gate_waiting)
        self.leases.clear()  # no longer held anywhere we can give them back to
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def granted(self, tickets: list[str]) -> None:
        """A release (here or on another host) handed its slot to these tickets: ours go at once."""
        for ticket in tickets:
            future = self._waiters.pop(ticket, None)
            if future is not None:
                self._got(ticket, future)

    def _got(self, ticket: str, future: asyncio.Future[bool]) -> None:
        self._asked.discard(ticket)
        self.leases.append(ticket)
        if future.done():  # cancelled just now: give it on
            self._release_lease()
        else:
            future.set_result(True)

    def try_acquire(self) -> bool:
        return self._local.try_acquire() if self._local is not None else False

    async def take_if_free(self) -> bool:
        """A slot now, in one round trip, if one is free and no ticket waits on any host; nothing queued if not."""
        if self._local is not None:
            return self._local.try_acquire()
        lease = f"{self.store.process_id}:{uuid.uuid4().hex[:12]}"
        try:
            reply = await self.store.script("take_if_free", self.keys,
                                            [lease, self.slots, self.store.lease_ms, self.store.process_id])
        except asyncio.CancelledError:
            self.store.spawn(self._give_back(lease))  # it may have been taken just now
            raise
        if reply is None:  # Redis lost just now
            return self._local.try_acquire() if self._local is not None else False
        got, held, queued, others = (int(x) for x in reply)
        self._counts, self._counted_at = (held, queued, others), time.monotonic()
        if not got:
            return False
        self.leases.append(lease)
        if self.machine.try_acquire():  # this machine's slot with it, as for every lease
            return True
        self._release_lease()
        return False

    async def acquire(self) -> None:
        if self._local is not None:
            return await self._local.acquire()
        machine = self.machine
        if not await self._lease():
            return  # Redis was lost while it waited: it holds one of this machine's slots
        try:
            await machine.acquire()
        except asyncio.CancelledError:
            self._release_lease()
            raise

    async def _lease(self) -> bool:
        """Wait for a lease (True), or for this machine's slot once Redis is lost (False)."""
        ticket = f"{self.store.process_id}:{uuid.uuid4().hex[:12]}"
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        try:
            await self._ask(ticket)  # into the queue, in arrival order (or straight to a free slot)
            if not future.done() and self._pump is None:
                self._pump = asyncio.get_running_loop().create_task(self._serve_waiters())
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                if future.result():
                    self._release_lease()
                else:
                    self.machine.release()
            else:
                future.cancel()
                if self._waiters.pop(ticket, None) is not None and self._local is None:
                    self.store.spawn(self._give_back(ticket))  # out of the queue (or the slot it just got)
            self._asked.discard(ticket)
            raise

    async def _ask(self, ticket: str) -> bool:
        """Ask Redis for a slot for `ticket` (queueing it, the first time); False when it must wait."""
        queued_before = 1 if ticket in self._asked else 0
        reply = await self.store.script("acquire", self.keys,
                                        [ticket, self.slots, self.store.lease_ms, self.store.process_id,
                                         queued_before, self.store.hold_back_ms])
        if reply is None:  # Redis lost: the pump hands the waiters to this machine's slots
            self.wake()
            return False
        got, held, queued, others = (int(x) for x in reply)
        self._counts, self._counted_at = (held, queued, others), time.monotonic()
        future = self._waiters.get(ticket)
        if future is not None:
            if got:
                del self._waiters[ticket]
                self._got(ticket, future)
            else:
                self._asked.add(ticket)
        elif ticket not in self.leases:
            self.store.spawn(self._give_back(ticket))  # cancelled while we asked: out of the queue or the slot
        return bool(got)

    async def _serve_waiters(self) -> None:
        """While requests wait: a release hands them slots (`granted`); every POLL_S the first one asks again,
        which is how a crashed holder's expired lease is found."""
        try:
            while self._waiters:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                except asyncio.TimeoutError:
                    pass
                if self._local is not None:
                    await self._hand_to_local()
                    return
                if self._waiters:
                    await self._ask(next(iter(self._waiters)))
        finally:
            self._pump = None

    async def _hand_to_local(self) -> None:
        """Redis is gone: the waiting requests wait for this machine's slots instead."""
        assert self._local is not None
        local = self._local
        while self._waiters:
            ticket = next(iter(self._waiters))
            future = self._waiters[ticket]
            if future.done():
                del self._waiters[ticket]
                continue
            try:
                await local.acquire()
            except asyncio.CancelledError:
                future.cancel()
                raise
            self._waiters.pop(ticket, None)
            if future.done():
                local.release()
            else:
                future.set_result(False)

    def _release_lease(self) -> None:
        if self.leases:
            self.store.spawn(self._give_back(self.leases.pop()))

    def release(self) -> None:
        self._release_lease()
        self.machine.release()

    async def _give_back(self, lease: str) -> None:
        """Free a lease (or drop a ticket); the slot goes to the first tickets waiting, here or elsewhere."""
        async with self._order:
            granted = await self.store.script("release", [*self.keys, self.channel],
                                              [lease, self.slots, self.store.lease_ms, self.store.process_id])
        if granted is not None:
            self.granted([t.decode() if isinstance(t, bytes) else str(t) for t in granted])

    async def renew(self) -> None:
        if self._local is not None:
            return
        async with self._order:
            tickets = [ticket for ticket, future in self._waiters.items() if not future.done()]
            reply = await self.store.script("renew", self.keys,
                                            ["", self.store.hold_back_ms, self.store.lease_ms, self.store.process_id,
                                             self._gate_waiting, *self.leases, "|", *tickets])
        if reply is not None:
            _, held, queued, others = (int(x) for x in reply)
            self._counts, self._counted_at = (held, queued, others), time.monotonic()

    def report_waiting(self, waiting: int) -> None:
        self._gate_waiting = waiting
        if self._machine is not None:
            self._machine.report_waiting(waiting)

    def counts(self) -> tuple[int, int]:
        if self._local is not None:
            return self._local.counts()
        if time.monotonic() - self._counted_at > COUNTS_FRESH_S:
            self._counted_at = time.monotonic()
            self.store.spawn(self.renew())  # fresh counts for the next look
        held, queued, others = self._counts
        return held, queued + others + self._gate_waiting

    def resize(self, slots: int) -> None:
        self.slots = min(self.slots, slots)
        if self._machine is not None:
            self._machine.resize(slots)

    def close(self) -> None:
        if self._machine is not None:
            self._machine.close()
