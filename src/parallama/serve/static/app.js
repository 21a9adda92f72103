// @ts-check
// The page of `parallama serve`: watch every worker answer live, the review, the final answer and the timeline;
// browse the history. ES modules, no build step and no library: `run.js` folds the server's views of a run into
// its state (a pure function), `draw.js` shows that state, `format.js` says numbers and sources in words.
//
// Model output is untrusted. It reaches the page only as text (textContent, Text nodes), or as HTML that the
// server rendered from Markdown with raw HTML off (the `html` fields); nothing here turns text into markup.

import { $, el } from "./dom.js";
import { draw, strategyNote, tick, useStrategies } from "./draw.js";
import { secs, when } from "./format.js";
import { finish, lastT, reduce } from "./run.js";

const KEY_STORE = "parallama.key";

/** @type {{key: string | null, fleet: any, conversation: any[], run: import("./run.js").Run | null, t0: number, controller: AbortController | null, ticker: any}} */
const state = {
  key: sessionStorage.getItem(KEY_STORE),
  fleet: null,
  conversation: [], // the turns a follow-up continues: {role, content, html}
  run: null, // the run on screen
  t0: 0, // when the live run on screen began (performance.now())
  controller: null, // aborts the live run's stream (and so the run)
  stopToken: "", // the live run's, from its stream's headers: serve lets only this page stop it
  ticker: null,
};

// ------------------------------------------------------------------ talking to serve

class KeyNeeded extends Error {}

/**
 * A request to serve with the key (when there is one); a 401 asks for the key, another error says the server's words.
 * @param {string} path @param {RequestInit} [options] @returns {Promise<Response>}
 */
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

/** @param {string} problem */
function askForKey(problem) {
  $("fleet").textContent = "this server wants its API key";
  $("app").hidden = true;
  $("key-form").hidden = false;
  $("key-error").hidden = !problem;
  $("key-error").textContent = problem;
  $("key").focus();
}

$("key-form").addEventListener("submit", (/** @type {Event} */ event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem(KEY_STORE, state.key || "");
  $("key").value = "";
  start();
});

async function start() {
  try {
    state.fleet = await (await api("/ui/api/fleet")).json();
  } catch (error) {
    if (!(error instanceof KeyNeeded)) $("fleet").textContent = "cannot reach parallama serve: " + messageOf(error);
    return;
  }
  $("key-form").hidden = true;
  $("app").hidden = false;
  showFleet(state.fleet);
  loadHistory();
  pollLoad();
  $("prompt").focus();
}

/** @param {unknown} error */
function messageOf(error) {
  return error instanceof Error ? error.message : String(error);
}

// ------------------------------------------------------------------ the fleet and its servers' load

/** @param {any} fleet */
function showFleet(fleet) {
  const workers = fleet.workers.map((/** @type {any} */ a) => a.name).join(", ");
  const reviewer = fleet.reviewers.length ? ` · reviewer ${fleet.reviewers[0].name} (${fleet.reviewers[0].model})` : " · no reviewer";
  $("fleet").textContent = `${fleet.workers.length} worker${fleet.workers.length === 1 ? "" : "s"}: ${workers}${reviewer}`;
  $("fleet-whole").textContent = $("fleet").textContent;
  $("fleet").title = [...fleet.workers, ...fleet.reviewers].map((a) => `${a.name}: ${a.model} on ${a.server}`).join("\n");
  useStrategies(fleet.strategies);
  const select = $("strategy");
  select.replaceChildren(...fleet.strategies.map((/** @type {any} */ s) => {
    const option = el("option", "", s.name);
    option.value = s.name;
    return option;
  }));
  select.value = fleet.strategy;
  select.disabled = !fleet.reviewers.length;
  select.title = fleet.reviewers.length ? strategyNote(fleet.strategy) : "no reviewer in the config";
  $("rounds").textContent = fleet.rounds > 1 ? `${fleet.rounds} rounds (from the config)` : "";
}

$("strategy").addEventListener("change", () => { $("strategy").title = strategyNote($("strategy").value); });

/** @type {ReturnType<typeof setTimeout> | undefined} */
let loadTimer;
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

/** @param {{servers: {server: string, slots: number, in_flight: number, waiting: number}[]}} load */
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

$("ask").addEventListener("submit", (/** @type {Event} */ event) => { event.preventDefault(); state.controller ? stop() : send(); });
$("prompt").addEventListener("keydown", (/** @type {KeyboardEvent} */ event) => {
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
    state.stopToken = response.headers.get("X-Parallama-Stop-Token") || "";
    await readEvents(/** @type {ReadableStream<Uint8Array>} */ (response.body), apply);
    if (state.run && !state.run.over) apply({ type: "error", message: "the connection to serve closed before the run ended" });
  } catch (error) {
    if (controller.signal.aborted) {
      if (state.run && !state.run.over) apply({ type: "error", stopped: true, message: "stopped: the run was cancelled" });
    } else if (!(error instanceof KeyNeeded)) {
      if (state.run && !state.run.over) apply({ type: "error", message: messageOf(error) });
      else showError(messageOf(error));
    }
  } finally {
    state.controller = null;
    setRunning(false);
    loadHistory();
    pollLoad();
  }
}

/** Stop: serve ends the run as stopped and its stream sends what it left; if that does not come soon, the stream is
 * closed (which cancels the run too). */
