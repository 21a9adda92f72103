"""parallama against what a user would write instead, on the same fan-out + reviewer job, against fake Ollama
servers in another process:

  - a loop over `ollama.Client.chat` (one request after another),
  - `asyncio.gather` over `ollama.AsyncClient.chat`,
  - `asyncio.gather` over LiteLLM's `acompletion` (ollama_chat/ provider),
  - parallama.run.

    pip install -r benchmarks/requirements.txt
    python benchmarks/peers.py [--repeat 3] [--json]

Each contender runs in its own fresh process (client CPU and peak RSS are its own; peak RSS includes imports).
Every request in every scenario takes at most 1 s on its server, so any timeout is spurious: it comes from the
client counting the time a request waits in the server's queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPT = "Why is the sky blue?"
CONTENDERS = ("parallama", "ollama-loop", "ollama-gather", "litellm-gather")

# name: (servers, slots per server, workers per server, worker latency s, tokens, timeout s, missing model?)
SCENARIOS = {
    "3 workers / 3 servers": dict(servers=3, slots=1, per_server=1, latency=1.0, tokens=50, timeout=60, missing=False),
    "3 workers / one 1-slot server, timeout 1.5 s": dict(servers=1, slots=1, per_server=3, latency=1.0, tokens=50,
                                                         timeout=1.5, missing=False),
    "64 workers / 8 servers × 8 slots": dict(servers=8, slots=8, per_server=8, latency=1.0, tokens=100, timeout=60,
                                             missing=False),
    "3 workers / 3 servers, one model missing": dict(servers=3, slots=1, per_server=1, latency=1.0, tokens=50,
                                                     timeout=60, missing=True),
}
REVIEW_LATENCY = 0.5


def jobs(scenario: dict, urls: list[str]) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """(url, model) per worker, and the reviewer's; the last worker asks for a missing model when told."""
    workers = [(url, "worker") for url in urls for _ in range(scenario["per_server"])]
    if scenario["missing"]:
        workers[-1] = (workers[-1][0], "not-pulled")
    return workers, (urls[0], "reviewer")


def review_prompt(answers: list[str]) -> str:
    return PROMPT + "\n\n" + "\n\n".join(f"Answer {i + 1}:\n{a}" for i, a in enumerate(answers))


# ---------------------------------------------------------------- contenders (as a user would write them)

async def run_parallama(scenario, urls):
    import parallama

    workers, (rurl, rmodel) = jobs(scenario, urls)
    config = {"reviewer_agent": {"api_url": rurl, "model": rmodel},
              "worker_agents": [{"api_url": u, "model": m, "timeout": scenario["timeout"]} for u, m in workers],
              "servers": {u: {"parallel": scenario["slots"]} for u in urls}}
    result = await parallama.run(PROMPT, config)
    return {"answers": sum(w.ok for w in result.workers),
            "timeouts": sum(w.status == "timeout" for w in result.workers),
            "final": result.final is not None,
            "on_missing": next((w.error for w in result.workers if w.error_kind == "model_not_found"), None)}


def run_ollama_loop(scenario, urls):
    import ollama

    workers, (rurl, rmodel) = jobs(scenario, urls)
    answers, timeouts = [], 0
    for url, model in workers:
        client = ollama.Client(host=url, timeout=scenario["timeout"])
        try:
            answers.append("".join(c["message"]["content"] for c in client.chat(
                model=model, messages=[{"role": "user", "content": PROMPT}], stream=True)))
        except Exception as exc:  # a user's loop: a timeout is counted, anything else ends the run
            if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                timeouts += 1
                continue
            raise
    client = ollama.Client(host=rurl, timeout=scenario["timeout"])
    "".join(c["message"]["content"] for c in client.chat(
        model=rmodel, messages=[{"role": "user", "content": review_prompt(answers)}], stream=True))
    return {"answers": len(answers), "timeouts": timeouts, "final": bool(answers)}


async def run_ollama_gather(scenario, urls):
    import ollama

    workers, (rurl, rmodel) = jobs(scenario, urls)

    async def one(url, model):
        client = ollama.AsyncClient(host=url, timeout=scenario["timeout"])
        stream = await client.chat(model=model, messages=[{"role": "user", "content": PROMPT}], stream=True)
        return "".join([c["message"]["content"] async for c in stream])

    results = await asyncio.gather(*(one(u, m) for u, m in workers), return_exceptions=True)
    answers = [r for r in results if isinstance(r, str)]
    errors = [r for r in results if isinstance(r, BaseException)]
    timeouts = sum("timeout" in type(e).__name__.lower() or "timed out" in str(e).lower() for e in errors)
    others = [e for e in errors if not ("timeout" in type(e).__name__.lower() or "timed out" in str(e).lower())]
    if answers:
        await one(rurl, rmodel)
    return {"answers": len(answers), "timeouts": timeouts, "final": bool(answers),
            "on_missing": f"{type(others[0]).__name__}: {others[0]}" if others else None}


