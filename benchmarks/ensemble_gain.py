"""Does the ensemble earn its cost? Each strategy against the best single worker, on real small models, with a 95 %
paired-bootstrap interval on the gain.

    python benchmarks/ensemble_gain.py [--questions benchmarks/data/ensemble_200.jsonl] [--limit 200]
                                       [--merging-limit 40] [--samples-max 3] [--settle 0.5]
                                       [--lines out.jsonl] [--json] [--makespan]

Fleet: the embedded demo fleet (SmolLM2-135M-Instruct on llama.cpp's server, a slot per worker, each worker with one
of the demo's personas — system prompt, temperature, seed — and the reviewer on the first), the workers' answers capped at
`--max-tokens` (64); the voting strategies run without the reviewer (a vote with no majority keeps the first
answer). No download at run time.
Questions: `benchmarks/data/ensemble_200.jsonl` (made by `make_ensemble_200.py`: 100 scored as numbers, 100 by their
short answer), shipped with the repository.

1. The strategies that vote (`vote`, `confidence` when the build has it): `batch --strategies` through the library
   (`Batch`) over `--limit` questions, with `review.samples` set, so each is compared over the workers' first answers
   and as `name+samples` over the extra samples asked while the workers disagreed.
2. The strategies that need the reviewer (`synthesize`, `judge`, `council`) over the first `--merging-limit`
   questions only (they cost one to four model calls per question more; on a busy 2-core machine 200 questions of
   them take hours), in a table of their own with its own best worker.
Per worker, per strategy: correct answers, accuracy, gain over the best worker with a 95 % paired-bootstrap interval
(questions resampled, 2,000 times), and what it cost beyond the workers' first answers (requests, tokens, model
seconds). The oracle is "some worker's first answer was right". Where the workers' answers carry token logprobs, the
AUROC with which each confidence measure separates right from wrong first answers.
3. `--makespan`: the workers alone, one question at a time, with and without `quorum: {min_answers: 2, grace_s: G}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from parallama import FleetClient
from parallama.batch import Batch, read_records
from parallama.embedded import demo_instances, embedded_fleet
from parallama.fleet import Quorum, Samples
from parallama.review import STRATEGIES, votes_over_samples

HERE = Path(__file__).resolve().parent
RESAMPLES = 2000


async def batch_lines(fleet, records, strategies: Sequence[str]) -> tuple[list[dict], dict[str, Any]]:
    """Every result line of `batch --strategies` over `records`, and its per-strategy cost; a dot on stderr per
    question done, a count every ten."""
    lines: list[dict] = []

    def write(line: dict) -> None:
        lines.append(line)
        print("." if len(lines) % 10 else f"{len(lines)}", end="", file=sys.stderr, flush=True)

    async with FleetClient(fleet) as client:
        batch = Batch(client, records, write=write, strategies=tuple(strategies))
        await batch.run()
        summary = batch.summary()
    return lines, summary.review_cost


def interval(diffs: list[int], rng: random.Random) -> tuple[float, float]:
    """The 95 % paired-bootstrap interval of the mean of `diffs` (per question: strategy right − worker right)."""
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(RESAMPLES))
    return means[int(0.025 * RESAMPLES)], means[int(0.975 * RESAMPLES) - 1]


def auroc(scores: list[tuple[float, bool]]) -> float | None:
    """The chance that a right answer scores above a wrong one (ties count half); None without both kinds."""
    right = [s for s, ok in scores if ok]
    wrong = [s for s, ok in scores if not ok]
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def token_logprobs(worker: dict) -> list[float]:
    return [t["logprob"] for t in worker.get("logprobs") or [] if isinstance(t, dict)
            and isinstance(t.get("logprob"), (int, float)) and math.isfinite(t["logprob"])]


def lowest_group(values: list[float], window: int) -> float:
    """DeepConf's lowest group confidence: the lowest mean over a sliding window of `window` tokens."""
    if len(values) <= window:
        return sum(values) / len(values)
    sums = [sum(values[i:i + window]) for i in range(len(values) - window + 1)]
    return min(sums) / window


