// The page's reducer, run.js: reduce(run, view, at) → run, a pure function of the server's views (ui_view.py).
// Run by `node --test tests/js/` (tests/test_page_script.py runs it with the Python suite).
import assert from "node:assert/strict";
import { test } from "node:test";

import { parallelNote, reduce, statsParts, workSummary } from "../../src/parallama/serve/static/run.js";
import { codeSpans, errorAndFix, niceScale, secs, sourceText } from "../../src/parallama/serve/static/format.js";

const agent = (name, server) => ({ name, model: "m", role: "worker", server });
const OPENED = {
  type: "run", run_id: "r1", prompt: "2 + 2?", strategy: "synthesize", final_streams: true, rounds: 1, context: [],
  workers: [agent("A", "http://localhost:1"), agent("B", "http://localhost:1")], reviewers: [agent("Rev", "http://localhost:2")],
};

/** Every view in turn, from no run; each step's run kept. */
function fold(views) {
  const runs = [];
  let run = null;
  views.forEach((view, i) => { run = reduce(run, view, i / 10); runs.push(run); });
  return runs;
}

function frozen(value) {
  if (value && typeof value === "object") {
    Object.freeze(value);
    for (const key of Object.keys(value)) frozen(value[key]);
  }
  return value;
}

const A_AND_B = [
  OPENED,
  { type: "queued", t: 0, stage: "workers", agent: "A", model: "m", role: "worker", server: "http://localhost:1" },
  { type: "queued", t: 0, stage: "workers", agent: "B", model: "m", role: "worker", server: "http://localhost:1" },
  { type: "started", t: 0.01, stage: "workers", agent: "A", queued_s: 0 },
  { type: "thinking", stage: "workers", agent: "A", text: "hmm" },
  { type: "delta", stage: "workers", agent: "A", text: "Fo", n: 2 },
  { type: "delta", stage: "workers", agent: "A", text: "ur." },
  { type: "ended", t: 0.5, stage: "workers", agent: "A", status: "ok", state: "done", content: "Four.", html: "<p>Four.</p>",
    error: null, queued_s: 0, elapsed_s: 0.49, completion_tokens: 3, tokens_per_s: 6.1, thinking_tokens: 1 },
  { type: "started", t: 0.5, stage: "workers", agent: "B", queued_s: 0.5 },
  { type: "ended", t: 0.6, stage: "workers", agent: "B", status: "error", state: "failed", content: "", html: "",
    error: "B (http://localhost:1/api/chat): model 'm' not found — ollama pull m", queued_s: 0.5, elapsed_s: 0.1 },
  { type: "queued", t: 0.6, stage: "review", agent: "Rev", model: "big", role: "reviewer", server: "http://localhost:2" },
  { type: "started", t: 0.6, stage: "review", agent: "Rev", queued_s: 0 },
  { type: "delta", stage: "review", agent: "Rev", text: "It is " },
  { type: "delta", stage: "review", agent: "Rev", text: "4." },
  { type: "ended", t: 0.9, stage: "review", agent: "Rev", status: "ok", state: "done", content: "It is 4.", html: "<p>It is 4.</p>",
    error: null, queued_s: 0, elapsed_s: 0.3, completion_tokens: 2 },
  { type: "result", t: 0.95, final: "It is 4.", final_html: "<p>It is 4.</p>", final_source: "review",
    source: { kind: "review", agent: null }, details: {}, summary: [], warnings: [], wall_s: 0.95,
    history_id: null, error: null, cut: [] },
];

test("a run's views fold into one entry per request, with states, times and text", () => {
  const runs = fold(A_AND_B);
  const run = runs.at(-1);
  assert.deepEqual(run.entries.map((e) => [e.stage, e.name, e.state, e.label]),
    [["workers", "A", "done", "done"], ["workers", "B", "failed", "failed"], ["review", "Rev", "done", "done"]]);
  const [a, b, rev] = run.entries;
  assert.equal(a.text, "Four.");
  assert.equal(a.thinking, "hmm");
  assert.equal(a.pieces, 3); // a merged piece counts as the pieces it stands for
  assert.equal(a.thoughts, 1);
  assert.equal(b.queuedT, 0);
  assert.equal(b.startedT, 0.5);
  assert.equal(rev.text, ""); // the reviewer's stream is the final answer, not its card's
  assert.equal(run.final, "It is 4.");
  assert.ok(run.over);
  assert.equal(run.endT, 0.95);
  assert.equal(run.error, null);
  // Along the way: A was queued, running, thinking, running again once its answer began, then done.
  const states = runs.slice(1).map((r) => r.entries[0].state);
  assert.deepEqual(states.filter((s, i) => s !== states[i - 1]), ["queued", "running", "thinking", "running", "done"]);
  assert.equal(runs[3].entries[1].label, "queued on localhost:1");
  assert.equal(runs[12].final, "It is ");
});

