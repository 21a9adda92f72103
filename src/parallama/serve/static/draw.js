// @ts-check
// The run on screen: each view the server sends, once `run.js` has folded it, drawn from the run it left — the
// cards, the final answer, the judge's scores or the council's rankings, the timeline.

import { $, appendText, el, setAnswerHTML } from "./dom.js";
import { codeSpans, errorAndFix, niceScale, secs, sourceText } from "./format.js";
import { latest, parallelNote, statsParts, workSummary } from "./run.js";

/** @typedef {import("./run.js").Run} Run */
/** @typedef {import("./run.js").Entry} Entry */

const STAGE_TITLES = /** @type {Record<string, string>} */ ({ workers: "Workers", ranking: "Ranking", review: "Review" });

/** @type {Record<string, string>} what each strategy does, as the server says it */
let notes = {};
/** @type {Map<string, any>} each entry's card, by its key */
let cards = new Map();
/** @type {Map<string, any>} each stage's section */
let sections = new Map();

/** The strategies the fleet offers, from `/ui/api/fleet`. @param {{name: string, note: string}[]} strategies */
export function useStrategies(strategies) {
  notes = Object.fromEntries(strategies.map((s) => [s.name, s.note]));
}

/** @param {string | null} strategy */
export function strategyNote(strategy) {
  return strategy ? notes[strategy] || "" : "";
}

/**
 * Draw what one view changed, reading the run it left.
 * @param {Run} run @param {any} view @param {number} now the page's clock, seconds since the run started
 */
export function draw(run, view, now) {
  switch (view.type) {
    case "run": return opened(run, now);
    case "queued": case "started": case "delta": case "thinking": case "ended": {
      const entry = view.type === "ended" && view.attempt ?
        run.entries.find((e) => e.stage === view.stage && e.name === view.agent && e.attempt === view.attempt) :
        latest(run, view.stage, view.agent);
      if (!entry) return;
      const card = cardFor(run, entry);
      showState(card, entry, now);
      if (view.type === "started" && view.stage === "review" && run.finalStreams) {
        const body = $("final-body");
        body.replaceChildren(document.createTextNode(""));
        body.classList.add("streaming");
      } else if (view.type === "delta") {
        appendText(view.stage === "review" && run.finalStreams ? $("final-body") : card.text, view.text);
      } else if (view.type === "thinking") {
        card.thinking.hidden = false;
        appendText(card.thinkingText, view.text);
      } else if (view.type === "ended") {
        ended(run, card, entry, view);
      }
      if (view.type !== "delta" && view.type !== "thinking") {
        drawTimeline(run, now);
        $("work-summary").textContent = workSummary(run, now);
      }
      return;
    }
    case "ranked": return showRankings(view.rankings, view.ranking);
    case "result": return resulted(run, view, now);
    case "error": return failed(run, view, now);
  }
}

/** The live numbers of every request still going, and the timeline (a ticker's work). @param {Run} run @param {number} now */
export function tick(run, now) {
  for (const entry of run.entries) if (!entry.result && cards.has(entry.key)) showState(cards.get(entry.key), entry, now);
  drawTimeline(run, now);
  $("work-summary").textContent = workSummary(run, now);
}

/** @param {Run} run @param {number} now */
function opened(run, now) {
  cards = new Map();
  sections = new Map();
  $("run").hidden = false;
  $("run-prompt").textContent = run.prompt;
  $("stages").replaceChildren();
  $("review-stage").replaceChildren();
  $("final-body").replaceChildren(el("p", "muted waiting", run.strategy ? "The final answer appears here." : "The answers appear here."));
  $("final-body").classList.remove("streaming");
  $("final-source").textContent = "";
  $("warnings").replaceChildren();
  $("verdict").hidden = true;
  $("verdict").replaceChildren();
  $("copy").disabled = true;
  $("work").open = run.live; // open while it runs; a reopened run is done: folded, as a finished one is
  $("work-summary").textContent = workSummary(run, now);
  showConversation(run.context);
  for (const entry of run.entries) showState(cardFor(run, entry), entry, now);
  drawTimeline(run, now);
  if (run.live) $("run").scrollIntoView({ block: "start" });
}

