"""The embedded demo fleet: SmolLM2-135M-Instruct (`demo_model`) on llama.cpp, for a machine with no config.

Laid out as one instance with a slot per worker (`WORKERS` slots, continuous batching over one copy of the model),
not an instance per worker: measured on the demo fleet (`benchmarks/engines.py`, the README's table), one run and
a small batch both end sooner that way on a 2-core machine, and one model load is started instead of three.

Chosen by trial on this model (135M parameters, English, instruction-tuned):
- Workers: three personas at temperatures 0.3, 0.5 and 0.7; above about 0.8 its answers drift into French or off the
  question. "Short" in the system prompts keeps most answers well under the token cap, so few are cut off.
- Reviewer: with the default synthesize prompt it copied the labelled answers back ("### Answer from ..."), or wrote
  "That's a great answer!". Given the answers as numbered notes in its system message and the question alone as the
  user's turn — the way it was tuned to chat — it answers the question itself (no copying in 30 trials of 5
  questions, against 5–7 for the other layouts tried).
- Seeded: each agent has its own fixed seed, so one question gives the same answers again on the same build. The
  seeds are the ones (of 1–8) that answered four plain questions (capital of France, sky, plants, rain) best.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .config import fleet_from_dict
from .fleet import Fleet
from .demo_model import ALIAS, model_path
from .engines.state import Instance, InstanceStore
from .personas import SMALL_MODEL_REVIEW, Persona, persona_options

if TYPE_CHECKING:
    from .engines.instances import BusyPort, StartReport

WORKERS = 3
BASE_PORT = 8080


PERSONAS = [
    Persona("Worker A (teacher)", "You are a friendly science teacher. Give a short, clear answer.", 0.3, 2),
    Persona("Worker B (simple)", "You are a helpful assistant who explains things simply, as if to a child. "
                                 "Keep it short.", 0.5, 8),
    Persona("Worker C (example)", "You are a helpful assistant. Answer briefly and give one everyday example.", 0.7, 6),
]
REVIEWER = Persona("Reviewer", "You are a helpful assistant.", 0.2, 3)
WORKER_MAX_TOKENS = 256
REVIEWER_MAX_TOKENS = 256
TIMEOUT_S = 300
"""Each demo agent's timeout: a whole answer (256 tokens) at one token a second, and its prompt. Measured on the
2-core machine at load 26–31, the workers took 31–49 s and the reviewer 51 s (4–9 tok/s); the 90 s and 120 s this
replaces left a machine two or three times as busy, or as slow, with a worker failed or the reviewer's answer lost.
The server is this run's own, and its crash is seen at once: the timeout only has to catch one that hangs."""


def embedded_fleet(instances: list[Instance], *, seeded: bool = True) -> Fleet:
    """Three workers with different system prompts and temperatures, spread over the instances (their slots in
    `servers`), the reviewer on the first instance."""
    slots = [i for i in instances for _ in range(max(1, i.parallel))]

    def agent(persona: Persona, instance: Instance, max_tokens: int, timeout: float) -> dict:
        options = persona_options(persona, max_tokens, seeded=seeded)
        return {"name": persona.name, "api_url": instance.api_url, "model": ALIAS, "system": persona.system,
                "timeout": timeout, "options": options}

    config = {
        "reviewer_agent": agent(REVIEWER, instances[0], REVIEWER_MAX_TOKENS, TIMEOUT_S),
        "worker_agents": [agent(persona, slots[i % len(slots)], WORKER_MAX_TOKENS, TIMEOUT_S)
                          for i, persona in enumerate(PERSONAS)],
        "review": dict(SMALL_MODEL_REVIEW),
    }
    servers = {i.url: {"parallel": i.parallel} for i in instances if i.parallel > 1}
    if servers:
        config["servers"] = servers
    return fleet_from_dict(config, source="embedded demo fleet")


@dataclass
class DemoInstances:
    """The instances a demo run uses: some already `up` (reused), the rest started for this run."""

    instances: list[Instance]
    started: "StartReport | None"

    @property
    def reused(self) -> int:
        return len(self.instances) - (len(self.started.instances) if self.started else 0)

    @property
    def slots(self) -> int:
        return sum(i.parallel for i in self.instances)

    @property
    def skipped(self) -> list["BusyPort"]:
        """Busy ports passed over when starting, each with what holds it (the reused instances' own not counted)."""
        ours = {i.port for i in self.instances}
        return [busy for busy in self.started.skipped if busy.port not in ours] if self.started else []

    @property
    def ports(self) -> list[int]:
        return [i.port for i in self.instances]

    def crashes(self) -> list[str]:
        """One line per started instance that has crashed since (a broken llama.cpp build, say)."""
        return self.started.crashes() if self.started else []


def _ours(instance: Instance, path: Path) -> bool:
    return instance.engine == "llama-cpp" and instance.model == str(path) and instance.process() is not None


@contextlib.contextmanager
def demo_instances(slots: int = WORKERS, *, on_ready=None) -> Iterator[DemoInstances]:
    """Instances of the demo model with `slots` slots in all: ones already `up` are reused (as many as it takes),
    and what they lack is started here, as one instance with that many slots, and stopped on exit."""
    from .engines.instances import start_instances, stop_instances
    from .engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine()
    engine.check()
    path = model_path()
    store = InstanceStore()
    reused: list[Instance] = []
    for instance in (i for i in store.load() if _ours(i, path)):
        if sum(i.parallel for i in reused) >= slots:
            break
        reused.append(instance)
    missing = slots - sum(i.parallel for i in reused)
    report = None
    try:
        if missing > 0:
            report = start_instances(engine, 1, base_port=BASE_PORT, store=store, ephemeral=True,
                                     parallel=missing, on_ready=on_ready)
        yield DemoInstances(reused + (report.instances if report else []), report)
    finally:
        if report:
            stop_instances(report.instances, store=store)
