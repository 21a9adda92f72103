"""A batch's input, read and validated whole before anything is sent: JSON lines
`{"id": ..., "prompt": ..., "expected": ..., "match": ...}` or plain text with one prompt per line."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, InputErrors
from ..scoring import MATCHES, Match, check_expected, default_match

KEYS = ("id", "prompt", "expected", "match")
MAX_SHOWN = 20
"Problems shown at most; a wrong file (say, text read as JSON) would otherwise give one per line."
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class BatchRecord:
    """One prompt of the batch, with what its answer should be when the input says."""

    id: str
    "From the record; a record without one (and every line of a text file) is known by its line number."
    prompt: str
    line: int
    "Where it is in the input (1-based)."
    expected: str | None = None
    match: Match | None = None
    "How the answer is scored against `expected` (see `parallama.scoring`); None when there is no `expected`."

    @property
    def prompt_sha256(self) -> str:
        """The prompt's fingerprint, kept in its result line: a resume runs a record again when its prompt changed."""
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()


def read_records(path: str | os.PathLike[str]) -> list[BatchRecord]:
    """Read and validate a batch input file; raise InputErrors naming file:line for every problem."""
    source = str(path)
    if Path(path).is_char_device() or Path(path).is_block_device():  # /dev/zero would be read for ever
        raise InputError("a device, not a file of prompts", source=source)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InputError("no such file", source=source) from exc
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    return parse_records(data, source)


def parse_records(data: bytes, source: str) -> list[BatchRecord]:
    """Records from the bytes of an input (`source` names it in errors, and its suffix may say the format)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte {data[exc.start]:#04x})", source=source, line=line) from exc
    lines = [raw.rstrip("\r") for raw in text.split("\n")]
    if _is_jsonl(source, lines):
        records, errors = _from_jsonl(lines, source)
    else:
        records = [BatchRecord(id=str(n), prompt=raw.strip(), line=n)
                   for n, raw in enumerate(lines, 1) if raw.strip()]
        errors = []
    if not errors and not records:
        errors.append(InputError("no prompts in it", source=source))
    if errors:
        if len(errors) > MAX_SHOWN:
            more = len(errors) - MAX_SHOWN
            errors = errors[:MAX_SHOWN] + [InputError(f"… and {more} more problem(s)", source=source)]
        raise InputErrors(errors)
    return records


def _is_jsonl(source: str, lines: list[str]) -> bool:
    """By the file's suffix (`.jsonl`, `.ndjson`, `.json` or `.txt`), else by its first line: `{` or `[` starts JSON."""
    suffix = Path(source).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return True
    if suffix == ".txt":
        return False
    first = next((raw.lstrip() for raw in lines if raw.strip()), "")
    return first.startswith(("{", "["))


def _from_jsonl(lines: list[str], source: str) -> tuple[list[BatchRecord], list[InputError]]:
    records: list[BatchRecord] = []
    errors: list[InputError] = []
    first_line_of: dict[str, int] = {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if not records and not errors and raw.lstrip().startswith("["):
            errors.append(InputError("a JSON array: batch reads JSON lines, one object per line "
                                     f"(convert it with: jq -c '.[]' {source} > {Path(source).stem}.jsonl)",
                                     source=source, line=n))
            break
        try:
            record = _record(raw, n, source)
        except InputError as exc:
            errors.append(exc)
            continue
        if record.id in first_line_of:
            errors.append(InputError(f"duplicate id {record.id!r} (first on line {first_line_of[record.id]})",
                                     source=source, line=n))
            continue
        first_line_of[record.id] = n
        records.append(record)
    return records, errors


def _record(raw: str, n: int, source: str) -> BatchRecord:
    def wrong(message: str, column: int | None = None) -> InputError:
        return InputError(message, source=source, line=n, column=column)

    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        hint = " (for plain prompts, one per line, name the file .txt)" if n == 1 else ""
        raise wrong(f"not JSON: {exc.msg}{hint}", exc.colno) from exc
    except ValueError as exc:  # json reads numbers with int(), which refuses more digits than Python allows
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()  # Python 3.10.7+
        raise wrong(f"a number of more than {limit:,} digits") from exc
    except RecursionError as exc:
        raise wrong("nested too deep to read") from exc
    if not isinstance(data, dict):
        raise wrong(f'must be a JSON object like {{"prompt": "..."}}, not {_kind(data)}')
    for key in data:
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.75)
        if key not in KEYS and close:
            raise wrong(f"unknown key {key!r} (did you mean {close[0]!r}?)")
    prompt = data.get("prompt")
    if prompt is None:
        raise wrong('no "prompt"')
    if not isinstance(prompt, str):
        raise wrong(f"prompt must be a string, not {_kind(prompt)}")
    if not prompt.strip():
        raise wrong("prompt is empty")
    for key in ("id", "prompt", "expected"):
        _check_text(key, data.get(key), wrong)
    return BatchRecord(id=_id(data.get("id"), n, wrong), prompt=prompt.strip(), line=n,
                       **_expectation(data.get("expected"), data.get("match"), wrong))


def _id(value: Any, n: int, wrong) -> str:
    if value is None:
        return str(n)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    raise wrong(f"id must be a non-empty string or a whole number, not {_kind(value)}")


def _check_text(key: str, value: Any, wrong) -> None:
    """JSON's escapes can spell a lone surrogate (`\\ud800`), no character: it could be neither sent nor written."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            raise wrong(f"{key} holds \\u{code:04x}, half of a surrogate pair: not a character (write the character "
                        "itself, or both halves of its pair)") from exc


def _expectation(expected: Any, match: Any, wrong) -> dict[str, Any]:
    if expected is None:
        if match is not None:
            raise wrong('"match" is given but "expected" is not')
        return {}
    if isinstance(expected, float) and not math.isfinite(expected):
        raise wrong(f"expected must be a finite number, not {json.dumps(expected)}")
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        expected = json.dumps(expected)
    elif not isinstance(expected, str):
        raise wrong(f"expected must be a string or a number, not {_kind(expected)}")
    if match is None:
        match = default_match(expected)
    elif match not in MATCHES:
        raise wrong(f"match must be one of {', '.join(MATCHES)}, not {json.dumps(match)}")
    problem = check_expected(expected, match)
    if problem:
        raise wrong(problem)
    return {"expected": expected, "match": match}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