/** The turn is over: its work folds under its summary (a click opens it again), the answer in view. @param {Run} run @param {number} now */
function folded(run, now) {
  const work = $("work");
  work.open = false;
  $("work-summary").textContent = workSummary(run, now);
  $("run").scrollIntoView({ block: "start" });
}

/** @param {Run} run @param {any} card @param {Entry} entry @param {any} view */
function ended(run, card, entry, view) {
  showAgentError(card.errorLine, view.error);
  if (view.stage === "review") {
    card.text.replaceChildren(el("p", "muted", view.state !== "done" ? "" :
      run.finalStreams ? "wrote the final answer" : "scored the answers (see the scores)"));
  } else if (view.html) {
    setAnswerHTML(card.text, view.html);
  } else if (view.status !== "ok") {
    card.text.replaceChildren();
  }
  card.text.scrollTop = 0; // a finished answer is read from its start
  card.thinking.hidden = !view.thinking_tokens;
}

/** @param {Run} run @param {any} view @param {number} now */
function resulted(run, view, now) {
  redrawAll(run, now);
  const body = $("final-body");
  body.classList.remove("streaming");
  if (view.final !== null) {
    setAnswerHTML(body, view.final_html);
    $("copy").disabled = false;
  } else {
    body.replaceChildren(el("p", "error-line", view.error));
  }
  const partial = view.cut && view.cut.length ? ` · partial: ${view.cut.join(", ")} cut` : "";
  $("final-source").textContent = sourceText(view.source) + partial + (view.wall_s != null ? ` · ${secs(view.wall_s)} in all` : "");
  $("warnings").replaceChildren(...(view.warnings || []).map((/** @type {string} */ w) => el("li", "", w)));
  showDetails(view.details || {}, view.summary || [], run.strategy);
  folded(run, now);
}

/** @param {Run} run @param {any} view @param {number} now */
function failed(run, view, now) {
  redrawAll(run, now);
  const body = $("final-body");
  body.classList.remove("streaming");
  body.replaceChildren(el("p", "error-line", view.message));
  folded(run, now);
}

/** Every card again (the run is over: a request that never ended says so). @param {Run} run @param {number} now */
function redrawAll(run, now) {
  for (const entry of run.entries) showState(cardFor(run, entry), entry, now);
  drawTimeline(run, now);
}

// ------------------------------------------------------------------ cards

/** @param {Run} run @param {Entry} entry */
function cardFor(run, entry) {
  let card = cards.get(entry.key);
  if (!card) {
    card = makeCard(entry);
    cards.set(entry.key, card);
    stageCards(run, entry.stage).append(card.root);
  }
  return card;
}

/** @param {Entry} entry */
function makeCard(entry) {
  const root = el("article", "card state-waiting");
  root.dataset.stage = entry.stage;
  root.dataset.agent = entry.name;
  const head = el("header");
  head.title = `${entry.name} · ${entry.model}` + (entry.server ? ` on ${entry.server}` : "");
  const badge = el("span", "badge", "");
  head.append(el("h3", "", entry.name + (entry.attempt > 1 ? ` (try ${entry.attempt})` : "")), el("span", "model", entry.model), badge);
  const stats = el("p", "stats", "");
  const errorLine = el("p", "error-line");
  errorLine.hidden = true;
  const thinking = el("details", "thinking");
  thinking.hidden = true;
  const thinkingSummary = el("summary", "", "thinking");
  const thinkingText = el("div", "thinking-text");
  thinking.append(thinkingSummary, thinkingText);
  const text = el("div", "body answer");
  root.append(head, stats, errorLine, thinking, text);
  return { root, badge, stats, errorLine, thinking, thinkingSummary, thinkingText, text };
}

/** @param {Run} run @param {string} stage */
function stageCards(run, stage) {
  let section = sections.get(stage);
  if (!section) {
    section = el("section", "stage");
    section.dataset.stage = stage;
    let title = STAGE_TITLES[stage] || stage.replace(/^round/, "Round");
    if (stage === "workers" && run.rounds > 1) title = "Round 1";
    if (stage === "review" && run.strategy) title += ` · ${run.strategy}`;
    const note = stage === "ranking" ? "each worker ranks the others' answers, anonymously" :
      stage.startsWith("round ") ? "each worker improves its answer with the others'" :
      stage === "review" ? strategyNote(run.strategy) : "";
    const head = el("header");
    head.append(el("h2", "", title), el("span", "muted", note));
    section.append(head, el("div", "cards"));
    sections.set(stage, section);
    (stage === "review" ? $("review-stage") : $("stages")).append(section);
  }
  return section.querySelector(".cards");
}

