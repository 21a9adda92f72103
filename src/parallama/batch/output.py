"""A batch's output: one JSON line per finished prompt (the `run --json` shape plus `id`, `answered` and `score`),
appended and flushed as each prompt finishes; and, to resume, what an earlier batch left in the file.

A line is written in one piece, so the only damage a crash or `kill -9` can do is cut the *last* line short;
resuming drops that line (its prompt runs again) and takes out the lines of prompts that got no answer, or whose
prompt has changed since, so they run again too and every id ends up in the file once. A result line carries its
prompt's fingerprint (`prompt_sha256`): that, with `answered`, is what tells it from an input line. The file is
locked while a batch writes to it, also while a resume rewrites it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Sequence, TextIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from ..errors import InputError, InputErrors, OutputError
from ..scoring import PromptScore, score_answers

if TYPE_CHECKING:
    from ..result import RunResult
    from ..stages import StrategyRun
    from .records import BatchRecord

MAX_SHOWN = 20
MAX_LINE = 64 * 1024 * 1024
"The most of a line read to tell what a file holds."


def result_line(record: "BatchRecord", result: "RunResult", compared: Sequence["StrategyRun"] = ()) -> dict[str, Any]:
    """The output line of a finished prompt; with `compared` (`batch --strategies`), `result` is the first
    strategy's and `strategies` holds each one's final answer, review details and cost."""
    line: dict[str, Any] = {"id": record.id, "answered": result.answered, "prompt_sha256": record.prompt_sha256,
                            **result.to_dict()}
    if compared:
        line["strategies"] = {run.strategy: strategy_entry(run) for run in compared}
    if record.expected is not None and record.match is not None:
        line["score"] = score_line(line, record)
    return line


def line_errors(line: dict[str, Any]) -> list[str]:
    """The errors of a line's failed requests, workers' first, then the reviews'."""
    agents = list(line.get("workers") or []) + list(line.get("review_attempts") or [])
    if line.get("review"):
        agents.append(line["review"])
    return [a["error"] for a in agents if a.get("status") != "ok" and a.get("error")]


def strategy_entry(run: "StrategyRun") -> dict[str, Any]:
    """One compared strategy in a line: its final answer and where it came from, its review's details, its cost."""
    result = run.result
    source = str(result.final_source) if result.final_source is not None else None
    entry: dict[str, Any] = {"final": result.final, "final_source": source, "answered": result.answered,
                             "wall_s": result.wall_s, **run.cost()}
    entry.update(result.details)
    if run.warnings:
        entry["warnings"] = run.warnings
    return entry


