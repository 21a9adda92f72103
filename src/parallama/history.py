"""Every run kept in SQLite (the user's data dir, file mode 0600): prompt, config, strategy, each agent's request
settings, answer, status, error, timings and tokens, and the final answer. API keys and URL passwords never reach
it (URLs are kept without their `user:password@`).

The schema grows through numbered migration functions applied in order and recorded in `_migrations`, as
simonw/llm does. A run's row is written when it starts (status `incomplete`) and each agent's row as it ends, so a
crash or Ctrl-C leaves a row marked incomplete or interrupted, never a corrupt database (SQLite's journal sees
to that)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypedDict

from .errors import HistoryError, SearchError
from .fleet import Agent, Fleet
from .events import Delta, Event, Failed, Finished, Queued, Rejected, RunEnded, RunStarted, Started, Thinking
from .paths import history_db
from .redact import Redactor
from .result import AgentResult, RunResult

HISTORY_ENV = "PARALLAMA_NO_HISTORY"
BUSY_TIMEOUT_S = 5.0
"How long a write waits for another process's (a concurrent run's row, a migration) before it gives up."
SEARCH_WORDS = 64
"Different words a history search takes at most (each is one LIKE over every stored prompt)."


def history_disabled() -> bool:
    return os.environ.get(HISTORY_ENV, "").strip().lower() not in ("", "0", "false", "no")


def storage_reason(exc: BaseException, path: Path) -> str:
    """Why SQLite or the file system refused, in the user's words rather than SQLite's."""
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        return "it is a directory, not a database file"
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return "it is not a SQLite database (move it away to start a new history)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


# ---------------------------------------------------------------- migrations

def _m001_runs_and_agents(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            ended_at REAL,
            status TEXT NOT NULL,          -- incomplete, complete, interrupted, stopped
            prompt TEXT NOT NULL,
            config TEXT NOT NULL,          -- the fleet as JSON (api_key_env names, never keys)
            strategy TEXT NOT NULL,
            final TEXT,
            final_source TEXT,
            wall_s REAL,
            warnings TEXT
        )""")
    db.execute("""
        CREATE TABLE agent_results (
            run_id TEXT NOT NULL REFERENCES runs(id),
            seq INTEGER NOT NULL,
            stage TEXT NOT NULL,           -- workers, round 2, …, ranking, review
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            api_url TEXT NOT NULL,
            protocol TEXT NOT NULL,
            settings TEXT NOT NULL,        -- system, options, timeout as sent
            status TEXT NOT NULL,
            content TEXT,
            error TEXT,
            error_kind TEXT,
            queued_s REAL, elapsed_s REAL, ttft_s REAL,
            prompt_tokens INTEGER, completion_tokens INTEGER, tokens_per_s REAL,
            PRIMARY KEY (run_id, seq)
        )""")
    db.execute("CREATE INDEX runs_started ON runs(started_at)")


