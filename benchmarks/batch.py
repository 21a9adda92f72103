"""`parallama batch` against a loop of `parallama run` over the same prompts, and against the bound the slots allow.

    python benchmarks/batch.py [--prompts 50] [--repeat 3] [--worker-s 0.2] [--review-s 0.2] [--json]

Fleet: four 1-slot fake Ollama servers in another process; three workers, one on each of the first three, and the
reviewer on the fourth. Every request streams 20 tokens over its latency.

- batch: the real command, `parallama batch prompts.jsonl -o out.jsonl` as its own process (median of --repeat).
  Its makespan is the summary's `wall_s`, from the first request to the last line written: what pipelining
  decides. The process's wall time, Python start-up and imports included, is shown beside it.
- loop: `for p in prompts: parallama run "$p"`, each a process, as a user without `batch` would write it.
- in-process loop: the same prompts one after another through one FleetClient (no process start-ups: what is
  left is the lost pipelining alone).

The bound: a server works N requests one at a time, and the reviewer cannot start before the first workers end
(nor the last workers' server stop before its N-th request): max(N·worker + review, worker + N·review).
Target: the batch's makespan within 10 % of the bound; never more than one request in flight on a server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fleet import FakeFleet  # noqa: E402

from parallama import FleetClient  # noqa: E402

TOKENS = 20


def bound(prompts: int, worker_s: float, review_s: float) -> float:
    return max(prompts * worker_s + review_s, worker_s + prompts * review_s)


def parallama(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallama", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PARALLAMA_NO_HISTORY": "1"}, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="batch runs (the loops run once: they are slow)")
    parser.add_argument("--worker-s", type=float, default=0.2)
    parser.add_argument("--review-s", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.prompts
    models = {"w": {"latency": args.worker_s, "tokens": TOKENS}, "r": {"latency": args.review_s, "tokens": TOKENS}}
    prompts = [f"Question {i}: what is {i} times 7?" for i in range(n)]
    with FakeFleet(servers=4, slots=1, models=models) as fakes, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = {"worker_agents": [{"name": f"W{i}", "api_url": url, "model": "w"} for i, url in
                                    enumerate(fakes.urls[:3])],
                  "reviewer_agent": {"name": "Reviewer", "api_url": fakes.urls[3], "model": "r"}}
        (work / "config.json").write_text(json.dumps(config))
        (work / "prompts.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n"
                                                    for i, p in enumerate(prompts)))
        parallama("run", "warm-up", "-c", "config.json", "-q", cwd=work)  # the first import fills OS caches

        walls, inner, busy, in_flight = [], [], [], []
        for k in range(args.repeat):
            fakes.ask("reset")
            started = time.perf_counter()
            done = parallama("batch", "prompts.jsonl", "-o", f"out{k}.jsonl", "-c", "config.json", "--json", "-q",
                             cwd=work)
            walls.append(time.perf_counter() - started)
            summary = json.loads(done.stdout)
            assert summary["answered"] == n and summary["complete"], summary
            inner.append(summary["wall_s"])
            busy.append([s["busy_fraction"] for s in summary["servers"]])
            in_flight.append(fakes.ask("max_in_flight"))

        fakes.ask("reset")
        started = time.perf_counter()
        for prompt in prompts:
            parallama("run", prompt, "-c", "config.json", "-q", cwd=work)
        loop_s = time.perf_counter() - started
        in_flight.append(fakes.ask("max_in_flight"))

        async def one_by_one() -> None:
            async with FleetClient(config) as client:
                for prompt in prompts:
                    assert (await client.run(prompt)).final is not None

        started = time.perf_counter()
        asyncio.run(one_by_one())
        in_process_s = time.perf_counter() - started

    limit = bound(n, args.worker_s, args.review_s)
    batch_s, process_s = statistics.median(inner), statistics.median(walls)
    row = {
        "scenario": f"{n} prompts, 3 workers on three 1-slot servers ({args.worker_s} s), "
                    f"reviewer on a fourth ({args.review_s} s)",
        "bound_s": round(limit, 3),
        "batch_s": round(batch_s, 3), "batch_min_s": min(inner), "batch_max_s": max(inner),
        "batch_over_bound": round(batch_s / limit, 3), "target": 1.10,
        "batch_process_s": round(process_s, 3), "batch_process_over_bound": round(process_s / limit, 3),
        "loop_s": round(loop_s, 3), "loop_over_bound": round(loop_s / limit, 3),
        "in_process_loop_s": round(in_process_s, 3), "in_process_loop_over_bound": round(in_process_s / limit, 3),
        "loop_over_batch_process": round(loop_s / process_s, 2),
        "busy_fraction_per_server": [round(statistics.median(run[i] for run in busy), 3) for i in range(4)],
        "max_in_flight_per_server": [max(run[i] for run in in_flight) for i in range(4)],
    }
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(row["scenario"])
    print(f"  bound            {limit:.2f} s")
    print(f"  batch            {batch_s:.2f} s (min {min(inner):.2f}, max {max(inner):.2f})   "
          f"÷ bound {row['batch_over_bound']:.3f} (target ≤ 1.10)")
    print(f"  batch process    {process_s:.2f} s, start-up included   ÷ bound {row['batch_process_over_bound']:.3f}")
    print(f"  loop of run      {loop_s:.2f} s   ÷ bound {row['loop_over_bound']:.2f}   "
          f"({row['loop_over_batch_process']:.2f}× the batch process)")
    print(f"  in-process loop  {in_process_s:.2f} s   ÷ bound {row['in_process_loop_over_bound']:.2f}")
    print(f"  servers busy     {', '.join(f'{b:.0%}' for b in row['busy_fraction_per_server'])} of the batch")
    print(f"  in flight        max per server {row['max_in_flight_per_server']} (slots 1)")


if __name__ == "__main__":
    main()
