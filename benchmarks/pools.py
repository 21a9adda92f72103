"""A replica pool shared by three processes: how the requests spread, how close the makespan comes to the ideal, how
long requests queue; then the same with a replica killed mid-run.

    python benchmarks/pools.py [--requests 60] [--latency 0.2] [--slot-store redis://127.0.0.1:6379/0] [--json]

Three one-slot fake Ollama replicas of one model (strict: a request counts as in flight until its last line is
written); the third is twice as slow as the others. Three `parallama` processes (each a FleetClient sharing the
pool through this machine's slot store) send a third of the requests each, all at once. Each request spends most of
its time before its first token, so a replica killed mid-run finds its request there: it moves to another.

- share: requests per replica; with speeds 1 : 1 : ½ the ideal is 40 % : 40 % : 20 %.
- makespan against the ideal: n requests on rates 1/L, 1/L, 1/2L take at best the smallest T with
  ⌊T/L⌋ + ⌊T/L⌋ + ⌊T/2L⌋ ≥ n (24 L for 60).
- p95 queue wait: the requests' `queued_s`.
- killed: the first replica is closed once a third of the requests have arrived; nothing may be lost, and the ideal
  is the same count over the two replicas left from then on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes import FakeServer  # noqa: E402

PROCESSES = 3

DRIVER = """
import asyncio, json, sys, time
from pathlib import Path
from parallama import FleetClient
from parallama.backends import Message

async def main(config, go, out, n):
    async with FleetClient(config) as client:
        agent = client.fleet.workers[0]
        Path(out + ".ready").write_text("")
        while not Path(go).exists():
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*(client.ask_agent(agent, [Message(role="user", content="q")])
                                         for _ in range(n)))
        Path(out).write_text(json.dumps([{"ok": r.ok, "api_url": r.api_url, "queued_s": r.queued_s,
                                          "error": r.error} for r in results]))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


def ideal(n: int, latency: float, speeds: list[float], start: float = 0.0, done: int = 0) -> float:
    """The smallest T (from `start`, with `done` requests already served) at which replicas of these speeds can
    have served `n` requests in all."""
    t = start
    step = latency / 100
    while done + sum(int((t - start) * s / latency) for s in speeds) < n:
        t += step
    return t


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0


def run_once(n: int, latency: float, kill: bool, slot_store: str | None = None) -> dict:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        fakes = [stack.enter_context(FakeServer(strict=True)) for _ in range(3)]
        for fake, slow in zip(fakes, (1, 1, 2)):
            fake.model("m", latency=latency * slow, tokens=2, ttft=0.9 * latency * slow)
        directory = Path(tmp)
        config = directory / "pool.json"
        config.write_text(json.dumps({"worker_agents": [
            {"name": "P", "api_url": [f.url for f in fakes], "model": "m", "timeout": 60}]}))
        env = {**os.environ, "PARALLAMA_HOME": str(directory / "home")}
        if slot_store:
            env["PARALLAMA_SLOT_STORE"] = slot_store
        go = directory / "go"
        outs = [directory / f"out{i}.json" for i in range(PROCESSES)]
        each = [n // PROCESSES + (1 if i < n % PROCESSES else 0) for i in range(PROCESSES)]
        processes = [subprocess.Popen([sys.executable, "-c", DRIVER, str(config), str(go), str(out), str(k)],
                                      env=env) for out, k in zip(outs, each)]
        while not all(Path(str(out) + ".ready").exists() for out in outs):
            time.sleep(0.01)
        killed_at = None
        killed_after = 0
        if kill:
            def killer() -> None:
                nonlocal killed_at, killed_after
                while sum(len(f.requests) for f in fakes) < n // 3:
                    time.sleep(0.001)
                killed_at = time.perf_counter()
                killed_after = sum(1 for f in fakes for r in f.requests if r.ended is not None and not r.disconnected)
                fakes[0].close()
            thread = threading.Thread(target=killer)
            thread.start()
        began = time.perf_counter()
        go.write_text("")
        for process in processes:
            process.wait(timeout=300)
        if kill:
            thread.join()
        results = [r for out in outs for r in json.loads(out.read_text())]
        served = [r for f in fakes for r in f.requests if r.ended is not None and not r.disconnected]
        first = min(r.arrived for r in served)
        makespan = max(r.ended for r in served) - first
        if kill and killed_at is not None:
            best = ideal(n, latency, [1.0, 0.5], killed_at - first, killed_after)
        else:
            best = ideal(n, latency, [1.0, 1.0, 0.5])
        share = {f.url: sum(1 for r in results if r["ok"] and r["api_url"].startswith(f.url)) for f in fakes}
        return {
            "killed": kill, "requests": n, "answered": sum(r["ok"] for r in results),
            "lost": sum(not r["ok"] for r in results),
            "share": [round(share[f.url] / n, 3) for f in fakes],
            "max_in_flight": [f.max_in_flight for f in fakes],
            "makespan_s": round(makespan, 3), "ideal_s": round(best, 3), "makespan_over_ideal": round(makespan / best, 3),
            "p95_queued_s": round(p95([r["queued_s"] for r in results]), 3),
            "median_queued_s": round(statistics.median(r["queued_s"] for r in results), 3),
            "wall_s": round(time.perf_counter() - began, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--latency", type=float, default=0.2, help="a fast replica's seconds per request")
    parser.add_argument("--slot-store", help="share the slots through this Redis instead of this machine's files")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run_once(args.requests, args.latency, kill=False, slot_store=args.slot_store),
            run_once(args.requests, args.latency, kill=True, slot_store=args.slot_store)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.requests} requests from {PROCESSES} processes on three 1-slot replicas (speeds 1 : 1 : 0.5, "
          f"{args.latency} s a request on a fast one), slots shared through {args.slot_store or 'this machine'}")
    for row in rows:
        title = "a fast replica killed a third of the way" if row["killed"] else "all three up"
        print(f"\n{title}:")
        print(f"  answered {row['answered']}/{row['requests']}, lost {row['lost']}; most in flight per replica "
              f"{row['max_in_flight']}")
        print(f"  share per replica {' / '.join(f'{s:.0%}' for s in row['share'])}"
              + ("  (ideal 40 % / 40 % / 20 %)" if not row["killed"] else ""))
        print(f"  makespan {row['makespan_s']:.2f} s, ideal {row['ideal_s']:.2f} s: "
              f"{row['makespan_over_ideal']:.2f}× the ideal")
        print(f"  queue wait median {row['median_queued_s']:.2f} s, p95 {row['p95_queued_s']:.2f} s")


if __name__ == "__main__":
    main()
