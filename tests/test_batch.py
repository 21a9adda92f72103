"""`parallama batch` as a user meets it: pipelined through shared slots, every finished prompt written at once,
resumable after kill -9 or Ctrl-C with every id once, bad input refused before anything is sent, answers scored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import invoke, read_lines, run_process, worker, write_config, write_jsonl
from fakes import FakeServer




def prompts_sent(fake: FakeServer) -> list[str]:
    return [r.messages[-1]["content"] for r in fake.requests]


@pytest.fixture
def fleet4():
    """Three workers on three servers and the reviewer on a fourth, none with a queue of its own: a client that
    put more than one request on a server at once would show in `max_in_flight`."""
    with FakeServer(slots=None) as a, FakeServer(slots=None) as b, FakeServer(slots=None) as c, \
            FakeServer(slots=None) as r:
        yield [a, b, c, r]


def pipeline_config(fakes, *, worker_s: float, review_s: float) -> dict:
    a, b, c, r = fakes
    for fake in (a, b, c):
        fake.model("w", latency=worker_s, tokens=4)
    r.model("rev", latency=review_s, tokens=4)
    return {"worker_agents": [worker(f, "w", name=n) for f, n in zip((a, b, c), "ABC")],
            "reviewer_agent": worker(r, "rev", name="Rev")}


# ---------------------------------------------------------------- pipelining


def test_prompt_2s_workers_run_while_prompt_1_is_reviewed_and_no_server_exceeds_its_slots(tmp_path, fleet4):
    write_config(tmp_path / "c.json", pipeline_config(fleet4, worker_s=0.2, review_s=0.2))
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"prompt {i}"} for i in range(1, 7)])
    a, b, c, r = fleet4

    started = time.perf_counter()
    one_at_a_time = invoke("batch", "in.jsonl", "-o", "serial.jsonl", "-c", "c.json", "--concurrency", "1")
    serial_s = time.perf_counter() - started
    assert one_at_a_time.exit_code == 0
    # With one run at a time, prompt 2 waits for prompt 1's review.
    assert min(q.arrived for q in a.requests if q.messages[-1]["content"] == "prompt 2") >= r.requests[0].ended
    for fake in fleet4:
        fake.reset()

    started = time.perf_counter()
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    pipelined_s = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    assert sorted(line["id"] for line in read_lines(tmp_path / "out.jsonl")) == [f"q{i}" for i in range(1, 7)]

    review_1 = next(q for q in r.requests if "prompt 1" in q.messages[-1]["content"])
    for fake in (a, b, c):
        worker_2 = next(q for q in fake.requests if q.messages[-1]["content"] == "prompt 2")
        assert worker_2.started < review_1.ended and review_1.started < worker_2.ended  # they overlap
    assert [f.max_in_flight for f in fleet4] == [1, 1, 1, 1]
    # Six prompts of 0.2 s + 0.2 s: one at a time ≈ 2.4 s, pipelined ≈ 1.4 s.
    assert pipelined_s < 0.8 * serial_s


def test_concurrency_bounds_the_runs_in_progress(tmp_path, fleet4):
    write_config(tmp_path / "c.json", pipeline_config(fleet4, worker_s=0.1, review_s=0.3))
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(8)])
    assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--concurrency", "2").exit_code == 0
    a, r = fleet4[0], fleet4[3]
    # Prompt k+2's workers cannot start before prompt k's review has ended (its run holds one of the two places).
    reviews = sorted(q.ended for q in r.requests)
    workers = sorted(q.arrived for q in a.requests)
    assert all(workers[k + 2] >= reviews[k] for k in range(6))


# ---------------------------------------------------------------- nothing lost


def slow_fleet(fakes, tmp_path: Path, prompts: int) -> None:
    write_config(tmp_path / "c.json", pipeline_config(fakes, worker_s=0.15, review_s=0.1))
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i:02d}", "prompt": f"prompt {i:02d}"} for i in range(prompts)])


def start_batch(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "parallama", "batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json",
                             *extra], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} lines in {path} after {timeout} s")


def test_kill_9_then_resume_ends_with_every_id_exactly_once(tmp_path, fleet4):
    slow_fleet(fleet4, tmp_path, prompts=20)
    proc = start_batch(tmp_path)
    wait_for_lines(tmp_path / "out.jsonl", 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    written = {line["id"] for line in read_lines(tmp_path / "out.jsonl")}
    assert 6 <= len(written) < 20
    deadline = time.time() + 30
    while any(f.in_flight for f in fleet4) and time.time() < deadline:  # the killed process's requests closed
        time.sleep(0.02)
    for fake in fleet4:
        fake.reset()

    resumed = run_process("batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"),
                          "-c", str(tmp_path / "c.json"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    lines = read_lines(tmp_path / "out.jsonl")
    ids = [line["id"] for line in lines]
    assert sorted(ids) == [f"q{i:02d}" for i in range(20)]  # every id, once
    assert all(line["answered"] and line["final"] for line in lines)
    # Only what was not written before the kill ran again.
    again = {p.replace("prompt ", "q") for p in prompts_sent(fleet4[0])}
    assert again == {f"q{i:02d}" for i in range(20)} - written
    assert f"resuming: {len(written)} of 20 answered" in resumed.stderr


def test_a_last_line_cut_off_by_a_kill_is_dropped_and_its_prompt_runs_again(tmp_path, fleet4):
    slow_fleet(fleet4, tmp_path, prompts=4)
    assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json").exit_code == 0
    out = tmp_path / "out.jsonl"
    data = out.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut_id = json.loads(data[last_start:])["id"]
    out.write_bytes(data[:last_start + 100])  # what a kill in the middle of the last write leaves
    for fake in fleet4:
        fake.reset()

    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 0, result.stderr
    assert "dropped its last line, cut off" in result.stderr
    assert sorted(line["id"] for line in read_lines(out)) == ["q00", "q01", "q02", "q03"]
    assert prompts_sent(fleet4[0]) == [cut_id.replace("q", "prompt ")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_exits_130_after_writing_what_finished(tmp_path, fleet4, signum):
    slow_fleet(fleet4, tmp_path, prompts=20)
    proc = start_batch(tmp_path)
    wait_for_lines(tmp_path / "out.jsonl", 3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "go on with: parallama batch in.jsonl -o out.jsonl -c c.json --resume" in err
    assert "Traceback" not in err
    lines = read_lines(tmp_path / "out.jsonl")  # every line whole
    assert 3 <= len(lines) < 20
    assert f"batch: {len(lines)} prompt(s)" in out  # the summary counts what was written
    deadline = time.time() + 30
    while any(f.in_flight for f in fleet4) and time.time() < deadline:
        time.sleep(0.05)
    assert [f.in_flight for f in fleet4] == [0, 0, 0, 0]  # its requests were closed, not left running

    resumed = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert resumed.exit_code == 0
    assert sorted(line["id"] for line in read_lines(tmp_path / "out.jsonl")) == [f"q{i:02d}" for i in range(20)]


def test_prompts_without_an_answer_exit_1_and_resume_runs_only_them_again(tmp_path):
    with FakeServer() as good, FakeServer() as flaky:
        good.model("m", latency=0.05, respond=lambda m: "fine" if "bad" not in m[-1]["content"] else "")
        flaky.model("m", latency=0.05, respond=lambda m: "fine" if "bad" not in m[-1]["content"] else "")
        write_config(tmp_path / "c.json", {"worker_agents": [worker(good, "m", name="G"), worker(flaky, "m", name="F")]})
        write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "ok 1"}, {"id": "b", "prompt": "bad 2"},
                                            {"id": "c", "prompt": "ok 3"}])
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
        assert result.exit_code == 1
        assert "✗ b: no answer — G (" in result.stderr and "empty answer" in result.stderr
        assert "no answer: b" in result.stdout
        # The summary names each failing agent's cause, not only a count.
        assert "failed requests  G 1 · F 1" in result.stdout and "    G: G (" in result.stdout
        assert "the model returned an empty answer" in result.stdout.split("failed requests", 1)[1]
        lines = {line["id"]: line for line in read_lines(tmp_path / "out.jsonl")}
        assert not lines["b"]["answered"] and [w["status"] for w in lines["b"]["workers"]] == ["error", "error"]
        assert lines["a"]["answered"] and lines["c"]["answered"]

        good.model("m", latency=0.05, text="fixed")
        flaky.model("m", latency=0.05, text="fixed")
        good.reset()
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
        assert result.exit_code == 0
        assert "1 without an answer run again" in result.stderr
        assert prompts_sent(good) == ["bad 2"]
    lines = read_lines(tmp_path / "out.jsonl")
    assert sorted(line["id"] for line in lines) == ["a", "b", "c"]
    assert all(line["answered"] for line in lines)


def test_an_output_with_results_is_not_appended_to_without_resume(tmp_path, server):
    server.model("m", latency=0.05)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    held = '{"id": "1", "answered": true, "prompt_sha256": "%s"}\n' % ("0" * 64)
    (tmp_path / "out.jsonl").write_text(held)
    result = invoke("batch", "in.txt", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 2 and "already holds results: add --resume" in result.stderr
    assert (tmp_path / "out.jsonl").read_text() == held
    assert server.requests == []


def test_a_second_batch_on_the_same_output_is_refused(tmp_path, server):
    import fcntl

    server.model("m", latency=0.05)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "in.txt").write_text("one\n")
    with open(tmp_path / "out.jsonl", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as a running batch holds it
        result = invoke("batch", "in.txt", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 2
    assert "out.jsonl: another parallama batch is writing to it" in result.stderr
    assert server.requests == []


# ---------------------------------------------------------------- input


def test_bad_input_lines_exit_2_naming_file_and_line_and_nothing_is_sent(tmp_path, fleet4):
    write_config(tmp_path / "c.json", pipeline_config(fleet4, worker_s=0.05, review_s=0.05))
    (tmp_path / "in.jsonl").write_text("\n".join([
        '{"id": "a", "prompt": "fine"}',
        '{"id": "b", "prompt": "broken',
        '{"id": "c"}',
        '{"id": "d", "prompt": "   "}',
        '{"id": "a", "prompt": "again"}',
        '{"id": "e", "prompt": "x", "expected": "(", "match": "regex"}',
        '{"id": "f", "prompt": "x", "expected": "y", "match": "fuzzy"}',
        '{"id": "g", "promt": "x"}',
        '["a list"]',
        '{"id": "h", "prompt": "x", "expected": "seven", "match": "number"}',
        '{"id": ["no"], "prompt": "x"}',
        '{"prompt": "fine too"}',
    ]) + "\n")
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 2
    errors = result.stderr.splitlines()
    assert errors == [
        "error: in.jsonl:2:23: not JSON: Unterminated string starting at",
        'error: in.jsonl:3: no "prompt"',
        "error: in.jsonl:4: prompt is empty",
        "error: in.jsonl:5: duplicate id 'a' (first on line 1)",
        "error: in.jsonl:6: expected is not a valid regex: missing ) at position 1",
        'error: in.jsonl:7: match must be one of answer, number, exact, contains, regex, not "fuzzy"',
        "error: in.jsonl:8: unknown key 'promt' (did you mean 'prompt'?)",
        'error: in.jsonl:9: must be a JSON object like {"prompt": "..."}, not a list',
        "error: in.jsonl:10: match is number but expected 'seven' is not a number",
        "error: in.jsonl:11: id must be a non-empty string or a whole number, not a list",
    ]
    assert "Traceback" not in result.stderr
    assert [f.requests for f in fleet4] == [[], [], [], []]
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""


def test_bad_input_in_a_real_process_is_one_line_per_problem_and_exit_2(tmp_path, server):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "qs.json").write_text('[{"prompt": "a"}, {"prompt": "b"}]\n')
    proc = run_process("batch", str(tmp_path / "qs.json"), "-c", str(tmp_path / "c.json"))
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {tmp_path / 'qs.json'}:1: a JSON array: batch reads JSON lines, one object per "
                           f"line (convert it with: jq -c '.[]' {tmp_path / 'qs.json'} > qs.jsonl)\n")
    assert proc.stdout == "" and server.requests == []


def test_an_output_file_that_is_not_ours_is_refused_on_resume_and_left_alone(tmp_path, server):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "in.txt").write_text("one\n")
    (tmp_path / "notes.jsonl").write_text("my notes\nmore notes\n")
    result = invoke("batch", "in.txt", "-o", "notes.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 2
    assert "error: notes.jsonl:1: not a result line of parallama batch" in result.stderr
    assert (tmp_path / "notes.jsonl").read_text() == "my notes\nmore notes\n"
    assert server.requests == []


def test_plain_text_and_stdin_with_ids_from_line_numbers_and_lines_on_stdout(tmp_path, server):
    server.model("m", latency=0.02, respond=lambda m: "re: " + m[-1]["content"])
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "qs.txt").write_text("first question\n\n{not json} third\n")
    result = invoke("batch", "qs.txt", "-c", "c.json", "-q")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(line["id"], line["prompt"]) for line in lines} == {("1", "first question"), ("3", "{not json} third")}
    assert lines[0]["workers"][0]["content"].startswith("re: ")
    assert "batch: 2 prompt(s)" in result.stderr  # the summary goes to stderr when stdout holds the results

    result = invoke("batch", "-", "-c", "c.json", "-q", input='{"id": 7, "prompt": "from a pipe"}\n')
    assert result.exit_code == 0
    assert json.loads(result.stdout.splitlines()[0])["id"] == "7"


def test_usage_errors(tmp_path, server):
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    (tmp_path / "in.txt").write_text("one\n")
    assert "--resume goes on from an output file" in invoke("batch", "in.txt", "-c", "c.json", "--resume").stderr
    result = invoke("batch", "in.txt", "-c", "c.json", "--json")
    assert result.exit_code == 2 and "add -o FILE" in result.stderr
    assert invoke("batch", "in.txt", "-c", "c.json", "--concurrency", "0").exit_code == 2
    result = invoke("batch", "missing.jsonl", "-c", "c.json")
    assert result.exit_code == 2 and result.stderr == "error: missing.jsonl: no such file\n"
    result = invoke("batch", "in.txt")
    assert result.exit_code == 2 and "no config" in result.stderr
    result = invoke("batch", "/dev/zero", "-c", "c.json")
    assert result.exit_code == 2 and result.stderr == "error: /dev/zero: a device, not a file of prompts\n"
    result = invoke("batch", "in.txt", "-c", "c.json", "-o", "/dev/null", "--resume")
    assert result.exit_code == 2 and "/dev/null: not a regular file" in result.stderr
    assert server.requests == []


# ---------------------------------------------------------------- progress and summary


def test_plain_progress_lines_and_the_summary_with_busy_fractions(tmp_path, fleet4):
    write_config(tmp_path / "c.json", pipeline_config(fleet4, worker_s=0.1, review_s=0.1))
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(20)])
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 0
    progress = [line for line in result.stderr.splitlines() if line.startswith("batch ")]
    assert [line.split()[1] for line in progress] == [f"{k}/20" for k in range(2, 21, 2)]  # a line per tenth
    assert "prompts/min" in progress[0] and "ETA" in progress[0]
    assert "batch: 20 prompt(s) in" in result.stdout and "answered 20 · failed 0" in result.stdout
    busy = result.stdout.split("servers busy")[1].splitlines()[0]
    assert busy.count("%") == 4

    result = invoke("batch", "in.jsonl", "-o", "out2.jsonl", "-c", "c.json", "--json", "-q")
    summary = json.loads(result.stdout)
    assert result.stderr == ""
    assert (summary["prompts"], summary["ran"], summary["answered"], summary["failed"]) == (20, 20, 20, 0)
    assert summary["complete"] and not summary["interrupted"] and summary["scoring"] is None
    assert [s["requests"] for s in summary["servers"]] == [20, 20, 20, 20]
    # Each server works 20 × 0.1 s in a batch of about 2.1 s: busy most of the time, never more than all of it.
    assert all(0.6 < s["busy_fraction"] <= 1.0 for s in summary["servers"])


def test_batch_help_imports_nothing_heavy():
    code = ("import sys\nfrom parallama.cli import cli\n"
            "try:\n    cli(['batch', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'pydantic', 'rich'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout
    assert "--resume" in out and out.strip().endswith("[]")


def test_on_a_terminal_a_progress_bar_with_the_servers_load(tmp_path, fleet4, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then takes stderr for a terminal
    monkeypatch.setenv("COLUMNS", "200")
    write_config(tmp_path / "c.json", pipeline_config(fleet4, worker_s=0.3, review_s=0.3))
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(4)])
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 0
    assert "prompts/min" in result.stderr and "ETA" in result.stderr
    assert f"servers  {fleet4[0].url.split('//')[1].replace('127.0.0.1', 'localhost')} 1/1 busy" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("batch ")]  # no plain lines
    assert len(read_lines(tmp_path / "out.jsonl")) == 4
