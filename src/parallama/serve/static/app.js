// The page of `parallama serve`: watch every worker answer live, the review, the final answer and the timeline;
// browse the history. No build step and no library.
//
// Model output is untrusted. It reaches the page only as text (textContent, Text nodes), or as HTML that the
// server rendered from Markdown with raw HTML off (the `html` fields); nothing here turns text into markup.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "parallama.key";
const STAGE_TITLES = { workers: "Workers", ranking: "Ranking", review: "Review" };
const STRATEGY_NOTES = {
  synthesize: "the reviewer writes the final answer from the workers' answers",
  judge: "the reviewer scores the answers; the best-scored one is the final answer",
  council: "the workers rank each other's answers anonymously, then the reviewer writes the final answer",
  vote: "the answer most workers give is the final answer; with no majority, the reviewer writes it",
};

const state = {
  key: sessionStorage.getItem(KEY_STORE),
  fleet: null,
  conversation: [], // the turns a follow-up continues: {role, content, html}
  run: null, // the run on screen
  controller: null, // aborts the live run's stream (and so the run)
  ticker: null,
};

// ------------------------------------------------------------------ talking to serve

class KeyNeeded extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "same-origin" });
  if (response.status === 401) {
    askForKey(state.key ? "That key was not accepted." : "");
    throw new KeyNeeded("the API key is needed");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = typeof body.error === "string" ? body.error : body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function askForKey(problem) {
  $("app").hidden = true;
  $("key-form").hidden = false;
  $("key-error").hidden = !problem;
  $("key-error").textContent = problem;
  $("key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem(KEY_STORE, state.key);
  $("key").value = "";
  start();
});

async function start() {
  try {
    state.fleet = await (await api("/ui/api/fleet")).json();
  } catch (error) {
    if (!(error instanceof KeyNeeded)) $("fleet").textContent = "cannot reach parallama serve: " + error.message;
    return;
  }
  $("key-form").hidden = true;
  $("app").hidden = false;
  showFleet(state.fleet);
  loadHistory();
  pollLoad();
  $("prompt").focus();
}

// ------------------------------------------------------------------ the fleet and its servers' load

function showFleet(fleet) {
  const workers = fleet.workers.map((a) => a.name).join(", ");
  const reviewer = fleet.reviewers.length ? ` · reviewer ${fleet.reviewers[0].name} (${fleet.reviewers[0].model})` : " · no reviewer";
  $("fleet").textContent = `${fleet.workers.length} worker${fleet.workers.length === 1 ? "" : "s"}: ${workers}${reviewer}`;
  $("fleet").title = [...fleet.workers, ...fleet.reviewers].map((a) => `${a.name}: ${a.model} on ${a.server}`).join("\n");
  const select = $("strategy");
  select.value = fleet.strategy;
  select.disabled = !fleet.reviewers.length;
  select.title = fleet.reviewers.length ? STRATEGY_NOTES[fleet.strategy] : "no reviewer in the config";
  $("rounds").textContent = fleet.rounds > 1 ? `${fleet.rounds} rounds (from the config)` : "";
}

$("strategy").addEventListener("change", () => { $("strategy").title = STRATEGY_NOTES[$("strategy").value]; });

let loadTimer = null;
async function pollLoad() {
  clearTimeout(loadTimer);
  if (document.visibilityState === "visible") {
    try {
      showLoad(await (await api("/ui/api/load")).json());
    } catch (error) {
      if (error instanceof KeyNeeded) return;
    }
  }
  loadTimer = setTimeout(pollLoad, state.controller ? 500 : 1500);
}

function showLoad(load) {
  const list = $("load");
  list.replaceChildren(...load.servers.map((server) => {
    const item = el("li", "server" + (server.waiting ? " busy" : server.in_flight ? " active" : ""));
    item.dataset.server = server.server;
    item.append(el("span", "server-name", server.server.replace(/^https?:\/\//, "")));
    const slots = el("span", "slots");
    for (let i = 0; i < Math.min(server.slots, 8); i++) slots.append(el("i", i < server.in_flight ? "on" : ""));
    item.append(slots, el("span", "server-count",
      `${server.in_flight}/${server.slots} in flight` + (server.waiting ? ` · ${server.waiting} waiting` : "")));
    item.title = `${server.server}: ${server.in_flight} of ${server.slots} slots in use, ${server.waiting} waiting`;
    return item;
  }));
}

// ------------------------------------------------------------------ asking

$("ask").addEventListener("submit", (event) => { event.preventDefault(); state.controller ? stop() : send(); });
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    if (!state.controller) send();
  }
});
$("new").addEventListener("click", () => { state.conversation = []; showConversationNote(); $("prompt").focus(); });

function showConversationNote() {
  const turns = state.conversation.filter((t) => t.role !== "system").length;
  $("ask-note").textContent = turns ? `a follow-up continues this conversation (${turns} messages so far)` : "";
  $("new").hidden = !turns;
}

async function send() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) return;
  showError("");
  const controller = new AbortController();
  state.controller = controller;
  setRunning(true);
  const body = {
    prompt,
    strategy: state.fleet.reviewers.length ? $("strategy").value : null,
    context: state.conversation.map(({ role, content }) => ({ role, content })),
  };
  try {
    const response = await api("/ui/api/runs", {
      method: "POST", body: JSON.stringify(body), signal: controller.signal,
      headers: { "Content-Type": "application/json" },
    });
    $("prompt").value = "";
    await readEvents(response.body, apply);
    if (state.run && !state.run.over) apply({ type: "error", message: "the connection to serve closed before the run ended" });
  } catch (error) {
    if (controller.signal.aborted) {
      if (state.run && !state.run.over) apply({ type: "error", message: "stopped: the run was cancelled" });
    } else if (!(error instanceof KeyNeeded)) {
      if (state.run && !state.run.over) apply({ type: "error", message: error.message });
      else showError(error.message);
    }
  } finally {
    state.controller = null;
    setRunning(false);
    loadHistory();
    pollLoad();
  }
}

