"""Slots shared beyond one process: every parallama of this user on this machine (`local`, the default: locks the
OS frees when a process dies), every host (`redis://…`: leases in Redis), or none (`none`: this process only).

A gate (`gates.Gate`) keeps its process's order and its own slot count; after it, each request takes one of the
server's shared slots from the store, and gives it back when it ends. The store is chosen by `PARALLAMA_SLOT_STORE`
or, when that is unset, the config's top-level `slot_store`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import SetupError
from ..paths import state_dir
from ..urls import public_url
from .base import SharedSlots, SlotStore
from .local import LocalStore

SLOT_STORE_ENV = "PARALLAMA_SLOT_STORE"
LOCAL = "local"
NONE = "none"

__all__ = ["SharedSlots", "SlotStore", "LocalStore", "open_store", "close_store", "check_setting", "store_setting",
           "STORES", "StoreKind"]


@dataclass(frozen=True)
class StoreKind:
    """One kind of slot store, with every fact about it: the word or URL scheme that names it, what it is, how a
    setting naming it is checked (the setting, normalised, or ValueError) and how it opens (None: this process
    only) for a setting and the local slots folder."""

    name: str
    about: str
    is_url: bool
    check: Callable[[str], str]
    open: Callable[[str, Path], Awaitable[SlotStore | None]]


def _check_word(value: str) -> str:
    return value.strip().lower()


def _check_redis(value: str) -> str:
    """A Redis URL redis-py can connect with; the reason it cannot names no part of a password."""
    value = value.strip()
    shown = public_url(value)
    parts = urlsplit(value)
    if "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(f"{shown!r}: a user:password in a URL must write / ? # @ as %2F %3F %23 %40 "
                         "(the password is not shown)")
    if parts.scheme.lower() != "unix":
        try:
            _port = parts.port
        except ValueError:  # its text quotes what follows the last `:`, which may be part of a password
            raise ValueError(f"{shown!r} has a bad port") from None
        if not parts.hostname:
            raise ValueError(f"{shown!r} names no host (like redis://host:6379/0)")
    elif not parts.path:
        raise ValueError(f"{shown!r} names no socket (like unix:///run/redis.sock)")
    try:
        from redis.connection import parse_url
    except ImportError:
        return value  # open_store says how to install the client
    try:
        parse_url(value)
    except ValueError as exc:  # redis-py's reasons name the option, not its value
        raise ValueError(f"{shown!r}: {str(exc).rstrip('.')}") from None
    return value


async def _open_none(_setting: str, _root: Path) -> SlotStore | None:
    return None


async def _open_local(_setting: str, root: Path) -> SlotStore | None:
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SetupError(f"cannot keep the shared slots in {root}: {exc.strerror or exc} "
                         f"(set {SLOT_STORE_ENV}=none to keep them in this process only)") from exc
    return LocalStore(root)


async def _open_redis(setting: str, root: Path) -> SlotStore | None:
    try:
        from .redis_store import RedisStore
    except ImportError as exc:
        raise SetupError(f"slot_store {public_url(setting)} needs the Redis client: "
                         "pip install 'parallama[redis]'") from exc
    fallback: LocalStore | None
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fallback = LocalStore(root)
    except OSError as exc:  # a read-only home: Redis shares the slots; only the fallback is gone
        fallback = None
        print(f"parallama: warning: cannot keep this machine's slots in {root} ({exc.strerror or exc}): "
              f"if Redis is lost, each process keeps only its own slot count", file=sys.stderr, flush=True)
    store = RedisStore(setting, fallback=fallback)
    await store.start()
    return store


_REDIS = "Redis (every host on it)"
STORES: dict[str, StoreKind] = {kind.name: kind for kind in (
    StoreKind(LOCAL, "this machine, the default", False, _check_word, _open_local),
    StoreKind(NONE, "this process only", False, _check_word, _open_none),
    StoreKind("redis", _REDIS, True, _check_redis, _open_redis),
    StoreKind("rediss", _REDIS + ", over TLS", True, _check_redis, _open_redis),
    StoreKind("unix", _REDIS + ", through its socket", True, _check_redis, _open_redis),
)}
"Every slot store, by the word (`local`, `none`) or URL scheme (`redis://…`) that names it."


def store_kind(value: str) -> StoreKind | None:
    """The kind of store `value` names, or None."""
    value = value.strip()
    name = value.split("://", 1)[0] if "://" in value else value
    kind = STORES.get(name.lower())
    return kind if kind is not None and ("://" in value) == kind.is_url else None


def store_setting(configured: str | None) -> str:
    """The slot store asked for: the environment variable wins over the config; `local` when neither says."""
    value = os.environ.get(SLOT_STORE_ENV, "").strip()
    return value or (configured or "").strip() or LOCAL


def check_setting(value: str) -> str:
    """`value` (normalised) if it names a store that can open, or ValueError saying why not."""
    kind = store_kind(value)
    if kind is None:
        raise ValueError(f"{public_url(value)!r} is not a slot store: use \"local\" (this machine, the default), "
                         "\"none\" (this process only) or a Redis URL like \"redis://host:6379/0\"")
    return kind.check(value)


def check_environment() -> None:
    """SetupError now when PARALLAMA_SLOT_STORE names no store that can open (read with the config)."""
    value = os.environ.get(SLOT_STORE_ENV, "").strip()
    if value:
        try:
            check_setting(value)
        except ValueError as exc:
            raise SetupError(f"{SLOT_STORE_ENV}: {exc}") from exc


_open: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[SlotStore, int]]]" = (
    weakref.WeakKeyDictionary())


async def open_store(configured: str | None) -> SlotStore | None:
    """The running loop's slot store the environment or config asks for (None: `none`, this process only); give it
    back with `close_store`. A Redis that does not answer is a SetupError naming its URL (password left out)."""
    try:
        setting = check_setting(store_setting(configured))
    except ValueError as exc:
        raise SetupError(f"{SLOT_STORE_ENV}: {exc}") from exc
    kind = store_kind(setting)
    assert kind is not None
    root = state_dir() / "slots"
    key = f"{setting} {root}"
    stores = _open.setdefault(asyncio.get_running_loop(), {})
    if key in stores:
        known, users = stores[key]
        stores[key] = (known, users + 1)
        return known
    store = await kind.open(setting, root)
    if store is not None:
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