test("reduce is pure: it never changes the run or the view it is given", () => {
  let run = null;
  for (const [i, view] of A_AND_B.entries()) {
    const before = structuredClone(run);
    const next = reduce(frozen(run), frozen(structuredClone(view)), i); // frozen: a change in place would throw
    assert.deepEqual(run, before);
    run = next;
  }
  // The same views give the same run.
  assert.deepEqual(fold(A_AND_B).at(-1), fold(A_AND_B).at(-1));
});

test("views before a run, or of no known type, change nothing", () => {
  assert.equal(reduce(null, A_AND_B[1], 0), null);
  const run = reduce(null, OPENED, 0);
  assert.equal(reduce(run, { type: "something new" }, 0), run);
});

test("the same agent asked again in a stage is a second try", () => {
  const views = [OPENED,
    { type: "queued", t: 0, stage: "review", agent: "J", model: "m", server: "http://localhost:2" },
    { type: "started", t: 0, stage: "review", agent: "J", queued_s: 0 },
    { type: "ended", t: 0.1, stage: "review", agent: "J", status: "error", state: "failed", error: "HTTP 400", elapsed_s: 0.1 },
    { type: "queued", t: 0.1, stage: "review", agent: "J", model: "m", server: "http://localhost:2" },
    { type: "started", t: 0.1, stage: "review", agent: "J", queued_s: 0 },
    { type: "ended", t: 0.3, stage: "review", agent: "J", status: "ok", state: "done", content: "{}", elapsed_s: 0.2 }];
  const run = fold(views).at(-1);
  const tries = run.entries.filter((e) => e.name === "J");
  assert.deepEqual(tries.map((e) => [e.attempt, e.state]), [[1, "failed"], [2, "done"]]);
  assert.notEqual(tries[0].key, tries[1].key);
});

test("a judged run does not stream the reviewer's text as the answer; a cut worker is cut", () => {
  const views = [{ ...OPENED, strategy: "judge", final_streams: false },
    { type: "queued", t: 0, stage: "workers", agent: "B", model: "m", server: "http://localhost:1" },
    { type: "started", t: 0, stage: "workers", agent: "B", queued_s: 0 },
    { type: "ended", t: 0.2, stage: "workers", agent: "B", status: "cut", state: "cut", error: "cut: quorum", elapsed_s: 0.2 },
    { type: "started", t: 0.2, stage: "review", agent: "Rev", queued_s: 0 },
    { type: "delta", stage: "review", agent: "Rev", text: "{\"scores\": []}" }];
  const run = fold(views).at(-1);
  assert.equal(run.final, null);
  assert.equal(run.entries.find((e) => e.name === "B").state, "cut");
  assert.equal(run.entries.find((e) => e.name === "Rev").text, "{\"scores\": []}");
});

test("a request that timed out is a failure that says so", () => {
  const run = fold([OPENED, { type: "ended", t: 1, stage: "workers", agent: "A", status: "timeout", state: "timeout",
    error: "A: no answer within 60 s", elapsed_s: 60 }]).at(-1);
  assert.deepEqual([run.entries[0].state, run.entries[0].label], ["failed", "timed out"]);
});

test("an error ends the run: requests that never ended say so", () => {
  const views = [OPENED,
    { type: "queued", t: 0, stage: "workers", agent: "A", model: "m", server: "http://localhost:1" },
    { type: "started", t: 0, stage: "workers", agent: "A", queued_s: 0 },
    { type: "error", message: "stopped: the run was cancelled" }];
  const run = fold(views).at(-1);
  assert.ok(run.over);
  assert.equal(run.error, "stopped: the run was cancelled");
  assert.deepEqual(run.entries.map((e) => [e.name, e.state, e.label]), [["A", "stopped", "stopped"], ["B", "waiting", "no result"]]);
  assert.equal(run.stopped, false);
});