function stop() {
  if (state.controller) state.controller.abort();
}

function setRunning(running) {
  $("send").textContent = running ? "Stop" : "Send";
  $("send").classList.toggle("stop", running);
  document.body.classList.toggle("running", running);
}

function showError(message) {
  $("ask-error").hidden = !message;
  $("ask-error").textContent = message;
}

// Server-sent events, read from a fetch() body: EventSource cannot send the Authorization header.
async function readEvents(stream, onEvent) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// ------------------------------------------------------------------ a run on screen

function apply(view) {
  const handler = HANDLERS[view.type];
  if (handler && (view.type === "run" || state.run)) handler(view);
}

const HANDLERS = {
  run(view) {
    state.run = {
      id: view.run_id, prompt: view.prompt, strategy: view.strategy, rounds: view.rounds, context: view.context,
      live: !view.replayed, t0: performance.now(), entries: new Map(), order: [], stages: new Map(),
      over: false, endT: null, final: null,
    };
    $("run").hidden = false;
    $("run-prompt").textContent = view.prompt;
    $("stages").replaceChildren();
    $("review-stage").replaceChildren();
    $("final-body").replaceChildren(el("p", "muted waiting", view.strategy ? "The final answer appears here." : "The answers appear here."));
    $("final-body").classList.remove("streaming");
    $("final-source").textContent = "";
    $("warnings").replaceChildren();
    $("verdict").hidden = true;
    $("verdict").replaceChildren();
    $("copy").disabled = true;
    showConversation(view.context);
    for (const worker of view.workers) entryFor("workers", worker).badge.textContent = "waiting";
    if (state.run.live) {
      startTicker();
      pollLoad();
    }
    drawTimeline();
  },
  queued(view) {
    const entry = entryFor(view.stage, { name: view.agent, model: view.model, server: view.server }, true);
    entry.queuedT = view.t;
    setState(entry, "queued", `queued on ${hostPort(view.server)}`);
  },
  started(view) {
    const entry = entryFor(view.stage, { name: view.agent });
    entry.startedT = view.t;
    setState(entry, "running", "running");
    if (view.stage === "review" && streamsFinal()) {
      state.run.final = "";
      const body = $("final-body");
      body.replaceChildren(document.createTextNode(""));
      body.classList.add("streaming");
    }
  },
  delta(view) {
    const entry = entryFor(view.stage, { name: view.agent });
    entry.pieces += view.n || 1;
    if (entry.firstT === null) entry.firstT = nowT();
    if (entry.state === "thinking") setState(entry, "running", "running");
    if (view.stage === "review" && streamsFinal()) {
      appendText($("final-body"), view.text);
    } else {
      appendText(entry.text, view.text);
    }
  },
  thinking(view) {
    const entry = entryFor(view.stage, { name: view.agent });
    entry.thoughts += view.n || 1;
    if (entry.firstT === null) entry.firstT = nowT();
    if (!entry.pieces) setState(entry, "thinking", "thinking");
    entry.thinking.hidden = false;
    appendText(entry.thinkingText, view.text);
  },
  ended(view) {
    const entry = entryFor(view.stage, { name: view.agent });
    entry.endT = view.t;
    entry.result = view;
    if (entry.startedT === null) entry.startedT = view.t - (view.elapsed_s || 0);
    if (entry.queuedT === null) entry.queuedT = entry.startedT - (view.queued_s || 0);
    const label = { ok: "done", timeout: "timed out", cut: "cut" }[view.status] || "failed";
    setState(entry, view.status === "ok" ? "done" : view.status === "cut" ? "cut" : "failed", label);
    showAgentError(entry.errorLine, view.error);
    if (view.stage === "review") {
      entry.text.replaceChildren(el("p", "muted", view.status !== "ok" ? "" :
        state.run.strategy === "judge" ? "scored the answers (see the scores)" : "wrote the final answer"));
    } else if (view.html) {
      setAnswerHTML(entry.text, view.html);
    } else if (view.status !== "ok") {
      entry.text.replaceChildren();
    }
    entry.thinking.hidden = !view.thinking_tokens;
    showStats(entry);
    drawTimeline();
  },
  ranked(view) {
    showRankings(view.rankings, view.ranking);
  },
  result(view) {
    const run = state.run;
    finish(view.t);
    const body = $("final-body");
    body.classList.remove("streaming");
    if (view.final !== null) {
      setAnswerHTML(body, view.final_html);
      run.final = view.final;
      $("copy").disabled = false;
      state.conversation = run.context.concat([{ role: "user", content: run.prompt },
        { role: "assistant", content: view.final, html: view.final_html }]);
      showConversationNote();
    } else {
      body.replaceChildren(el("p", "error-line", view.error));
    }
    const partial = view.cut && view.cut.length ? ` · partial: ${view.cut.join(", ")} cut` : "";
    $("final-source").textContent = sourceText(view.final_source) + partial + (view.wall_s != null ? ` · ${secs(view.wall_s)} in all` : "");
    $("warnings").replaceChildren(...(view.warnings || []).map((w) => el("li", "", w)));
    if (view.scores) showScores(view.scores);
    if (view.rankings) showRankings(view.rankings, view.ranking);
    if (view.tally) showTally(view.tally);
  },
  error(view) {
    finish(nowT());
    const body = $("final-body");
    body.classList.remove("streaming");
    body.replaceChildren(el("p", "error-line", view.message));
  },
};