def measures(lines: list[dict]) -> dict[str, Any]:
    """How well each confidence measure separates right from wrong first answers (AUROC), over the answers that
    came with logprobs."""
    found: dict[str, list[tuple[float, bool]]] = {"mean token logprob": [], "lowest 8-token group": [],
                                                   "lowest 16-token group": [], "last token": []}
    for line in lines:
        verdicts = (line.get("score") or {}).get("workers") or {}
        first = (line.get("earlier_rounds") or [line["workers"]])[0]
        for worker in first:
            values = token_logprobs(worker)
            right = verdicts.get(worker["name"])
            if not values or right is None:
                continue
            found["mean token logprob"].append((sum(values) / len(values), right))
            found["lowest 8-token group"].append((lowest_group(values, 8), right))
            found["lowest 16-token group"].append((lowest_group(values, 16), right))
            found["last token"].append((values[-1], right))
    return {name: {"answers": len(scores), "auroc": auroc(scores)} for name, scores in found.items()}


def analyse(lines: list[dict], cost: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Per worker and per strategy: correct, accuracy, gain over the best worker with its interval, cost."""
    scored = [line for line in lines if isinstance(line.get("score"), dict)]
    n = len(scored)
    names = list(scored[0]["score"]["workers"]) if scored else []
    strategies = list(scored[0]["score"].get("strategies") or {}) if scored else []
    right = {name: [bool(line["score"]["workers"].get(name)) for line in scored] for name in names}
    best = max(names, key=lambda name: sum(right[name])) if names else None
    workers_tokens = sum((w.get("prompt_tokens") or 0) + (w.get("completion_tokens") or 0)
                         for line in scored for w in (line.get("earlier_rounds") or [line["workers"]])[0])
    workers_s = sum(w.get("elapsed_s") or 0 for line in scored for w in (line.get("earlier_rounds") or
                                                                          [line["workers"]])[0])
    out: dict[str, Any] = {
        "questions": n, "best_worker": best,
        "workers": [{"name": name, "correct": sum(right[name]), "accuracy": sum(right[name]) / n if n else None}
                    for name in names],
        "oracle": sum(any(right[name][i] for name in names) for i in range(n)),
        "workers_cost": {"requests": sum(len((line.get("earlier_rounds") or [line["workers"]])[0]) for line in scored),
                         "tokens": workers_tokens, "seconds": round(workers_s, 1)},
        "strategies": []}
    for name in strategies:
        verdicts = [bool((line["score"].get("strategies") or {}).get(name)) for line in scored]
        diffs = [int(v) - int(b) for v, b in zip(verdicts, right[best])] if best else []
        low, high = interval(diffs, rng) if diffs else (None, None)
        spent = cost.get(name, {})
        out["strategies"].append({
            "name": name, "correct": sum(verdicts), "accuracy": sum(verdicts) / n if n else None,
            "gain": sum(diffs) / n if n else None, "gain_low": low, "gain_high": high,
            "won": sum(d > 0 for d in diffs), "lost": sum(d < 0 for d in diffs),
            "extra_requests": int(spent.get("review_requests", 0) + spent.get("sample_requests", 0)),
            "extra_tokens": int(spent.get("review_tokens", 0) + spent.get("sample_tokens", 0)),
            "extra_s": round(spent.get("review_s", 0) + spent.get("sample_s", 0), 1)})
    out["confidence_measures"] = measures(scored)
    return out


def table(result: dict[str, Any]) -> str:
    n = result["questions"]
    rows = ["| answer | correct | accuracy | gain over the best worker (95 % interval) | won / lost | "
            "extra requests | extra tokens | extra model time |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for w in result["workers"]:
        mark = " (best)" if w["name"] == result["best_worker"] else ""
        rows.append(f"| {w['name']}{mark} | {w['correct']}/{n} | {w['accuracy']:.1%} | | | | | |")
    for s in result["strategies"]:
        rows.append(f"| `{s['name']}` | {s['correct']}/{n} | {s['accuracy']:.1%} | {s['gain'] * 100:+.1f} points "
                    f"({s['gain_low'] * 100:+.1f} to {s['gain_high'] * 100:+.1f}) | {s['won']} / {s['lost']} | "
                    f"{s['extra_requests']} | {s['extra_tokens']} | {s['extra_s']:.0f} s |")
    rows.append(f"| some worker right (oracle) | {result['oracle']}/{n} | {result['oracle'] / n:.1%} | "
                f"{(result['oracle'] - max(w['correct'] for w in result['workers'])) / n * 100:+.1f} points | | | | |")
    cost = result["workers_cost"]
    rows.append("")
    rows.append(f"The workers' first answers: {cost['requests']} requests, {cost['tokens']} tokens, "
                f"{cost['seconds']:.0f} s of model time (every strategy shares them).")
    measured = {k: v for k, v in result["confidence_measures"].items() if v["answers"]}
    if measured:
        rows += ["", "| confidence measure (first answers) | answers | AUROC right vs wrong |", "|---|---:|---:|"]
        rows += [f"| {k} | {v['answers']} | {v['auroc']:.3f} |" if v["auroc"] is not None else
                 f"| {k} | {v['answers']} | — |" for k, v in measured.items()]
    return "\n".join(rows)


async def makespan(fleet, records) -> dict[str, Any]:
    lines: list[dict] = []
    async with FleetClient(fleet) as client:
        batch = Batch(client, records, write=lines.append, review=False, concurrency=1)
        started = time.perf_counter()
        await batch.run()
        wall = time.perf_counter() - started
    cut = sum(1 for line in lines for w in line["workers"] if w["status"] == "cut")
    return {"wall_s": round(wall, 1), "cut": cut, "requests": sum(len(line["workers"]) for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(HERE / "data" / "ensemble_200.jsonl"))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--merging-limit", type=int, default=40,
                        help="questions for synthesize, judge and council (0: leave them out)")
    parser.add_argument("--samples-max", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="the workers' num_predict (the demo's 256 lets a persona that gives an example write "
                             "on; the answers here are a word or a number)")
    parser.add_argument("--lines", help="also write every result line here (JSON lines)")
    parser.add_argument("--no-voting", action="store_true", help="only the strategies that need the reviewer")
    parser.add_argument("--grace-s", type=float, default=0.5)
    parser.add_argument("--makespan", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    records = read_records(args.questions)[: args.limit]
    voting = [s for s in STRATEGIES if votes_over_samples(s)]
    merging = [s for s in STRATEGIES if not votes_over_samples(s)]
    rng = random.Random(29)

    def ready(instance, seconds: float) -> None:
        print(f"llama.cpp ready on {instance.url} ({seconds:.1f} s)", file=sys.stderr)

    report: dict[str, Any] = {"questions": len(records), "samples": {"max": args.samples_max, "settle": args.settle}}
    with demo_instances(on_ready=ready) as demo:
        fleet = embedded_fleet(demo.instances)
        fleet = replace(fleet, workers=tuple(replace(a, options={**a.options, "num_predict": args.max_tokens})
                                             for a in fleet.workers))
        # The voting strategies need no reviewer: without one, a vote with no majority keeps the first answer
        # instead of asking the reviewer to synthesize (which the merging table measures on its own).
        sampled = replace(fleet, reviewers=(), samples=Samples(args.samples_max, args.settle))
        if not args.no_voting:
            print(f"{len(records)} questions, strategies {', '.join(voting)} with and without samples …",
                  file=sys.stderr)
            started = time.perf_counter()
            lines, cost = asyncio.run(batch_lines(sampled, records, voting))
            report["voting"] = {**analyse(lines, cost, rng), "wall_s": round(time.perf_counter() - started, 1)}
            if args.lines:
                Path(args.lines).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        if args.merging_limit:
            some = records[: args.merging_limit]
            print(f"{len(some)} questions, strategies {', '.join(merging)} …", file=sys.stderr)
            started = time.perf_counter()
            merged, cost = asyncio.run(batch_lines(fleet, some, merging))
            report["merging"] = {**analyse(merged, cost, rng), "wall_s": round(time.perf_counter() - started, 1)}
        if args.makespan:
            report["makespan"] = {"plain": asyncio.run(makespan(fleet, records)),
                                  "quorum": asyncio.run(makespan(replace(fleet, quorum=Quorum(2, args.grace_s)),
                                                                 records))}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    if "voting" in report:
        print(f"### {report['voting']['questions']} questions: the strategies that vote (samples: max "
              f"{args.samples_max}, settle {args.settle:g}; {report['voting']['wall_s']:.0f} s)\n")
        print(table(report["voting"]))
    if "merging" in report:
        print(f"\n### The first {report['merging']['questions']} questions: the strategies that need the reviewer "
              f"({report['merging']['wall_s']:.0f} s)\n")
        print(table(report["merging"]))
    if "makespan" in report:
        plain, quorum = report["makespan"]["plain"], report["makespan"]["quorum"]
        print(f"\nmakespan, one question at a time: {plain['wall_s']} s waiting for every worker; {quorum['wall_s']} s "
              f"with quorum min_answers 2, grace_s {args.grace_s:g} ({quorum['cut']} of {quorum['requests']} cut)")


if __name__ == "__main__":
    main()