async function stop() {
  const controller = state.controller;
  if (!controller) return;
  $("send").disabled = true;
  const run = state.run;
  const giveUp = setTimeout(() => controller.abort(), 3000);
  controller.signal.addEventListener("abort", () => clearTimeout(giveUp));
  try {
    if (run && !run.over && run.live) {
      await api(`/ui/api/runs/${encodeURIComponent(run.id)}/stop`, {
        method: "POST", body: "{}",
        headers: { "Content-Type": "application/json", "X-Parallama-Stop-Token": state.stopToken || "" },
      });
    } else {
      controller.abort();
    }
  } catch (_) {
    controller.abort();
  }
}

/** @param {boolean} running */
function setRunning(running) {
  $("send").disabled = false;
  $("send").textContent = running ? "Stop" : "Send";
  $("send").classList.toggle("stop", running);
  document.body.classList.toggle("running", running);
}

/** @param {string} message */
function showError(message) {
  $("ask-error").hidden = !message;
  $("ask-error").textContent = message;
}

// Server-sent events, read from a fetch() body: EventSource cannot send the Authorization header.
/** @param {ReadableStream<any>} stream @param {(view: any) => void} onEvent */
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

/** The page's clock: seconds since the run on screen began (a reopened or ended run: its end). */
function nowT() {
  const run = state.run;
  if (!run) return 0;
  if (run.over || !run.live) return run.endT ?? lastT(run);
  return (performance.now() - state.t0) / 1000;
}

/** One view from the server: folded into the run, then drawn. @param {any} view */
function apply(view) {
  if (view.type === "run") state.t0 = performance.now();
  const before = state.run;
  const run = reduce(before, view, nowT());
  if (!run) return;
  state.run = run;
  draw(run, view, nowT());
  if (view.type === "run" && run.live) {
    startTicker();
    pollLoad();
    loadHistory(); // the run is in the history from its start, as running
  }
  if (run.over && !(before && before.over)) stopTicker();
  if (view.type === "result" && view.final !== null) {
    state.conversation = run.context.concat([{ role: "user", content: run.prompt },
      { role: "assistant", content: view.final, html: view.final_html }]);
    showConversationNote();
  }
}

/** The run is over (its stream closed before its end, or it was reopened unfinished). */
function end() {
  if (!state.run || state.run.over) return;
  state.run = finish(state.run, nowT());
  tick(state.run, nowT());
  stopTicker();
}

function startTicker() {
  stopTicker();
  state.ticker = setInterval(() => {
    if (!state.run || state.run.over) return stopTicker();
    tick(state.run, nowT());
  }, 250);
}

function stopTicker() {
  clearInterval(state.ticker);
  state.ticker = null;
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

/** @type {ReturnType<typeof setTimeout> | undefined} */
let searchTimer;
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
    if (!(error instanceof KeyNeeded)) $("history-note").textContent = "history: " + messageOf(error);
    return;
  }
  $("history-note").textContent = !data.enabled ? "History is off (serve --no-history)." :
    !data.runs.length ? (query ? "No prompt holds those words." : "No runs yet.") : "";
  $("history").replaceChildren(...data.runs.map(historyItem));
}

/** @param {any} run */
function historyItem(run) {
  const item = el("li");
  const button = el("button", "history-item" + (state.run && state.run.id === run.id ? " current" : ""));
  button.type = "button";
  button.dataset.id = run.id;
  button.append(el("span", "h-prompt", run.prompt));
  const meta = [when(run.started_at), run.strategy, `${run.workers_ok}/${run.workers} answered`];
  if (run.wall_s != null) meta.push(secs(run.wall_s));
  const line = el("span", "h-meta", meta.join(" · "));
  if (run.status !== "complete") line.append(" · ", el("span", "h-state", run.status));
  button.dataset.status = run.status;
  button.append(line);
  button.addEventListener("click", () => { closeDrawer(); reopen(run.id); });
  item.append(button);
  return item;
}

/** @param {string} id */
async function reopen(id) {
  if (state.controller) return showError("A run is going: stop it before opening another.");
  showError("");
  try {
    const data = await (await api(`/ui/api/history/${encodeURIComponent(id)}`)).json();
    for (const view of data.events) apply(view.type === "run" ? { ...view, replayed: true } : view);
    if (state.run && state.run.strategy && state.fleet.reviewers.length) $("strategy").value = state.run.strategy;
    end();
    for (const button of document.querySelectorAll(".history-item")) {
      button.classList.toggle("current", /** @type {HTMLElement} */ (button).dataset.id === id);
    }
  } catch (error) {
    if (!(error instanceof KeyNeeded)) showError(messageOf(error));
  }
}

// ------------------------------------------------------------------ the history as a drawer (narrow screens)

/** @param {boolean} open */
function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  $("history-toggle").setAttribute("aria-expanded", String(open));
  $("scrim").hidden = !open;
}

function closeDrawer() {
  setDrawer(false);
}

$("history-toggle").addEventListener("click", () => setDrawer(!document.body.classList.contains("drawer-open")));
$("scrim").addEventListener("click", closeDrawer);
document.addEventListener("keydown", (/** @type {KeyboardEvent} */ event) => { if (event.key === "Escape") closeDrawer(); });

document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") pollLoad(); });
start();
