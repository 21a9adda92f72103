"""One gate per server: at most `slots` requests in flight, the rest wait in order of (run start, order in run).

Gates are shared by every client in one event loop (keyed by the server's `scheme://host:port`), so independent
concurrent runs never put more requests on a server than its slots. A gate lives while some client holds it; when
clients disagree about a server's slots, the smallest count holds (the safe side: no server-side queue).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from dataclasses import dataclass

Priority = tuple[int, int]
"(the run's start number, the request's number within its run): smaller goes first."


@dataclass(frozen=True)
class ServerLoad:
    """A server's gate right now, as the live view, `serve` and status pages show it."""

    slots: int
    in_flight: int
    waiting: int
    busy_s: float = 0.0
    "Slot-seconds spent serving since the gate was made (a slot held for 2 s counts 2)."
    served: int = 0
    "Requests let through since the gate was made."


class Gate:
    """A FIFO slot limit for one server, served in priority order."""

    __slots__ = ("server", "slots", "in_flight", "waiting", "busy_s", "served", "_since", "_queue", "_tiebreak",
                 "__weakref__")

    def __init__(self, server: str, slots: int) -> None:
        self.server = server
        self.slots = slots
        self.in_flight = 0
        self.waiting = 0
        self.busy_s = 0.0
        self.served = 0
        self._since = time.perf_counter()
        self._queue: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()

    def load(self) -> ServerLoad:
        self._count_busy()
        return ServerLoad(self.slots, self.in_flight, self.waiting, round(self.busy_s, 6), self.served)

    def _count_busy(self) -> None:
        """Add the slot-seconds since the last change of `in_flight`: call before every change."""
        now = time.perf_counter()
        self.busy_s += self.in_flight * (now - self._since)
        self._since = now

    async def acquire(self, priority: Priority) -> None:
        """Wait for a slot. Cancelled while waiting, the request leaves the queue (or hands on a slot it was given)."""
        if self.in_flight < self.slots and not self.waiting:
            self._count_busy()
            self.in_flight += 1
            self.served += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._tiebreak), future))
        self.waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            else:
                future.cancel()
                self.waiting -= 1
            raise

    def release(self) -> None:
        """Give the slot to the first request waiting, or free it."""
        while self._queue and self.in_flight <= self.slots:
            _, _, future = heapq.heappop(self._queue)
            if future.done():
                continue  # its request was cancelled while waiting
            self.waiting -= 1
            self.served += 1
            future.set_result(None)  # the slot goes straight to it: in_flight stays the same
            return
        self._count_busy()
        self.in_flight -= 1

    def resize(self, slots: int) -> None:
        """Another client knows this server with fewer slots: the smaller count holds from now on."""
        if slots < self.slots:
            self.slots = slots


_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakValueDictionary[str, Gate]]" = (
    weakref.WeakKeyDictionary())


def gate_for(server: str, slots: int) -> Gate:
    """The running loop's gate for `server`, made on first use."""
    loop = asyncio.get_running_loop()
    gates = _gates.get(loop)
    if gates is None:
        gates = _gates[loop] = weakref.WeakValueDictionary()
    gate = gates.get(server)
    if gate is None:
        gate = gates[server] = Gate(server, slots)
    else:
        gate.resize(slots)
    return gate
