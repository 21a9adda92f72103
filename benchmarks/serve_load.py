"""`parallama serve` under load, on loopback only: N concurrent clients with one request each, against `serve` (its
own process) on fake model servers (another process).

    python benchmarks/serve_load.py [--clients 100] [--max-queue 8 100] [--sequential 20] [--history] [--json]
                                    [--metrics-ratio N]

Reports, per --max-queue: requests completed and refused (429), p50/p99 time to first byte and to done, that every
accepted request got exactly one complete answer (its own: each prompt carries an id the answer must echo, and no
other), the most requests any fake server had in flight, and serve's CPU. Then the time `serve` adds, measured one
request at a time: to the first byte of the answer and to the end, against a direct `FleetClient.run` on the same
fleet (to its reviewer's first token and its end).

`--metrics-ratio N`: each round N times with `/metrics` off (`--no-metrics`) and N times on (scraped every
`--scrape-every` seconds while the load runs, 2 s by default where Prometheus's default is 15 s, and the last scrape
checked against the answers), alternating, and the ratio of serve's CPU per request and of the p50 time to done, on
over off.

Bounded: at most --clients requests per round, each with a 120 s timeout; everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_fleet import FakeFleet  # noqa: E402

ID = re.compile(r"request-\d{4}")
WORKER_LATENCY, REVIEWER_LATENCY, TOKENS, SLOTS = 0.5, 0.3, 10, 4


def request_id(messages: list[dict]) -> str:
    found = ID.findall(messages[-1]["content"]) if messages else []
    return found[0] if found else "request-????"


def worker_answer(messages: list[dict]) -> str:
    return f"a worker's notes on {request_id(messages)} " + "word " * TOKENS


def reviewer_answer(messages: list[dict]) -> str:
    return final_for(request_id(messages))


def final_for(rid: str) -> str:
    return f"final answer for {rid}: " + " ".join(f"part{i}" for i in range(TOKENS))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def start_serve(config: Path, max_queue: int, *, history: bool, metrics: bool = True) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "parallama", "serve", "-c", str(config), "--port", "0",
                                "--max-queue", str(max_queue), *([] if history else ["--no-history"]),
                                *([] if metrics else ["--no-metrics"])],
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    match = re.search(r"Ollama API  (http://127\.0\.0\.1:\d+)", "".join(lines))
    if not match:
        process.kill()
        raise RuntimeError("serve did not start:\n" + "".join(lines))
    return process, match.group(1)


async def one_request(session, url: str, rid: str, api: str) -> dict:
    """Stream one chat; the times of its first byte, its first answer byte, its end; its answer."""
    started = time.perf_counter()
    body = {"model": "parallama", "messages": [{"role": "user", "content": f"Please answer {rid}."}], "stream": True}
    path = "/api/chat" if api == "ollama" else "/v1/chat/completions"
    out = {"id": rid, "api": api, "status": None, "first_byte_s": None, "first_content_s": None, "done_s": None,
           "content": "", "finals": 0}
    async with session.post(url + path, json=body) as response:
        out["status"] = response.status
        if response.status != 200:
            await response.read()
            out["retry_after"] = response.headers.get("Retry-After")
            return out
        async for line in response.content:
            now = time.perf_counter() - started
            if out["first_byte_s"] is None:
                out["first_byte_s"] = now
            text, final = parse_line(line, api)
            if text:
                if out["first_content_s"] is None:
                    out["first_content_s"] = now
                out["content"] += text
            if final:
                out["finals"] += 1
                out["done_s"] = now
    return out


def parse_line(line: bytes, api: str) -> tuple[str, bool]:
    """(answer text in the line, whether it is the final chunk)."""
    line = line.strip()
    if not line:
        return "", False
    if api == "ollama":
        chunk = json.loads(line)
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
        return chunk["message"].get("content", ""), bool(chunk.get("done"))
    if not line.startswith(b"data: "):
        return "", False
    data = line[6:]
    if data == b"[DONE]":
        return "", True
    chunk = json.loads(data)
    if "error" in chunk:
        raise RuntimeError(chunk["error"])
    if not chunk["choices"]:
        return "", False
    return chunk["choices"][0]["delta"].get("content") or "", False


async def load_round(url: str, clients: int, scrapes: list[str] | None = None, every_s: float = 2.0) -> list[dict]:
    """Every client's request at once; with `scrapes`, /metrics read every `every_s` meanwhile and once at the
    end."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def scrape() -> None:
            async with session.get(url + "/metrics") as response:
                assert response.status == 200, response.status
                scrapes.append(await response.text())  # type: ignore[union-attr]

        async def scraping() -> None:
            while True:
                await scrape()
                await asyncio.sleep(every_s)

        scraper = asyncio.ensure_future(scraping()) if scrapes is not None else None
        try:
            return await asyncio.gather(*(one_request(session, url, f"request-{i:04d}", "ollama" if i % 2 else "openai")
                                          for i in range(clients)))
        finally:
            if scraper is not None:
                scraper.cancel()
                await asyncio.gather(scraper, return_exceptions=True)
                await scrape()


