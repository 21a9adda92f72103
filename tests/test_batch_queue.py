"""`batch --queue` / `batch --join`: one batch job over several processes with their own `PARALLAMA_HOME` (as on
several hosts), on a real `redis-server` and fake model servers that count every request in flight until its last
line. A worker killed mid-run, a poison prompt, the writing process killed and resumed, throughput over two hosts,
and bad queue URLs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import needs_redis, read_lines, write_config, write_jsonl
from fakes import FakeServer, free_port

pytestmark = needs_redis


class Host:
    """A `parallama batch` process with its own home (as on its own host), its output in files."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.name = name
        home = tmp_path / f"home-{name}"
        home.mkdir(exist_ok=True)
        self.stdout_path, self.stderr_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        env = {**os.environ, "PARALLAMA_HOME": str(home), "XDG_STATE_HOME": str(home / "xdg-state")}
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "parallama", "batch", *args], stdout=out,
                                            stderr=err, env=env, cwd=tmp_path)

    @property
    def consumer(self) -> str:
        return f"{socket.gethostname()}:{self.process.pid}"

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"{self.name} did not end: {self.stderr()[-2000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_for(condition, what: str, timeout: float = 120.0, every: float = 0.05):  # a bound on hanging
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def lines_in(path: Path) -> list[dict]:
    """The whole lines of an output being written (a last one cut short is not counted)."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").split("\n")[:-1]:
        if raw.strip():
            out.append(json.loads(raw))
    return out


def job_of(host: Host) -> str:
    """The job name the writing process printed."""
    def printed() -> str | None:
        for line in host.stderr().splitlines():
            if line.startswith("job ") and " on redis://" in line:
                return line.split()[1]
        if host.process.poll() is not None:
            raise AssertionError(f"{host.name} ended: {host.stderr()}")
        return None
    return wait_for(printed, "the job's name")


def prompts(n: int, **extra) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"question {i}", **extra} for i in range(n)]


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def fleet(tmp_path: Path, name: str, work: FakeServer, review: FakeServer | None = None, slots: int = 4) -> Path:
    config: dict = {"worker_agents": [{"api_url": work.url + "/api/chat", "model": "m", "name": "W"}],
                    "servers": {work.url: {"parallel": slots}}}
    if review is not None:
        config["reviewer_agent"] = {"api_url": review.url + "/api/chat", "model": "r", "name": "R"}
        config["servers"][review.url] = {"parallel": slots}
    return write_config(tmp_path / name, config)


def test_two_workers_and_the_writer_one_worker_killed(tmp_path, redis_server):
    """200 prompts over the writer and two joined workers; one worker is SIGKILLed mid-run: every prompt is in the
    output exactly once, answered; the killed worker's prompts were taken over; no server ever had more requests
    than its slots, across the three processes."""
    with FakeServer(strict=True) as work, FakeServer(strict=True) as review:
        work.model("m", latency=0.1, tokens=4, text="four is the answer")
        review.model("r", latency=0.05, tokens=2, text="the answer is four")
        config = fleet(tmp_path, "c.json", work, review, slots=4)
        write_jsonl(tmp_path / "in.jsonl", prompts(200, expected="four", match="contains"))
        url = redis_server.url
        b = Host(tmp_path, "b", "--join", url, "-c", "c.json")
        c = Host(tmp_path, "c", "--join", url, "-c", "c.json")
        wait_for(lambda: "waiting for a batch job" in b.stderr() and "waiting for a batch job" in c.stderr(),
                 "the workers to wait for the job")
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", str(config), "--queue", url,
                      "--takeover-after", "2")
        job = job_of(writer)
        redis = redis_client(url)
        stream = f"parallama:batch:{job}:prompts"

        def victim_busy() -> bool:
            if not redis.exists(stream):  # the name is printed before the job is made
                return False
            pending = redis.xpending_range(stream, "workers", "-", "+", 50, consumername=c.consumer)
            return len(lines_in(tmp_path / "out.jsonl")) >= 40 and len(pending) >= 2
        wait_for(victim_busy, "the worker to be busy mid-run")
        c.kill()
        killed_at = time.monotonic()
        stranded = [p["message_id"] for p in redis.xpending_range(stream, "workers", "-", "+", 100,
                                                                  consumername=c.consumer)]
        stranded_ids = [json.loads(redis.xrange(stream, e, e)[0][1]["r"])["id"] for e in stranded]
        assert stranded_ids

        def all_taken_over() -> bool:
            owners = [redis.xpending_range(stream, "workers", e, e, 1) for e in stranded]
            return all(not owner or owner[0]["consumer"] != c.consumer for owner in owners)
        wait_for(all_taken_over, "another worker to take the killed worker's prompts", every=0.02)
        claimed_s = time.monotonic() - killed_at

        def all_stranded_written() -> bool:
            return set(stranded_ids) <= {line["id"] for line in lines_in(tmp_path / "out.jsonl")}
        wait_for(all_stranded_written, "the killed worker's prompts to be taken over and written", every=0.02)
        taken_over_s = time.monotonic() - killed_at
        assert writer.wait() == 0, writer.stderr()
        assert b.wait() == 0, b.stderr()

        lines = read_lines(tmp_path / "out.jsonl")
        ids = [line["id"] for line in lines]
        assert sorted(ids) == sorted(f"q{i}" for i in range(200)) and len(ids) == len(set(ids)) == 200
        assert all(line["answered"] and line["final"] == "the answer is four" for line in lines)
        # Not before the takeover time (2 s); a worker takes them once it has room, which may wait for the slots the
        # killed worker held (their leases run out 10 s after it died).
        assert 2.0 <= claimed_s < 30, claimed_s
        print(f"\nkilled worker: {len(stranded_ids)} prompt(s) stranded, taken over {claimed_s:.1f} s and all "
              f"written {taken_over_s:.1f} s after the SIGKILL (takeover after 2 s without renewal; the slots it "
              "held come back when their leases run out, 10 s)")
        # Slots held across the three processes (the job's Redis keeps them): never more than 4 on a server.
        assert work.max_in_flight <= 4 and review.max_in_flight <= 4, (
            work.max_in_flight, review.max_in_flight)
        assert work.max_in_flight == 4  # the fleet was really used to the full
        # Progress of the whole job, per worker, on every host; the summary from all hosts.
        progress = writer.stderr()
        assert f"job {job}: " in progress and "in flight" in progress and "prompts/min" in progress
        assert b.consumer in progress or b.consumer in b.stderr()
        summary = writer.stdout()
        assert "200/200 of the input done" in summary and "servers busy" in summary and "workers" in summary
        assert "final (synthesize)" in summary and "200/200" in summary
        assert redis.scard("parallama:batch:jobs") == 0  # the finished job left the list


def test_a_poison_prompt_ends_in_the_dead_letter_list(tmp_path, redis_server):
    """A prompt that fails its worker every time is tried `--tries` times, then set aside with its last error; the
    batch ends with exit 1 naming it, and every other prompt is answered."""
    with FakeServer() as work:
        work.model("m", latency=0.02, tokens=2, text="fine answer", fault="500", fault_on="POISON")
        fleet(tmp_path, "c.json", work, slots=2)
        records = prompts(12)
        records[5] = {"id": "poison", "prompt": "POISON pill"}
        write_jsonl(tmp_path / "in.jsonl", records)
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review", "--queue",
                      redis_server.url, "--tries", "3")
        assert writer.wait() == 1, writer.stderr()
        tried = [r for r in work.requests if "POISON" in json.dumps(r.body)]
        assert len(tried) == 3
        summary = writer.stdout()
        assert "dead-letter list (1)" in summary and "✗ poison (3 tries): " in summary and "500" in summary
        assert "no answer: poison" in summary
        lines = {line["id"]: line for line in read_lines(tmp_path / "out.jsonl")}
        assert len(lines) == 12 and not lines["poison"]["answered"]
        assert all(line["answered"] for key, line in lines.items() if key != "poison")


def test_the_writer_killed_and_resumed_loses_and_repeats_nothing(tmp_path, redis_server):
    """The writing process is SIGKILLed mid-run while a joined worker goes on; started again with --resume it
    writes what was finished meanwhile and runs what is left: every prompt once."""
    with FakeServer() as work:
        work.model("m", latency=0.08, tokens=3, text="an answer here")
        fleet(tmp_path, "c.json", work, slots=4)
        write_jsonl(tmp_path / "in.jsonl", prompts(150))
        url = redis_server.url
        joined = Host(tmp_path, "b", "--join", url, "-c", "c.json")
        wait_for(lambda: "waiting for a batch job" in joined.stderr(), "the worker to wait for the job")
        args = ("in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review", "--queue", url, "--takeover-after", "2")
        writer = Host(tmp_path, "a", *args)
        job = job_of(writer)
        wait_for(lambda: len(lines_in(tmp_path / "out.jsonl")) >= 30, "the writer to be mid-run")
        writer.kill()
        redis = redis_client(url)
        wait_for(lambda: redis.xlen(f"parallama:batch:{job}:results") > 0, "the worker to go on without the writer")
        again = Host(tmp_path, "a2", *args, "--resume")
        assert again.wait() == 0, again.stderr()
        assert joined.wait() == 0, joined.stderr()
        assert job_of(again) == job
        lines = read_lines(tmp_path / "out.jsonl")
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids)) == 150 and all(line["answered"] for line in lines)
        assert "resuming: " in again.stderr()


def test_two_workers_on_twice_the_servers_nearly_double_the_throughput(tmp_path, redis_server):
    """One worker on its servers, then two workers each on its own servers (as two hosts): prompts per minute of
    the two is at least 1.8 times the one's (the ratio inside one run)."""
    with FakeServer() as mine, FakeServer() as theirs:
        mine.model("m", latency=0.5, tokens=4)
        theirs.model("m", latency=0.5, tokens=4)
        fleet(tmp_path, "a.json", mine, slots=2)
        fleet(tmp_path, "b.json", theirs, slots=2)
        write_jsonl(tmp_path / "one.jsonl", prompts(40))
        write_jsonl(tmp_path / "two.jsonl", prompts(80))
        url = redis_server.url
        one = Host(tmp_path, "one", "one.jsonl", "-o", "one-out.jsonl", "-c", "a.json", "--no-review", "--queue", url,
                   "--json", "-q")
        assert one.wait() == 0, one.stderr()
        joined = Host(tmp_path, "b", "--join", url, "-c", "b.json")
        wait_for(lambda: "waiting for a batch job" in joined.stderr(), "the second worker to wait")
        two = Host(tmp_path, "two", "two.jsonl", "-o", "two-out.jsonl", "-c", "a.json", "--no-review", "--queue",
                   url, "--json", "-q")
        assert two.wait() == 0, two.stderr()
        assert joined.wait() == 0, joined.stderr()
        alone, shared = json.loads(one.stdout()), json.loads(two.stdout())
        ratio = shared["prompts_per_min"] / alone["prompts_per_min"]
        print(f"\none worker {alone['prompts_per_min']:.1f} prompts/min, two workers {shared['prompts_per_min']:.1f}"
              f" prompts/min: {ratio:.2f}x")
        assert ratio >= 1.8, (alone["prompts_per_min"], shared["prompts_per_min"])
        assert len(shared["workers"]) == 2 and all(w["done"] > 10 for w in shared["workers"].values())
        assert len(read_lines(tmp_path / "two-out.jsonl")) == 80