/** A card as its entry is: state, badge, numbers. @param {any} card @param {Entry} entry @param {number} now */
function showState(card, entry, now) {
  card.root.className = `card state-${entry.state}`;
  card.badge.textContent = entry.label;
  card.stats.textContent = statsParts(entry, now).join(" · ");
  const thought = entry.result ? entry.result.thinking_tokens : entry.thoughts;
  if (thought) card.thinkingSummary.textContent = entry.result ? `thought for ${thought} tokens` : `thinking: ${thought} tokens`;
}

/** An agent's one-line error, and its fix on a line of its own. @param {any} line @param {string | null} error */
function showAgentError(line, error) {
  line.hidden = !error;
  if (!error) return line.replaceChildren();
  const [cause, fix] = errorAndFix(error);
  const fixLine = el("span", "fix");
  if (fix !== null) fixLine.append(...withCode(fix));
  line.replaceChildren(...withCode(cause), ...(fix === null ? [] : [fixLine]));
}

/** Text whose `backtick spans` are code: Text nodes and <code> elements holding Text nodes, no markup. @param {string} text */
function withCode(text) {
  return codeSpans(text).map(([code, part]) => (code ? el("code", "", part) : document.createTextNode(part)));
}

// ------------------------------------------------------------------ review: the strategy's details

/**
 * A strategy's details, drawn by the panel made for them where there is one (the judge's scores, the council's
 * rankings, a vote's tally), else as the lines the server's strategy gives for people: a strategy added on the
 * server shows without a change here.
 * @type {Record<string, (details: Record<string, any>) => void>}
 */
const DETAIL_PANELS = {
  scores: (details) => showScores(details.scores),
  rankings: (details) => showRankings(details.rankings, details.ranking),
  tally: (details) => showTally(details.tally),
};

/** @param {Record<string, any>} details @param {string[]} summary @param {string | null} strategy */
function showDetails(details, summary, strategy) {
  const drawn = Object.keys(DETAIL_PANELS).filter((key) => details[key]);
  for (const key of drawn) DETAIL_PANELS[key](details);
  if (drawn.length || !summary.length) return;
  const panel = $("verdict");
  const list = el("ul", "summary");
  for (const line of summary.slice(1)) list.append(el("li", "", line.replace(/^- /, "")));
  panel.replaceChildren(panelHeader((summary[0] || strategy || "Details").replace(/:$/, "")), list);
  panel.hidden = false;
}

// ------------------------------------------------------------------ review: scores and rankings

/** @param {{name: string, score: number, reason: string}[]} scores */
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

/** @param {any[]} rankings @param {{name: string, points: number}[] | null} ranking */
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
    else item.append(document.createTextNode(ballot.ranking.map((/** @type {string} */ name, /** @type {number} */ i) => `${i + 1}. ${name}`).join("  ")));
    ballots.append(item);
  }
  parts.push(el("h3", "", "Each ranker's order"), ballots);
  panel.replaceChildren(...parts);
  panel.hidden = false;
}

/**
 * vote: each distinct answer, how many workers gave it, and which; confidence: also each group's summed weight and
 * its members' weights (null: no logprobs, neutral).
 * @param {{answer: string, count: number, workers: string[], confidence?: number, weights?: (number | null)[]}[]} tally
 */