def score_line(line: dict[str, Any], record: "BatchRecord") -> PromptScore:
    """Score a result line against the record's expected answer: the final answer and each worker's first one."""
    assert record.expected is not None and record.match is not None
    rounds = line.get("earlier_rounds") or []
    first = rounds[0] if rounds else line.get("workers") or []
    answers = [(w["name"], w["content"] if w.get("status") == "ok" else None) for w in first]
    compared = [(name, entry.get("final")) for name, entry in (line.get("strategies") or {}).items()
                if isinstance(entry, dict)]
    return score_answers(record.expected, record.match, line.get("final"), answers, compared, record.prompt)


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
        self.changed: list[str] = []
        "Ids of this input whose prompt is not the one their earlier line answered: taken out, to run again."
        self.rescored: list[str] = []
        "Ids whose `expected` (or `match`) changed since their line was written: scored again, without a model call."
        self.cut_off = False
        "The file ended in a line cut short (by a kill): it was dropped, and its prompt runs again."
        self.other_ids = 0
        "Lines for ids that are not in this input (kept as they are)."
        self.duplicates = 0
        "Further answered lines for an id already answered above them (taken out)."
        self.failed = False
        "A write failed (and said so): closing does not say it again."

    @classmethod
    def open(cls, path: str | os.PathLike[str], records: Sequence["BatchRecord"]) -> "ResultsFile":
        """Open (or create) the output to go on from: read what is there, take out what must run again, lock it.
        Raises InputErrors, with nothing changed, when a line is not one a batch writes. A symbolic link is
        followed: its target is what is written (and rewritten)."""
        shown = Path(path)
        real = Path(os.path.realpath(path))
        stream = _open_locked(real, str(shown))
        try:
            stream.seek(0)
            data = stream.buffer.read()
            lines, cut_off = _read_lines(data, str(shown))
            by_id = {r.id: r for r in records}
            results = cls(shown, stream)
            results.cut_off = cut_off
            kept: list[bytes] = []
            for raw, line in lines:
                record = by_id.get(line["id"])
                if record is None:
                    results.other_ids += 1
                elif not _same_prompt(line, record):
                    results.changed.append(record.id)
                    continue
                elif line.get("answered") is not True:
                    results.rerun.append(record.id)
                    continue
                elif record.id in results.done:
                    results.duplicates += 1  # every id once: the first answer stays
                    continue
                else:
                    if _score_of(line) != _score_wanted(record):
                        line = rescored(line, record)
                        raw = _encoded(line)
                        results.rescored.append(record.id)
                    results.done[record.id] = line
                kept.append(raw)
            results.changed = [i for i in dict.fromkeys(results.changed) if i not in results.done]
            results.rerun = [i for i in dict.fromkeys(results.rerun)
                             if i not in results.done and i not in results.changed]
            taken_out = results.rerun or results.changed or results.duplicates
            if taken_out or results.rescored or cut_off or (data and not data.endswith(b"\n")):
                results.stream = _replace(real, stream, kept)
            results.stream.seek(0, os.SEEK_END)
            return results
        except BaseException:
            stream.close()
            raise

    def write(self, line: dict[str, Any]) -> None:
        try:
            super().write(line)
        except OSError as exc:  # a full disk: say so in one line (a resume drops what was cut short)
            self.failed = True
            raise OutputError(f"cannot write: {exc.strerror or exc} (the lines before it are kept: make room, then "
                              "go on with --resume)", file=self.path) from exc

    def close(self) -> None:
        try:
            self.stream.close()  # closes the file even when its last flush fails
        except OSError as exc:
            if not self.failed:
                raise OutputError(f"cannot write: {exc.strerror or exc}", file=self.path) from exc
            # else the write that failed said so; the rest of its line, still buffered, is let go with the file

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rescored(line: dict[str, Any], record: "BatchRecord") -> dict[str, Any]:
    """The line scored against the record's `expected` as it is now (without a score when it has none)."""
    line = {key: value for key, value in line.items() if key != "score"}
    if record.expected is not None and record.match is not None:
        line["score"] = score_line(line, record)
    return line