@pytest.mark.parametrize("option", ["--queue", "--join"])
def test_a_bad_or_unreachable_queue_is_one_line_and_exit_2(tmp_path, option):
    with FakeServer() as work:
        work.model("m")
        fleet(tmp_path, "c.json", work)
        write_jsonl(tmp_path / "in.jsonl", prompts(2))
        head = ["in.jsonl", "-o", "out.jsonl", "--queue"] if option == "--queue" else ["--join"]
        for url, said in ((f"http://:hunter2secret@127.0.0.1:{free_port()}/0", "is not a Redis URL"),
                          (f"redis://:hunter2secret@127.0.0.1:{free_port()}/0", "Redis does not answer"),
                          (f"redis://u:hunter2secret@127.0.0.1:{free_port()}/x", "is not a Redis URL"),
                          (f"redis://127.0.0.1:{free_port()}/0?password=hunter2secret", "Redis does not answer")):
            done = subprocess.run([sys.executable, "-m", "parallama", "batch", *head, url, "-c", "c.json"],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1 and said in lines[0], done.stderr
            assert "hunter2secret" not in done.stderr + done.stdout
        assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""


def test_queue_options_need_their_mode(tmp_path):
    with FakeServer() as work:
        work.model("m")
        fleet(tmp_path, "c.json", work)
        write_jsonl(tmp_path / "in.jsonl", prompts(2))
        for args, said in ((["in.jsonl", "--tries", "2"], "--tries goes with --queue or --join"),
                           (["--join", "redis://127.0.0.1:1/0", "in.jsonl"], "leave out INPUT"),
                           (["in.jsonl", "--queue", "redis://127.0.0.1:1/0"], "add -o FILE"),
                           ([], "missing INPUT")):
            done = subprocess.run([sys.executable, "-m", "parallama", "batch", *args, "-c", "c.json"],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert done.returncode == 2 and said in done.stderr, done.stderr


def test_a_worker_stopped_with_sigterm_hands_its_prompts_back_at_once(tmp_path, redis_server):
    """Ctrl-C or SIGTERM on a worker: the prompts it was running go back to the job at once (not after the takeover
    time), their tries not counted, and the batch finishes with every prompt once."""
    with FakeServer(strict=True) as work:
        work.model("m", latency=0.3, tokens=3, text="an answer here")
        fleet(tmp_path, "c.json", work, slots=2)
        write_jsonl(tmp_path / "in.jsonl", prompts(40))
        url = redis_server.url
        joined = Host(tmp_path, "b", "--join", url, "-c", "c.json")
        wait_for(lambda: "waiting for a batch job" in joined.stderr(), "the worker to wait for the job")
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review", "--queue", url,
                      "--takeover-after", "60", "--tries", "1", "--concurrency", "1")  # 12 s alone: room to join
        job = job_of(writer)
        redis = redis_client(url)
        stream = f"parallama:batch:{job}:prompts"

        def joined_busy() -> bool:
            return redis.exists(stream) and len(redis.xpending_range(stream, "workers", "-", "+", 10,
                                                                     consumername=joined.consumer)) >= 1
        wait_for(joined_busy, "the worker to run prompts")
        stopped_at = time.monotonic()
        joined.process.send_signal(15)
        assert joined.wait() == 130, joined.stderr()
        assert "went back to the job" in joined.stderr()
        assert writer.wait() == 0, writer.stderr()
        assert time.monotonic() - stopped_at < 40  # well before the 60 s takeover
        lines = read_lines(tmp_path / "out.jsonl")
        assert sorted(line["id"] for line in lines) == sorted(f"q{i}" for i in range(40))
        assert all(line["answered"] for line in lines)  # --tries 1: a handed-back prompt did not count a try
        assert work.max_in_flight <= 2


def test_a_prompt_whose_worker_dies_on_it_every_try_is_set_aside(tmp_path, redis_server):
    """With `--tries 1`, the prompts of a worker killed while running them have used their one try: whoever takes them
    over sets them aside (`its worker stopped while running it`), and the batch exits 1 naming them."""
    with FakeServer(strict=True) as work:
        work.model("m", latency=0.3, tokens=3, text="an answer here")
        fleet(tmp_path, "c.json", work, slots=2)
        write_jsonl(tmp_path / "in.jsonl", prompts(40))
        url = redis_server.url
        joined = Host(tmp_path, "b", "--join", url, "-c", "c.json")
        wait_for(lambda: "waiting for a batch job" in joined.stderr(), "the worker to wait for the job")
        # The writer works one prompt at a time (12 s alone), so the joined worker, slow to start on a busy machine,
        # still finds prompts to take.
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review", "--queue", url,
                      "--takeover-after", "1", "--tries", "1", "--json", "--concurrency", "1")
        job = job_of(writer)
        redis = redis_client(url)
        stream = f"parallama:batch:{job}:prompts"
        wait_for(lambda: redis.exists(stream) and redis.xpending_range(stream, "workers", "-", "+", 10,
                                                                       consumername=joined.consumer),
                 "the worker to run prompts")
        joined.kill()
        stranded = [json.loads(redis.xrange(stream, p["message_id"], p["message_id"])[0][1]["r"])["id"]
                    for p in redis.xpending_range(stream, "workers", "-", "+", 10, consumername=joined.consumer)]
        assert writer.wait() == 1, writer.stderr()
        summary = json.loads(writer.stdout())
        assert sorted(summary["dead"]) == sorted(stranded)
        assert all("its worker stopped while running it" in entry["error"] for entry in summary["dead"].values())
        lines = read_lines(tmp_path / "out.jsonl")
        assert sorted(line["id"] for line in lines) == sorted(f"q{i}" for i in range(40) if f"q{i}" not in stranded)
        assert all(line["answered"] for line in lines)


