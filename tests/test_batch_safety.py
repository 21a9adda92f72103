"""`parallama batch` against careless and hostile input (issue 20): the output that is the input, a second batch
racing a resume's rewrite, a symlinked output, prompts and expected answers edited between runs, input that JSON
allows but text does not, a catastrophic regex, a full disk. Nothing is lost, each problem is one clear line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import invoke, read_lines, run_process, worker, write_config, write_jsonl
from fakes import FakeServer




def by_id(path: Path) -> dict[str, dict]:
    lines = read_lines(path)
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids)), f"an id is in {path.name} twice: {ids}"
    return {line["id"]: line for line in lines}


def prompts_sent(fake: FakeServer) -> list[str]:
    return [r.messages[-1]["content"] for r in fake.requests]


def one_worker(tmp_path: Path, fake: FakeServer, **model) -> None:
    fake.model("m", **{"latency": 0.02, **model})
    write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "m", name="W")]})


# ---------------------------------------------------------------- 1. the output is the input


def test_an_output_that_is_the_input_is_refused_by_any_name_and_the_input_is_kept_whole(tmp_path, server):
    one_worker(tmp_path, server, text="4")
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"what is {i}?", "expected": str(i)}
                                                  for i in range(12)])
    original = source.read_bytes()
    os.link(source, tmp_path / "hard.jsonl")
    os.symlink("in.jsonl", tmp_path / "soft.jsonl")
    (tmp_path / "sub").mkdir()
    for output in ("in.jsonl", "./sub/../in.jsonl", "hard.jsonl", "soft.jsonl"):
        for resume in ((), ("--resume",)):
            result = invoke("batch", "in.jsonl", "-o", output, "-c", "c.json", *resume)
            assert result.exit_code == 2, (output, resume, result.stderr)
            assert result.stderr == (f"error: {output} is the input file (in.jsonl): the results must go to another "
                                     "file (-o answers.jsonl)\n")
    with open(source, "rb") as stdin:  # `batch - -o in.jsonl < in.jsonl`
        proc = subprocess.run([sys.executable, "-m", "parallama", "batch", "-", "-o", "soft.jsonl", "-c", "c.json",
                               "--resume"], stdin=stdin, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "soft.jsonl is the input file (-)" in proc.stderr
    assert source.read_bytes() == original
    assert server.requests == []


def test_input_lines_are_never_taken_for_results(tmp_path, server):
    one_worker(tmp_path, server, text="4")
    records = [{"id": f"q{i}", "prompt": f"what is {i}?", "expected": str(i)} for i in range(12)]
    write_jsonl(tmp_path / "in.jsonl", records)
    copy = shutil.copy(tmp_path / "in.jsonl", tmp_path / "copy.jsonl")
    # Even one that says `answered`: an input line has no fingerprint of its prompt.
    write_jsonl(tmp_path / "marked.jsonl", [{**r, "answered": True} for r in records])
    for output in ("copy.jsonl", "marked.jsonl"):
        before = (tmp_path / output).read_bytes()
        result = invoke("batch", "in.jsonl", "-o", output, "-c", "c.json", "--resume")
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: {output}:1: not a result line of parallama batch")
        assert (tmp_path / output).read_bytes() == before
    assert Path(copy).read_bytes() == (tmp_path / "in.jsonl").read_bytes()
    assert server.requests == []


def test_a_last_line_without_its_newline_is_dropped_only_when_it_is_a_result_cut_short(tmp_path, server):
    one_worker(tmp_path, server, text="fine")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "q1", "prompt": "one"}])
    (tmp_path / "notes.jsonl").write_text("my notes, no newline at the end")
    (tmp_path / "one.jsonl").write_text('{"id": "q1", "prompt": "one"}')  # a copy of the input's only line
    for output in ("notes.jsonl", "one.jsonl"):
        before = (tmp_path / output).read_text()
        result = invoke("batch", "in.jsonl", "-o", output, "-c", "c.json", "--resume")  # emptied it
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {output}:1: not a result line")
        result = invoke("batch", "in.jsonl", "-o", output, "-c", "c.json")
        assert result.exit_code == 2
        assert result.stderr == (f"error: {output} is not empty, and what it holds is not results of parallama "
                                 "batch: choose another -o\n")
        assert (tmp_path / output).read_text() == before
    result = invoke("batch", "in.jsonl", "-o", "/dev/zero", "-c", "c.json")  # not read for ever to find a line
    assert result.exit_code == 2 and result.stderr == "error: /dev/zero: not a regular file (for stdout, leave out -o)\n"
    assert server.requests == []


def test_lines_written_before_fingerprints_are_still_resumed(tmp_path, server):
    one_worker(tmp_path, server, text="fine")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}])
    assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json").exit_code == 0
    old = [{k: v for k, v in line.items() if k != "prompt_sha256"} for line in read_lines(tmp_path / "out.jsonl")]
    write_jsonl(tmp_path / "out.jsonl", [line for line in old if line["id"] == "a"])  # as the last version wrote
    server.reset()
    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 0, result.stderr
    assert prompts_sent(server) == ["two"]
    assert sorted(by_id(tmp_path / "out.jsonl")) == ["a", "b"]


# ---------------------------------------------------------------- 2. the lock is held while a resume rewrites


def test_a_second_batch_cannot_slip_in_while_a_resume_swaps_the_file(tmp_path):
    """The first batch's rename is held up (strace delays the syscall) for three times as long as a batch takes on
    this machine at the moment (6 s at least): meanwhile the second batch must be refused, not write into the file
    that is about to be replaced."""
    if shutil.which("strace") is None:
        pytest.fail("this test needs strace (apt-get install strace; .ci/run installs it)")
    with FakeServer() as fake:
        fake.model("m", latency=0.02, respond=lambda m: "" if m[-1]["content"] == "bad" else "fine")
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "m", name="W")]})
        write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "ok"}, {"id": "b", "prompt": "bad"}])
        write_jsonl(tmp_path / "other.jsonl", [{"id": f"x{i}", "prompt": f"other {i}"} for i in range(3)])
        assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json").exit_code == 1  # b: no answer
        fake.model("m", latency=0.02, text="fine")
        started = time.perf_counter()  # a whole batch as a process: a busy machine takes seconds to start one
        assert run_process("batch", "other.jsonl", "-o", "alone.jsonl", "-c", "c.json").returncode == 0
        held_s = max(6.0, 3 * (time.perf_counter() - started))

        out = tmp_path / "out.jsonl"
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        first = subprocess.Popen(
            ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
             "-e", f"inject=rename,renameat,renameat2:delay_enter={int(held_s * 1e6)}",
             sys.executable, "-m", "parallama", "batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while not list(tmp_path.glob(".out.jsonl.*.tmp")):  # the new file is written: its rename is next
                assert time.time() < deadline and first.poll() is None, first.communicate()
                time.sleep(0.01)
            time.sleep(0.3)
            second = run_process("batch", "other.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
            assert list(tmp_path.glob(".out.jsonl.*.tmp")), "the second batch ended after the swap: nothing tested"
            assert first.wait(held_s + 60) == 0, first.communicate()
        finally:
            if first.poll() is None:
                first.kill()
    if second.returncode == 0:  # had it been let in, its answers would have to be in the file
        assert {"x0", "x1", "x2"} <= set(by_id(out)), "the second batch reported success; its lines are gone"
    assert second.returncode == 2, second.stderr
    assert "out.jsonl: another parallama batch is writing to it" in second.stderr
    assert sorted(by_id(out)) == ["a", "b"] and all(line["answered"] for line in read_lines(out))


# ---------------------------------------------------------------- 3. a symlinked output


def test_a_symlinked_output_stays_a_link_and_its_target_is_rewritten(tmp_path, server):
    one_worker(tmp_path, server, respond=lambda m: "" if m[-1]["content"] == "bad" else "fine")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "ok"}, {"id": "b", "prompt": "bad"}])
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "answers.jsonl"
    link = tmp_path / "out.jsonl"
    link.symlink_to(Path("data") / "answers.jsonl")
    assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json").exit_code == 1
    os.chmod(target, 0o640)
    server.model("m", latency=0.02, text="fixed")

    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")  # takes b's line out
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(Path("data") / "answers.jsonl")
    assert sorted(by_id(target)) == ["a", "b"] and all(line["answered"] for line in read_lines(target))
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.joinpath("data").iterdir()) == ["answers.jsonl"]  # no temporary left


# ---------------------------------------------------------------- 4. prompts and expected answers edited


def test_resume_runs_a_changed_prompt_again_and_rescores_a_changed_expected_answer(tmp_path, server):
    one_worker(tmp_path, server, text="The answer is 4.")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "2+2?", "expected": "4"},
                                        {"id": "b", "prompt": "3+1?", "expected": "4"},
                                        {"id": "c", "prompt": "1+3?"},
                                        {"id": "d", "prompt": "0+4?", "expected": "4"}])
    assert invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json").exit_code == 0
    assert all(line["score"]["final"] is None and line["score"]["workers"] == {"W": True}
               for line in read_lines(tmp_path / "out.jsonl") if line["id"] != "c")
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "2+3?", "expected": "5"},  # a new question
                                        {"id": "b", "prompt": "3+1?", "expected": "5"},  # a new expectation
                                        {"id": "c", "prompt": "1+3?", "expected": "four", "match": "contains"},
                                        {"id": "d", "prompt": "0+4?", "expected": "4"}])
    server.reset()

    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume", "--json")
    assert result.exit_code == 0, result.stderr
    assert prompts_sent(server) == ["2+3?"]  # only the changed prompt ran again
    assert "out.jsonl: the prompt changed since it was answered for a: run again" in result.stderr
    assert "out.jsonl: the expected answer changed for b, c: scored again (no model call)" in result.stderr
    lines = by_id(tmp_path / "out.jsonl")
    assert lines["a"]["prompt"] == "2+3?"
    assert lines["b"]["score"]["expected"] == "5" and lines["b"]["score"]["workers"] == {"W": False}
    assert lines["c"]["score"] == {"expected": "four", "match": "contains", "final": None, "workers": {"W": False}}
    assert lines["d"]["score"]["workers"] == {"W": True}
    summary = json.loads(result.stdout)
    assert summary["before"] == 3 and summary["ran"] == 1
    assert summary["scoring"]["workers"][0]["correct"] == 1  # d only: the table is scored as the file now says


# ---------------------------------------------------------------- 10. what JSON allows but text does not


def test_a_lone_surrogate_or_a_number_too_long_is_one_line_exit_2_and_nothing_is_sent(tmp_path, server):
    one_worker(tmp_path, server, text="fine")
    (tmp_path / "in.jsonl").write_text("\n".join([
        '{"id": "ok", "prompt": "fine"}',
        '{"id": "\\ud800", "prompt": "x"}',
        '{"id": "y", "prompt": "caf\\udce9"}',
        '{"id": "z", "prompt": "x", "expected": "\\udfff"}',
        '{"id": 1' + "1" * 5000 + ', "prompt": "x"}',
        '{"id": "w", "prompt": "x", "expected": ' + "9" * 5000 + "}",
        '{"id": "v", "prompt": "x", "expected": 1e999}',
        '{"id": "t", "prompt": "x", "more": ' + "[" * 100_000 + "}",
    ]) + "\n")
    proc = run_process("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: in.jsonl:2: id holds \\ud800, half of a surrogate pair: not a character (write the character itself, "
        "or both halves of its pair)",
        "error: in.jsonl:3: prompt holds \\udce9, half of a surrogate pair: not a character (write the character "
        "itself, or both halves of its pair)",
        "error: in.jsonl:4: expected holds \\udfff, half of a surrogate pair: not a character (write the character "
        "itself, or both halves of its pair)",
        "error: in.jsonl:5: a number of more than 4,300 digits",
        "error: in.jsonl:6: a number of more than 4,300 digits",
        "error: in.jsonl:7: expected must be a finite number, not Infinity",
        "error: in.jsonl:8: nested too deep to read",
    ]
    assert server.requests == [] and not (tmp_path / "out.jsonl").exists()

    # An output line holding such an id (written by hand) does not crash a resume either: it is kept as it is.
    (tmp_path / "in.jsonl").write_text('{"id": "ok", "prompt": "fine"}\n')
    done = {"id": "\\ud800", "answered": True, "prompt_sha256": "0" * 64}
    (tmp_path / "out.jsonl").write_text(json.dumps(done, ensure_ascii=True) + "\n" + '{"id": 1' + "1" * 5000 + "}\n")
    proc = run_process("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert proc.returncode == 2 and proc.stderr.startswith("error: out.jsonl:2: not a result line")
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- 16. a catastrophic regex


HOSTILE = "a" * 60 + "b"


def test_a_catastrophic_regex_gives_up_on_that_answer_and_the_batch_goes_on(tmp_path, server):
    one_worker(tmp_path, server, respond=lambda m: HOSTILE if "hostile" in m[-1]["content"] else "plain aaa")
    write_jsonl(tmp_path / "in.jsonl", [
        {"id": "issue", "prompt": "hostile 1", "expected": "(a+)+$", "match": "regex"},  # the issue's: re froze
        {"id": "worse", "prompt": "hostile 2", "expected": "(a|aa)+$", "match": "regex"},  # backtracks in any engine
        {"id": "fine", "prompt": "easy", "expected": r"\ba{3}$", "match": "regex"},
    ])
    # Frozen on "(a|aa)+$", the batch would backtrack for ever (trillions of ways to split the a's); given up after
    # 0.1 s of matching, it ends. The bound only says "it ends": a loaded machine takes seconds to start a process.
    proc = run_process("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = by_id(tmp_path / "out.jsonl")
    assert lines["issue"]["score"]["workers"] == {"W": False} and "gave_up" not in lines["issue"]["score"]
    assert lines["worse"]["score"]["workers"] == {"W": False} and lines["worse"]["score"]["gave_up"] == ["W"]
    assert lines["fine"]["score"]["workers"] == {"W": True}
    assert ("⚠ worse: the expected regex took over 0.1 s on the answer of W: scored wrong (a pattern that "
            "backtracks without end?)") in proc.stderr.splitlines()


def test_sigterm_stops_a_batch_whose_regexes_backtrack_without_end(tmp_path):
    with FakeServer(slots=None) as a, FakeServer(slots=None) as b:
        for fake in (a, b):
            fake.model("m", latency=0.1, text=HOSTILE)
        write_config(tmp_path / "c.json", {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]})
        write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i:02d}", "prompt": f"p{i}", "expected": "(a|aa)+$",
                                             "match": "regex"} for i in range(40)])
        proc = subprocess.Popen([sys.executable, "-m", "parallama", "batch", "in.jsonl", "-o", "out.jsonl", "-c",
                                 "c.json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = tmp_path / "out.jsonl"
        try:
            deadline = time.time() + 120
            while not (out.exists() and out.read_bytes().count(b"\n") >= 2):
                assert time.time() < deadline and proc.poll() is None, "no line written: the batch is frozen"
                time.sleep(0.02)
            stopped = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            took = time.perf_counter() - stopped
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    # A batch that waited for its backtracking regexes would never stop (communicate's 60 s); one that stops
    # takes 1-2 s, more on a loaded machine: the bound is generous (that it stopped early: fewer than 40 lines).
    assert took < 30, f"SIGTERM took {took:.1f} s to stop the batch"
    lines = read_lines(out)
    assert 2 <= len(lines) < 40
    assert all(line["score"]["gave_up"] == ["A", "B"] for line in lines)


# ---------------------------------------------------------------- 12. a full disk


def test_a_full_disk_mid_batch_is_one_line_exit_1_and_a_resume_goes_on(tmp_path, server):
    import resource

    one_worker(tmp_path, server, text="x" * 3000)
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i:02d}", "prompt": f"p{i}"} for i in range(60)])

    def small_disk() -> None:  # files of this process stop growing at 64 KiB, as on a full disk (EFBIG, not ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = subprocess.run([sys.executable, "-m", "parallama", "batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json",
                           "-q"], capture_output=True, text=True, timeout=60, preexec_fn=small_disk,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1
    assert proc.stderr == ("error: out.jsonl: cannot write: File too large (the lines before it are kept: make room, "
                           "then go on with --resume)\n")
    assert (tmp_path / "out.jsonl").stat().st_size == 64 * 1024

    result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 0, result.stderr
    assert "dropped its last line, cut off" in result.stderr
    assert sorted(by_id(tmp_path / "out.jsonl")) == [f"q{i:02d}" for i in range(60)]


def test_a_line_written_by_hand_with_a_lone_surrogate_escape_is_rescored_without_a_crash(tmp_path, server):
    import hashlib

    one_worker(tmp_path, server, text="fine")
    (tmp_path / "in.jsonl").write_text('{"id": "ok", "prompt": "fine", "expected": "x"}\n')
    line = {"id": "ok", "answered": True, "prompt_sha256": hashlib.sha256(b"fine").hexdigest(), "prompt": "fine",
            "final": None, "strategy": None, "workers": [{"name": "W", "status": "ok", "content": "half \ud800"}]}
    (tmp_path / "out.jsonl").write_text(json.dumps(line) + "\n")  # the surrogate as an escape: valid JSON
    proc = run_process("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "out.jsonl: the expected answer changed for ok: scored again (no model call)" in proc.stderr
    assert by_id(tmp_path / "out.jsonl")["ok"]["score"]["workers"] == {"W": False}
    assert server.requests == []
