// @ts-check
// A run as the page knows it, folded from the server's views of its events (`ui_view.py` lists them) by one pure
// function: reduce(run, view, at) → run. No DOM here: `draw.js` shows what this holds; `node --test tests/js/` tests it.

import { hostPort, secs } from "./format.js";

/**
 * One agent's request in one stage (a retry of the same agent in a stage is an entry of its own, `attempt` 2, 3 …).
 * @typedef {object} Entry
 * @property {string} key
 * @property {string} stage
 * @property {string} name
 * @property {string} model
 * @property {string} server
 * @property {number} attempt
 * @property {string} state waiting, queued, running, thinking, done, failed (a timeout too), cut (by a quorum or
 *   a settled vote), stopped (still going when the run was stopped), unusable (answered, but the answer could not be
 *   used: a judge's or a ranker's that could not be read)
 * @property {string} label what its badge says
 * @property {number | null} queuedT seconds since the run started
 * @property {number | null} startedT
 * @property {number | null} endT
 * @property {number | null} firstT when its first piece came
 * @property {number} pieces pieces of answer so far (≈ tokens)
 * @property {number} thoughts pieces of thinking so far
 * @property {string} text its answer as streamed so far
 * @property {string} thinking its thinking as streamed so far
 * @property {any} result its `ended` view, once it ended
 */

/**
 * @typedef {object} Run
 * @property {string} id
 * @property {string} prompt
 * @property {string | null} strategy how the answers are reviewed; null: not reviewed
 * @property {boolean} finalStreams the reviewer's text is the final answer as it is written
 * @property {number} rounds
 * @property {any[]} context the earlier turns of the conversation
 * @property {boolean} live false for a run reopened from the history
 * @property {Entry[]} entries in the order they were made
 * @property {boolean} over
 * @property {number | null} endT
 * @property {string | null} final the final answer (as streamed so far, then whole)
 * @property {any} result the `result` view, once the run ended with one
 * @property {string | null} error why the run ended with no answer
 * @property {boolean} stopped the run was stopped (the user's Stop), not ended by a failure
 * @property {{rankings: any[], ranking: any[] | null} | null} ranked council: the workers' rankings
 */

/** @param {string} stage @param {string} name @param {number} attempt */
function keyOf(stage, name, attempt) {
  return attempt > 1 ? `${stage}\u0000${name}\u0000${attempt}` : `${stage}\u0000${name}`;
}

/**
 * @param {string} stage
 * @param {{name: string, model?: string, server?: string}} agent
 * @param {number} attempt
 * @returns {Entry}
 */
function newEntry(stage, agent, attempt) {
  return {
    key: keyOf(stage, agent.name, attempt), stage, name: agent.name, model: agent.model || "",
    server: agent.server || "", attempt, state: "waiting", label: "waiting", queuedT: null, startedT: null,
    endT: null, firstT: null, pieces: 0, thoughts: 0, text: "", thinking: "", result: null,
  };
}

/**
 * The latest attempt of an agent in a stage, or undefined.
 * @param {Run} run @param {string} stage @param {string} name
 */
export function latest(run, stage, name) {
  let found;
  for (const entry of run.entries) if (entry.stage === stage && entry.name === name) found = entry;
  return found;
}

/** A copy of the run with one entry replaced (or added). @param {Run} run @param {Entry} entry @returns {Run} */
function withEntry(run, entry) {
  const at = run.entries.findIndex((e) => e.key === entry.key);
  const entries = at < 0 ? [...run.entries, entry] : run.entries.map((e, i) => (i === at ? entry : e));
  return { ...run, entries };
}

/**
 * The run after one view. `at`: the page's clock, seconds since the run started (for when a piece came).
 * @param {Run | null} run
 * @param {any} view
 * @param {number} at
 * @returns {Run | null}
 */