// An agent's one-line error, and its fix (what follows " — ": `ollama pull …`, `start it with …`) on a line of its own.
function showAgentError(line, error) {
  line.hidden = !error;
  if (!error) return line.replaceChildren();
  const cut = error.indexOf(" — ");
  if (cut < 0) return line.replaceChildren(document.createTextNode(error));
  line.replaceChildren(document.createTextNode(error.slice(0, cut)), el("span", "fix", error.slice(cut + 3)));
}

function streamsFinal() {
  return state.run.strategy !== null && state.run.strategy !== "judge";
}

function finish(t) {
  const run = state.run;
  run.over = true;
  run.endT = t;
  for (const entry of run.entries.values()) {
    if (entry.endT === null) setState(entry, "failed", entry.state === "waiting" ? "no result" : "stopped");
    showStats(entry);
  }
  stopTicker();
  drawTimeline();
}

function nowT() {
  const run = state.run;
  if (!run) return 0;
  if (run.over || !run.live) return run.endT ?? lastT();
  return (performance.now() - run.t0) / 1000;
}

function lastT() {
  let t = 0;
  for (const entry of state.run.entries.values()) t = Math.max(t, entry.endT ?? entry.startedT ?? entry.queuedT ?? 0);
  return t;
}

function sourceText(source) {
  if (!source) return "";
  if (source === "review") return "written by the reviewer";
  if (source === "workers") return "no reviewer: each worker's answer";
  const [kind, ...rest] = source.split(":");
  const name = rest.join(":");
  if (kind === "judge") return `the judge's pick: ${name}'s answer, scored best`;
  if (kind === "vote") return "the majority's answer (a vote)";
  if (kind === "worker") return `${name}'s answer (the reviewer failed)`;
  return source;
}

