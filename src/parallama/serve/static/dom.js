// @ts-check
// The few ways the page touches the document. Model output reaches it only as text (textContent, Text nodes), or as
// HTML the server rendered from Markdown with raw HTML off (`setAnswerHTML`); nothing here turns text into markup.

/** @param {string} id @returns {any} */
export const $ = (id) => document.getElementById(id);

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string | null} [text]
 * @returns {any}
 */
export function el(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text;
  return node;
}

/** Text added at the end of a box, which keeps following the end if it was there. @param {any} container @param {string} text */
export function appendText(container, text) {
  const atEnd = container.scrollTop + container.clientHeight >= container.scrollHeight - 4;
  let last = container.lastChild;
  if (!last || last.nodeType !== Node.TEXT_NODE) {
    if (container.querySelector(".waiting")) container.replaceChildren();
    last = container.appendChild(document.createTextNode(""));
  }
  last.appendData(text);
  if (atEnd) container.scrollTop = container.scrollHeight;
}

/**
 * HTML the server rendered from Markdown with raw HTML off: the one place markup is set. Links open apart, so
 * following one does not close this page (and with it the run).
 * @param {any} container @param {string} html
 */
export function setAnswerHTML(container, html) {
  container.innerHTML = html;
  for (const link of container.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}