export function reduce(run, view, at) {
  if (view.type === "run") return opened(view);
  if (!run) return run;
  switch (view.type) {
    case "queued": {
      const agent = { name: view.agent, model: view.model, server: view.server };
      const before = latest(run, view.stage, view.agent);
      const entry = !before ? newEntry(view.stage, agent, 1) :
        before.endT !== null ? newEntry(view.stage, agent, before.attempt + 1) :  // asked again: a retry
        { ...before, model: view.model || before.model, server: view.server || before.server };
      return withEntry(run, { ...entry, queuedT: view.t, state: "queued", label: `queued on ${hostPort(entry.server)}` });
    }
    case "started": {
      const entry = latest(run, view.stage, view.agent) || newEntry(view.stage, { name: view.agent }, 1);
      const next = withEntry(run, { ...entry, server: view.server || entry.server, startedT: view.t, state: "running",
        label: "running" });
      return view.stage === "review" && run.finalStreams ? { ...next, final: "" } : next;
    }
    case "delta": {
      const entry = latest(run, view.stage, view.agent) || newEntry(view.stage, { name: view.agent }, 1);
      const toFinal = view.stage === "review" && run.finalStreams;
      const next = withEntry(run, {
        ...entry, pieces: entry.pieces + (view.n || 1), firstT: entry.firstT ?? at,
        ...(entry.state === "thinking" ? { state: "running", label: "running" } : {}),
        text: toFinal ? entry.text : entry.text + view.text,
      });
      return toFinal ? { ...next, final: (next.final || "") + view.text } : next;
    }
    case "thinking": {
      const entry = latest(run, view.stage, view.agent) || newEntry(view.stage, { name: view.agent }, 1);
      return withEntry(run, {
        ...entry, thoughts: entry.thoughts + (view.n || 1), firstT: entry.firstT ?? at,
        ...(entry.pieces ? {} : { state: "thinking", label: "thinking" }), thinking: entry.thinking + view.text,
      });
    }
    case "ended": {
      const entry = (view.attempt ? attempt(run, view.stage, view.agent, view.attempt) : undefined) ||
        latest(run, view.stage, view.agent) || newEntry(view.stage, { name: view.agent }, view.attempt || 1);
      const startedT = entry.startedT ?? view.t - (view.elapsed_s || 0);
      const state = view.state === "timeout" ? "failed" : view.state || "failed";  // the server's row; timeout: a failure
      const label = LABELS[/** @type {string} */ (view.state)] || "failed";
      return withEntry(run, {
        ...entry, endT: view.t, result: view, startedT, queuedT: entry.queuedT ?? startedT - (view.queued_s || 0),
        state, label,
      });
    }
    case "ranked":
      return { ...run, ranked: { rankings: view.rankings, ranking: view.ranking } };
    case "result": {
      const over = finish(run, view.t);
      return { ...over, final: view.final, result: view, error: view.final === null ? view.error : null,
        ...(view.rankings ? { ranked: { rankings: view.rankings, ranking: view.ranking } } : {}) };
    }
    case "error":
      return { ...finish(run, at), error: view.message, stopped: Boolean(view.stopped) };
    default:
      return run;
  }
}

/** @param {any} view @returns {Run} */
function opened(view) {
  return {
    id: view.run_id, prompt: view.prompt, strategy: view.strategy, finalStreams: Boolean(view.final_streams),
    rounds: view.rounds, context: view.context || [], live: !view.replayed,
    entries: view.workers.map((/** @type {any} */ w) => newEntry("workers", w, 1)),
    over: false, endT: null, final: null, result: null, error: null, stopped: false, ranked: null,
  };
}

/** What a card's badge says for each state an ended request is in. */
const LABELS = /** @type {Record<string, string>} */ ({
  done: "done", failed: "failed", timeout: "timed out", cut: "cut", stopped: "stopped", unusable: "unusable",
});

/** The entry of one attempt. @param {Run} run @param {string} stage @param {string} name @param {number} n */
function attempt(run, stage, name, n) {
  return run.entries.find((e) => e.stage === stage && e.name === name && e.attempt === n);
}

/**
 * The run is over at `t`: a request that never ended was stopped (it has no result: not a failure); one never asked
 * says it has none.
 * @param {Run} run @param {number} t @returns {Run}
 */
export function finish(run, t) {
  const entries = run.entries.map((e) => (e.endT !== null ? e :
    { ...e, state: e.state === "waiting" ? "waiting" : "stopped", label: e.state === "waiting" ? "no result" : "stopped",
      endT: e.startedT !== null || e.queuedT !== null ? t : null }));
  return { ...run, over: true, endT: t, entries };
}

