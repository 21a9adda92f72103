"""Each server's slots as the slot store sees them now, for a command that sends nothing (`status`): in flight and
waiting across every process (and host) sharing the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from . import close_store, open_store


@dataclass(frozen=True)
class StoreLoad:
    """One server's slots in the store: `shared` is `local` (this machine) or `redis` (every host on it)."""

    server: str
    slots: int
    in_flight: int
    waiting: int
    shared: str


async def store_loads(servers: Mapping[str, int], configured: str | None) -> list[StoreLoad] | None:
    """The load of each server (`scheme://host:port` → its slots) in the store the environment or config names;
    None when slots are not shared (`none`)."""
    store = await open_store(configured)
    if store is None:
        return None
    try:
        loads = []
        for server, slots in servers.items():
            shared = store.slots_for(server, slots)
            try:
                fresh = getattr(shared, "renew", None)  # a Redis store's counts come with a renewal
                if fresh is not None:
                    await fresh()
                in_flight, waiting = shared.counts()
            finally:
                shared.close()
            loads.append(StoreLoad(server, slots, in_flight, waiting, shared.kind))
        return loads
    finally:
        await close_store(store)