// ------------------------------------------------------------------ cards

function entryFor(stage, agent, queuedAgain = false) {
  const run = state.run;
  const base = `${stage}\u0000${agent.name}`;
  let key = base;
  let entry = run.entries.get(key);
  let attempt = 1;
  while (entry && queuedAgain && entry.endT !== null) { // the same agent asked again in this stage: a retry
    attempt += 1;
    key = `${base}\u0000${attempt}`;
    entry = run.entries.get(key);
  }
  if (!queuedAgain) { // a later event goes to the latest attempt
    for (let n = 2; run.entries.has(`${base}\u0000${n}`); n++) entry = run.entries.get(`${base}\u0000${n}`);
  }
  if (entry) {
    if (agent.server) entry.server = agent.server;
    return entry;
  }
  entry = makeEntry(stage, agent, attempt);
  run.entries.set(key, entry);
  run.order.push(entry);
  return entry;
}

function makeEntry(stage, agent, attempt) {
  const card = el("article", "card state-waiting");
  card.dataset.stage = stage;
  card.dataset.agent = agent.name;
  const head = el("header");
  head.title = `${agent.name} · ${agent.model || ""}` + (agent.server ? ` on ${agent.server}` : "");
  const title = el("h3", "", agent.name + (attempt > 1 ? ` (try ${attempt})` : ""));
  const badge = el("span", "badge", "");
  head.append(title, el("span", "model", agent.model || ""), badge);
  const stats = el("p", "stats", "");
  const errorLine = el("p", "error-line");
  errorLine.hidden = true;
  const thinking = el("details", "thinking");
  thinking.hidden = true;
  const thinkingSummary = el("summary", "", "thinking");
  const thinkingText = el("div", "thinking-text");
  thinking.append(thinkingSummary, thinkingText);
  const text = el("div", "body answer");
  card.append(head, stats, errorLine, thinking, text);
  stageCards(stage).append(card);
  const entry = {
    stage, name: agent.name, model: agent.model || "", server: agent.server || "", attempt, state: "waiting",
    queuedT: null, startedT: null, endT: null, firstT: null, pieces: 0, thoughts: 0, result: null,
    card, badge, stats, errorLine, thinking, thinkingSummary, thinkingText, text,
  };
  return entry;
}

function stageCards(stage) {
  const run = state.run;
  let section = run.stages.get(stage);
  if (!section) {
    section = el("section", "stage");
    section.dataset.stage = stage;
    let title = STAGE_TITLES[stage] || stage.replace(/^round/, "Round");
    if (stage === "workers" && run.rounds > 1) title = "Round 1";
    if (stage === "review" && run.strategy) title += ` · ${run.strategy}`;
    const note = stage === "ranking" ? "each worker ranks the others' answers, anonymously" :
      stage.startsWith("round ") ? "each worker improves its answer with the others'" :
      stage === "review" && run.strategy ? STRATEGY_NOTES[run.strategy] : "";
    const head = el("header");
    head.append(el("h2", "", title), el("span", "muted", note));
    section.append(head, el("div", "cards"));
    run.stages.set(stage, section);
    (stage === "review" ? $("review-stage") : $("stages")).append(section);
  }
  return section.querySelector(".cards");
}

