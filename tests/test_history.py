"""Every run is kept in SQLite: success, failure and interrupted runs, no API key ever stored, migrations."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer, free_port
from parallama.history import MIGRATIONS, History
from parallama.paths import history_db


def test_every_test_keeps_parallamas_files_under_its_own_home(tmp_path, server):
    """The suite roots state and history in each test's directory through `PARALLAMA_HOME`, which holds on every
    platform (platformdirs ignores `XDG_*` on macOS and Windows): a run's history lands there, nowhere else."""
    from parallama.paths import data_dir, state_dir

    home = tmp_path / "home"
    assert (state_dir(), data_dir(), history_db()) == (home / "state", home / "data", home / "data" / "history.db")
    server.model("m", latency=0.05)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    assert invoke("run", "hi", "-c", "c.json").exit_code == 0
    assert (home / "data" / "history.db").is_file()


def test_a_successful_run_is_kept_whole(tmp_path, servers, monkeypatch):
    a, b, c = servers
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-very-secret-value")
    a.model("m", latency=0.05, text="alpha")
    b.model("m", latency=0.05, text="beta")
    c.model("rev", latency=0.05, text="merged")
    write_config(tmp_path / "c.json", {
        "reviewer_agent": {"name": "Rev", "api_url": c.url + "/v1", "model": "rev", "api_key_env": "SECRET_KEY_VAR"},
        "worker_agents": [worker(a, "m", name="A", system="Be brief.", options={"temperature": 0.2}),
                          worker(b, "m", name="B")]})
    # A key pasted into a prompt is masked too.
    result = invoke("run", "question with sk-very-secret-value inside", "-c", "c.json")
    assert result.exit_code == 0
    runs = json.loads(invoke("history", "--json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "complete" and runs[0]["final"] == "merged"
    assert runs[0]["workers"] == 2 and runs[0]["workers_ok"] == 2
    shown = json.loads(invoke("history", "show", runs[0]["id"][:6], "--json").stdout)
    # Rows in the order the agents ended: workers (either first), then the reviewer.
    assert sorted((x["stage"], x["name"], x["status"]) for x in shown["agents"]) == [
        ("review", "Rev", "ok"), ("workers", "A", "ok"), ("workers", "B", "ok")]
    assert shown["agents"][-1]["stage"] == "review"
    a_row = next(x for x in shown["agents"] if x["name"] == "A")
    assert a_row["settings"] == {"system": "Be brief.", "options": {"temperature": 0.2}, "timeout": 60.0}
    assert a_row["content"] == "alpha" and a_row["elapsed_s"] > 0 and a_row["completion_tokens"]
    assert shown["config"]["reviewer_agent"][0]["api_key_env"] == "SECRET_KEY_VAR"
    assert "***" in shown["prompt"]
    # The key is nowhere in the database file.
    path = history_db()
    assert b"sk-very-secret-value" not in path.read_bytes()
    for extra in path.parent.glob(path.name + "-*"):
        assert b"sk-very-secret-value" not in extra.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_run_is_kept_with_its_errors(tmp_path):
    port = free_port()
    write_config(tmp_path / "c.json", {"worker_agents": [{"name": "dead", "api_url": f"http://127.0.0.1:{port}",
                                                          "model": "m"}]})
    assert invoke("run", "hi", "-c", "c.json").exit_code == 1
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["status"] == "complete" and run["final"] is None and run["workers_ok"] == 0
    shown = json.loads(invoke("history", "show", run["id"], "--json").stdout)
    assert shown["agents"][0]["error_kind"] == "unreachable" and "connection refused" in shown["agents"][0]["error"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_is_marked_and_the_database_stays_sound(tmp_path, stop):
    """Ctrl-C, or SIGTERM (a service manager, `kill`): the same clean stop — exit 130, the row `interrupted`."""
    with FakeServer() as fake:
        fake.model("quick", latency=0.05)
        fake.model("slow", latency=30)
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "quick"), worker(fake, "slow")],
                                           "servers": {fake.url: {"parallel": 2}}})
        env = {**os.environ}
        proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "hi", "-c", "c.json", "-q"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60  # a busy machine may take long to start the process

        def quick_kept() -> bool:  # the quick worker's row is written as it finishes
            if not history_db().exists():
                return False
            try:
                with closing(sqlite3.connect(history_db(), timeout=5)) as db:
                    return bool(db.execute("SELECT count(*) FROM agent_results WHERE name = 'quick'").fetchone()[0])
            except sqlite3.OperationalError:  # the table is not made yet
                return False
        while fake.in_flight < 1 or not quick_kept():
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "interrupted"
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["status"] == "interrupted"
    shown = json.loads(invoke("history", "show", run["id"], "--json").stdout)
    assert [a["name"] for a in shown["agents"]] == ["quick"]  # what had finished is kept
    db = sqlite3.connect(history_db())
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_killed_run_stays_incomplete(tmp_path):
    with FakeServer() as fake:
        fake.model("slow", latency=30)
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "slow")]})
        proc = subprocess.Popen([sys.executable, "-m", "parallama", "run", "hi", "-c", "c.json", "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60  # a busy machine may take long to start the process
        while fake.in_flight < 1:
            assert time.time() < deadline
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    [run] = json.loads(invoke("history", "--json").stdout)
    assert run["status"] == "incomplete"
    assert "[incomplete]" in invoke("history").stdout


def test_history_can_be_turned_off(tmp_path, server, monkeypatch):
    server.model("m", latency=0.05)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    assert invoke("run", "hi", "-c", "c.json", "--no-history").exit_code == 0
    monkeypatch.setenv("PARALLAMA_NO_HISTORY", "1")
    assert invoke("run", "hi", "-c", "c.json").exit_code == 0
    assert not history_db().exists()
    monkeypatch.delenv("PARALLAMA_NO_HISTORY")
    assert invoke("run", "hi", "-c", "c.json").exit_code == 0
    assert len(json.loads(invoke("history", "--json").stdout)) == 1


def test_list_limit_and_export(tmp_path, server):
    server.model("m", latency=0.02)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    for i in range(3):
        invoke("run", f"prompt {i}", "-c", "c.json")
    listed = invoke("history", "--limit", "2")
    assert listed.stdout.count("\n") == 2 and "prompt 2" in listed.stdout and "prompt 0" not in listed.stdout
    lines = invoke("history", "export", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == ["prompt 0", "prompt 1", "prompt 2"]
    assert invoke("history", "show", "nope").exit_code == 2


def test_migrations_are_recorded_and_applied_once(tmp_path):
    path = tmp_path / "h.db"
    with History(path):
        pass
    with History(path) as store:
        names = [row[0] for row in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS]
    # An old database (first migration only) is brought up to date.
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    MIGRATIONS[0](db)
    db.execute("INSERT INTO _migrations VALUES (?, 0)", (MIGRATIONS[0].__name__,))
    db.commit()
    db.close()
    with History(old) as store:
        columns = [row[1] for row in store.db.execute("PRAGMA table_info(runs)")]
    assert "details" in columns


def test_a_database_of_before_rejections_were_kept_learns_which_answers_were_thrown_away(tmp_path):
    """Runs kept before `Rejected` was: the migration marks what the page used to work out from them (a council
    ranking left out; a judge's answer before the one used, or before the run fell back on a worker's), and the
    page's replay of them says so from the stored mark."""
    from parallama.redact import Redactor
    from parallama.serve.ui_view import replay

    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    before = [m for m in MIGRATIONS if m.__name__ != "_m005_rejected"][:4]
    for step in before:
        step(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (step.__name__,))
    config = json.dumps({"worker_agents": [{"name": n, "model": "m", "api_url": "http://h:1/api/chat"}
                                           for n in "AB"], "reviewer_agent": [], "servers": {}, "review": {}})
    ballots = [{"ranker": "A", "shown": {"A": "B"}, "ranking": [], "error": "no FINAL RANKING section"},
               {"ranker": "B", "shown": {"A": "A"}, "ranking": ["A"], "error": None}]
    for run_id, source, details in (("council1", "review", {"rankings": ballots}), ("judge1", "judge:A", {}),
                                    ("fell1", "worker:A", {})):
        db.execute("INSERT INTO runs (id, started_at, status, prompt, config, strategy, final, final_source, "
                   "wall_s, details) VALUES (?, 0, 'complete', 'p', ?, ?, 'x', ?, 1.0, ?)",
                   (run_id, config, run_id[:-1].replace("fell", "judge"), source, json.dumps(details)))
        stages = (["workers", "workers", "ranking", "ranking", "review"] if run_id == "council1" else
                  ["workers", "workers", "review", "review"])
        for seq, stage in enumerate(stages, 1):
            name = "R" if stage == "review" else "AB"[seq % 2 == 0]
            db.execute("INSERT INTO agent_results (run_id, seq, stage, name, role, model, api_url, protocol, "
                       "settings, status, content, queued_s, elapsed_s) VALUES (?, ?, ?, ?, 'worker', 'm', "
                       "'http://h:1/api/chat', 'ollama', '{}', 'ok', 'text', 0, 0.1)", (run_id, seq, stage, name))
    db.commit()
    db.close()
    with History(old) as store:
        marks = {(r, s): why for r, s, why in store.db.execute("SELECT run_id, seq, rejected FROM agent_results")}
        council = store.run("council1")
    assert marks[("council1", 3)] == "ranking left out: no FINAL RANKING section" and marks[("council1", 4)] is None
    assert marks[("council1", 5)] is None  # the reviewer whose answer was used
    assert (marks[("judge1", 3)], marks[("judge1", 4)]) == ("its answer could not be read", None)
    assert marks[("fell1", 3)] == marks[("fell1", 4)] == "its answer could not be read"
    assert council is not None
    ended = [v for v in replay(council, Redactor([])) if v["type"] == "ended" and v["stage"] == "ranking"]
    assert [(v["agent"], v["state"]) for v in ended][-1:] == [("A", "unusable")]
    assert ended[-1]["error"] == "ranking left out: no FINAL RANKING section"


FIRST_USE = r'''
import sys, time
from pathlib import Path
from parallama.config import fleet_from_dict
from parallama.history import History, RunRecorder
db, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
fleet = fleet_from_dict({"worker_agents": [{"api_url": "http://127.0.0.1:1/api/chat", "model": "m"}]})
ready.touch()
while not go.exists():
    time.sleep(0.001)
with History(db) as store:
    RunRecorder(store, "hi", fleet, "synthesize")
'''


def test_concurrent_first_use_of_a_fresh_database_is_safe(tmp_path):
    """Processes that all open a database that does not exist yet, released at the same instant: each migrates or
    waits for the one that does, and every run row is kept. (Before: 6 of 60 crashed.)"""
    processes, trials = 8, 10
    for trial in range(trials):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        db, go = folder / "history.db", folder / "go"
        procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, str(db), str(folder / f"ready{i}"), str(go)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(processes)]
        # Bounds on hanging only: a machine starved of CPU (load 20 on 2 cores) has taken over a minute to start
        # the 8 interpreters.
        deadline = time.monotonic() + 600
        while len(list(folder.glob("ready*"))) < processes:
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll() is not None]
            assert time.monotonic() < deadline, f"trial {trial}: the processes were not ready after 600 s"
            time.sleep(0.01)
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"trial {trial}: {err}"
        check = sqlite3.connect(db)
        assert check.execute("SELECT count(*) FROM runs").fetchone() == (processes,)
        assert [r[0] for r in check.execute("SELECT name FROM _migrations ORDER BY rowid")] == \
            [m.__name__ for m in MIGRATIONS]
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        check.close()


def _two_workers_and_a_reviewer(tmp_path, fake):
    fake.model("a", latency=0.05, text="alpha")
    fake.model("b", latency=0.6, text="beta")
    fake.model("rev", latency=0.05, text="merged")
    return write_config(tmp_path / "c.json", {"reviewer_agent": worker(fake, "rev", name="Rev"),
                                              "worker_agents": [worker(fake, "a", name="A"), worker(fake, "b", name="B")],
                                              "servers": {fake.url: {"parallel": 2}}})


def test_a_broken_history_database_does_not_block_a_run(tmp_path, server):
    """A history path that is not a database, or a directory: the run runs, one warning names the path, and the
    file (or directory) is left as it was."""
    _two_workers_and_a_reviewer(tmp_path, server)
    path = history_db()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"my notes, not a database\n" * 100)
    result = invoke("run", "hi", "-c", "c.json", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["final"] == "merged"
    warnings = [line for line in result.stderr.splitlines() if "history" in line]
    assert warnings == [f"warning: history database {path}: cannot open it: it is not a SQLite database (move it "
                        "away to start a new history); this run is not kept in the history"]
    assert json.loads(result.stdout)["history_id"] is None
    assert path.read_bytes() == b"my notes, not a database\n" * 100
    # `history` itself says what is wrong, in one line.
    listed = invoke("history")
    assert listed.exit_code == 1 and listed.stderr.strip().startswith(f"error: history database {path}")

    path.unlink()
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 0 and result.stdout.strip() == "merged"
    assert result.stderr.count("warning: history database") == 1 and "it is a directory" in result.stderr
    assert (path / "keep.txt").read_text() == "mine"


def test_a_history_write_failing_mid_run_stops_history_not_the_run(tmp_path, server):
    """The database locked by another process for longer than the busy timeout once a worker is done: history
    stops (said once, in the result's warnings), the run goes on and every answer is kept."""
    from parallama import run_sync

    config = _two_workers_and_a_reviewer(tmp_path, server)
    path = tmp_path / "h.db"
    other = sqlite3.connect(path, isolation_level=None)
    locked = []

    def lock_after_first_answer(event):
        if type(event).__name__ == "Finished" and not locked:
            other.execute("BEGIN IMMEDIATE")  # another writer takes the lock and keeps it
            locked.append(event.result.name)

    with History(path, busy_timeout=0.2) as store:
        result = run_sync("hi", str(config), history=store, on_event=lock_after_first_answer)
    assert locked == ["A"]
    assert result.final == "merged" and [w.content for w in result.workers] == ["alpha", "beta"]
    assert result.warnings == [f"history database {path}: stopped writing: database is locked; runs from here "
                               "on are not kept"]
    assert result.history_id is None
    other.execute("ROLLBACK")
    [run] = History(path).runs()
    assert run["status"] == "incomplete"  # what was written before the lock is kept, and marked unfinished


def test_the_library_raises_a_typed_error_for_a_broken_database(tmp_path, server):
    """From Python, `history=True` on a broken database is a `HistoryError` naming the file (the CLI turns it into
    a warning); nothing is left open."""
    from parallama import run_sync
    from parallama.errors import HistoryError, ParallamaError

    config = _two_workers_and_a_reviewer(tmp_path, server)
    history_db().parent.mkdir(parents=True)
    history_db().mkdir()
    with pytest.raises(HistoryError) as caught:
        run_sync("hi", str(config), history=True)
    assert isinstance(caught.value, ParallamaError)
    assert str(caught.value) == f"history database {history_db()}: cannot open it: it is a directory, not a " \
                                "database file"
    assert not server.requests


async def test_every_stage_is_kept_rounds_rankings_and_review(servers):
    """History is an event subscriber: it keeps each request under its stage, council rankings included."""
    from parallama import FleetClient

    a, b, c = servers
    a.model("m", latency=0.02, text="alpha FINAL RANKING:\n1. Response A")
    b.model("m", latency=0.02, text="beta FINAL RANKING:\n1. Response A")
    c.model("rev", latency=0.02, text="merged")
    config = {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
              "reviewer_agent": worker(c, "rev", name="Rev"), "review": {"strategy": "council", "rounds": 2}}
    from parallama.history import HistoryWriter

    with History() as store:
        async with FleetClient(config) as client:
            client.subscribe(HistoryWriter(store))
            result = await client.run("q")
        stored = store.run(result.history_id or "")
    assert stored is not None and stored["status"] == "complete"
    # Rows in the order requests ended: stage by stage (within a stage, whichever finished first).
    assert [x["stage"] for x in stored["agents"]] == ["workers"] * 2 + ["round 2"] * 2 + ["ranking"] * 2 + ["review"]
    assert {x["name"] for x in stored["agents"] if x["stage"] == "ranking"} == {"A", "B"}
    assert stored["details"]["ranking"][0]["name"] in ("A", "B")


async def test_the_history_keeps_when_each_request_was_queued_and_sent_and_replay_shows_those_moments(server):
    """A one-slot server: B waits for A's slot. The history keeps each request's queued and sent moments (since
    the run began), so a replay puts B's start after A's end, as it happened, not at the stage's start."""
    from parallama.redact import Redactor
    from parallama.serve.ui_view import replay

    server.model("m", latency=0.2, text="hello")
    config = {"worker_agents": [worker(server, "m", name="A"), worker(server, "m", name="B")],
              "servers": {server.url: {"parallel": 1}}}
    from parallama import run

    with History() as store:
        result = await run("q", config, history=store)
        stored = store.run(result.history_id or "")
    assert stored is not None
    rows = {row["name"]: row for row in stored["agents"]}
    a, b = sorted(rows.values(), key=lambda row: row["sent_at"])
    assert a["queued_at"] is not None and abs(a["queued_at"] - b["queued_at"]) < 0.15  # queued together
    assert b["sent_at"] >= a["sent_at"] + a["elapsed_s"] * 0.9  # B was sent once A's slot came free
    views = replay(stored, Redactor([]))
    started = {v["agent"]: v["t"] for v in views if v["type"] == "started"}
    ended = {v["agent"]: v["t"] for v in views if v["type"] == "ended"}
    assert started[b["name"]] == pytest.approx(b["sent_at"], abs=0.002)
    assert started[b["name"]] >= ended[a["name"]] - 0.05


def test_runs_are_found_by_words_of_their_prompt(tmp_path, server):
    server.model("m", latency=0.01)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    for prompt in ["Why is the sky blue?", "Is the BLUE whale a fish?", "100% of 2_000", "Sky at night"]:
        assert invoke("run", prompt, "-c", "c.json").exit_code == 0
    with History() as store:
        def found(search):
            return [run["prompt"] for run in store.runs(search=search)]

        assert found("blue") == ["Is the BLUE whale a fish?", "Why is the sky blue?"]  # newest first, any case
        assert found("blue  sky") == ["Why is the sky blue?"]  # every word, in any order
        assert found("%") == ["100% of 2_000"] and found("2_0") == ["100% of 2_000"]  # literally, no wildcards
        assert found("_") == ["100% of 2_000"] and found("whale night") == []
        assert len(found("")) == 4 and len(store.runs(2, search="")) == 2
    listed = invoke("history", "--search", "sky")
    assert listed.stdout.count("\n") == 2 and "Sky at night" in listed.stdout and "whale" not in listed.stdout
    assert "no run's prompt holds 'zebra'" in invoke("history", "--search", "zebra").stderr
    both = invoke("history", "--search", "sky", "blue", "--limit", "5")  # the words after --search, unquoted
    assert both.exit_code == 0 and both.stdout.count("\n") == 1 and "Why is the sky blue?" in both.stdout


def test_a_search_is_bounded_a_nul_is_no_wildcard_and_an_id_is_never_a_pattern(tmp_path, server):
    server.model("m", latency=0.01)
    write_config(tmp_path / "c.json", {"worker_agents": [worker(server, "m")]})
    for prompt in ["Why is the sky blue?", "x" * 2000 + " long"]:
        assert invoke("run", prompt, "-c", "c.json").exit_code == 0
    many = " ".join(f"word{i}" for i in range(999))
    result = invoke("history", "--search", many)  # SQLite's expression depth gave a traceback
    assert result.exit_code == 2
    assert result.stderr == "error: a search takes at most 64 different words, not 999\n"
    result = invoke("history", "--search", " ".join(["sky"] * 999))  # one word, said 999 times
    assert result.exit_code == 0 and "Why is the sky blue?" in result.stdout
    with History() as store:
        runs = store.runs()
        assert store.runs(search="\0") == [] and store.runs(search="sky \0") == []  # NUL ended the LIKE pattern
        assert [len(run["prompt"]) for run in store.runs(prompt_chars=500)] == [500, 20]
        first = runs[0]["id"]
        assert store.run("%") is None and store.run("_" * len(first)) is None  # not LIKE patterns
        assert store.run(first[:-3] + "%") is None
        found = store.run(first[:6])
        assert found is not None and found["id"] == first  # a prefix still finds its run
        assert store.run(first[:6], exact=True) is None and store.run(first, exact=True)["id"] == first
