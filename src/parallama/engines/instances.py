"""Start, watch and stop server instances: free ports, real processes, health checks, a state record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from ..errors import SetupError, StartError
from ..urls import is_loopback
from . import Engine, LaunchSpec
from .ports import PortHolder, port_holder, port_is_free
from .state import Instance, InstanceStore

STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class BusyPort:
    """A port passed over because something else listens there."""

    port: int
    holder: PortHolder

    def __str__(self) -> str:
        return f"port {self.port} is in use by {self.holder}"


CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT}


@dataclass
class StartReport:
    """What `start_instances` did: the instances up, and the busy ports it skipped."""

    instances: list[Instance]
    skipped: list[BusyPort]
    processes: list[subprocess.Popen] = field(default_factory=list)
    "The instances' processes, in the same order: only their parent can learn how they ended."
    crash_hint: str | None = None

    def crashes(self) -> list[str]:
        """One line for each instance whose process has died of a crash signal since it started."""
        lines = []
        for instance, proc in zip(self.instances, self.processes):
            code = proc.poll()
            if code is not None and code < 0 and -code in CRASH_SIGNALS:
                lines.append(f"{instance.engine} on port {instance.port} {how_it_ended(code)}"
                             + (f": {self.crash_hint}" if self.crash_hint else "") + f" (log: {instance.log})")
        return lines


def how_it_ended(code: int) -> str:
    """`exited with code 1`, or `crashed (SIGSEGV)` for a process a signal ended."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"crashed ({name})" if -code in CRASH_SIGNALS else f"was killed ({name})"


def default_threads(n: int) -> int:
    """CPU threads per instance when N share this machine: (cores − 1) ÷ N, at least 1 — a core is left for the
    client and the rest of the machine. llama.cpp's threads meet at a barrier many times per token, so one thread
    that has to wait for a core stalls them all: measured on the 2-core machine under load (load average 25), one
    thread decoded 8 tokens/s where two decoded 0.2."""
    return max(1, ((os.cpu_count() or 1) - 1) // max(1, n))


def exposure_warning(host: str) -> str | None:
    if is_loopback(host):
        return None
    return (f"binding to {host}: anyone who can reach this machine can use the server "
            "(Ollama and llama.cpp's server have no authentication)")


def pick_ports(n: int, base_port: int, host: str, *, strict: bool) -> tuple[list[int], list[BusyPort]]:
    """N free ports from `base_port` up; busy ones are skipped (and said why) or, when strict, an error."""
    ports: list[int] = []
    skipped: list[BusyPort] = []
    port = base_port
    while len(ports) < n:
        if port > 65535:
            raise SetupError(f"no free port left above {base_port}")
        if port_is_free(port, host):
            ports.append(port)
        else:
            busy = BusyPort(port, port_holder(port))
            if strict:
                raise SetupError(f"{busy} (--strict-ports)")
            skipped.append(busy)
        port += 1
    return ports, skipped


def start_instances(
    engine: Engine,
    n: int,
    *,
    base_port: int,
    host: str = "127.0.0.1",
    model: str | None = None,
    threads: int | None = None,
    parallel: int = 1,
    strict_ports: bool = False,
    ready_timeout: float = 120.0,
    ephemeral: bool = False,
    store: InstanceStore | None = None,
    on_ready: Callable[[Instance, float], None] | None = None,
) -> StartReport:
    """Start N instances on free ports, wait until each answers its health URL, and record them."""
    engine.check()
    store = store or InstanceStore()
    threads = threads or default_threads(n)
    ports, skipped = pick_ports(n, base_port, host, strict=strict_ports)
    started: list[tuple[Instance, subprocess.Popen, LaunchSpec]] = []

    def launch(port: int) -> tuple[Instance, subprocess.Popen, LaunchSpec]:
        spec = engine.launch(host=host, port=port, model=model, threads=threads, parallel=parallel)
        log = store.log_dir() / f"{engine.name}-{port}.log"
        proc = spawn(spec, log, die_with_parent=ephemeral)
        try:
            started_proc = psutil.Process(proc.pid)
            create_time, cmdline = started_proc.create_time(), command_line(started_proc, proc)
        except psutil.Error:  # it died at once: wait_ready says so, naming the log
            create_time, cmdline = 0.0, spec.argv
        instance = Instance(engine=engine.name, pid=proc.pid, host=host, port=port, model=spec.model,
                            log=str(log), parallel=spec.parallel, threads=threads, create_time=create_time,
                            cmdline=cmdline, extra={"health_path": spec.health_path, "ephemeral": ephemeral})
        store.add(instance)
        return instance, proc, spec

    try:
        for port in ports:
            started.append(launch(port))
        t0 = time.monotonic()
        for index in range(len(started)):
            for attempt in range(PORT_RACES + 1):
                instance, proc, spec = started[index]
                try:
                    wait_ready(instance, proc, spec, deadline=t0 + ready_timeout)
                    break
                except StartError:
                    if strict_ports or attempt == PORT_RACES or not lost_its_port(instance, proc):
                        raise
                # Another program took the port between our look and the server's bind (two `up`s or demo runs
                # starting at once): said as a busy port, and the server started again on the next free one.
                skipped.append(BusyPort(instance.port, port_holder(instance.port)))
                store.remove({instance.port})
                [port], more = pick_ports(1, max(i.port for i, _, _ in started) + 1, host, strict=False)
                skipped.extend(more)
                started[index] = launch(port)
            if on_ready:
                on_ready(started[index][0], time.monotonic() - t0)
    except BaseException:
        stop_instances([i for i, _, _ in started], store=store)
        raise
    return StartReport([i for i, _, _ in started], skipped, [p for _, p, _ in started],
                       started[0][2].crash_hint if started else None)


EXEC_WAIT_S = 10.0


def command_line(started: psutil.Process, proc: subprocess.Popen) -> list[str]:
    """The server's own command line, once its exec has put it in place. Popen returns when the exec closes the
    child's close-on-exec pipe, which is before the kernel has set up the new program's arguments: read at once on
    a loaded machine, the command line can still be empty. Empty after `EXEC_WAIT_S` (or if it died): [], and the
    record then knows the process by its engine alone (`Instance.identify`)."""
    deadline = time.monotonic() + EXEC_WAIT_S
    while not (cmdline := started.cmdline()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return cmdline


def spawn(spec: LaunchSpec, log: Path, *, die_with_parent: bool = False) -> subprocess.Popen:
    """Start the server in its own session (a terminal's Ctrl-C must not reach it), output to `log`.

    `die_with_parent`: the kernel sends it SIGTERM if parallama itself is killed (Linux), so instances started
    for one run cannot outlive it even on SIGKILL.
    """
    with open(log, "ab") as fh:
        try:
            return subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, **spec.env}, start_new_session=True,
                                    preexec_fn=_die_with_parent if die_with_parent else None)
        except OSError as exc:
            raise StartError(f"cannot start {spec.argv[0]}: {exc.strerror or exc}") from exc


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_ready(instance: Instance, proc: subprocess.Popen, spec: LaunchSpec, *, deadline: float) -> None:
    """Poll the health URL until it answers 200; fail naming the log when the process dies or time runs out."""
    url = instance.url + spec.health_path
    while True:
        code = proc.poll()
        if code is not None:
            hint = f"; {spec.crash_hint}" if spec.crash_hint and -code in CRASH_SIGNALS else ""
            raise StartError(f"{instance.engine} on port {instance.port} {how_it_ended(code)} before it was "
                             f"ready{hint}; see {instance.log}{_log_tail(instance.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                # Ours only when our process holds the port: another server there answers too.
                if response.status == 200 and listens_on(proc, instance.port):
                    return
        except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise StartError(f"{instance.engine} on port {instance.port} did not answer {url} in time; "
                             f"see {instance.log}{_log_tail(instance.log)}")
        time.sleep(0.2)


PORT_RACES = 5
"How many times one instance is started again because another program took its port just before it could bind."


def listens_on(proc: subprocess.Popen, port: int) -> bool:
    """Whether the process we started (or a child of it) listens on `port`."""
    try:
        started = psutil.Process(proc.pid)
        family = [started] + started.children(recursive=True)
    except psutil.Error:
        return False
    for member in family:
        try:
            if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in member.net_connections(kind="inet")):
                return True
        except psutil.Error:
            continue
    return False


