"""The interface every slot store gives a gate: one server's shared slots, taken, given back and counted."""

from __future__ import annotations

import abc


class SharedSlots(abc.ABC):
    """One server's slots as every process on the store sees them: take one, give one back, count them."""

    @property
    def kind(self) -> str:
        """Who shares them now: `local` (this machine) or `redis` (every host on the Redis)."""
        return "local"

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take a slot now if one is free and nobody elsewhere waits before us; False otherwise."""

    async def take_if_free(self) -> bool:
        """`try_acquire`, for a store that must ask elsewhere to know (Redis: one round trip)."""
        return self.try_acquire()

    @abc.abstractmethod
    async def acquire(self) -> None:
        """Wait for a slot (cancelled while waiting: nothing is held)."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give back one slot this process holds on the server."""

    @abc.abstractmethod
    def report_waiting(self, waiting: int) -> None:
        """This process's requests waiting at its own gate for this server, for the others' counts."""

    @abc.abstractmethod
    def counts(self) -> tuple[int, int]:
        """(requests in flight, requests waiting) on the server, across every process sharing the store."""

    @abc.abstractmethod
    def resize(self, slots: int) -> None:
        """The gate's slot count went down: take only that many from now on."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing per server
        """Nothing is held any more: free what the store keeps open for the server."""


class SlotStore(abc.ABC):
    """Where the servers' slots are kept: `kind` is `local` or `redis`, `where` what a user reads about it."""

    kind: str
    where: str

    @abc.abstractmethod
    def slots_for(self, server: str, slots: int) -> SharedSlots:
        """The shared slots of `server` (`scheme://host:port`), `slots` of them."""

    async def aclose(self) -> None:  # noqa: B027 - a store with no connection has nothing to close
        """Close connections the store holds."""


class ProcessSlots(SharedSlots):
    """A server's slots when nothing is shared: the gate's own count is the only bound (a Redis store lost with
    no folder for this machine's slots)."""

    def __init__(self) -> None:
        self.held = 0
        self.waiting = 0

    @property
    def kind(self) -> str:
        return "none"

    def try_acquire(self) -> bool:
        self.held += 1
        return True

    async def acquire(self) -> None:
        self.held += 1

    def release(self) -> None:
        self.held = max(0, self.held - 1)

    def report_waiting(self, waiting: int) -> None:
        self.waiting = waiting

    def counts(self) -> tuple[int, int]:
        return self.held, self.waiting

    def resize(self, slots: int) -> None:
        pass
