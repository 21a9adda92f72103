"""Fan-out overhead: makespan ÷ ideal and client CPU per streamed chunk, against fake servers in another process.

    python benchmarks/fanout.py [--repeat 3] [--json]

Scenarios (the core issue's targets: ≤ 1.02 and ≤ 1.05, and less client CPU than a bare asyncio.gather over
ollama.AsyncClient, which `pip install -r benchmarks/requirements.txt` brings):
  three:  3 workers on 3 one-slot servers (1.0 / 0.8 / 0.9 s, 50 tokens each) + a reviewer (0.5 s) on the first
  wide:   64 workers on 8 servers × 8 slots, 100 tokens each in 1.0 s, no reviewer; again with every event
          folded by a RunTracker (what the terminal view, serve and the page pay on top)
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

import parallama  # noqa: E402
from parallama.result import FinalSource  # noqa: E402


def measure(coro_factory, repeat: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(coro_factory())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - cpu0)
    return {"makespan_s": statistics.median(walls), "makespan_min_s": min(walls), "makespan_max_s": max(walls),
            "cpu_s": statistics.median(cpus)}


def scenario_three(repeat: int) -> dict:
    latencies = {"a": 1.0, "b": 0.8, "c": 0.9}
    models = {name: {"latency": lat, "tokens": 50} for name, lat in latencies.items()}
    models["reviewer"] = {"latency": 0.5, "tokens": 50}
    with FakeFleet(servers=3, slots=1, models=models) as fleet:
        config = {"reviewer_agent": {"api_url": fleet.urls[0], "model": "reviewer"},
                  "worker_agents": [{"api_url": url, "model": name} for url, name in zip(fleet.urls, latencies)]}

        async def job():
            result = await parallama.run("hi", config)
            assert result.final_source == FinalSource("review"), result

        asyncio.run(job())  # warm-up: imports, first connections
        stats = measure(job, repeat)
    ideal = max(latencies.values()) + 0.5
    return {"scenario": "3 workers / 3 servers + reviewer", "ideal_s": ideal, **stats,
            "makespan_over_ideal": stats["makespan_s"] / ideal, "target": 1.02}


def scenario_wide(repeat: int, *, with_ollama: bool) -> list[dict]:
    tokens, latency = 100, 1.0
    rows = []
    with FakeFleet(servers=8, slots=8, models={"m": {"latency": latency, "tokens": tokens}}) as fleet:
        config = {"worker_agents": [{"api_url": url, "model": "m"} for url in fleet.urls for _ in range(8)],
                  "servers": {url: {"parallel": 8} for url in fleet.urls}}

        async def job():
            result = await parallama.run("hi", config)
            assert all(w.ok for w in result.workers), [w.error for w in result.workers if not w.ok]

        asyncio.run(job())
        stats = measure(job, repeat)
        chunks = 64 * tokens
        rows.append({"scenario": "64 workers / 8 servers × 8 slots (parallama)", "ideal_s": latency, **stats,
                     "makespan_over_ideal": stats["makespan_s"] / latency, "target": 1.05,
                     "cpu_ms_per_chunk": stats["cpu_s"] / chunks * 1000})

        async def folded():  # what every view pays: the run's events folded into rows as they come
            await parallama.run("hi", config, on_event=parallama.RunTracker())

        stats = measure(folded, repeat)
        rows.append({"scenario": "64 workers / 8 servers × 8 slots (parallama, events into a RunTracker)",
                     "ideal_s": latency, **stats, "makespan_over_ideal": stats["makespan_s"] / latency,
                     "target": 1.05, "cpu_ms_per_chunk": stats["cpu_s"] / chunks * 1000})
        if with_ollama:
            import ollama

            async def bare():
                async def one(url):
                    client = ollama.AsyncClient(host=url)
                    async for _ in await client.chat("m", [{"role": "user", "content": "hi"}], stream=True):
                        pass
                await asyncio.gather(*(one(url) for url in fleet.urls for _ in range(8)))

            asyncio.run(bare())
            stats = measure(bare, repeat)
            rows.append({"scenario": "64 workers / 8 servers × 8 slots (asyncio.gather + ollama.AsyncClient)",
                         "ideal_s": latency, **stats, "makespan_over_ideal": stats["makespan_s"] / latency,
                         "target": None, "cpu_ms_per_chunk": stats["cpu_s"] / chunks * 1000})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import ollama  # noqa: F401
        with_ollama = True
    except ImportError:
        with_ollama = False
        print("(ollama not installed: pip install -r benchmarks/requirements.txt for the comparison)", file=sys.stderr)
    rows = [scenario_three(args.repeat), *scenario_wide(args.repeat, with_ollama=with_ollama)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'scenario':<72} {'makespan':>9} {'÷ ideal':>8} {'target':>7} {'client CPU':>10} {'ms/chunk':>9}")
    for r in rows:
        target = f"≤{r['target']}" if r["target"] else ""
        per_chunk = f"{r['cpu_ms_per_chunk']:.4f}" if "cpu_ms_per_chunk" in r else ""
        print(f"{r['scenario']:<72} {r['makespan_s']:>8.3f}s {r['makespan_over_ideal']:>8.3f} {target:>7} "
              f"{r['cpu_s']:>9.3f}s {per_chunk:>9}")


if __name__ == "__main__":
    main()