def test_a_job_compares_strategies_as_the_single_host_batch_does(tmp_path, redis_server):
    """`--strategies` through the queue: every line holds each strategy's answer, the summary their scores and cost."""
    with FakeServer() as work, FakeServer() as review:
        work.model("m", latency=0.05, tokens=2, text="four")
        review.model("r", latency=0.05, tokens=2, text="four")
        fleet(tmp_path, "c.json", work, review, slots=2)
        write_jsonl(tmp_path / "in.jsonl", prompts(8, expected="four", match="contains"))
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--queue", redis_server.url,
                      "--strategies", "synthesize,judge", "--json", "-q")
        assert writer.wait() == 0, writer.stderr()
        summary = json.loads(writer.stdout())
        assert set(summary["review_cost"]) == {"synthesize", "judge"} and summary["job"].startswith("out-")
        assert all(set(line["strategies"]) == {"synthesize", "judge"} for line in read_lines(tmp_path / "out.jsonl"))


def test_a_stalled_worker_back_after_a_takeover_writes_nothing_twice(tmp_path, redis_server):
    """A worker stopped (SIGSTOP) past the takeover time loses its prompts to the writer's worker; woken again, it
    finds them taken (or finished) and drops its own runs of them: every prompt is written once."""
    with FakeServer() as work:
        work.model("m", latency=0.4, tokens=4, text="an answer here")
        fleet(tmp_path, "c.json", work, slots=4)
        write_jsonl(tmp_path / "in.jsonl", prompts(40))
        url = redis_server.url
        joined = Host(tmp_path, "b", "--join", url, "-c", "c.json", "--json")
        wait_for(lambda: "waiting for a batch job" in joined.stderr(), "the worker to wait for the job")
        writer = Host(tmp_path, "a", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review", "--queue", url,
                      "--takeover-after", "2", "--concurrency", "1")  # 16 s alone: room for the worker to join
        job = job_of(writer)
        redis = redis_client(url)
        stream = f"parallama:batch:{job}:prompts"

        def held_by_joined() -> list[str]:
            if not redis.exists(stream):
                return []
            return [p["message_id"] for p in redis.xpending_range(stream, "workers", "-", "+", 10,
                                                                  consumername=joined.consumer)]
        held = wait_for(held_by_joined, "the worker to run prompts")
        joined.process.send_signal(signal.SIGSTOP)
        try:
            def taken_from_it() -> bool:
                owners = [redis.xpending_range(stream, "workers", e, e, 1) for e in held]
                return all(not o or o[0]["consumer"] != joined.consumer for o in owners)
            wait_for(taken_from_it, "the writer's worker to take the stopped worker's prompts over")
        finally:
            joined.process.send_signal(signal.SIGCONT)
        assert writer.wait() == 0, writer.stderr()
        assert joined.wait() == 0, joined.stderr()
        lines = read_lines(tmp_path / "out.jsonl")
        ids = [line["id"] for line in lines]
        assert len(ids) == len(set(ids)) == 40 and all(line["answered"] for line in lines)
        assert json.loads(joined.stdout())["lost"] >= 1  # it ran prompts another worker answered first
