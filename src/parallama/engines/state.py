"""The record of server instances parallama started: one JSON file in the user's state directory.

The file is validated when read. When it is damaged (not JSON, the wrong shape, a wrong value in an entry, a
directory of that name) the reader says so and where, keeps the sound entries, and finds the instances still
running by their processes: an engine's command line whose output goes to the log parallama gave it, listening on
that log's port. The damaged file is set aside, never overwritten. A recorded process is ours only while its start
time and command line are the recorded ones, so a recycled pid is never signalled.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import psutil
from pydantic import Field, TypeAdapter, ValidationError

from ..errors import SetupError
from ..urls import http_url
from ..paths import state_dir
from .llama_cpp import LAUNCHER

STATE_FILE = "instances.json"
MAX_STATE_BYTES = 4 << 20
"Thousands of instances fit in far less; a larger file is not ours."


@dataclass
class Instance:
    """One running server process that parallama started."""

    engine: str
    pid: Annotated[int, Field(ge=1, strict=True)]
    host: str
    port: Annotated[int, Field(ge=1, le=65535, strict=True)]
    model: str
    log: str
    parallel: Annotated[int, Field(ge=1, strict=True)] = 1
    threads: int | None = None
    create_time: Annotated[float, Field(ge=0, strict=True)] = 0.0
    "The process's start time, so a recycled pid is not taken for ours."
    cmdline: list[str] = field(default_factory=list)
    "The process's command line when it started: with `create_time`, what tells it from any other process."
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def api_url(self) -> str:
        """What a worker's `api_url` should be for this instance."""
        return self.url + ("/v1" if self.engine == "llama-cpp" else "/api/chat")

    def identify(self) -> tuple[psutil.Process | None, str]:
        """The live process while it is the one recorded; else None and why not, as `pid N <why>`."""
        try:
            proc = psutil.Process(self.pid)
            with proc.oneshot():
                created, status, cmdline = proc.create_time(), proc.status(), proc.cmdline()
        except psutil.NoSuchProcess:  # a zombie too
            return None, "is gone"
        except psutil.Error:  # another user's process: not one we started
            return None, "belongs to a process this user cannot inspect, so not to ours"
        if status == psutil.STATUS_ZOMBIE:
            return None, "is gone"
        if not self.create_time:
            return None, "has no start time on record, so it cannot be told from another process"
        if abs(created - self.create_time) > 1.0:
            return None, "now belongs to another process (it started at another time)"
        same = cmdline == self.cmdline if self.cmdline else engine_of(cmdline) == self.engine  # older records
        if not same:
            return None, f"now runs another command ({shlex.join(cmdline)[:80]})"
        return proc, ""

    def process(self) -> psutil.Process | None:
        """The live process, or None when it is gone or the pid now belongs to another process."""
        return self.identify()[0]


_ENTRY = TypeAdapter(Instance)


def engine_of(cmdline: list[str]) -> str | None:
    """The engine a command line runs: `ollama serve`, or our llama.cpp server launcher; None for anything else."""
    for i, arg in enumerate(cmdline):
        if Path(arg).name == "ollama" and cmdline[i + 1:i + 2] == ["serve"]:
            return "ollama"
    return "llama-cpp" if LAUNCHER in cmdline else None


def find_running(log_dir: Path) -> list[Instance]:
    """Instances of ours found by their processes alone: an engine's command line, output going to
    `log_dir/<engine>-<port>.log` (the log parallama gave it), and listening on that port."""
    found: list[Instance] = []
    log_dir = log_dir.resolve()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        engine = engine_of(cmdline)
        if engine is None:
            continue
        try:
            with proc.oneshot():
                logs = [Path(f.path) for f in proc.open_files()]
                listening = {c.laddr.port: c.laddr.ip for c in proc.net_connections("inet")
                             if c.status == psutil.CONN_LISTEN}
                created = proc.create_time()
        except psutil.Error:
            continue
        for log in logs:
            named = re.fullmatch(rf"{re.escape(engine)}-(\d+)\.log", log.name)
            if not named or log.parent != log_dir or int(named[1]) not in listening:
                continue
            port = int(named[1])
            model = cmdline[cmdline.index("--model") + 1] if "--model" in cmdline[:-1] else ""
            found.append(Instance(engine=engine, pid=proc.pid, host=listening[port], port=port, model=model,
                                  log=str(log), create_time=created, cmdline=cmdline, extra={"recovered": True}))
            break
    return found