function setState(entry, name, label) {
  entry.state = name;
  entry.card.className = `card state-${name}`;
  entry.badge.textContent = label;
  showStats(entry);
}

function showStats(entry) {
  const result = entry.result;
  const parts = [];
  if (result) {
    if (result.queued_s >= 0.05) parts.push(`queued ${secs(result.queued_s)}`);
    parts.push(`ran ${secs(result.elapsed_s)}`);
    if (result.completion_tokens) parts.push(`${result.completion_tokens} tokens`);
    if (result.tokens_per_s) parts.push(`${result.tokens_per_s.toFixed(1)} tok/s`);
    if (result.thinking_tokens) entry.thinkingSummary.textContent = `thought for ${result.thinking_tokens} tokens`;
  } else if (entry.queuedT !== null) {
    const now = nowT();
    const sent = entry.startedT ?? now;
    parts.push(`queued ${secs(sent - entry.queuedT)}`);
    if (entry.startedT !== null) parts.push(`ran ${secs(now - entry.startedT)}`);
    if (entry.pieces) parts.push(`${entry.pieces} tokens`);
    if (entry.pieces > 1 && entry.firstT !== null && now > entry.firstT) parts.push(`${(entry.pieces / (now - entry.firstT)).toFixed(1)} tok/s`);
    if (entry.thoughts) entry.thinkingSummary.textContent = `thinking: ${entry.thoughts} tokens`;
  }
  entry.stats.textContent = parts.join(" · ");
}

function startTicker() {
  stopTicker();
  state.ticker = setInterval(() => {
    if (!state.run || state.run.over) return stopTicker();
    for (const entry of state.run.order) if (!entry.result) showStats(entry);
    drawTimeline();
  }, 250);
}

function stopTicker() {
  clearInterval(state.ticker);
  state.ticker = null;
}

// ------------------------------------------------------------------ review: scores and rankings

function showScores(scores) {
  const panel = $("verdict");
  const best = Math.max(...scores.map((s) => s.score));
  const table = el("table", "scores");
  for (const score of scores) {
    const row = el("tr", score.score === best ? "best" : "");
    const bar = el("span", "bar");
    bar.style.width = `${score.score * 10}%`;
    const meter = el("td", "meter");
    meter.append(bar);
    row.append(el("th", "", score.name), el("td", "score", `${score.score}/10`), meter, el("td", "reason", score.reason));
    table.append(row);
  }
  panel.replaceChildren(panelHeader("Judge's scores"), table);
  panel.hidden = false;
}

function showRankings(rankings, ranking) {
  const panel = $("verdict");
  const parts = [panelHeader("Council rankings")];
  if (ranking && ranking.length) {
    const aggregate = el("ol", "aggregate");
    for (const place of ranking) aggregate.append(el("li", "", `${place.name} — ${place.points} point${place.points === 1 ? "" : "s"}`));
    parts.push(el("h3", "", "Aggregate (Borda count)"), aggregate);
  }
  const ballots = el("ul", "ballots");
  for (const ballot of rankings || []) {
    const item = el("li");
    item.append(el("strong", "", ballot.ranker + ": "));
    if (ballot.error) item.append(el("span", "error-line inline", `left out — ${ballot.error}`));
    else item.append(document.createTextNode(ballot.ranking.map((name, i) => `${i + 1}. ${name}`).join("  ")));
    ballots.append(item);
  }
  parts.push(el("h3", "", "Each ranker's order"), ballots);
  panel.replaceChildren(...parts);
  panel.hidden = false;
}

