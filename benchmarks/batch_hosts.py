"""One `batch` job over 1, 2 and 4 worker processes (each with its own PARALLAMA_HOME, as on its own host) on a
`redis-server` started here, against the single-host batch over the same prompts.

    python benchmarks/batch_hosts.py [--prompts 200] [--latency 0.5] [--slots 4] [--workers 1,2,4] [--json]

Fleet: three fake Ollama servers with `--slots` slots each, in another process: two workers (one on each of the
first two servers) and the reviewer on the third; every request streams 5 tokens over `--latency` seconds.

- shared fleet: every worker process uses the same three servers (their slots shared through the job's Redis), so
  prompts/min is bounded by the fleet, not by the workers: what is measured is the job's overhead against the
  single-host batch (`parallama batch` without `--queue`, its slots shared through the same Redis for a fair
  count of Redis commands, and with the machine's own slots).
- own servers: each worker process has its own three servers (as hosts with their own GPUs): prompts/min should
  grow with the workers.

Per row: prompts/min from the writer's summary (first prompt to last line written), ÷ the fleet's bound, Redis
commands per prompt (INFO commandstats between runs, the commands the Lua scripts run included; all of them, the
slots' too, and the streams' `x*` alone), CPU per prompt of every parallama process of the row, and the makespan
against the single-host batch. The machine is shared: run it `nice`, and read the ratios inside one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fleet import FakeFleet  # noqa: E402
from shared_slots import RedisServer  # noqa: E402


def config(urls: list[str], slots: int) -> dict[str, Any]:
    return {"worker_agents": [{"api_url": urls[0] + "/api/chat", "model": "m", "name": "A"},
                              {"api_url": urls[1] + "/api/chat", "model": "m", "name": "B"}],
            "reviewer_agent": {"api_url": urls[2] + "/api/chat", "model": "m", "name": "R"},
            "servers": {url: {"parallel": slots} for url in urls[:3]}}


def commands(redis_url: str) -> dict[str, int]:
    import redis

    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}


def reset(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    client.flushdb()


def process(args: list[str], home: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    home.mkdir(parents=True, exist_ok=True)
    err = open(home / "stderr.txt", "w")
    return subprocess.Popen([sys.executable, "-m", "parallama", "batch", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=err, text=True,
                            env={**os.environ, "PARALLAMA_HOME": str(home), **(env or {})})


def wait_said(home: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in (home / "stderr.txt").read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{home}: never said {text!r}: {(home / 'stderr.txt').read_text()}")
        time.sleep(0.05)


def run_job(work: Path, redis_url: str, configs: list[Path], prompts: Path, tag: str) -> dict[str, Any]:
    """The writer (with configs[0]) and len(configs) - 1 joined workers; the writer's summary and Redis's count."""
    reset(redis_url)
    cpu = children_cpu()
    joined = []
    for n, cfg in enumerate(configs[1:], 1):
        home = work / f"{tag}-w{n}"
        joined.append(process(["--join", redis_url, "-c", str(cfg)], home, work))
        wait_said(home, "waiting for a batch job")
    out = work / f"{tag}.jsonl"
    writer = process([str(prompts), "-o", str(out), "-c", str(configs[0]), "--queue", redis_url, "--json", "-q"],
                     work / f"{tag}-w0", work)
    stdout, _ = writer.communicate(timeout=600)
    for worker in joined:
        worker.wait(120)
    if writer.returncode != 0:
        raise RuntimeError(f"{tag}: writer exit {writer.returncode}: {(work / f'{tag}-w0' / 'stderr.txt').read_text()}")
    return {"summary": json.loads(stdout), "commands": commands(redis_url), "cpu_s": children_cpu() - cpu}


def run_single(work: Path, redis_url: str, cfg: Path, prompts: Path) -> dict[str, Any]:
    reset(redis_url)
    cpu = children_cpu()
    out = work / "single.jsonl"
    done = process([str(prompts), "-o", str(out), "-c", str(cfg), "--json", "-q"], work / "single", work,
                   env={"PARALLAMA_SLOT_STORE": redis_url})
    stdout, _ = done.communicate(timeout=600)
    if done.returncode != 0:
        raise RuntimeError("single-host batch failed: " + (work / "single" / "stderr.txt").read_text())
    return {"summary": json.loads(stdout), "commands": commands(redis_url), "cpu_s": children_cpu() - cpu}


def children_cpu() -> float:
    """CPU seconds (user + system) of the parallama processes this benchmark waited for (the fake fleet and Redis,
    still running, are not among them): robust to a busy machine, unlike wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def row(name: str, result: dict[str, Any], prompts: int, bound_per_min: float, single_wall: float | None) -> dict:
    summary = result["summary"]
    calls = {k: v for k, v in result["commands"].items() if k not in ("config|resetstat", "flushdb", "info")}
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return {"setup": name, "prompts_per_min": summary["prompts_per_min"],
            "of_bound": round(summary["prompts_per_min"] / bound_per_min, 3), "wall_s": summary["wall_s"],
            "vs_single": round(summary["wall_s"] / single_wall, 3) if single_wall else None,
            "redis_commands_per_prompt": round(sum(calls.values()) / prompts, 1),
            "stream_commands_per_prompt": round(sum(v for k, v in calls.items() if k.startswith("x")) / prompts, 1),
            "cpu_ms_per_prompt": round(result["cpu_s"] / prompts * 1000, 1),
            "top_commands": {k: round(v / prompts, 2) for k, v in top},
            "workers": {w: v["done"] for w, v in (summary.get("workers") or {}).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    counts = [int(n) for n in options.workers.split(",")]
    behaviour = {"m": {"latency": options.latency, "tokens": 5}}
    bound = options.slots / options.latency * 60  # each server works `slots` requests per `latency`
    rows = []
    with tempfile.TemporaryDirectory(prefix="parallama-hosts-") as tmp, RedisServer() as redis_server:
        work = Path(tmp)
        redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
        prompts = work / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n"
                                   for i in range(options.prompts)))
        with FakeFleet(servers=3 * max(counts), slots=options.slots, models=behaviour) as fleet:
            own = []
            for n in range(max(counts)):
                path = work / f"fleet{n}.json"
                path.write_text(json.dumps(config(fleet.urls[3 * n:3 * n + 3], options.slots)))
                own.append(path)
            single = run_single(work, redis_url, own[0], prompts)
            single_wall = single["summary"]["wall_s"]
            rows.append(row("single host (no --queue)", single, options.prompts, bound, single_wall))
            for n in counts:
                result = run_job(work, redis_url, [own[0]] * n, prompts, f"shared{n}")
                rows.append(row(f"{n} worker(s), shared fleet", result, options.prompts, bound, single_wall))
            for n in counts[1:]:
                result = run_job(work, redis_url, own[:n], prompts, f"own{n}")
                rows.append(row(f"{n} worker(s), own servers each", result, options.prompts, bound * n,
                                single_wall))
    if options.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{options.prompts} prompts; 3 servers × {options.slots} slots per fleet, {options.latency} s a request; "
          f"bound {bound:.0f} prompts/min per fleet")
    print(f"{'setup':34} {'prompts/min':>11} {'÷ bound':>8} {'wall s':>7} {'÷ single':>9} {'cmds/prompt':>12} "
          f"{'x*/prompt':>10} {'CPU ms/prompt':>14}  per worker")
    for r in rows:
        vs = f"{r['vs_single']:.3f}" if r["vs_single"] is not None else "—"
        print(f"{r['setup']:34} {r['prompts_per_min']:11.1f} {r['of_bound']:8.3f} {r['wall_s']:7.2f} {vs:>9} "
              f"{r['redis_commands_per_prompt']:12.1f} {r['stream_commands_per_prompt']:10.1f} "
              f"{r['cpu_ms_per_prompt']:14.1f}  {' '.join(str(v) for v in r['workers'].values())}")
    for r in rows:
        print(f"  {r['setup']}: " + ", ".join(f"{k} {v}" for k, v in r["top_commands"].items()))


if __name__ == "__main__":
    main()