function showTally(tally) {
  const panel = $("verdict");
  const table = el("table", "scores tally");
  const weighed = tally.some((c) => typeof c.confidence === "number");
  const size = (/** @type {{count: number, confidence?: number}} */ c) => (weighed ? c.confidence || 0 : c.count);
  const most = Math.max(...tally.map(size));
  const voters = tally.reduce((n, c) => n + size(c), 0);
  for (const count of tally) {
    const row = el("tr", size(count) === most ? "best" : "");
    const meterBar = el("span", "bar");
    meterBar.style.width = `${(100 * size(count)) / (voters || 1)}%`;
    const meter = el("td", "meter");
    meter.append(meterBar);
    const who = weighed
      ? count.workers.map((w, i) => `${w} ${(count.weights || [])[i] == null ? "?" : (count.weights || [])[i]?.toFixed(2)}`)
      : count.workers;
    row.append(el("th", "", count.answer || "(empty)"),
      el("td", "score", weighed ? `${count.count} · ${(count.confidence || 0).toFixed(2)}` : `${count.count}`), meter,
      el("td", "reason", who.join(", ")));
    table.append(row);
  }
  panel.replaceChildren(panelHeader(weighed ? "Votes weighed by confidence" : "Votes"), table);
  panel.hidden = false;
}

/** @param {string} title */
function panelHeader(title) {
  const head = el("header");
  head.append(el("h2", "", title));
  return head;
}

// ------------------------------------------------------------------ the timeline

/** @param {Run} run @param {number} now */
export function drawTimeline(run, now) {
  const rows = run.entries.filter((e) => e.queuedT !== null);
  const end = Math.max(0.5, now, ...rows.map((e) => e.endT ?? now));
  const [scale, step] = niceScale(end);
  const lines = rows.map((entry) => {
    const queuedT = /** @type {number} */ (entry.queuedT);
    const row = el("div", "tl-row");
    const stage = entry.stage === "workers" || entry.stage === "review" ? "" : ` · ${entry.stage}`;
    const label = el("span", "tl-label", entry.name + stage + (entry.attempt > 1 ? ` (try ${entry.attempt})` : ""));
    label.title = label.textContent + (entry.server ? ` on ${entry.server}` : "");
    const track = el("span", "tl-track");
    const sent = entry.startedT ?? now;
    if (sent - queuedT > 0) track.append(bar("tl-bar queued", queuedT, sent, scale));
    if (entry.startedT !== null) {
      const kind = ["failed", "cut", "stopped", "unusable"].includes(entry.state) ? entry.state :
        entry.stage === "review" ? "review" : "running";
      track.append(bar(`tl-bar ${kind}`, entry.startedT, entry.endT ?? now, scale));
    }
    row.dataset.stage = entry.stage;
    row.dataset.agent = entry.name;
    row.append(label, track);
    return row;
  });
  const axis = el("div", "tl-axis");
  for (let i = 0; i * step <= scale + 1e-9; i++) {
    const t = i * step;
    const mark = el("span", "tick", t.toFixed(step < 0.5 ? 2 : step < 1 ? 1 : 0));
    mark.style.left = `${(t / scale) * 100}%`;
    axis.append(mark);
  }
  const axisRow = el("div", "tl-row");
  axisRow.append(el("span", "tl-label muted", "seconds"), axis);
  $("timeline").replaceChildren(...lines, axisRow);
  $("timeline-note").textContent = parallelNote(run);
}

/** @param {string} kind @param {number} from @param {number} to @param {number} scale */
function bar(kind, from, to, scale) {
  const span = el("span", kind);
  span.style.left = `${(from / scale) * 100}%`;
  span.style.width = `${Math.max(0.4, ((to - from) / scale) * 100)}%`;
  span.title = `${secs(from)} → ${secs(to)}`;
  return span;
}

// ------------------------------------------------------------------ the conversation

/** The earlier turns, as the thread above this one: the user's words, then the fleet's answer. @param {any[]} context */
function showConversation(context) {
  const box = $("conversation");
  const turns = (context || []).filter((t) => t.role !== "system");
  box.hidden = !turns.length;
  box.replaceChildren(...turns.map((turn) => {
    const item = el("div", `turn ${turn.role}`);
    const mine = turn.role === "user";
    const bubble = el("div", `bubble ${mine ? "you" : "reply"}`);
    const body = el("div", "answer");
    if (turn.html) setAnswerHTML(body, turn.html);
    else body.textContent = turn.content;
    if (!mine) bubble.append(el("span", "who", "Fleet"));
    bubble.append(body);
    item.append(bubble);
    return item;
  }));
}