function showTally(tally) {
  const panel = $("verdict");
  const table = el("table", "scores tally");
  const most = Math.max(...tally.map((c) => c.count));
  const voters = tally.reduce((n, c) => n + c.count, 0);
  for (const count of tally) {
    const row = el("tr", count.count === most ? "best" : "");
    const bar = el("span", "bar");
    bar.style.width = `${(100 * count.count) / voters}%`;
    const meter = el("td", "meter");
    meter.append(bar);
    row.append(el("th", "", count.answer || "(empty)"), el("td", "score", `${count.count}`), meter,
      el("td", "reason", count.workers.join(", ")));
    table.append(row);
  }
  panel.replaceChildren(panelHeader("Votes"), table);
  panel.hidden = false;
}

function panelHeader(title) {
  const head = el("header");
  head.append(el("h2", "", title));
  return head;
}

// ------------------------------------------------------------------ the timeline

function drawTimeline() {
  const run = state.run;
  const box = $("timeline");
  if (!run) return;
  const rows = run.order.filter((e) => e.queuedT !== null);
  const now = nowT();
  const end = Math.max(0.5, now, ...rows.map((e) => e.endT ?? now));
  const [scale, step] = niceScale(end);
  const lines = rows.map((entry) => {
    const row = el("div", "tl-row");
    const stage = entry.stage === "workers" || entry.stage === "review" ? "" : ` · ${entry.stage}`;
    const label = el("span", "tl-label", entry.name + stage + (entry.attempt > 1 ? ` (try ${entry.attempt})` : ""));
    label.title = label.textContent + (entry.server ? ` on ${entry.server}` : "");
    const track = el("span", "tl-track");
    const sent = entry.startedT ?? now;
    if (sent - entry.queuedT > 0) track.append(span("tl-bar queued", entry.queuedT, sent, scale));
    if (entry.startedT !== null) {
      const kind = entry.state === "failed" || entry.state === "cut" ? entry.state : entry.stage === "review" ? "review" : "running";
      track.append(span(`tl-bar ${kind}`, entry.startedT, entry.endT ?? now, scale));
    }
    row.dataset.stage = entry.stage;
    row.dataset.agent = entry.name;
    row.append(label, track);
    return row;
  });
  const axis = el("div", "tl-axis");
  for (let i = 0; i * step <= scale + 1e-9; i++) {
    const t = i * step;
    const tick = el("span", "tick", t.toFixed(step < 0.5 ? 2 : step < 1 ? 1 : 0));
    tick.style.left = `${(t / scale) * 100}%`;
    axis.append(tick);
  }
  const axisRow = el("div", "tl-row");
  axisRow.append(el("span", "tl-label muted", "seconds"), axis);
  box.replaceChildren(...lines, axisRow);
  $("timeline-note").textContent = parallelNote(run);
}

function span(kind, from, to, scale) {
  const bar = el("span", kind);
  bar.style.left = `${(from / scale) * 100}%`;
  bar.style.width = `${Math.max(0.4, ((to - from) / scale) * 100)}%`;
  bar.title = `${secs(from)} → ${secs(to)}`;
  return bar;
}

// The axis: [its end, the step between ticks], at most 5 ticks past 0.
function niceScale(end) {
  for (const step of [0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800]) {
    if (end / step <= 5) return [Math.ceil(end / step - 1e-9) * step, step];
  }
  return [Math.ceil(end / 3600) * 3600, 3600];
}

// "3 workers: 4.5 s of work in 1.6 s" — whether they really ran at once (the guide's 83 s vs 30 s).
function parallelNote(run) {
  const workers = run.order.filter((e) => e.stage === "workers" && e.endT !== null && e.startedT !== null);
  if (workers.length < 2 || workers.length < run.order.filter((e) => e.stage === "workers").length) return "";
  const work = workers.reduce((sum, e) => sum + (e.endT - e.startedT), 0);
  const span = Math.max(...workers.map((e) => e.endT)) - Math.min(...workers.map((e) => e.queuedT));
  if (span <= 0) return "";
  const speedup = work / span;
  const how = speedup >= 1.3 ? "ran at once" : "ran one after another";
  return `workers ${how}: ${secs(work)} of work in ${secs(span)} (${speedup.toFixed(1)}×)`;
}

// ------------------------------------------------------------------ the conversation

