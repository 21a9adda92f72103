"""Shared slots: what taking and giving back a slot costs, how fast a slot passes from one process to another, and
whether several processes on one fleet keep every slot busy without going over.

    python benchmarks/shared_slots.py [--iterations 2000] [--runs 20] [--stores local,redis,none] [--json]

1. acquire + release, uncontended, in one process: the slot files (`local`, flock) and Redis (one Lua script each
   way, on a `redis-server` started here on loopback); also a whole gate with and without the local store.
   Goals: local ≤ 1 ms median, Redis ≤ 2 ms median.
2. handoff: two processes take turns on one slot (each holds it 20 ms); the gap between one's release and the
   other's acquire, median and p99.
3. mixed workload: 2 fake servers × 2 slots (in another process); two `parallama serve` replicas and one
   `parallama batch`, `--runs` runs each, all at once. Each run: a worker on each server (0.3 s) and the reviewer
   on server 1 (0.2 s). Bound: server 1's work ÷ its 2 slots. Goal: makespan ≤ 1.10 × bound and never more in flight
   than the slots. With `redis` each process has its own state directory (as on three hosts); `none` (no sharing)
   shows what the slots prevent; `one process` (every run through one serve) is the reference without sharing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fleet import FakeFleet  # noqa: E402

from parallama.gates import Gate  # noqa: E402
from parallama.slots.local import LocalStore  # noqa: E402

SERVER = "http://localhost:11434"
WORKER_S, REVIEW_S, SLOTS = 0.3, 0.2, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throwaway `redis-server` on loopback."""

    def __enter__(self) -> "RedisServer":
        self.dir = tempfile.mkdtemp(prefix="parallama-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", self.dir],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
            "n": len(ordered)}


async def open_store(kind: str, where: str) -> Any:
    local = LocalStore(Path(where) if kind != "redis" else Path(tempfile.mkdtemp(prefix="parallama-slots-")))
    if kind != "redis":
        return local
    from parallama.slots.redis_store import RedisStore

    store = RedisStore(where, fallback=local)
    await store.start()
    return store


# ---------------------------------------------------------------- 1. acquire + release


async def cost(kind: str, where: str, iterations: int) -> dict[str, Any]:
    store = await open_store(kind, where)
    slots = store.slots_for(SERVER, 4)
    samples = []
    for _ in range(iterations + 50):
        t0 = time.perf_counter()
        if not slots.try_acquire():
            await slots.acquire()
        slots.release()
        if kind == "redis":
            await store.settled()  # the release's script, done
        samples.append(time.perf_counter() - t0)
    await store.aclose()
    return stats(samples[50:])


async def gate_cost(where: str | None, iterations: int) -> dict[str, Any]:
    shared = LocalStore(Path(where)).slots_for(SERVER, 4) if where else None
    gate = Gate(SERVER, 4, shared)
    samples = []
    for i in range(iterations + 50):
        t0 = time.perf_counter()
        await gate.acquire((i, 0))
        gate.release()
        samples.append(time.perf_counter() - t0)
    return stats(samples[50:])


# ---------------------------------------------------------------- 2. handoff between two processes


def _take_turns(kind: str, where: str, turns: int, hold_s: float, conn: Any) -> None:
    async def main() -> list[tuple[float, float]]:
        store = await open_store(kind, where)
        slots = store.slots_for(SERVER, 1)
        spans = []
        conn.send("ready")
        conn.recv()
        for _ in range(turns):
            if not slots.try_acquire():
                await slots.acquire()
            taken = time.perf_counter()
            await asyncio.sleep(hold_s)
            given = time.perf_counter()
            slots.release()
            spans.append((taken, given))
            await asyncio.sleep(0)  # let the release go out (Redis)
        if kind == "redis":
            await store.settled()
        await store.aclose()
        return spans

    conn.send(asyncio.run(main()))


def handoff(kind: str, where: str, turns: int, hold_s: float = 0.02) -> dict[str, Any]:
    context = mp.get_context("spawn")
    pipes, processes = [], []
    for _ in range(2):
        parent, child = context.Pipe()
        process = context.Process(target=_take_turns, args=(kind, where, turns, hold_s, child), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        pipe.recv()
    for pipe in pipes:
        pipe.send("go")
    spans = sorted((taken, given, who) for who, pipe in enumerate(pipes) for taken, given in pipe.recv())
    for process in processes:
        process.join(10)
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:]) if a[2] != b[2]]
    return {**stats(gaps), "overlaps": overlaps, "turns_each": turns,
            "alternations": len(gaps)}


# ---------------------------------------------------------------- 3. mixed workload


def start_serve(config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "--port", "0", "--no-history",
                                "--max-queue", "1000", "-c", str(config)], stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C" in line or "error" in line:
            break
    match = re.search(r"Ollama API  (http://127\.0\.0\.1:\d+)", "".join(lines))
    if not match:
        raise RuntimeError("".join(lines))
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, match.group(1)


