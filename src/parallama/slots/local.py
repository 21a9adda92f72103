"""This machine's shared slots: one lock file per slot of each server under the state directory, held with `flock`
while a request runs. The kernel frees the lock when the process ends, SIGKILL included, so no slot outlives its
holder.

Who is next across processes is decided by a `door` file: a process with requests waiting for a server polls the
door; its holder alone polls the slot files, takes the first free one, and then leaves the door to the others.
A process takes a slot without waiting only when the door is free (nobody elsewhere waits before it). Polls are
a few syscalls, 1–2 ms apart, and only while something waits; a slot freed in this process wakes its own door
holder at once.

Each process also keeps a `waiting.*` file per server whose size is its number of waiting requests (locked while
the process lives), so every process can show the whole machine's queue.

Files deleted under a running process (`rm -rf` of the state folder, a tmp cleaner: `flock` leaves file times
alone) would leave its locks on files nobody else sees: a process holding or waiting for slots looks every
`CHECK_S` whether its files are still the ones at their paths, and opens (and locks again) the new ones if not.
A slot file or folder that cannot be opened is a SetupError naming it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import hashlib
import os
import random
import re
import time
import weakref
from pathlib import Path

from ..errors import SetupError
from .base import SharedSlots, SlotStore

SLOT_POLL_S = 0.001
"How often the door's holder looks for a free slot."
DOOR_POLL_S = 0.002
"How often a process with requests waiting tries the door (with jitter, so none is always first)."
COURTESY_S = 0.003
("After taking a slot through the door, how long a process waits before it tries the door again when others wait: "
 "another process polling the door gets its turn.")
CHECK_S = 0.2
"How often a process holding or waiting for slots checks that its files are still there."


def _try_lock(fd: int, how: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise _unusable(path, exc) from exc


def _unusable(path: Path, exc: OSError) -> SetupError:
    return SetupError(f"cannot use the slot file {path}: {exc.strerror or exc} (remove it, or set "
                      "PARALLAMA_SLOT_STORE=none to keep the slots in this process only)")


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _unusable(directory, exc) from exc
    if not directory.is_dir():
        raise _unusable(directory, NotADirectoryError(errno.ENOTDIR, "not a folder"))


def server_dir_name(server: str) -> str:
    """A file name for a server key: readable, and unique by its hash."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", server).strip("_")[:60]
    return f"{readable}-{hashlib.sha256(server.encode()).hexdigest()[:10]}"


