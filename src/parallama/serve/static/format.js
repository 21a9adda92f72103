// @ts-check
// Words and numbers for the page, from plain values: no DOM, no state (tested by `node --test tests/js/`).

/**
 * Seconds for people: `1.5 s`, `12 s`, `2 min 5 s`, or `—` when unknown.
 * @param {number | null | undefined} s
 * @param {boolean} [fine] one decimal under 10 s
 */
export function secs(s, fine = true) {
  if (s == null || Number.isNaN(s)) return "—";
  if (s >= 60) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${s.toFixed(fine && s < 10 ? 1 : 0)} s`;
}

/**
 * A history entry's start: the time today, else the day and the time.
 * @param {number} epoch seconds
 */
export function when(epoch) {
  const date = new Date(epoch * 1000);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toDateString() === new Date().toDateString() ? time :
    date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
}

/** @param {string | null | undefined} server */
export function hostPort(server) {
  return (server || "its server").replace(/^https?:\/\//, "");
}

/**
 * The timeline's axis: [its end, the step between ticks], at most 5 ticks past 0.
 * @param {number} end
 * @returns {[number, number]}
 */
export function niceScale(end) {
  for (const step of [0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800]) {
    if (end / step <= 5) return [Math.ceil(end / step - 1e-9) * step, step];
  }
  return [Math.ceil(end / 3600) * 3600, 3600];
}

/**
 * Where the final answer came from, as the server typed it ({kind, agent}).
 * @param {{kind: string, agent: string | null} | null | undefined} source
 */
export function sourceText(source) {
  if (!source) return "";
  switch (source.kind) {
    case "review": return "written by the reviewer";
    case "workers": return "no reviewer: each worker's answer";
    case "vote": return "the majority's answer (a vote)";
    case "confidence": return "the answer the workers were surest of (token logprobs)";
    case "judge": return `the judge's pick: ${source.agent}'s answer, scored best`;
    case "worker": return `${source.agent}'s answer (the reviewer failed)`;
    default: return source.agent ? `${source.kind}: ${source.agent}'s answer` : source.kind;
  }
}

/**
 * An agent's error and its fix, which the error gives after " — " (`ollama pull …`, `start it with …`).
 * @param {string} error
 * @returns {[string, string | null]}
 */
export function errorAndFix(error) {
  const cut = error.indexOf(" — ");
  return cut < 0 ? [error, null] : [error.slice(0, cut), error.slice(cut + 3)];
}

/**
 * Text with `backtick spans` (an error's fix: run `ollama pull m`) as pieces: [false, text] or [true, code]. The page
 * makes each piece a Text node or a <code> holding a Text node: nothing in the text becomes markup.
 * @param {string} text
 * @returns {[boolean, string][]}
 */
export function codeSpans(text) {
  /** @type {[boolean, string][]} */
  const pieces = [];
  const parts = text.split(/`([^`\n]+)`/);
  parts.forEach((part, i) => { if (part) pieces.push([i % 2 === 1, part]); });
  return pieces;
}