def scraped_done(page: str) -> float:
    """Requests the last scrape counts as done, over every agent."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(page) for s in f.samples
               if s.name == "parallama_agent_requests_total" and s.labels.get("outcome") == "done")


def check_answers(results: list[dict]) -> list[str]:
    """Every accepted request: exactly its own complete answer, one final chunk."""
    problems = []
    for r in results:
        if r["status"] != 200:
            continue
        if r["finals"] != 1:
            problems.append(f"{r['id']}: {r['finals']} final chunks")
        if r["content"] != final_for(r["id"]):
            problems.append(f"{r['id']}: answer {r['content'][:60]!r}")
    return problems


async def sequential_overhead(url: str, config: dict, n: int) -> dict:
    """serve's added time, one request at a time: to the first answer byte and to the end."""
    import aiohttp

    from parallama import FleetClient
    from parallama.events import REVIEW, Delta

    served = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            served.append(await one_request(session, url, f"request-{9000 + i:04d}", "ollama"))
    direct = []
    async with FleetClient(config) as client:
        for i in range(n):
            marks: dict[str, float] = {}
            started = time.perf_counter()

            def sink(event) -> None:
                if type(event) is Delta and event.stage == REVIEW and "first" not in marks:
                    marks["first"] = time.perf_counter() - started

            await client.run(f"Please answer request-{8000 + i:04d}.", on_event=sink)
            direct.append((marks["first"], time.perf_counter() - started))
    serve_first = statistics.median(r["first_content_s"] for r in served)
    serve_done = statistics.median(r["done_s"] for r in served)
    direct_first = statistics.median(d[0] for d in direct)
    direct_done = statistics.median(d[1] for d in direct)
    return {"n": n, "serve_first_byte_ms": statistics.median(r["first_byte_s"] for r in served) * 1000,
            "serve_first_answer_ms": serve_first * 1000, "direct_first_answer_ms": direct_first * 1000,
            "added_to_first_answer_ms": (serve_first - direct_first) * 1000,
            "serve_done_ms": serve_done * 1000, "direct_done_ms": direct_done * 1000,
            "added_to_done_ms": (serve_done - direct_done) * 1000}