@dataclass(frozen=True)
class StateRecord:
    """What the instances file holds, and what was wrong with it."""

    instances: list[Instance]
    "The sound entries, then the instances found running again when the file was damaged."
    damage: str | None = None
    "What is wrong with the file, naming it; None when it is sound or absent."
    recovered: list[Instance] = field(default_factory=list)
    "Instances found by their processes that the file did not (soundly) hold."


class InstanceStore:
    """Reads (validating) and writes (atomically) the instances file."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / STATE_FILE

    def read(self) -> StateRecord:
        """The record; when the file is damaged, its sound entries plus the instances found by their processes."""
        instances, damage = self._parse()
        if damage is None:
            return StateRecord(instances)
        known = {i.port for i in instances} | {i.pid for i in instances}
        recovered = [i for i in find_running(self.directory / "logs") if i.port not in known and i.pid not in known]
        return StateRecord(instances + recovered, damage, recovered)

    def load(self) -> list[Instance]:
        return self.read().instances

    def repair(self, record: StateRecord) -> Path | None:
        """Set a damaged file aside (returned) and write what `record` holds in its place."""
        aside = self._set_aside()
        self._write(record.instances)
        return aside

    def save(self, instances: list[Instance]) -> None:
        self._set_aside()
        self._write(instances)

    def add(self, instance: Instance) -> None:
        self.save([i for i in self.load() if i.port != instance.port] + [instance])

    def remove(self, ports: set[int]) -> None:
        self.save([i for i in self.load() if i.port not in ports])

    def log_dir(self) -> Path:
        path = self.directory / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------ the file

    def _parse(self) -> tuple[list[Instance], str | None]:
        where = str(self.path)
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return [], None
        except IsADirectoryError:
            return [], f"{where} is a directory, not parallama's record of instances"
        except OSError as exc:
            return [], f"{where} cannot be read ({exc.strerror or exc})"
        if len(raw) > MAX_STATE_BYTES:
            return [], f"{where} is larger than {MAX_STATE_BYTES >> 20} MiB, not a record of instances"
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            return [], f"{where} is not JSON ({reason})"
        if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
            found = type(data).__name__ if not isinstance(data, dict) else \
                f'"instances": {type(data.get("instances")).__name__}'
            return [], f'{where} is not a record of instances (expected {{"instances": [...]}}, found {found})'
        instances, problems = [], []
        for n, item in enumerate(data["instances"]):
            try:
                instances.append(_ENTRY.validate_python(item))
            except ValidationError as exc:
                err = exc.errors()[0]
                place = "".join(f".{part}" for part in err["loc"])
                problems.append(f"instances[{n}]{place}: {err['msg']}")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return instances, f"{where}: {problems[0]}{more}; that entry is left out"
        return instances, None

    def _set_aside(self) -> Path | None:
        """Move a damaged file (or a directory in its place) out of the way, never overwriting anything."""
        if not self.path.exists() and not self.path.is_symlink():
            return None
        _, damage = self._parse()
        if damage is None:
            return None
        for n in range(1, 1000):
            aside = self.path.with_name(f"{STATE_FILE}.damaged-{n}")
            if not aside.exists():
                break
        try:
            os.rename(self.path, aside)
        except OSError as exc:
            raise SetupError(f"{damage}, and it cannot be moved aside ({exc.strerror or exc}): move it away") from exc
        return aside

    def _write(self, instances: list[Instance]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"instances": [asdict(i) for i in instances]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".instances-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, self.path)
