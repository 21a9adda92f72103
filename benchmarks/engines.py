"""The embedded engine measured: xllamacpp's llama.cpp server against the llama-cpp-python server it replaced, and
the demo fleet's layouts (instances or slots) — on the embedded demo model, on this machine.

    python benchmarks/engines.py [--repeat 5] [--tokens 64] [--only speed|layout]

1. **Speed**: one request at a time, decode tokens/s (after the first token) and time to the first token, at 1 and
   2 threads, each engine's own server on the same GGUF; median of --repeat. llama-cpp-python is started as the
   `llama-cpp` engine started it before (`python -m llama_cpp.server`, one slot, `--interrupt_requests False`,
   `n_ctx` 2048); it must be installed (`pip install 'llama-cpp-python[server]'`) for its rows.
2. **Layout**: the demo fleet (three workers and the reviewer, seeded) on three instances × one slot (the cores'
   threads split between them), one instance × three slots, and one instance × one slot (the workers in turn),
   each with the threads `up` gives it by default:
   the makespan of one run, and the throughput of a small batch (--batch runs at once through one client).

Every answer is exactly --tokens long (the model's end tokens are biased away), so every row does the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import replace

import aiohttp

from parallama.backends import backend_for
from parallama.config import fleet_from_dict
from parallama.demo_model import ALIAS, END_TOKEN_IDS, model_path
from parallama.engines import LaunchSpec
from parallama.engines.instances import default_threads, start_instances, stop_instances
from parallama.engines.llama_cpp import LlamaCppEngine

NO_END = {str(token): -100 for token in END_TOKEN_IDS}
QUESTIONS = ["Why is the sky blue?", "Name three benefits of exercise.", "Explain what a CPU does.",
             "What makes bread rise?", "Why do leaves change colour?", "How does a fridge keep food cold?"]
BASE_PORT = 18380


class LlamaCppPython:
    """The engine before: llama-cpp-python's server, one request at a time (for comparison only)."""

    name = "llama-cpp"

    def check(self) -> None:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise SystemExit("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")

    def launch(self, *, host: str, port: int, model: str | None,  # noqa: ARG002 - the Engine interface
               threads: int, parallel: int) -> LaunchSpec:  # noqa: ARG002 - one slot, always
        path = str(model_path())
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--model_alias", ALIAS,
                "--host", host, "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
                "--n_ctx", "2048", "--interrupt_requests", "False", "--verbose", "False"]
        return LaunchSpec(argv=argv, model=path, parallel=1, health_path="/v1/models")


def version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version as found

    try:
        return found(module)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- 1. speed of one request


async def one_request(api_url: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s after it, tokens) of one streamed answer."""
    fleet = fleet_from_dict({"worker_agents": [{"api_url": api_url, "model": ALIAS, "timeout": 600,
                                                "options": {"num_predict": tokens, "temperature": 0.0}}]})
    agent = replace(fleet.workers[0], extra_body={"logit_bias": NO_END})
    stamps: list[float] = []
    async with aiohttp.ClientSession() as session:
        sent = time.perf_counter()
        completion = await backend_for(agent.protocol).chat(
            session, agent, [{"role": "user", "content": "Tell me about the sea."}],
            lambda _: stamps.append(time.perf_counter()), lambda _: None)
    n = completion.completion_tokens or len(stamps)
    return stamps[0] - sent, (n - 1) / (stamps[-1] - stamps[0]), n


def speed(engine, threads: int, tokens: int, repeat: int) -> tuple[float, float]:
    report = start_instances(engine, 1, base_port=BASE_PORT, threads=threads)
    try:
        url = report.instances[0].api_url
        asyncio.run(one_request(url, 8))  # warm-up
        runs = [asyncio.run(one_request(url, tokens)) for _ in range(repeat)]
    finally:
        stop_instances(report.instances)
    assert all(n == tokens for _, _, n in runs), runs
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


# ---------------------------------------------------------------- 2. the demo fleet's layouts


def demo_fleet(instances, tokens: int):
    from parallama.embedded import embedded_fleet

    fleet = embedded_fleet(instances)
    fixed = lambda agent: replace(agent, options={**agent.options, "num_predict": tokens})  # noqa: E731
    fleet = replace(fleet, workers=tuple(fixed(w) for w in fleet.workers),
                    reviewers=tuple(fixed(r) for r in fleet.reviewers))
    return fleet.with_extra_body({"logit_bias": NO_END})


async def makespans(fleet, repeat: int, batch: int) -> tuple[list[float], float]:
    """Walls of `repeat` single runs, and of one batch of `batch` runs at once, through one client."""
    from parallama.client import FleetClient

    async with FleetClient(fleet) as client:
        await client.run("Say hi.")  # warm-up: every instance has answered once
        walls = []
        for i in range(repeat):
            t0 = time.perf_counter()
            result = await client.run(QUESTIONS[i % len(QUESTIONS)])
            walls.append(time.perf_counter() - t0)
            assert result.final is not None and all(w.ok for w in result.workers), result
        t0 = time.perf_counter()
        results = await asyncio.gather(*(client.run(QUESTIONS[i % len(QUESTIONS)]) for i in range(batch)))
        batch_s = time.perf_counter() - t0
        assert all(r.final is not None for r in results)
    return walls, batch_s


def layout(label: str, count: int, parallel: int, threads: int, tokens: int, repeat: int, batch: int) -> dict:
    report = start_instances(LlamaCppEngine(), count, base_port=BASE_PORT, threads=threads, parallel=parallel)
    try:
        walls, batch_s = asyncio.run(makespans(demo_fleet(report.instances, tokens), repeat, batch))
    finally:
        stop_instances(report.instances)
    row = {"layout": label, "threads": threads, "run_s": statistics.median(walls), "batch_s": batch_s,
           "runs_per_min": batch * 60 / batch_s}
    print(f"| {label} | {threads} | {row['run_s']:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}) | "
          f"{batch_s:.2f} s | {row['runs_per_min']:.1f} |", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=6, help="Runs at once for the throughput column.")
    parser.add_argument("--only", choices=["speed", "layout"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="Thread counts of the speed rows.")
    parser.add_argument("--engines", nargs="+", default=["xllamacpp", "llama-cpp-python"])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f} at the start; xllamacpp {version('xllamacpp')}, "
          f"llama-cpp-python {version('llama_cpp_python')}; {args.tokens} tokens per answer, median of "
          f"{args.repeat}", flush=True)
    if args.only in (None, "speed"):
        print("\n| engine | threads | decode tok/s | time to first token |\n|---|---|---|---|")
        for engine, label in ((LlamaCppEngine(), "xllamacpp"), (LlamaCppPython(), "llama-cpp-python")):
            if label not in args.engines:
                continue
            for threads in args.threads:
                ttft, rate = speed(engine, threads, args.tokens, args.repeat)
                print(f"| {label} | {threads} | {rate:.1f} | {ttft * 1000:.0f} ms |", flush=True)
    if args.only in (None, "layout"):
        print("\n| layout (demo fleet: 3 workers + reviewer) | threads each | one run (median) | batch of "
              f"{args.batch} at once | runs/min |\n|---|---|---|---|---|")
        # Each layout with the threads `up` gives it by default: (cores − 1) ÷ instances, at least 1.
        for label, count, slots in (("3 instances × 1 slot", 3, 1), ("1 instance × 3 slots", 1, 3),
                                    ("1 instance × 1 slot (in turn)", 1, 1)):
            layout(label, count, slots, default_threads(count), args.tokens, args.repeat, args.batch)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
