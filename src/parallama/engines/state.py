"""The record of server instances parallama started: one JSON file in the user's state directory."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import state_dir

import psutil

@dataclass
class Instance:
    """One running server process that parallama started."""

    engine: str
    pid: int
    host: str
    port: int
    model: str
    log: str
    parallel: int = 1
    threads: int | None = None
    create_time: float = 0.0
    "The process's start time, so a recycled pid is not taken for ours."
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What a worker's `api_url` should be for this instance."""
        return self.url + ("/v1" if self.engine == "llama-cpp" else "/api/chat")

    def process(self) -> psutil.Process | None:
        """The live process, or None when it is gone (or the pid now belongs to another process)."""
        try:
            proc = psutil.Process(self.pid)
            if self.create_time and abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


class InstanceStore:
    """Reads and writes the instances file atomically."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / "instances.json"

    def load(self) -> list[Instance]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return []
        return [Instance(**item) for item in data.get("instances", [])]

    def save(self, instances: list[Instance]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"instances": [asdict(i) for i in instances]}, indent=2)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".instances-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, self.path)

    def add(self, instance: Instance) -> None:
        self.save([i for i in self.load() if i.port != instance.port] + [instance])

    def remove(self, ports: set[int]) -> None:
        self.save([i for i in self.load() if i.port not in ports])

    def log_dir(self) -> Path:
        path = self.directory / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path
