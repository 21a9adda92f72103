"""Does the ensemble earn its cost? Each strategy against the best single worker, on real small models.

    python benchmarks/ensemble_gain.py [--questions benchmarks/data/ensemble_questions.jsonl] [--limit 40]
                                       [--grace-s 0.5] [--json]

Fleet: the embedded demo fleet (three llama.cpp instances of SmolLM2-135M-Instruct, one worker each with the demo's
personas — system prompt, temperature, seed — and the reviewer on the first instance); no download at run time.
Questions: `benchmarks/data/ensemble_questions.jsonl`, 20 small arithmetic questions (scored as numbers) and 20
one-word facts (scored by `contains`), shipped with the repository.

1. Strategies: `batch --strategies synthesize,judge,council,vote` through the library (`Batch`): the workers once
   per question, each strategy reviewing the same answers. Per worker and per strategy: correct answers, accuracy,
   gain over the best worker; per strategy what its review cost (requests, tokens, model seconds).
2. Makespan with and without a quorum: the workers alone (no review), one question at a time, first with every
   worker waited for, then with `quorum: {min_answers: 2, grace_s: G}`; the wall time of each, and how many
   requests the quorum cut.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from parallama import FleetClient
from parallama.batch import Batch, read_records
from parallama.embedded import demo_instances, embedded_fleet
from parallama.fleet import Quorum
from parallama.strategies import STRATEGIES

HERE = Path(__file__).resolve().parent


async def compare(fleet, records) -> dict[str, Any]:
    lines: list[dict] = []
    async with FleetClient(fleet) as client:
        batch = Batch(client, records, write=lines.append, strategies=STRATEGIES)
        await batch.run()
        summary = batch.summary()
    assert summary.scoring is not None
    return {"wall_s": round(summary.wall_s, 1), "scoring": summary.scoring.to_dict(), "review_cost": summary.review_cost}


async def makespan(fleet, records) -> dict[str, Any]:
    lines: list[dict] = []
    async with FleetClient(fleet) as client:
        batch = Batch(client, records, write=lines.append, review=False, concurrency=1)
        started = time.perf_counter()
        await batch.run()
        wall = time.perf_counter() - started
        summary = batch.summary()
    cut = sum(1 for line in lines for w in line["workers"] if w["status"] == "cut")
    return {"wall_s": round(wall, 1), "cut": cut, "requests": sum(len(line["workers"]) for line in lines),
            "scoring": summary.scoring.to_dict() if summary.scoring else None}


def table(result: dict[str, Any], quorum: dict[str, Any], plain: dict[str, Any], grace_s: float) -> str:
    scoring, cost = result["scoring"], result["review_cost"]
    n = scoring["scored"]
    best = max(scoring["workers"], key=lambda w: w["correct"])
    rows = ["| answer | correct | accuracy | gain over the best worker | review requests | review tokens | review time |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for w in scoring["workers"]:
        rows.append(f"| {w['name']} | {w['correct']}/{n} | {w['accuracy']:.1%} | | | | |")
    for s in scoring["strategies"]:
        spent = cost.get(s["name"], {})
        rows.append(f"| `{s['name']}` | {s['correct']}/{n} | {s['accuracy']:.1%} | {s['gain'] * 100:+.1f} points "
                    f"({s['gain_prompts']:+d}) | {int(spent.get('review_requests', 0))} | "
                    f"{int(spent.get('review_tokens', 0))} | {spent.get('review_s', 0):.0f} s |")
    anyw = scoring["any_worker"]
    rows.append(f"| any worker right | {anyw['correct']}/{n} | {anyw['accuracy']:.1%} | | | | |")
    rows += ["", f"Best worker: {best['name']}. Strategies batch: {result['wall_s']} s in all.", "",
             "| workers alone, one question at a time | makespan | requests cut |", "|---|---:|---:|",
             f"| every worker waited for | {plain['wall_s']} s | 0 of {plain['requests']} |",
             f"| quorum: min_answers 2, grace_s {grace_s:g} | {quorum['wall_s']} s | "
             f"{quorum['cut']} of {quorum['requests']} |"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(HERE / "data" / "ensemble_questions.jsonl"))
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--grace-s", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    records = read_records(args.questions)[: args.limit]

    def ready(instance, seconds: float) -> None:
        print(f"llama.cpp ready on {instance.url} ({seconds:.1f} s)", file=sys.stderr)

    with demo_instances(on_ready=ready) as demo:
        fleet = embedded_fleet(demo.instances)
        print(f"{len(records)} questions, strategies {', '.join(STRATEGIES)} …", file=sys.stderr)
        result = asyncio.run(compare(fleet, records))
        print("makespan without a quorum …", file=sys.stderr)
        plain = asyncio.run(makespan(fleet, records))
        print("makespan with a quorum …", file=sys.stderr)
        quorum = asyncio.run(makespan(replace(fleet, quorum=Quorum(2, args.grace_s)), records))
    if args.json:
        print(json.dumps({"questions": len(records), "strategies": result, "makespan": {
            "plain": plain, "quorum": {**quorum, "min_answers": 2, "grace_s": args.grace_s}}}, indent=2))
    else:
        print(table(result, quorum, plain, args.grace_s))


if __name__ == "__main__":
    main()