def lost_its_port(instance: Instance, proc: subprocess.Popen) -> bool:
    """Whether a server that ended before it was ready did so because another program holds its port now."""
    return proc.poll() is not None and not port_is_free(instance.port, instance.host)


def _log_tail(path: str, lines: int = 3) -> str:
    try:
        tail = Path(path).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(tail)) if tail else ""


@dataclass(frozen=True)
class StopReport:
    """What `stop_instances` did."""

    stopped: list[Instance]
    "Signalled (SIGTERM, then SIGKILL if need be) and forgotten."
    forgotten: list[tuple[Instance, str]]
    "Forgotten without a signal, and why: the process is gone, or the pid is no longer the one recorded."


def stop_instances(instances: list[Instance], *, store: InstanceStore | None = None,
                   grace: float = STOP_GRACE_S) -> StopReport:
    """SIGTERM each instance and its children, SIGKILL what is left after `grace` seconds; forget them. A process
    whose start time or command line is not the recorded one is never signalled."""
    store = store or InstanceStore()
    procs: list[psutil.Process] = []
    stopped: list[Instance] = []
    forgotten: list[tuple[Instance, str]] = []
    for instance in instances:
        proc, why = instance.identify()
        if proc is None:
            forgotten.append((instance, why))
            continue
        stopped.append(instance)
        try:
            family = [proc] + proc.children(recursive=True)
        except psutil.Error:
            family = [proc]
        for member in family:
            try:
                member.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        procs.extend(family)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for member in alive:
        try:
            member.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    store.remove({i.port for i in instances})
    return StopReport(stopped, forgotten)


@dataclass(frozen=True)
class InstanceStatus:
    instance: Instance
    alive: bool
    rss_bytes: int | None
    note: str = ""
    "Why a dead one is not alive: `is gone`, or the pid now belongs to another process."


def instance_status(store: InstanceStore | None = None,
                    instances: list[Instance] | None = None) -> tuple[list[InstanceStatus], list[InstanceStatus]]:
    """Every recorded instance (or `instances`), alive with its memory, or dead and why; the dead ones are removed
    from the record."""
    store = store or InstanceStore()
    live: list[InstanceStatus] = []
    stale: list[InstanceStatus] = []
    for instance in store.load() if instances is None else instances:
        proc, why = instance.identify()
        if proc is None:
            stale.append(InstanceStatus(instance, False, None, why))
            continue
        try:
            rss = sum(p.memory_info().rss for p in [proc] + proc.children(recursive=True))
        except psutil.Error:
            rss = None
        live.append(InstanceStatus(instance, True, rss))
    if stale:
        store.remove({s.instance.port for s in stale})
    return live, stale
