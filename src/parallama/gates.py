"""One gate per server: at most `slots` requests in flight, the rest wait in order of (run start, order in run).

Gates are shared by every client in one event loop (keyed by the server's `scheme://host:port`), so independent
concurrent runs never put more requests on a server than its slots. A gate lives while some client holds it; when
clients disagree about a server's slots, the smallest count holds (the safe side: no server-side queue).

Past its gate, a request also takes one of the server's slots in the slot store (`slots`), which every other
process on the machine, or every host on the same Redis, shares; the gate's `load()` counts them all.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from dataclasses import dataclass

from .slots import SharedSlots, SlotStore

Priority = tuple[int, int]
"(the run's start number, the request's number within its run): smaller goes first."


@dataclass(frozen=True)
class ServerLoad:
    """A server's gate right now, as the live view, `serve` and status pages show it. `in_flight` and `waiting`
    count every process sharing the slot store; `own_*` this process alone."""

    slots: int
    in_flight: int
    waiting: int
    busy_s: float = 0.0
    "Slot-seconds spent serving since the gate was made (a slot held for 2 s counts 2)."
    served: int = 0
    "Requests let through since the gate was made."
    own_in_flight: int = 0
    "This process's requests in flight (all of `in_flight` when the slots are not shared)."
    own_waiting: int = 0
    "This process's requests waiting."
    shared: str = "none"
    "Who shares the slots: `none` (this process), `local` (this machine) or `redis` (every host on the Redis)."
    shared_wait_s: float = 0.0
    "Seconds this process's requests waited, past its own gate, for slots other processes held."
    benched: str | None = None
    "As a replica of a pool: `until HH:MM:SS (why)` while no request goes there, else None."

    def as_json(self, server: str) -> dict[str, object]:
        """The server's load as `serve`'s JSON APIs give it."""
        return {"server": server, "slots": self.slots, "in_flight": self.in_flight, "waiting": self.waiting,
                "own_in_flight": self.own_in_flight, "own_waiting": self.own_waiting, "shared": self.shared,
                "benched": self.benched}

    def others(self) -> tuple[int, int]:
        """(in flight, waiting) of the other processes sharing the slots."""
        if self.shared == "none":
            return 0, 0
        return max(0, self.in_flight - self.own_in_flight), max(0, self.waiting - self.own_waiting)


class Gate:
    """A FIFO slot limit for one server, served in priority order."""

    __slots__ = ("server", "slots", "in_flight", "waiting", "sending", "busy_s", "served", "shared", "shared_wait_s",
                 "_since", "_queue", "_tiebreak", "__weakref__")

    def __init__(self, server: str, slots: int, shared: SharedSlots | None = None) -> None:
        self.server = server
        self.slots = slots
        self.shared = shared
        self.in_flight = 0
        "Requests past this gate: waiting for the shared slot, or sent."
        self.waiting = 0
        "Requests waiting at this gate."
        self.sending = 0
        "Requests holding a shared slot: sent to the server."
        self.busy_s = 0.0
        self.served = 0
        self.shared_wait_s = 0.0
        self._since = time.perf_counter()
        self._queue: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    def load(self) -> ServerLoad:
        self._count_busy()
        in_flight, waiting = self.shared.counts() if self.shared is not None else (self.sending, self.waiting)
        return ServerLoad(self.slots, in_flight, waiting, round(self.busy_s, 6), self.served,
                          self.sending, self.waiting + self.in_flight - self.sending,
                          self.shared.kind if self.shared is not None else "none",
                          round(self.shared_wait_s, 3))

    def _count_busy(self) -> None:
        """Add the slot-seconds since the last change of `sending`: call before every change."""
        now = time.perf_counter()
        self.busy_s += self.sending * (now - self._since)
        self._since = now

    async def acquire(self, priority: Priority) -> None:
        """Wait for a slot here, then for a shared one. Cancelled while waiting, the request leaves the queue (or
        hands on a slot it was given)."""
        if self.in_flight < self.slots and not self.waiting:
            self.in_flight += 1
        else:
            await self._wait(priority)
        shared = self.shared
        if shared is not None and not shared.try_acquire():
            began = time.perf_counter()
            try:
                await shared.acquire()
            except BaseException:
                self._hand_on()
                raise
            finally:
                self.shared_wait_s += time.perf_counter() - began
        self._count_busy()
        self.sending += 1
        self.served += 1

    def try_acquire(self) -> bool:
        """Take a slot here and a shared one now, when both are free and nobody waits for them; False otherwise
        (nothing held)."""
        if self.in_flight >= self.slots or self.waiting:
            return False
        if self.shared is not None and not self.shared.try_acquire():
            return False
        self.in_flight += 1
        self._count_busy()
        self.sending += 1
        self.served += 1
        return True

    async def take_if_free(self) -> bool:
        """`try_acquire`, asking a store that must be asked (Redis) in one round trip; False: nothing held."""
        if self.in_flight >= self.slots or self.waiting:
            return False
        if self.shared is None:
            return self.try_acquire()
        self.in_flight += 1  # held here while the store is asked
        try:
            taken = await self.shared.take_if_free()
        except BaseException:
            self._hand_on()
            raise
        if not taken:
            self._hand_on()  # to whoever queued here meanwhile, or free
            return False
        self._count_busy()
        self.sending += 1
        self.served += 1
        return True

    def asks_elsewhere(self) -> bool:
        """Whether the shared slots are known only by asking (Redis), so `try_acquire` cannot take one."""
        return self.shared is not None and self.shared.kind == "redis"

    def idle(self) -> bool:
        """A slot is free and nobody waits for it, in this process or (as far as the store said) any other."""
        if self.in_flight >= self.slots or self.waiting:
            return False
        if self.shared is None:
            return True
        in_flight, waiting = self.shared.counts()
        return in_flight < self.slots and waiting == 0

    async def _wait(self, priority: Priority) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._tiebreak), future))
        self.waiting += 1
        self._report()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._hand_on()  # the slot was handed over just as we were cancelled: pass it on
            else:
                future.cancel()
                self.waiting -= 1
                self._report()
            raise

    def release(self) -> None:
        """Give the shared slot back, and this gate's slot to the first request waiting (or free it)."""
        self._count_busy()
        self.sending -= 1
        if self.shared is not None:
            self.shared.release()
        self._hand_on()

    def _hand_on(self) -> None:
        while self._queue and self.in_flight <= self.slots:
            _, _, future = heapq.heappop(self._queue)
            if future.done():
                continue  # its request was cancelled while waiting
            self.waiting -= 1
            self._report()
            future.set_result(None)  # the slot goes straight to it: in_flight stays the same
            return
        self.in_flight -= 1

    def _report(self) -> None:
        if self.shared is not None:
            self.shared.report_waiting(self.waiting)

    def resize(self, slots: int) -> None:
        """Another client knows this server with fewer slots: the smaller count holds from now on."""
        if slots < self.slots:
            self.slots = slots
            if self.shared is not None:
                self.shared.resize(slots)


_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakValueDictionary[str, Gate]]" = (
    weakref.WeakKeyDictionary())


def gate_for(server: str, slots: int, store: SlotStore | None = None) -> Gate:
    """The running loop's gate for `server` (with its slots in `store`, when given), made on first use."""
    loop = asyncio.get_running_loop()
    gates = _gates.get(loop)
    if gates is None:
        gates = _gates[loop] = weakref.WeakValueDictionary()
    key = server if store is None else f"{store.kind} {store.where} {server}"
    gate = gates.get(key)
    if gate is None:
        shared = store.slots_for(server, slots) if store is not None else None
        gate = gates[key] = Gate(server, slots, shared)
    else:
        gate.resize(slots)
    return gate