function showConversation(context) {
  const box = $("conversation");
  const turns = (context || []).filter((t) => t.role !== "system");
  box.hidden = !turns.length;
  if (!turns.length) return box.replaceChildren();
  const details = el("details");
  details.append(el("summary", "", `Earlier in this conversation (${turns.length} messages)`));
  for (const turn of turns) {
    const item = el("div", `turn ${turn.role}`);
    item.append(el("span", "who", turn.role === "user" ? "You" : "Fleet"));
    const body = el("div", "answer");
    if (turn.html) setAnswerHTML(body, turn.html);
    else body.textContent = turn.content;
    item.append(body);
    details.append(item);
  }
  box.replaceChildren(details);
}

// ------------------------------------------------------------------ the final answer's copy button

$("copy").addEventListener("click", async () => {
  const text = state.run && state.run.final;
  if (!text) return;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) { // no clipboard API (a page not on localhost or https): the old way
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});

// ------------------------------------------------------------------ history

let searchTimer = null;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(loadHistory, 250);
});

async function loadHistory() {
  const query = $("search").value.trim();
  let data;
  try {
    data = await (await api("/ui/api/history?limit=100&q=" + encodeURIComponent(query))).json();
  } catch (error) {
    if (!(error instanceof KeyNeeded)) $("history-note").textContent = "history: " + error.message;
    return;
  }
  $("history-note").textContent = !data.enabled ? "History is off (serve --no-history)." :
    !data.runs.length ? (query ? "No prompt holds those words." : "No runs yet.") : "";
  $("history").replaceChildren(...data.runs.map(historyItem));
}

function historyItem(run) {
  const item = el("li");
  const button = el("button", "history-item" + (state.run && state.run.id === run.id ? " current" : ""));
  button.type = "button";
  button.dataset.id = run.id;
  button.append(el("span", "h-prompt", run.prompt));
  const meta = [when(run.started_at), run.strategy, `${run.workers_ok}/${run.workers} answered`];
  if (run.wall_s != null) meta.push(secs(run.wall_s));
  if (run.status !== "complete") meta.push(run.status);
  button.append(el("span", "h-meta", meta.join(" · ")));
  button.addEventListener("click", () => reopen(run.id));
  item.append(button);
  return item;
}

async function reopen(id) {
  if (state.controller) return showError("A run is going: stop it before opening another.");
  showError("");
  try {
    const data = await (await api(`/ui/api/history/${encodeURIComponent(id)}`)).json();
    for (const view of data.events) apply(view.type === "run" ? { ...view, replayed: true } : view);
    if (state.run && state.run.strategy && state.fleet.reviewers.length) $("strategy").value = state.run.strategy;
    if (state.run && !state.run.over) finish(lastT());
    for (const button of document.querySelectorAll(".history-item")) button.classList.toggle("current", button.dataset.id === id);
  } catch (error) {
    if (!(error instanceof KeyNeeded)) showError(error.message);
  }
}

// ------------------------------------------------------------------ small things

function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

function appendText(container, text) {
  const atEnd = container.scrollTop + container.clientHeight >= container.scrollHeight - 4;
  let last = container.lastChild;
  if (!last || last.nodeType !== Node.TEXT_NODE) {
    if (container.querySelector(".waiting")) container.replaceChildren();
    last = container.appendChild(document.createTextNode(""));
  }
  last.appendData(text);
  if (atEnd) container.scrollTop = container.scrollHeight;
}

// HTML the server rendered from Markdown with raw HTML off: the one place markup is set. Links open apart, so
// following one does not close this page (and with it the run).
function setAnswerHTML(container, html) {
  container.innerHTML = html;
  for (const link of container.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

function hostPort(server) {
  return (server || "its server").replace(/^https?:\/\//, "");
}

function secs(s, fine = true) {
  if (s == null || Number.isNaN(s)) return "—";
  if (s >= 60) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${s.toFixed(fine && s < 10 ? 1 : 0)} s`;
}

function when(epoch) {
  const date = new Date(epoch * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toDateString() === new Date().toDateString() ? time :
    date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
}

document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") pollLoad(); });
start();