test("a stopped run: requests the server says were stopped are stopped, not failed, and the run says so", () => {
  const views = [OPENED,
    { type: "queued", t: 0, stage: "workers", agent: "A", model: "m", server: "http://localhost:1" },
    { type: "queued", t: 0, stage: "workers", agent: "B", model: "m", server: "http://localhost:1" },
    { type: "started", t: 0, stage: "workers", agent: "A", queued_s: 0 },
    { type: "ended", t: 2, stage: "workers", agent: "A", attempt: 1, state: "stopped", status: "stopped", content: "",
      html: "", error: null, queued_s: null, elapsed_s: null },
    { type: "ended", t: 2, stage: "workers", agent: "B", attempt: 1, state: "stopped", status: "stopped", content: "",
      html: "", error: null, queued_s: null, elapsed_s: null },
    { type: "error", stopped: true, message: "stopped: you pressed Stop; what had finished is kept in each agent's row (open one to read it)" }];
  const run = fold(views).at(-1);
  assert.deepEqual(run.entries.map((e) => [e.name, e.state, e.label]), [["A", "stopped", "stopped"], ["B", "stopped", "stopped"]]);
  assert.ok(run.over && run.stopped);
  assert.equal(run.entries[0].startedT, 0); // its bar runs from when it was sent to the stop
  assert.equal(run.entries[0].endT, 2);
  assert.match(workSummary(run, 2), /^Stopped after .* · 0 of 2 workers answered · 2 stopped · review: synthesize$/);
});

test("a reviewer's or a ranker's unusable answer is unusable, on the attempt the server names", () => {
  const views = [{ ...OPENED, strategy: "judge", final_streams: false },
    { type: "queued", t: 0, stage: "review", agent: "Rev", model: "m", server: "http://localhost:2" },
    { type: "started", t: 0, stage: "review", agent: "Rev", queued_s: 0 },
    { type: "ended", t: 0.1, stage: "review", agent: "Rev", attempt: 1, status: "ok", state: "done", content: "meh", elapsed_s: 0.1 },
    { type: "queued", t: 0.1, stage: "review", agent: "Rev", model: "m", server: "http://localhost:2" },
    { type: "started", t: 0.1, stage: "review", agent: "Rev", queued_s: 0 },
    { type: "ended", t: 0.3, stage: "review", agent: "Rev", attempt: 2, status: "ok", state: "done", content: "meh", elapsed_s: 0.2 },
    // At the run's end the server sends both again: neither could be read.
    { type: "ended", t: 0.1, stage: "review", agent: "Rev", attempt: 1, status: "ok", state: "unusable", content: "meh",
      error: "its answer could not be read", elapsed_s: 0.1 },
    { type: "ended", t: 0.3, stage: "review", agent: "Rev", attempt: 2, status: "ok", state: "unusable", content: "meh",
      error: "Rev: unreadable answer, twice", elapsed_s: 0.2 }];
  const run = fold(views).at(-1);
  assert.deepEqual(run.entries.filter((e) => e.name === "Rev").map((e) => [e.attempt, e.state, e.label]),
    [[1, "unusable", "unusable"], [2, "unusable", "unusable"]]);
  assert.match(workSummary(run, 1), /^Working… 0 of 2 workers answered · 2 unusable answers · review: judge$/);
});

test("fix lines: backtick spans are code, the rest text", () => {
  assert.deepEqual(codeSpans("model 'm' not found — run `OLLAMA_HOST=127.0.0.1:1 ollama pull m`"),
    [[false, "model 'm' not found — run "], [true, "OLLAMA_HOST=127.0.0.1:1 ollama pull m"]]);
  assert.deepEqual(codeSpans("<b>no</b> `<i>` and a lone ` tick"), [[false, "<b>no</b> "], [true, "<i>"], [false, " and a lone ` tick"]]);
  assert.deepEqual(codeSpans("plain"), [[false, "plain"]]);
});

test("numbers and words", () => {
  const run = fold(A_AND_B).at(-1);
  assert.deepEqual(statsParts(run.entries[0], 1), ["ran 0.5 s", "3 tokens", "6.1 tok/s"]);
  assert.deepEqual(statsParts({ ...run.entries[0], result: null, queuedT: 0, startedT: 0.5, firstT: 0.5, pieces: 4 }, 1.5),
    ["queued 0.5 s", "ran 1.0 s", "4 tokens", "4.0 tok/s"]);
  assert.equal(parallelNote(run), "workers ran one after another: 0.6 s of work in 0.6 s (1.0×)"); // one slot
  const failedAtOnce = { ...run, entries: run.entries.map((e) => e.stage === "workers"
    ? { ...e, state: "failed", startedT: 0, endT: 0.004 } : e) };
  assert.equal(parallelNote(failedAtOnce), ""); // no "0.0 s of work in 0.0 s (2.9×)"
  assert.equal(secs(75), "1 min 15 s");
  assert.equal(secs(null), "—");
  assert.deepEqual(niceScale(3.2), [4, 1]);
  assert.equal(sourceText({ kind: "judge", agent: "B: two" }), "the judge's pick: B: two's answer, scored best");
  assert.equal(sourceText({ kind: "worker", agent: "A" }), "A's answer (the reviewer failed)");
  assert.deepEqual(errorAndFix("gone — ollama pull m"), ["gone", "ollama pull m"]);
  assert.deepEqual(errorAndFix("refused"), ["refused", null]);
});