def _m002_review_details(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN details TEXT")  # scores, rankings, aggregate ranking (JSON)


def _m003_thinking(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE agent_results ADD COLUMN thinking TEXT")  # a reasoning model's thinking, kept apart
    db.execute("ALTER TABLE agent_results ADD COLUMN thinking_tokens INTEGER")


def _m004_origin_and_context(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN origin TEXT")   # who asked: NULL for the CLI and the library, `serve`
    db.execute("ALTER TABLE runs ADD COLUMN context TEXT")  # earlier turns of a conversation (JSON), if any


def _m005_rejected(db: sqlite3.Connection) -> None:
    """Why the strategy threw a request's answer away (`Rejected`), kept from now on; for the runs kept before, what
    the page used to work out from them: a council ranking left out, a reviewer's answer before the one used (or
    before a worker's answer was used) that could not be read."""
    db.execute("ALTER TABLE agent_results ADD COLUMN rejected TEXT")
    db.execute("""
        UPDATE agent_results SET rejected = 'its answer could not be read'
        WHERE stage = 'review' AND status = 'ok'
          AND run_id IN (SELECT id FROM runs WHERE status = 'complete')
          AND ((SELECT final_source FROM runs WHERE id = agent_results.run_id) LIKE 'worker:%'
               OR seq < (SELECT max(seq) FROM agent_results last WHERE last.run_id = agent_results.run_id
                         AND last.stage = 'review'))""")
    rows = db.execute("SELECT id, details FROM runs WHERE status = 'complete' AND details LIKE '%\"rankings\"%'")
    for run_id, details in rows.fetchall():
        for ballot in json.loads(details).get("rankings") or []:
            if isinstance(ballot, dict) and ballot.get("error"):
                db.execute("UPDATE agent_results SET rejected = ? WHERE run_id = ? AND stage = 'ranking' "
                           "AND name = ? AND status = 'ok'", (f"ranking left out: {ballot['error']}", run_id,
                                                              ballot.get("ranker")))


def _m006_request_times(db: sqlite3.Connection) -> None:
    # When each request was queued for its slot and sent, in seconds since its run began (NULL for runs kept before).
    db.execute("ALTER TABLE agent_results ADD COLUMN queued_at REAL")
    db.execute("ALTER TABLE agent_results ADD COLUMN sent_at REAL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_runs_and_agents, _m002_review_details,
                                                          _m003_thinking, _m004_origin_and_context, _m005_rejected,
                                                          _m006_request_times]


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations not yet recorded, in order, in one transaction that holds the write lock.

    Several processes may open a fresh database at once (six `parallama run` started together): `BEGIN IMMEDIATE`
    lets one of them migrate while the others wait (the connection's busy timeout), and each reads what is done
    again inside its own transaction, so no step runs twice."""
    def pending() -> list[Callable[[sqlite3.Connection], None]]:
        try:
            done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            done = set()
        return [step for step in MIGRATIONS if step.__name__ not in done]

    if not pending():  # the common case: an up-to-date database, no write lock taken
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        for step in pending():
            step(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (step.__name__, time.time()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _use_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch a new database to WAL (it stays so). The switch needs the database alone, and SQLite answers
    "locked" at once, without its busy wait, while another process does the same on a fresh file: retry."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---------------------------------------------------------------- the store

class History:
    """The run history database. Raises `HistoryError` (naming the path) when it cannot be opened."""

    def __init__(self, path: Path | None = None, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path or history_db()
        try:
            self.db = self._open(busy_timeout)
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"cannot open it: {storage_reason(exc, self.path)}", file=self.path) from exc

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, timeout=busy_timeout)
        try:
            db.row_factory = sqlite3.Row
            _use_wal(db, busy_timeout)
            # No fsync per commit (WAL keeps the file consistent; a killed process loses nothing, a power cut at
            # most the last rows): a commit then costs microseconds, not the milliseconds `serve` would stall for.
            db.execute("PRAGMA synchronous=NORMAL")
            migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading
    def runs(self, limit: int = 20, *, search: str | None = None,
             prompt_chars: int | None = None) -> list["RunSummary"]:
        """The latest runs, newest first; with `search`, only those whose prompt holds every word of it (in any
        order; case-insensitive for ASCII letters, as SQLite's LIKE is; at most SEARCH_WORDS different words). With
        `prompt_chars`, each prompt is cut to that many characters by SQLite (the rest is never read)."""
        words = list(dict.fromkeys((search or "").split()))
        if len(words) > SEARCH_WORDS:
            raise SearchError(f"a search takes at most {SEARCH_WORDS} different words, not {len(words)}")
        # LIKE ends a pattern at a NUL (so it would match every prompt): such a word is looked for as it is.
        where = " AND ".join("instr(r.prompt, ?) > 0" if "\0" in word else "r.prompt LIKE ? ESCAPE '\\'"
                             for word in words)
        patterns = [word if "\0" in word else "%" + _like_escape(word) + "%" for word in words]
        # Cut as bytes (4 per character at most): SQLite's substr() of text would also stop at a NUL.
        columns = ", ".join(f"substr(CAST(r.prompt AS BLOB), 1, {4 * int(prompt_chars)}) AS prompt"
                            if name == "prompt" and prompt_chars is not None else f"r.{name}"
                            for name in RunSummary.__annotations__ if name not in ("workers", "workers_ok"))
        rows = self.db.execute(
            f"SELECT {columns}, json_array_length(r.config, '$.worker_agents') "
            "AS workers, (SELECT count(*) FROM agent_results a WHERE a.run_id = r.id AND a.stage = 'workers' "
            "AND a.status = 'ok') AS workers_ok FROM runs r " + (f"WHERE {where} " if words else "") +
            "ORDER BY started_at DESC LIMIT ?", (*patterns, limit))
        runs = [RunSummary(**dict(row)) for row in rows]  # type: ignore[typeddict-item]
        if prompt_chars is not None:
            for run in runs:  # the last character may have been cut in its middle: that part is left out
                run["prompt"] = bytes(run["prompt"]).decode("utf-8", "ignore")[:prompt_chars]
        return runs

    def run(self, run_id: str, *, exact: bool = False) -> "RunRecord | None":
        """The run with this id, or (unless `exact`) the one run whose id starts with it; None when there is no such
        run, or several."""
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
        if not row and not exact:  # a prefix, taken literally (`%` is no wildcard); two rows are enough to refuse
            row = self.db.execute("SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                                  (_like_escape(run_id) + "%",)).fetchall()
        if len(row) != 1:
            return None
        run = dict(row[0])
        run["config"] = json.loads(run["config"])
        run["warnings"] = json.loads(run["warnings"] or "[]")
        run["details"] = json.loads(run["details"] or "{}")
        run["context"] = json.loads(run["context"] or "[]")
        agents = self.db.execute("SELECT * FROM agent_results WHERE run_id = ? ORDER BY seq", (run["id"],))
        run["agents"] = [dict(a, settings=json.loads(a["settings"])) for a in agents]
        return run  # type: ignore[return-value]

    def export(self) -> Iterator["RunRecord"]:
        for (run_id,) in self.db.execute("SELECT id FROM runs ORDER BY started_at").fetchall():
            yield self.run(run_id)  # type: ignore[misc]


def _like_escape(text: str) -> str:
    """`text` matched literally by LIKE: its `%` and `_` are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class RunSummary(TypedDict):
    """One row of `history`: a run, with how many workers it had (every one in its fleet, also those a stop or a
    crash left without a result) and how many answered."""

    id: str
    started_at: float
    ended_at: float | None
    status: str
    "incomplete (running, or killed), complete, interrupted, stopped (by the user: the page's Stop)"
    prompt: str
    config: str
    "The fleet as JSON (see `fleet_record`)."
    strategy: str
    final: str | None
    final_source: str | None
    wall_s: float | None
    warnings: str | None
    details: str | None
    origin: str | None
    "Who asked for the run: None (the CLI, the library) or `serve`."
    context: str | None
    "The earlier turns of a conversation, as JSON."
    workers: int
    workers_ok: int


class AgentRecord(TypedDict):
    """One agent's request in a run, as stored: stage, settings sent, outcome, timings and tokens."""

    run_id: str
    seq: int
    stage: str
    name: str
    role: str
    model: str
    api_url: str
    protocol: str
    settings: dict[str, Any]
    status: str
    content: str | None
    error: str | None
    error_kind: str | None
    queued_s: float | None
    elapsed_s: float | None
    ttft_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_s: float | None
    thinking: str | None
    thinking_tokens: int | None
    rejected: str | None
    "Why the strategy threw the answer away (it answered, but could not be used), or None."
    queued_at: float | None
    "When the request was queued for its server's slot, in seconds since the run began (None: kept before this was)."
    sent_at: float | None
    "When it was sent (its slot taken), in seconds since the run began."


class RunRecord(TypedDict):
    """One run whole, as `history show` and `history export` give it."""

    id: str
    started_at: float
    ended_at: float | None
    status: str
    prompt: str
    config: dict[str, Any]
    strategy: str
    final: str | None
    final_source: str | None
    wall_s: float | None
    warnings: list[str]
    details: dict[str, Any]
    "The strategy's details (`RunResult.details`: judge scores, council rankings …) and the workers cut (`cut`)."
    origin: str | None
    "Who asked for the run: None (the CLI, the library) or `serve`."
    context: list[dict[str, str]]
    "The earlier turns of the conversation the prompt continued, oldest first (empty for a single prompt)."
    agents: list[AgentRecord]


def fleet_record(fleet: Fleet) -> dict[str, Any]:
    """The fleet as stored: what was asked of each agent; an API key is only ever named, never read here."""
    def agent(a: Agent) -> dict[str, Any]:
        return {"name": a.name, "model": a.model,
                "api_url": [r.api_url for r in a.pool] if a.pooled else a.api_url,  # a pool: every replica
                "timeout": a.timeout, "system": a.system,
                "options": dict(a.options), "api_key_env": a.api_key_env, "think": a.think}

    return {"worker_agents": [agent(a) for a in fleet.workers], "reviewer_agent": [agent(a) for a in fleet.reviewers],
            "servers": {url: {"parallel": s.parallel} for url, s in fleet.servers.items()},
            "review": {"strategy": fleet.strategy, "prompt": fleet.review_prompt, "system": fleet.review_system,
                       "rounds": fleet.rounds}}


RUN_DETAILS = ("cut", "sampling")
"The run's own facts kept among its `details` beside the strategy's (RunResult fields of those names)."


class RunRecorder:
    """Writes one run as it happens: the run row first, then each agent's row as it ends, then the outcome."""

    def __init__(self, history: History, prompt: str, fleet: Fleet, strategy: str, *,
                 run_id: str | None = None, context: "Sequence[Mapping[str, object]]" = (),
                 origin: str | None = None, secrets: "tuple[str, ...]" = ()) -> None:
        self.db = history.db
        self.id = run_id or uuid.uuid4().hex[:12]
        self.agents = {a.name: a for a in fleet.agents}
        self.redact = Redactor([*fleet.secrets(), *secrets])
        self.seq = 0
        self.seqs: dict[tuple[str, str], int] = {}
        "Each (stage, agent)'s latest row."
        self.began = time.perf_counter()
        self.times: dict[tuple[str, str], list[float | None]] = {}
        "Each (stage, agent)'s request in flight: when it was queued and sent, in seconds since the run began."
        with self.db:
            self.db.execute("INSERT INTO runs (id, started_at, status, prompt, config, strategy, origin, context) "
                            "VALUES (?, ?, 'incomplete', ?, ?, ?, ?, ?)",
                            (self.id, time.time(), self._clean(prompt),
                             self._clean(json.dumps(fleet_record(fleet))), strategy, origin,
                             self._clean(json.dumps(list(context), ensure_ascii=False)) if context else None))

    def _clean(self, text: str | None) -> str | None:
        """Belt and braces: a key or URL password that found its way into text (say, pasted into a prompt) is
        masked, as it is in every result already."""
        return None if text is None else self.redact(text)

    def agent_done(self, result: AgentResult, role: str) -> None:
        """One agent's row, in the stage `result.stage` (workers, round k, ranking, review)."""
        agent = self.agents.get(result.name)
        settings: dict[str, Any] = {}
        if agent:
            settings = {"system": agent.system, "options": dict(agent.options), "timeout": agent.timeout}
            if agent.think is not None:
                settings["think"] = agent.think
        self.seq += 1
        self.seqs[(result.stage, result.name)] = self.seq
        queued_at, sent_at = self.times.pop((result.stage, result.name), (None, None))
        data = asdict(result)
        with self.db:
            self.db.execute(
                "INSERT INTO agent_results (run_id, seq, stage, name, role, model, api_url, protocol, settings, "
                "status, content, error, error_kind, queued_s, elapsed_s, ttft_s, prompt_tokens, completion_tokens, "
                "tokens_per_s, thinking, thinking_tokens, queued_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.id, self.seq, result.stage, result.name, role, result.model, result.api_url, result.protocol,
                 self._clean(json.dumps(settings)), result.status, self._clean(result.content),
                 self._clean(result.error), result.error_kind, data["queued_s"], data["elapsed_s"], data["ttft_s"],
                 result.prompt_tokens, result.completion_tokens, result.tokens_per_s, self._clean(result.thinking),
                 result.thinking_tokens, queued_at, sent_at))

    def queued(self, stage: str, name: str) -> None:
        self.times[(stage, name)] = [round(time.perf_counter() - self.began, 3), None]

    def sent(self, stage: str, name: str) -> None:
        times = self.times.setdefault((stage, name), [None, None])
        times[1] = round(time.perf_counter() - self.began, 3)

    def rejected(self, stage: str, name: str, why: str) -> None:
        """The strategy threw the latest answer of `name` in `stage` away."""
        seq = self.seqs.get((stage, name))
        if seq is not None:
            with self.db:
                self.db.execute("UPDATE agent_results SET rejected = ? WHERE run_id = ? AND seq = ?",
                                (self._clean(why), self.id, seq))

    def finish(self, result: RunResult) -> None:
        run_details = {name: getattr(result, name) for name in RUN_DETAILS}
        details = {key: value for key, value in {**result.details, **run_details}.items() if value}
        with self.db:
            self.db.execute(
                "UPDATE runs SET status = 'complete', ended_at = ?, final = ?, final_source = ?, wall_s = ?, "
                "warnings = ?, details = ? WHERE id = ?",
                (time.time(), self._clean(result.final), _text(result.final_source), result.wall_s,
                 self._clean(json.dumps(result.warnings)), self._clean(json.dumps(details)), self.id))

    def interrupted(self, *, stopped: bool = False) -> None:
        """The run ended without a result: `stopped` at the user's word, else interrupted."""
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, ended_at = ? WHERE id = ? AND status = 'incomplete'",
                            ("stopped" if stopped else "interrupted", time.time(), self.id))


class HistoryWriter:
    """An event subscriber that keeps every run it sees: `FleetClient.subscribe(HistoryWriter(History()))`.
    `origin` marks where the runs came from (`serve` marks the runs it serves); `secrets` are masked wherever they
    appear, as the agents' keys are (`serve` passes its own key).

    A write that fails (disk full, the database locked longer than its busy timeout) must not end the runs: the
    writer stops writing, keeps the reason in `error`, and ignores every later event."""

    def __init__(self, store: History, *, origin: str | None = None, secrets: "tuple[str, ...]" = ()) -> None:
        self.store = store
        self.origin = origin
        self.secrets = secrets
        self.error: Exception | None = None
        "Why the writer stopped (a `HistoryError`), once it has; None while it writes."
        self._runs: dict[str, RunRecorder] = {}

    def kept(self, run_id: str) -> bool:
        """The run is being written, whole so far (the writer has not stopped)."""
        return self.error is None and run_id in self._runs

    def __call__(self, event: "Event") -> None:
        if self.error is not None:
            return
        try:
            self._record(event)
        except (sqlite3.Error, OSError) as exc:
            self._runs.clear()
            self.error = HistoryError(f"stopped writing: {storage_reason(exc, self.store.path)}; runs from here "
                                      "on are not kept", file=self.store.path)

    def _record(self, event: "Event") -> None:
        kind = type(event)
        if kind is Delta or kind is Thinking:  # the hot path: nothing of a piece is kept until its request ends
            return
        if kind is Queued or kind is Started:
            recorder = self._runs.get(event.run_id)
            if recorder is not None:
                (recorder.queued if kind is Queued else recorder.sent)(event.stage, event.agent.name)  # type: ignore[union-attr]
        elif isinstance(event, (Finished, Failed)):
            recorder = self._runs.get(event.run_id)
            if recorder is not None:
                recorder.agent_done(event.result, event.agent.role)
        elif isinstance(event, Rejected):
            recorder = self._runs.get(event.run_id)
            if recorder is not None:
                recorder.rejected(event.stage, event.agent.name, event.why)
        elif isinstance(event, RunStarted) and event.kind == "run":
            self._runs[event.run_id] = RunRecorder(self.store, event.prompt, event.fleet,
                                                   event.strategy or event.fleet.strategy, run_id=event.run_id,
                                                   context=event.context, origin=self.origin,
                                                   secrets=self.secrets)
        elif isinstance(event, RunEnded):
            recorder = self._runs.pop(event.run_id, None)
            if recorder is None:
                return
            if event.result is None:
                recorder.interrupted(stopped=event.stopped)
            else:
                recorder.finish(event.result)


def _text(source: object | None) -> str | None:
    return str(source) if source is not None else None