async def run_litellm_gather(scenario, urls):
    import litellm

    litellm.suppress_debug_info = True
    workers, (rurl, rmodel) = jobs(scenario, urls)

    async def one(url, model, content=PROMPT):
        response = await litellm.acompletion(model=f"ollama_chat/{model}", api_base=url, stream=True,
                                             messages=[{"role": "user", "content": content}],
                                             timeout=scenario["timeout"])
        return "".join([(c.choices[0].delta.content or "") async for c in response])

    results = await asyncio.gather(*(one(u, m) for u, m in workers), return_exceptions=True)
    answers = [r for r in results if isinstance(r, str)]
    errors = [r for r in results if isinstance(r, BaseException)]
    timeouts = sum("timeout" in type(e).__name__.lower() for e in errors)
    others = [e for e in errors if "timeout" not in type(e).__name__.lower()]
    if answers:
        await one(rurl, rmodel, review_prompt(answers))
    return {"answers": len(answers), "timeouts": timeouts, "final": bool(answers),
            "on_missing": f"{type(others[0]).__name__}: {str(others[0])[:120]}" if others else None}


def child(contender: str, scenario_name: str, urls: list[str]) -> None:
    scenario = SCENARIOS[scenario_name]
    run = {"parallama": run_parallama, "ollama-loop": run_ollama_loop, "ollama-gather": run_ollama_gather,
           "litellm-gather": run_litellm_gather}[contender]
    # Imports happen before the clock: the job is measured, not how heavy each library is to load
    # (that shows in peak RSS).
    if contender == "parallama":
        import parallama
        from parallama.backends import ollama as _backend  # noqa: F401

        parallama.run  # noqa: B018  (resolves the lazy export: runner, config, aiohttp)
    elif contender == "litellm-gather":
        import litellm  # noqa: F401
    else:
        import ollama  # noqa: F401
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        outcome = asyncio.run(run(scenario, urls)) if asyncio.iscoroutinefunction(run) else run(scenario, urls)
    except Exception as exc:
        outcome = {"answers": 0, "timeouts": 0, "final": False, "aborted": f"{type(exc).__name__}: {str(exc)[:120]}"}
    outcome.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - cpu0)
    print(json.dumps(outcome))


# ---------------------------------------------------------------- parent

def ideal_s(scenario: dict) -> float:
    waves = -(-scenario["per_server"] // scenario["slots"])
    return waves * scenario["latency"] + REVIEW_LATENCY


def measure(contender: str, name: str, urls: list[str]) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", contender, name, json.dumps(urls)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], json.loads(args.child[2]))
        return
    from fake_fleet import FakeFleet

    rows = []
    for name, scenario in SCENARIOS.items():
        models = {"worker": {"latency": scenario["latency"], "tokens": scenario["tokens"]},
                  "reviewer": {"latency": REVIEW_LATENCY, "tokens": 50}}
        with FakeFleet(servers=scenario["servers"], slots=scenario["slots"], models=models) as fleet:
            for contender in CONTENDERS:
                runs = [measure(contender, name, fleet.urls) for _ in range(args.repeat)]
                row = {"scenario": name, "contender": contender,
                       "makespan_over_ideal": statistics.median(r["wall_s"] for r in runs) / ideal_s(scenario),
                       "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                       "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                       "spurious_timeouts": max(r["timeouts"] for r in runs),
                       "answers": min(r["answers"] for r in runs),
                       "final": all(r["final"] for r in runs),
                       "note": runs[-1].get("aborted") or (runs[-1].get("on_missing") if scenario["missing"] else None)}
                rows.append(row)
                print(f"{name:<46} {contender:<15} ÷ideal {row['makespan_over_ideal']:5.2f}  cpu {row['cpu_s']:6.3f} s  "
                      f"rss {row['peak_rss_mb']:6.0f} MB  timeouts {row['spurious_timeouts']:2d}  "
                      f"answers {row['answers']:2d}  final {'yes' if row['final'] else 'no '}  {row['note'] or ''}",
                      file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
