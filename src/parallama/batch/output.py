"""A batch's output: one JSON line per finished prompt (the `run --json` shape plus `id`, `answered` and `score`),
appended and flushed as each prompt finishes; and, to resume, what an earlier batch left in the file.

A line is written in one piece, so the only damage a crash or `kill -9` can do is cut the *last* line short;
resuming drops that line (its prompt runs again) and takes out the lines of prompts that got no answer, so they
run again too and every id ends up in the file once. The file is locked while a batch writes to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Sequence, TextIO

from ..errors import InputError, InputErrors
from ..scoring import Score, score_answers

if TYPE_CHECKING:
    from ..result import RunResult
    from .records import BatchRecord

MAX_SHOWN = 20


def result_line(record: "BatchRecord", result: "RunResult") -> dict[str, Any]:
    """The output line of a finished prompt."""
    line: dict[str, Any] = {"id": record.id, "answered": result.answered, **result.to_dict()}
    if record.expected is not None and record.match is not None:
        line["score"] = score_line(line, record)
    return line


def score_line(line: dict[str, Any], record: "BatchRecord") -> Score:
    """Score a result line against the record's expected answer: the final answer and each worker's first one."""
    assert record.expected is not None and record.match is not None
    rounds = line.get("earlier_rounds") or []
    first = rounds[0] if rounds else line.get("workers") or []
    answers = [(w["name"], w["content"] if w.get("status") == "ok" else None) for w in first]
    return score_answers(record.expected, record.match, line.get("final"), answers)


class JsonLines:
    """Writes each line as one JSON text and a newline, and flushes at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, line: dict[str, Any]) -> None:
        self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.stream.flush()


class ResultsFile(JsonLines):
    """The output file of a batch, opened for appending (and locked); `done` holds what it already answered."""

    def __init__(self, path: Path, stream: TextIO) -> None:
        super().__init__(stream)
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        "Lines already in the file for ids of this input that have an answer, by id: these prompts are skipped."
        self.rerun: list[str] = []
        "Ids of this input whose earlier line had no answer: taken out of the file, to run again."
        self.cut_off = False
        "The file ended in a line cut short (by a kill): it was dropped, and its prompt runs again."
        self.other_ids = 0
        "Lines for ids that are not in this input (kept as they are)."

    @classmethod
    def open(cls, path: str | os.PathLike[str], records: Sequence["BatchRecord"]) -> "ResultsFile":
        """Open (or create) the output to go on from: read what is there, take out what must run again, lock it.
        Raises InputErrors, with nothing changed, when a line is not one a batch writes."""
        path = Path(path)
        stream = _open_locked(path)
        try:
            stream.seek(0)
            data = stream.buffer.read()
            lines, cut_off = _read_lines(data, str(path))
            ids = {r.id for r in records}
            answered = {line["id"] for _, line in lines if line["id"] in ids and line.get("answered") is True}
            kept: list[bytes] = []
            results = cls(path, stream)
            results.cut_off = cut_off
            for raw, line in lines:
                line_id = line["id"]
                if line_id not in ids:
                    results.other_ids += 1
                elif line_id not in answered:
                    results.rerun.append(line_id)
                    continue
                else:
                    results.done.setdefault(line_id, line)
                kept.append(raw)
            if cut_off or results.rerun or (data and not data.endswith(b"\n")):
                stream = _replace(path, stream, kept)
                results.stream = stream
            stream.seek(0, os.SEEK_END)
            return results
        except BaseException:
            stream.close()
            raise

    def write(self, line: dict[str, Any]) -> None:
        try:
            super().write(line)
        except OSError as exc:  # a full disk: say so in one line (a resume drops what was cut short)
            raise InputError(f"cannot write: {exc.strerror or exc}", source=str(self.path)) from exc

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_lines(data: bytes, source: str) -> tuple[list[tuple[bytes, dict[str, Any]]], bool]:
    """Every line as (bytes, parsed); and whether an unreadable last line without its newline was left out."""
    raws = data.split(b"\n")
    tail = raws.pop()  # b"" when the file ends with a newline
    lines: list[tuple[bytes, dict[str, Any]]] = []
    errors: list[InputError] = []
    for n, raw in enumerate(raws, 1):
        if not raw.strip():
            continue
        line = _parse(raw)
        if line is None:
            errors.append(InputError("not a result line of parallama batch (a JSON object with an \"id\"): "
                                     "is this the right file?", source=source, line=n))
        else:
            lines.append((raw, line))
    cut_off = False
    if tail.strip():
        line = _parse(tail)
        if line is None:
            cut_off = True  # a write cut short by a kill: the only place a line can be broken
        else:
            lines.append((tail, line))
    if errors:
        if len(errors) > MAX_SHOWN:
            errors = errors[:MAX_SHOWN] + [InputError(f"… and {len(errors) - MAX_SHOWN} more", source=source)]
        raise InputErrors(errors)
    return lines, cut_off


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(line, dict) or not isinstance(line.get("id"), str):
        return None
    return line


def _open_locked(path: Path) -> TextIO:
    if path.exists() and not path.is_file():  # a device or pipe: reading it back could never end
        raise InputError("not a regular file (for stdout, leave out -o)", source=str(path))
    try:
        stream = open(path, "a+", encoding="utf-8", newline="\n")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", source=str(path)) from exc
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return stream
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        stream.close()
        raise InputError("another parallama batch is writing to it: wait for it to end, or write elsewhere",
                         source=str(path)) from None
    return stream


def _replace(path: Path, stream: TextIO, kept: Iterable[bytes]) -> TextIO:
    """Write the kept lines to a new file and move it over the old one in one step (a kill leaves either)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as out:
        out.write(b"".join(raw + b"\n" for raw in kept))
        out.flush()
        os.fsync(out.fileno())
    try:
        os.chmod(temporary, os.stat(path).st_mode & 0o777)
    except OSError:
        pass
    stream.close()  # Windows cannot replace an open file; elsewhere the lock moves to the new file below
    os.replace(temporary, path)
    return _open_locked(path)
