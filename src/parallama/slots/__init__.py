"""Slots shared beyond one process: every parallama of this user on this machine (`local`, the default: locks the
OS frees when a process dies), every host (`redis://…`: leases in Redis), or none (`none`: this process only).

A gate (`gates.Gate`) keeps its process's order and its own slot count; after it, each request takes one of the
server's shared slots from the store, and gives it back when it ends. The store is chosen by `PARALLAMA_SLOT_STORE`
or, when that is unset, the config's top-level `slot_store`.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from ..errors import SetupError
from ..paths import state_dir
from ..urls import public_url
from .base import SharedSlots, SlotStore
from .local import LocalStore

SLOT_STORE_ENV = "PARALLAMA_SLOT_STORE"
LOCAL = "local"
NONE = "none"
REDIS_SCHEMES = ("redis", "rediss", "unix")

__all__ = ["SharedSlots", "SlotStore", "LocalStore", "open_store", "close_store", "check_setting", "store_setting"]


def store_setting(configured: str | None) -> str:
    """The slot store asked for: the environment variable wins over the config; `local` when neither says."""
    value = os.environ.get(SLOT_STORE_ENV, "").strip()
    return value or (configured or "").strip() or LOCAL


def check_setting(value: str) -> str:
    """`value` if it names a store, or ValueError saying what would."""
    lowered = value.strip().lower()
    if lowered in (LOCAL, NONE):
        return lowered
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in REDIS_SCHEMES:
        return value.strip()
    raise ValueError(f"{public_url(value)!r} is not a slot store: use \"local\" (this machine, the default), \"none\" "
                     "(this process only) or a Redis URL like \"redis://host:6379/0\"")


_open: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[SlotStore, int]]]" = (
    weakref.WeakKeyDictionary())


async def open_store(configured: str | None) -> SlotStore | None:
    """The running loop's slot store the environment or config asks for (None: `none`, this process only); give it
    back with `close_store`. A Redis that does not answer is a SetupError naming its URL (password left out)."""
    try:
        setting = check_setting(store_setting(configured))
    except ValueError as exc:
        raise SetupError(f"{SLOT_STORE_ENV}: {exc}") from exc
    if setting == NONE:
        return None
    root = state_dir() / "slots"
    key = f"{setting} {root}"
    stores = _open.setdefault(asyncio.get_running_loop(), {})
    if key in stores:
        known, users = stores[key]
        stores[key] = (known, users + 1)
        return known
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SetupError(f"cannot keep the shared slots in {root}: {exc.strerror or exc} "
                         f"(set {SLOT_STORE_ENV}=none to keep them in this process only)") from exc
    local = LocalStore(root)
    store: SlotStore = local
    if setting != LOCAL:
        try:
            from .redis_store import RedisStore
        except ImportError as exc:
            raise SetupError(f"slot_store {public_url(setting)} needs the Redis client: "
                             "pip install 'parallama[redis]'") from exc
        redis_store = RedisStore(setting, fallback=local)
        await redis_store.start()
        store = redis_store
    stores[key] = (store, 1)
    return store


async def close_store(store: SlotStore | None) -> None:
    """One user of `store` is done with it; the last one closes it."""
    if store is None:
        return
    stores = _open.get(asyncio.get_running_loop(), {})
    for key, (known, users) in list(stores.items()):
        if known is store:
            if users > 1:
                stores[key] = (known, users - 1)
                return
            del stores[key]
    await store.aclose()
