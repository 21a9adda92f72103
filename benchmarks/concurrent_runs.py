"""Many runs at once through one FleetClient: makespan ÷ the bound the slots allow, client CPU per request, and the
most requests each server ever had in flight. (Not named `concurrent.py`: beside the other scripts, that name
would shadow the standard library's `concurrent` package, which asyncio imports.)

    python benchmarks/concurrent_runs.py [--prompts 32] [--repeat 3] [--json]

Fleet: 4 fake servers × 2 slots in another process (so client CPU is parallama's alone); one worker on each server
(0.2 s, 20 tokens) and the reviewer on the first (0.1 s, 20 tokens). All prompts start at once. The bound: the
busiest server's work ÷ its slots (server 1 carries every worker request and every review), and never less than
one run's own worker + review time. Target: ≤ 1.05 of the bound, and never more in flight than the slots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fleet import FakeFleet  # noqa: E402

from parallama import FleetClient  # noqa: E402

SERVERS, SLOTS = 4, 2
WORKER_S, REVIEW_S, TOKENS = 0.2, 0.1, 20


def bound(prompts: int) -> float:
    busiest = prompts * (WORKER_S + REVIEW_S) / SLOTS
    return max(busiest, WORKER_S + REVIEW_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = {"w": {"latency": WORKER_S, "tokens": TOKENS}, "r": {"latency": REVIEW_S, "tokens": TOKENS}}
    with FakeFleet(servers=SERVERS, slots=None, models=models) as fakes:
        config = {"worker_agents": [{"api_url": url, "model": "w", "name": f"W{i}"} for i, url in enumerate(fakes.urls)],
                  "reviewer_agent": {"api_url": fakes.urls[0], "model": "r"},
                  "servers": {url: {"parallel": SLOTS} for url in fakes.urls}}

        async def job() -> None:
            async with FleetClient(config) as client:
                results = await asyncio.gather(*(client.run(f"prompt {i}") for i in range(args.prompts)))
            failed = [w.error for r in results for w in r.workers + [r.review] if w is not None and not w.ok]
            assert not failed, failed

        asyncio.run(job())  # warm-up: imports, first connections
        walls, cpus, in_flight = [], [], []
        for _ in range(args.repeat):
            fakes.ask("reset")
            cpu0, t0 = time.process_time(), time.perf_counter()
            asyncio.run(job())
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu0)
            in_flight.append(fakes.ask("max_in_flight"))
    requests = args.prompts * (SERVERS + 1)
    row = {
        "scenario": f"{args.prompts} runs at once, one client, {SERVERS} servers × {SLOTS} slots",
        "bound_s": bound(args.prompts),
        "makespan_s": statistics.median(walls), "makespan_min_s": min(walls), "makespan_max_s": max(walls),
        "makespan_over_bound": statistics.median(walls) / bound(args.prompts), "target": 1.05,
        "client_cpu_s": statistics.median(cpus),
        "cpu_ms_per_request": statistics.median(cpus) / requests * 1000,
        "max_in_flight_per_server": [max(run[i] for run in in_flight) for i in range(SERVERS)],
        "slots": SLOTS,
    }
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(row["scenario"])
    print(f"  makespan     {row['makespan_s']:.3f} s (min {row['makespan_min_s']:.3f}, max {row['makespan_max_s']:.3f})"
          f"   bound {row['bound_s']:.3f} s   ÷ bound {row['makespan_over_bound']:.3f} (target ≤ 1.05)")
    print(f"  client CPU   {row['client_cpu_s']:.3f} s, {row['cpu_ms_per_request']:.2f} ms per request "
          f"({requests} requests of {TOKENS} chunks)")
    print(f"  in flight    max per server {row['max_in_flight_per_server']} (slots {SLOTS})")


if __name__ == "__main__":
    main()
