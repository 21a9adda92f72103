"""Fake model servers in their own process, so a benchmark's client CPU is measured alone.

    with FakeFleet(servers=8, slots=8, models={"m": dict(latency=1.0, tokens=100)}) as urls: ...

A model's `respond` may name a function as "module:function" (importable in the child process), since a function
itself does not cross to it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _serve(conn, servers: int, slots: int | None, models: dict[str, dict]) -> None:
    from contextlib import ExitStack

    from fakes import FakeServer

    with ExitStack() as stack:
        fakes = [stack.enter_context(FakeServer(slots=slots)) for _ in range(servers)]
        for fake in fakes:
            for name, behaviour in models.items():
                if isinstance(behaviour.get("respond"), str):
                    import importlib

                    module, _, function = behaviour["respond"].partition(":")
                    behaviour = {**behaviour, "respond": getattr(importlib.import_module(module), function)}
                fake.model(name, **behaviour)
        conn.send([f.url for f in fakes])
        while True:
            message = conn.recv()
            if message == "stop":
                break
            if message == "max_in_flight":
                conn.send([f.max_in_flight for f in fakes])
            if message == "reset":
                for f in fakes:
                    f.reset()
                conn.send(True)


class FakeFleet:
    def __init__(self, *, servers: int, slots: int | None, models: dict[str, dict]) -> None:
        self.args = (servers, slots, models)

    def __enter__(self) -> "FakeFleet":
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=_serve, args=(child, *self.args), daemon=True)
        self.proc.start()
        self.urls: list[str] = self.conn.recv()
        return self

    def ask(self, message: str):
        self.conn.send(message)
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.proc.join(10)


if __name__ == "__main__":
    with FakeFleet(servers=2, slots=1, models={"m": {"latency": 0.1}}) as fleet:
        print(json.dumps(fleet.urls))