def _encoded(line: dict[str, Any]) -> bytes:
    """The line as the file holds it; escaped to ASCII when it holds what UTF-8 cannot (a lone surrogate's escape,
    read back from a line written by hand)."""
    try:
        return json.dumps(line, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(line).encode("ascii")


def _score_of(line: dict[str, Any]) -> tuple[Any, Any] | None:
    score = line.get("score")
    return (score.get("expected"), score.get("match")) if isinstance(score, dict) else None


def _score_wanted(record: "BatchRecord") -> tuple[Any, Any] | None:
    return (record.expected, record.match) if record.expected is not None else None


def _same_prompt(line: dict[str, Any], record: "BatchRecord") -> bool:
    fingerprint = line.get("prompt_sha256")
    if fingerprint is None:  # written before lines carried one: the prompt as the run kept it
        return line.get("prompt") == record.prompt
    return fingerprint == record.prompt_sha256


def same_file(a: str | os.PathLike[str] | int, b: str | os.PathLike[str]) -> bool:
    """Whether `a` (a path, or an open descriptor such as stdin's) and path `b` are one file, through any links."""
    try:
        first = os.fstat(a) if isinstance(a, int) else os.stat(a)
        second = os.stat(b)
    except (OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino) and first.st_ino != 0


def first_line_is_a_result(path: str | os.PathLike[str]) -> bool | None:
    """Whether the file's first line is a result line of a batch; None when the file is empty, missing or not a
    regular file (a device or a pipe could be read for ever)."""
    try:
        if not Path(path).is_file():
            return None
        with open(path, "rb") as held:
            first = b""
            while not first.strip():
                first = held.readline(MAX_LINE)
                if not first:
                    return None
    except OSError:
        return None
    if first.endswith(b"\n"):
        return _parse(first.rstrip(b"\r\n")) is not None
    return _parse(first) is not None or _cut_short(first)


def _read_lines(data: bytes, source: str) -> tuple[list[tuple[bytes, dict[str, Any]]], bool]:
    """Every line as (bytes, parsed); and whether a last line cut short (no newline, no whole JSON, the start of a
    result line) was left out."""
    raws = data.split(b"\n")
    tail = raws.pop()  # b"" when the file ends with a newline
    lines: list[tuple[bytes, dict[str, Any]]] = []
    errors: list[InputError] = []
    cut_off = False
    for n, raw in enumerate([*raws, tail], 1):
        if not raw.strip():
            continue
        line = _parse(raw)
        if line is not None:
            lines.append((raw, line))
        elif n == len(raws) + 1 and _cut_short(raw):
            cut_off = True  # a write cut short by a kill: the only place a line can be broken
        else:
            errors.append(InputError("not a result line of parallama batch (a JSON object with \"id\", "
                                     "\"answered\" and \"prompt_sha256\"): is this the right file?",
                                     source=source, line=n))
    if errors:
        if len(errors) > MAX_SHOWN:
            errors = errors[:MAX_SHOWN] + [InputError(f"… and {len(errors) - MAX_SHOWN} more", source=source)]
        raise InputErrors(errors)
    return lines, cut_off


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A result line, or None. An input line (`id`, `prompt`, `expected`) is not one: a result line has `answered`
    and its prompt's fingerprint (or, from before fingerprints, the run's `workers`)."""
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError):  # also UnicodeDecodeError, and numbers too long to read
        return None
    if not isinstance(line, dict) or not isinstance(line.get("id"), str) or not isinstance(line.get("answered"), bool):
        return None
    fingerprint = line.get("prompt_sha256")
    if fingerprint is None:
        return line if isinstance(line.get("workers"), list) and isinstance(line.get("prompt"), str) else None
    return line if isinstance(fingerprint, str) and len(fingerprint) == 64 else None


def _cut_short(raw: bytes) -> bool:
    """Whether `raw` is how a result line starts (as `json.dumps` writes it), and not whole JSON: a write cut short.
    Anything else on the last line (a note without its newline, an input line) is not a batch's, and stays."""
    if not raw.startswith(b'{"id": '):
        return False
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return False


def _open_locked(path: Path, shown: str) -> TextIO:
    """`path` opened to append and locked. A resume that rewrites the file moves a new one into its place while
    holding both locks; whoever opened the old one meanwhile sees that once it has the lock, and tries again."""
    if path.exists() and not path.is_file():  # a device or pipe: reading it back could never end
        raise InputError("not a regular file (for stdout, leave out -o)", source=shown)
    for _ in range(10):
        try:
            stream = open(path, "a+", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror or exc}", source=shown) from exc
        if fcntl is None:  # Windows: no advisory locks here
            return stream
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            stream.close()
            raise InputError("another parallama batch is writing to it: wait for it to end, or write elsewhere",
                             source=shown) from exc
        if same_file(stream.fileno(), path):
            return stream
        stream.close()  # replaced while we opened it: lock the file that is there now
    raise InputError("another parallama batch keeps replacing it: write elsewhere", source=shown)


def _replace(path: Path, stream: TextIO, kept: Iterable[bytes]) -> TextIO:
    """Write the kept lines to a new file and move it over the old one in one step (a kill leaves either). The new
    file is locked before it takes the name, and the old one's lock is let go only after: no moment is unlocked."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    new = open(temporary, "a+", encoding="utf-8", newline="\n")
    try:
        if fcntl is not None:
            fcntl.flock(new.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        new.buffer.write(b"".join(raw + b"\n" for raw in kept))
        new.buffer.flush()
        os.fsync(new.fileno())
        try:
            os.chmod(temporary, os.stat(path).st_mode & 0o777)
        except OSError:
            pass
        if fcntl is None:  # Windows cannot replace an open file (and has no locks to keep)
            new.close()
            stream.close()
            os.replace(temporary, path)
            return open(path, "a+", encoding="utf-8", newline="\n")
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # its flush fails again on a full disk
            new.close()
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot rewrite it: {exc.strerror or exc} (it is left as it was)", file=path) from exc
        raise
    stream.close()
    return new