async def ask_all(urls: list[str], runs: int) -> list[float]:
    import aiohttp

    async def ask(session: aiohttp.ClientSession, url: str) -> float:
        body = {"model": "parallama", "stream": False, "messages": [{"role": "user", "content": "q"}]}
        async with session.post(url + "/api/chat", json=body) as response:
            assert response.status == 200, await response.text()
            await response.read()
        return time.perf_counter()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        return await asyncio.gather(*(ask(session, url) for url in urls for _ in range(runs)))


def mixed(store: str, runs: int, redis_url: str | None) -> dict[str, Any]:
    models = {"w": {"latency": WORKER_S, "tokens": 10}, "r": {"latency": REVIEW_S, "tokens": 10}}
    with FakeFleet(servers=2, slots=None, models=models) as fakes, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "c.json"
        config.write_text(json.dumps({
            "worker_agents": [{"api_url": url, "model": "w", "name": f"W{i}", "timeout": 30}
                              for i, url in enumerate(fakes.urls)],
            "reviewer_agent": {"api_url": fakes.urls[0], "model": "r", "timeout": 30},
            "servers": {url: {"parallel": SLOTS} for url in fakes.urls}}))
        (root / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(runs)))

        def env(name: str) -> dict[str, str]:
            home = root / (name if store == "redis" else "shared")
            return {**os.environ, "PARALLAMA_HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
                    "PARALLAMA_SLOT_STORE": redis_url if store == "redis" else  # type: ignore[dict-item]
                    "none" if store == "one process" else store}

        alone = store == "one process"
        replicas = [start_serve(config, env(f"replica{i}")) for i in range(1 if alone else 2)]
        fakes.ask("reset")
        try:
            t0 = time.perf_counter()
            if alone:  # the reference: every run through one serve, nothing to share with
                ends = asyncio.run(ask_all([replicas[0][1]], 3 * runs))
                batch_end = t0
            else:
                batch = subprocess.Popen([sys.executable, "-m", "parallama", "batch", str(root / "prompts.txt"),
                                          "-c", str(config), "-o", str(root / "out.jsonl"), "-q"], env=env("batch"),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                ends = asyncio.run(ask_all([url for _, url in replicas], runs))
                _, err = batch.communicate(timeout=600)
                batch_end = time.perf_counter()
                assert batch.returncode == 0, err
        finally:
            for process, _ in replicas:
                process.terminate()
                process.wait(15)
        makespan = max(max(ends), batch_end) - t0
        total = 3 * runs
        bound = total * (WORKER_S + REVIEW_S) / SLOTS
        return {"store": store, "runs": total, "bound_s": round(bound, 3), "makespan_s": round(makespan, 3),
                "makespan_over_bound": round(makespan / bound, 3), "target": 1.10,
                "max_in_flight_per_server": fakes.ask("max_in_flight"), "slots": SLOTS}


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20, help="runs per replica, and prompts in the batch")
    parser.add_argument("--stores", default="one process,local,redis,none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stores = args.stores.split(",")
    report: dict[str, Any] = {"cost": {}, "handoff": {}, "mixed": []}
    redis = RedisServer().__enter__() if "redis" in stores and shutil.which("redis-server") else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report["cost"]["gate alone"] = asyncio.run(gate_cost(None, args.iterations))
            report["cost"]["gate + local"] = asyncio.run(gate_cost(tmp, args.iterations))
            report["cost"]["local"] = asyncio.run(cost("local", tmp, args.iterations))
            report["handoff"]["local"] = handoff("local", tmp, args.turns)
        if redis is not None:
            report["cost"]["redis"] = asyncio.run(cost("redis", redis.url, args.iterations))
            report["handoff"]["redis"] = handoff("redis", redis.url, args.turns)
        for store in stores:
            if store != "redis" or redis is not None:
                report["mixed"].append(mixed(store, args.runs, redis.url if redis else None))
    finally:
        if redis is not None:
            redis.__exit__()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("acquire + release, one process, uncontended")
    for name, row in report["cost"].items():
        print(f"  {name:<13} median {row['median_ms']:.4f} ms   p99 {row['p99_ms']:.4f} ms   ({row['n']} times)")
    print("handoff between two processes taking turns on one slot (release → the other's acquire)")
    for name, row in report["handoff"].items():
        print(f"  {name:<13} median {row['median_ms']:.2f} ms   p99 {row['p99_ms']:.2f} ms   "
              f"({row['alternations']} handoffs, {row['overlaps']} overlaps)")
    print("mixed: two serve replicas + one batch, 2 fake servers × 2 slots")
    for row in report["mixed"]:
        print(f"  {row['store']:<11} {row['runs']} runs   makespan {row['makespan_s']:.2f} s   bound {row['bound_s']:.2f} s"
              f"   ÷ bound {row['makespan_over_bound']:.3f} (target ≤ 1.10)   max in flight "
              f"{row['max_in_flight_per_server']} (slots {row['slots']})")


if __name__ == "__main__":
    main()
