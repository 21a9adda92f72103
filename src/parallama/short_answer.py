"""What an answer says, as one short key: the one rule `vote`, `confidence` and batch scoring use to decide that two
answers say the same thing.

- A number: the last number written (in the final "Answer: …" line when there is one; in the short answer below
  when the question is known and asks for no number), as an exact decimal (`42`, `42.0`, `$42` and `The answer is 42.` are all `42`;
  `0.30000000000000004` is not `0.3`, `1e-400` is not `0`). A number counts as one only within `MAX_DIGITS` digits
  and an exponent of at most `MAX_EXPONENT`: anything beyond is text (it cannot crash or stall anything).
- Text: a short span taken from the reply — its last "Answer: …" line, else its last bolded or quoted span, else the
  whole reply when it is short, else its first sentence's first clause that says something — normalised (case,
  punctuation, `'s`), without filler words (`the`, `is`, `it`…) and, when the question is known, without the words
  the question already has. So "Berlin.", "It's Berlin!" and "The capital of Germany is Berlin." are all `berlin`,
  and "Bern" is not.
- An answer with no word and no number (`...`, `?!`, empty) has no key: it casts no vote and matches nothing.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Context, Decimal

MAX_DIGITS = 1000
"The most digits a number may have to count as one (a longer run of digits is text)."
MAX_EXPONENT = 1000
"The largest exponent, either sign, a number may have (`1e5000` is text: its exact value would be 5,000 digits)."

# A number as written in prose: optional sign, digits with optional thousands separators, decimals, exponent.
# Not preceded by a letter, digit or dot, so `x2`, `v1.2`'s `2` and the `-` of `10-12` are not taken.
NUMBER = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])" + NUMBER)
_EXACT = Context(prec=MAX_DIGITS + 2)

SHORT_WORDS = 8
"A reply of at most this many words is taken whole as its short answer."

FILLER = frozenset("""
a an the is are was were be been it its this that these those there so then thus therefore hence i we my our
answer answers final correct result think believe would say says would will should must
sure certainly yes okay ok well of course indeed here great good question hello hi let me see
""".split())
"Words that say nothing about which answer it is (dropped before two answers are compared)."

_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer|result)\s*(?:is)?\s*[:：=]\s*(.+)", re.IGNORECASE)
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_QUOTED = re.compile(r'"([^"\n]{1,80})"|“([^”\n]{1,80})”|«([^»\n]{1,80})»')
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:(—–]|\s-\s")
_ASKS_A_NUMBER = re.compile(
    r"\d|\bhow (?:many|much|old|long|far|tall|big|often|large)\b|\b(?:what|which|in what) year\b|\bnumber\b|"
    r"\bpercent|\bcalculate|\bcompute|\bsum\b|\bproduct\b|\btimes\b|\bplus\b|\bminus\b|\bdivided\b|"
    r"\bsquare|\bcube|\bhalf\b|\btwice\b|\bdouble\b|\bcount\b", re.IGNORECASE)
_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b", re.IGNORECASE)


def as_number(written: str) -> Decimal | None:
    """The number `written` is (as matched by `NUMBER`), or None when it has more digits or a larger exponent than a
    number may have."""
    text = written.replace(",", "").replace("−", "-")
    mantissa, _, exponent = text.lower().partition("e")
    if sum(ch.isdigit() for ch in mantissa) > MAX_DIGITS or len(exponent.lstrip("+-")) > 5:
        return None
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        return None
    return Decimal(text)


def last_number_in(text: str) -> Decimal | None:
    """The last number written in `text`; None when it has none, or when the last one is too big to be one."""
    found = None
    for match in _NUMBER_IN_TEXT.finditer(text):
        found = match
    return as_number(found.group(0)) if found else None


def number_key(number: Decimal) -> str:
    """A number as an exact, canonical decimal: equal keys for equal values and only for them."""
    if number == 0:
        return "0"
    number = number.normalize(_EXACT)
    if -20 <= number.adjusted() <= 40:
        return format(number, "f")
    return str(number)


def normalise(text: str) -> str:
    """Case folded, punctuation removed, runs of spaces made one: `" The  Answer: Paris."` → `the answer paris`."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if ch.isspace() else ch for ch in text
                   if not unicodedata.category(ch).startswith("P") and ch != "`")
    return " ".join(kept.split())


def _words(text: str) -> list[str]:
    return normalise(_POSSESSIVE.sub("", text.replace("*", " "))).split()


def _answer_line(text: str) -> str | None:
    """What the reply's last "Answer: …" line says, or None."""
    for line in reversed(text.splitlines()):
        found = _ANSWER_LINE.search(line.replace("*", "").strip())
        if found and _words(found.group(1)):
            return found.group(1)
    return None


def _marked_span(text: str) -> str | None:
    """The span the reply marks as its answer: the last "Answer: …" line, else the last bolded or quoted span."""
    line = _answer_line(text)
    if line is not None:
        return line
    for pattern in (_BOLD, _QUOTED):
        spans = [next(g for g in m.groups() if g) for m in pattern.finditer(text)]
        spans = [s for s in spans if _words(s) and len(_words(s)) <= SHORT_WORDS]
        if spans:
            return spans[-1]
    return None


def _said(words: list[str], asked: frozenset[str]) -> list[str]:
    """`words` without filler, and without the question's own words unless that leaves nothing."""
    kept = [w for w in words if w not in FILLER]
    fresh = [w for w in kept if w not in asked]
    return fresh or kept or words


def short_span(text: str, question: str | None = None) -> str:
    """The part of the reply that holds its answer in words."""
    marked = _marked_span(text)
    if marked is not None:
        return marked
    if len(_words(text)) <= SHORT_WORDS:
        return text
    asked = frozenset(_words(question or ""))
    for sentence in _SENTENCE_END.split(text.strip()):
        clause = _CLAUSE_END.split(sentence, maxsplit=1)[0]
        if [w for w in _said(_words(clause), asked) if w not in FILLER]:
            return clause
    return text


def answer_key(text: str, question: str | None = None) -> str | None:
    """What `text` answers, as one key (see the module's docstring); None for an answer with no word and no number.
    `question`, when known, lets a reply that repeats it ("The capital of Germany is Berlin.") key as its answer."""
    line = _answer_line(text)
    span = short_span(text, question)
    if line is not None:
        where = line
    elif question is None or _ASKS_A_NUMBER.search(question):
        where = text
    else:  # a question in words: a number in the short answer counts, not one in the explanation around it
        where = span
    number = last_number_in(where)
    if number is not None:
        return number_key(number)
    words = _words(span)
    if not words:
        words = _words(text)
        if not words:
            return None
    return " ".join(_said(words, frozenset(_words(question or ""))))