def metrics_ratio(rounds: list[dict]) -> dict:
    """Per --max-queue: the medians with /metrics on and off, and on over off (CPU per request, p50 to done)."""
    out = {}
    for max_queue in sorted({r["max_queue"] for r in rounds}):
        of = {flag: [r for r in rounds if r["max_queue"] == max_queue and r["metrics"] is flag] for flag in (True, False)}
        cpu = {flag: statistics.median(r["serve_cpu_ms_per_completed"] for r in rs) for flag, rs in of.items()}
        done = {flag: statistics.median(r.get("done_p50_ms", 0) for r in rs) for flag, rs in of.items()}
        out[str(max_queue)] = {"cpu_ms_per_request_on": cpu[True], "cpu_ms_per_request_off": cpu[False],
                               "cpu_ratio": cpu[True] / cpu[False] if cpu[False] else None,
                               "done_p50_ms_on": done[True], "done_p50_ms_off": done[False],
                               "done_p50_ratio": done[True] / done[False] if done[False] else None,
                               "runs_each": len(of[True])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--max-queue", type=int, nargs="+", default=[8, 100])
    parser.add_argument("--sequential", type=int, default=20, help="Requests for the overhead comparison.")
    parser.add_argument("--history", action="store_true", help="Keep the served runs in a (temporary) history.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--metrics-ratio", type=int, default=0, metavar="N",
                        help="Each round N times with /metrics off and N times on (scraped), alternating.")
    parser.add_argument("--scrape-every", type=float, default=2.0, metavar="SECONDS",
                        help="With --metrics-ratio: how often /metrics is read while the load runs (Prometheus: 15 s).")
    args = parser.parse_args()
    if not 1 <= args.clients <= 500:
        parser.error("--clients: 1 to 500")
    import psutil

    models = {"w": {"latency": WORKER_LATENCY, "tokens": TOKENS, "respond": "serve_load:worker_answer"},
              "rev": {"latency": REVIEWER_LATENCY, "tokens": TOKENS, "respond": "serve_load:reviewer_answer"}}
    report: dict = {"fleet": f"2 workers + reviewer on 3 fake servers × {SLOTS} slots (worker {WORKER_LATENCY} s, "
                             f"reviewer {REVIEWER_LATENCY} s, {TOKENS} tokens)", "rounds": []}
    with FakeFleet(servers=3, slots=SLOTS, models=models) as fakes, tempfile.TemporaryDirectory() as tmp:
        a, b, c = fakes.urls
        config = {"worker_agents": [{"api_url": a, "model": "w", "name": "A"}, {"api_url": b, "model": "w", "name": "B"}],
                  "reviewer_agent": {"api_url": c, "model": "rev", "name": "Rev"},
                  "servers": {url: {"parallel": SLOTS} for url in fakes.urls}}
        path = Path(tmp) / "fleet.json"
        path.write_text(json.dumps(config))
        os.environ["PARALLAMA_HOME"] = tmp
        variants = [True] if not args.metrics_ratio else [False, True] * args.metrics_ratio
        for max_queue in args.max_queue:
            for metrics in variants:
                process, url = start_serve(path, max_queue, history=args.history, metrics=metrics)
                try:
                    fakes.ask("reset")
                    cpu = psutil.Process(process.pid)
                    cpu_before = sum(cpu.cpu_times()[:2])
                    started = time.perf_counter()
                    scrapes: list[str] | None = [] if args.metrics_ratio and metrics else None
                    results = asyncio.run(load_round(url, args.clients, scrapes, args.scrape_every))
                    wall = time.perf_counter() - started
                    cpu_s = sum(cpu.cpu_times()[:2]) - cpu_before
                    accepted = [r for r in results if r["status"] == 200]
                    refused = [r for r in results if r["status"] == 429]
                    row = {"max_queue": max_queue, "clients": args.clients, "completed": len(accepted),
                           "refused_429": len(refused), "other": len(results) - len(accepted) - len(refused),
                           "retry_after_s": sorted({int(r["retry_after"]) for r in refused if r.get("retry_after")}),
                           "wall_s": wall, "serve_cpu_s": cpu_s,
                           "serve_cpu_ms_per_completed": cpu_s / max(1, len(accepted)) * 1000,
                           "max_in_flight": fakes.ask("max_in_flight"), "answer_problems": check_answers(results),
                           "metrics": metrics}
                    if scrapes:
                        row["scrapes"] = len(scrapes)
                        done = scraped_done(scrapes[-1])
                        if done != 3 * len(accepted):  # two workers and the reviewer per answered request
                            row["answer_problems"].append(f"/metrics counts {done:g} requests done, "
                                                          f"not {3 * len(accepted)}")
                    if accepted:
                        for key in ("first_byte_s", "done_s"):
                            values = [r[key] for r in accepted]
                            row[f"{key[:-2]}_p50_ms"] = percentile(values, 50) * 1000
                            row[f"{key[:-2]}_p99_ms"] = percentile(values, 99) * 1000
                    if refused:
                        row["refused_first_byte_p50_ms"] = 0.0
                    report["rounds"].append(row)
                    if max_queue == args.max_queue[-1] and args.sequential and metrics and "overhead" not in report:
                        report["overhead"] = asyncio.run(sequential_overhead(url, config, args.sequential))
                finally:
                    process.terminate()
                    process.wait(15)
        if args.metrics_ratio:
            report["metrics_ratio"] = metrics_ratio(report["rounds"])
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(report["fleet"])
    print("max-queue  clients  completed  429  other  first byte p50/p99   done p50/p99        serve CPU/req  "
          "in flight  answers")
    for r in report["rounds"]:
        answers = "all complete, own, once" if not r["answer_problems"] else f"{len(r['answer_problems'])} WRONG"
        if "metrics_ratio" in report:
            answers += "; /metrics " + (f"on, {r.get('scrapes', 0)} scrapes" if r["metrics"] else "off")
        print(f"{r['max_queue']:>9}  {r['clients']:>7}  {r['completed']:>9}  {r['refused_429']:>3}  {r['other']:>5}  "
              f"{r.get('first_byte_p50_ms', 0):7.1f}/{r.get('first_byte_p99_ms', 0):7.1f} ms  "
              f"{r.get('done_p50_ms', 0):7.0f}/{r.get('done_p99_ms', 0):7.0f} ms  "
              f"{r['serve_cpu_ms_per_completed']:8.1f} ms  {max(r['max_in_flight']):>9}  {answers}")
    for max_queue, m in report.get("metrics_ratio", {}).items():
        print(f"/metrics on vs off, max-queue {max_queue} (median of {m['runs_each']} each): serve CPU "
              f"{m['cpu_ms_per_request_on']:.2f} vs {m['cpu_ms_per_request_off']:.2f} ms/request "
              f"(ratio {m['cpu_ratio']:.3f}); p50 done {m['done_p50_ms_on']:.0f} vs {m['done_p50_ms_off']:.0f} ms "
              f"(ratio {m['done_p50_ratio']:.3f})")
    if "overhead" in report:
        o = report["overhead"]
        print(f"one at a time ({o['n']}): first byte {o['serve_first_byte_ms']:.1f} ms; first answer byte "
              f"{o['serve_first_answer_ms']:.1f} ms via serve vs {o['direct_first_answer_ms']:.1f} ms direct "
              f"(+{o['added_to_first_answer_ms']:.1f} ms); done {o['serve_done_ms']:.1f} vs "
              f"{o['direct_done_ms']:.1f} ms (+{o['added_to_done_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
