"""One llama.cpp instance answering 3 prompts one after another (as a single 1-slot server forces) against
3 instances answering them at once — on the embedded demo model, on this machine.

    python benchmarks/instances.py [--tokens 64] [--repeat 3]

Every answer is exactly --tokens long (the model's end tokens are biased away), so both modes do the same work.
The single instance gets all the cores as threads; the three share them (cores ÷ 3, at least 1 each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import parallama
from parallama.demo_model import ALIAS, END_TOKEN_IDS
from parallama.engines.instances import start_instances, stop_instances
from parallama.engines.llama_cpp import LlamaCppEngine

NO_END = {str(token): -100 for token in END_TOKEN_IDS}
PROMPTS = ["Why is the sky blue?", "Name three benefits of exercise.", "Explain what a CPU does."]


def timed_runs(instances, tokens: int, repeat: int) -> list[float]:
    from parallama.config import fleet_from_dict

    config = {"worker_agents": [
        {"name": f"prompt {i + 1}", "api_url": instances[i % len(instances)].api_url, "model": ALIAS,
         "system": PROMPTS[i], "options": {"num_predict": tokens, "temperature": 0.7}}
        for i in range(len(PROMPTS))]}
    fleet = fleet_from_dict(config).with_extra_body({"logit_bias": NO_END})
    parallama.run_sync("Answer the instruction in the system prompt.", fleet, review=False)  # warm-up
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = parallama.run_sync("Answer the instruction in the system prompt.", fleet, review=False)
        walls.append(time.perf_counter() - t0)
        assert all(w.ok and w.completion_tokens == tokens for w in result.workers), result.workers
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    engine = LlamaCppEngine()
    results = {}
    for label, count, threads in (("1 instance, 3 prompts in turn", 1, cores),
                                  ("3 instances, 3 prompts at once", 3, max(1, cores // 3))):
        report = start_instances(engine, count, base_port=18280, threads=threads)
        try:
            walls = timed_runs(report.instances, args.tokens, args.repeat)
        finally:
            stop_instances(report.instances)
        results[label] = walls
        print(f"{label:<34} threads/instance={threads}  makespan median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}, max {max(walls):.2f})")
    single, multi = (statistics.median(w) for w in results.values())
    print(f"speedup: {single / multi:.2f}× on {cores} cores, {args.tokens} tokens per answer")


if __name__ == "__main__":
    main()