/**
 * The summary of a turn's folded work: "Worked for 4.2 s · 3 of 3 workers answered · judge", or while it runs
 * "Working… 2 of 3 workers answered".
 * @param {Run} run @param {number} now
 */
export function workSummary(run, now) {
  const workers = run.entries.filter((e) => e.stage === "workers");
  const answered = workers.filter((e) => e.state === "done").length;
  const parts = [`${answered} of ${workers.length} worker${workers.length === 1 ? "" : "s"} answered`];
  const count = (/** @type {string} */ state) => workers.filter((e) => e.state === state).length;
  for (const [state, word] of [["failed", "failed"], ["cut", "cut"], ["stopped", "stopped"]]) {
    if (count(state)) parts.push(`${count(state)} ${word}`);
  }
  const unusable = run.entries.filter((e) => e.state === "unusable").length;
  if (unusable) parts.push(`${unusable} unusable answer${unusable === 1 ? "" : "s"}`);
  if (run.strategy) parts.push(`review: ${run.strategy}`);
  if (!run.over) return `Working… ${parts.join(" · ")}`;
  const took = run.result && run.result.wall_s != null ? run.result.wall_s : run.endT ?? now;
  return `${run.stopped ? "Stopped after" : "Worked for"} ${secs(took)} · ${parts.join(" · ")}`;
}

/** The latest moment the run's entries know of (a reopened run's end). @param {Run} run */
export function lastT(run) {
  let t = 0;
  for (const e of run.entries) t = Math.max(t, e.endT ?? e.startedT ?? e.queuedT ?? 0);
  return t;
}

/**
 * An entry's numbers: queued and running seconds, tokens, tok/s — from its result once it ended, else live.
 * @param {Entry} entry @param {number} now
 * @returns {string[]}
 */
export function statsParts(entry, now) {
  const result = entry.result;
  /** @type {string[]} */
  const parts = [];
  if (result) {
    if (result.queued_s >= 0.05) parts.push(`queued ${secs(result.queued_s)}`);
    parts.push(`ran ${secs(result.elapsed_s)}`);
    if (result.completion_tokens) parts.push(`${result.completion_tokens} tokens`);
    if (result.tokens_per_s) parts.push(`${result.tokens_per_s.toFixed(1)} tok/s`);
  } else if (entry.queuedT !== null) {
    parts.push(`queued ${secs((entry.startedT ?? now) - entry.queuedT)}`);
    if (entry.startedT !== null) parts.push(`ran ${secs(now - entry.startedT)}`);
    if (entry.pieces) parts.push(`${entry.pieces} tokens`);
    if (entry.pieces > 1 && entry.firstT !== null && now > entry.firstT) {
      parts.push(`${(entry.pieces / (now - entry.firstT)).toFixed(1)} tok/s`);
    }
  }
  return parts;
}

/**
 * "workers ran at once: 4.5 s of work in 1.6 s (2.8×)" — whether they really ran at once (the guide's 83 s vs 30 s).
 * @param {Run} run
 */
export function parallelNote(run) {
  const workers = run.entries.filter((e) => e.stage === "workers" && e.endT !== null && e.startedT !== null);
  if (workers.length < 2 || workers.length < run.entries.filter((e) => e.stage === "workers").length) return "";
  // Workers that failed at once did no work: "0.0 s of work in 0.0 s (2.9×)" would say nothing true.
  if (!workers.some((e) => e.state === "done")) return "";
  const work = workers.reduce((sum, e) => sum + (/** @type {number} */ (e.endT) - /** @type {number} */ (e.startedT)), 0);
  const span = Math.max(...workers.map((e) => /** @type {number} */ (e.endT)))
    - Math.min(...workers.map((e) => /** @type {number} */ (e.queuedT ?? e.startedT)));
  if (span < 0.05 || work < 0.05) return "";
  const speedup = work / span;
  const how = speedup >= 1.3 ? "ran at once" : "ran one after another";
  return `workers ${how}: ${secs(work)} of work in ${secs(span)} (${speedup.toFixed(1)}×)`;
}