class LocalStore(SlotStore):
    """Slots shared by every process of this user that uses the same state directory."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def slots_for(self, server: str, slots: int) -> "LocalSlots":
        return LocalSlots(self.root / server_dir_name(server), slots)


class LocalSlots(SharedSlots):
    """One server's lock files, as one event loop holds them (its own file descriptions: a second loop or
    process conflicts with it as it should)."""

    def __init__(self, directory: Path, slots: int) -> None:
        _make_dir(directory)
        self.directory = directory
        self.slots = slots
        self._open_fds: list[int] = []
        self._door = _open(directory / "door")
        self._open_fds.append(self._door)
        self._files: list[int] = []
        "Every descriptor this object opened: closed with it (which also frees every lock it held)."
        self._own_files: list[Path] = []
        weakref.finalize(self, _close_all, self._open_fds, self._own_files)
        self._held: list[int] = []
        "Indexes of the slot files this process holds."
        self._door_held = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._gate_waiting = 0
        self._waiting_fd: int | None = None
        self._waiting_reported = 0
        self._closed = False
        self._checked_at = time.monotonic()
        self._watch: asyncio.Task[None] | None = None
        for index in range(slots):  # every file now: one that cannot be opened stops the start, not a request
            self._fd(index)

    # ---------------------------------------------------------------- taking and giving back

    def _fd(self, index: int) -> int:
        while len(self._files) <= index:
            self._files.append(_open(self.directory / f"slot.{len(self._files)}"))
            self._open_fds.append(self._files[-1])
        return self._files[index]

    def _files_moved(self) -> bool:
        """Whether a file of ours is no longer the one at its path (deleted, or replaced)."""
        for fd, name in [(self._door, "door"), *((fd, f"slot.{i}") for i, fd in enumerate(self._files))]:
            try:
                if os.fstat(fd).st_ino != os.stat(self.directory / name, follow_symlinks=False).st_ino:
                    return True
            except OSError:
                return True
        return False

    def _check_files(self) -> None:
        """Open the files at their paths again when ours were deleted, and lock the slots we hold in them."""
        self._checked_at = time.monotonic()
        if self._closed or not self._files_moved():
            return
        _make_dir(self.directory)
        old = [self._door, *self._files]
        self._door = _open(self.directory / "door")
        self._files = [_open(self.directory / f"slot.{i}") for i in range(len(self._files))]
        if self._door_held:
            self._door_held = _try_lock(self._door)
        for index in self._held:  # taken again in the new file (one somebody took meanwhile stays counted here)
            _try_lock(self._files[index])
        if self._waiting_fd is not None:
            old.append(self._waiting_fd)
            self._waiting_fd, self._waiting_reported = None, 0
            self._own_files.clear()
        for fd in old:
            os.close(fd)
            self._open_fds.remove(fd)
        self._open_fds += [self._door, *self._files]
        self._report()

    def _start_watch(self) -> None:
        if self._watch is None and not self._closed:
            self._watch = asyncio.get_running_loop().create_task(self._watch_files())

    async def _watch_files(self) -> None:
        """While slots are held or wanted here: notice files deleted under us."""
        try:
            while (self._held or self._waiters) and not self._closed:
                await asyncio.sleep(CHECK_S)
                self._check_files()
        finally:
            self._watch = None

    def _take_free_slot(self) -> bool:
        if time.monotonic() - self._checked_at > CHECK_S:
            self._check_files()
        for index in range(self.slots):
            if index not in self._held and _try_lock(self._fd(index)):
                self._held.append(index)
                try:
                    self._start_watch()
                except RuntimeError:  # no running loop (a count from outside one): nothing to watch with
                    pass
                return True
        return False

    def try_acquire(self) -> bool:
        if self._waiters:
            return False  # this process's earlier requests go first
        if self._door_held:
            return self._take_free_slot()
        if not _try_lock(self._door):
            return False  # another process waits: it goes first
        try:
            return self._take_free_slot()
        finally:
            _unlock(self._door)

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        self._report()
        if self._poller is None:
            self._wake = asyncio.Event()
            self._poller = loop.create_task(self._poll())
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot came just as the request was cancelled
            else:
                future.cancel()
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
            raise
        finally:
            self._report()

    def release(self) -> None:
        if not self._held:
            return
        _unlock(self._fd(self._held.pop()))
        if self._door_held and self._wake is not None:
            self._wake.set()  # our own door holder takes it at once

    async def _poll(self) -> None:
        """While requests wait: get the door, then a slot for the first of them; then give the door up."""
        assert self._wake is not None
        delay = SLOT_POLL_S
        try:
            while self._waiters:
                if time.monotonic() - self._checked_at > CHECK_S:
                    self._check_files()
                if not self._door_held:
                    self._door_held = _try_lock(self._door)
                    delay = SLOT_POLL_S if self._door_held else DOOR_POLL_S * random.uniform(0.5, 1.5)
                if self._door_held and self._take_free_slot():
                    while self._waiters and self._waiters[0].done():
                        self._waiters.popleft()  # cancelled while waiting
                    if self._waiters:
                        self._waiters.popleft().set_result(None)
                    else:
                        self.release()
                    _unlock(self._door)
                    self._door_held = False
                    # Another process waiting gets a turn at the door before this one's next request.
                    delay = COURTESY_S * random.uniform(1.0, 1.5) if self._others_waiting() else 0.0
                    if not self._waiters:
                        break
                self._wake.clear()
                if delay:
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
        finally:
            if self._door_held and not self._closed:
                _unlock(self._door)
            self._door_held = False
            self._poller = None

    def resize(self, slots: int) -> None:
        self.slots = min(self.slots, slots)

    # ---------------------------------------------------------------- counting

    def report_waiting(self, waiting: int) -> None:
        self._gate_waiting = waiting
        self._report()

    def _report(self) -> None:
        """Keep this process's waiting count in its file's size (created the first time something waits)."""
        waiting = self._gate_waiting + len(self._waiters)
        if waiting == self._waiting_reported or self._closed:
            return
        if self._waiting_fd is None:
            # Locked before it gets its name: a reader never takes a live process's file for a dead one's.
            name = f"waiting.{os.getpid()}.{id(self):x}"
            temp = self.directory / f".{name}"
            fd = _open(temp)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._open_fds.append(fd)
            os.rename(temp, self.directory / name)
            self._own_files.append(self.directory / name)
            self._waiting_fd = fd
        os.ftruncate(self._waiting_fd, waiting)
        self._waiting_reported = waiting

    def counts(self) -> tuple[int, int]:
        in_flight = len(self._held)
        for index in range(self.slots):
            if index in self._held:
                continue
            fd = self._fd(index)
            if _try_lock(fd):
                _unlock(fd)
            else:
                in_flight += 1
        return in_flight, self._gate_waiting + len(self._waiters) + self._others_waiting()

    def _others_waiting(self) -> int:
        own = f"waiting.{os.getpid()}.{id(self):x}"
        total = 0
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith("waiting.") and n != own]
        except OSError:
            return 0
        for name in names:
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if _try_lock(fd, fcntl.LOCK_SH):
                    path.unlink(missing_ok=True)  # its process is gone
                else:
                    total += os.fstat(fd).st_size
            finally:
                os.close(fd)
        return total

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
        if self._watch is not None:
            self._watch.cancel()
        self._held = []
        _close_all(self._open_fds, self._own_files)


def _close_all(fds: list[int], files: list[Path]) -> None:
    for path in files:
        path.unlink(missing_ok=True)
    for fd in fds:
        os.close(fd)
    fds.clear()
    files.clear()
