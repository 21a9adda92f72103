"""`parallama recommend`: worker and reviewer models for this machine's memory, from the built-in catalogue,
and whether the workers should get one instance each or share one instance's slots."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from .errors import NothingFits
from .memory import CATALOGUE, INSTANCE_OVERHEAD_GB, CatalogueModel, Machine
from .personas import REVIEWER_MAX_TOKENS, WORKER_MAX_TOKENS, persona_for, persona_options

CONTEXT = 4096
SAFETY = 0.85
"Keep 15% of the usable memory free: estimates are estimates."
REVIEWER_SHARE = 0.45
"The reviewer may take up to this share of the budget: it writes the final answer, so it gets the bigger model."
BASE_PORT = 11434


def kv_gb(model: CatalogueModel) -> float:
    return model.kv_kib_per_token * 1024 * CONTEXT / 1e9


def cost_gb(model: CatalogueModel, slots: int) -> float:
    return model.weights_gb + slots * kv_gb(model)


@dataclass
class Recommendation:
    machine: Machine
    budget_gb: float
    tier: str
    layout: str
    "`instances` (one server per worker) or `slots` (one server, OLLAMA_NUM_PARALLEL = workers)."
    workers: list[CatalogueModel]
    reviewer: CatalogueModel
    memory_gb: float
    reasons: list[str] = field(default_factory=list)

    @property
    def reviewer_port(self) -> int:
        """The reviewer has an instance of its own, after the workers': one model per server (as `doctor` wants),
        and the reviewer never waits behind a worker of the next run."""
        return BASE_PORT + (1 if self.layout == "slots" else len(self.workers))

    def config(self) -> dict:
        """A config for this recommendation (`run` accepts it): the workers differ as `up --write-config` makes
        them (each its own system prompt, temperature, seed and token cap: copies of one model answer alike)."""
        def worker(i: int, model: CatalogueModel) -> dict:
            port = BASE_PORT if self.layout == "slots" else BASE_PORT + i
            persona = persona_for(i)
            return {"name": f"Worker {chr(65 + i)} ({model.tag}, {persona.name})",
                    "api_url": f"http://localhost:{port}/api/chat", "model": model.tag, "system": persona.system,
                    "options": persona_options(persona, WORKER_MAX_TOKENS)}

        config: dict = {
            "reviewer_agent": {"name": f"Reviewer ({self.reviewer.tag})",
                               "api_url": f"http://localhost:{self.reviewer_port}/api/chat",
                               "model": self.reviewer.tag, "timeout": 180,
                               "options": {"temperature": 0.2, "num_predict": REVIEWER_MAX_TOKENS}},
            "worker_agents": [worker(i, m) for i, m in enumerate(self.workers)],
        }
        if self.layout == "slots":
            config["servers"] = {f"http://localhost:{BASE_PORT}": {"parallel": len(self.workers)}}
        return config

    def commands(self) -> list[str]:
        n = len(self.workers)
        models = sorted({m.tag for m in self.workers} | {self.reviewer.tag})
        if self.layout == "slots":  # the workers' instance with n slots, and the reviewer's
            start = f"parallama up --engine ollama -n 2 --parallel {n}"
        else:
            start = f"parallama up --engine ollama -n {n + 1}"
        out = [start] + [f"parallama pull {m}" for m in models]
        if shutil.which("ollama") is None:
            out.insert(0, "# Ollama is not installed here: install it first (https://ollama.com/download), or "
                          "start other servers and point the config at them")
        return out

    def to_dict(self) -> dict:
        return {"ram_gb": round(self.machine.ram_gb, 1), "vram_gb": round(self.machine.vram_gb, 1),
                "budget_gb": round(self.budget_gb, 1), "tier": self.tier, "layout": self.layout,
                "workers": [m.tag for m in self.workers], "reviewer": self.reviewer.tag,
                "memory_gb": round(self.memory_gb, 1), "reasons": self.reasons, "commands": self.commands(),
                "config": self.config()}


CPU_WORKER_MAX_B = 8.5
CPU_REVIEWER_MAX_B = 15.0
"Without a GPU, larger models generate only a few tokens per second: workers stay at ≤ 8B, the reviewer ≤ 14B."
DIVERSITY_FLOOR = 0.5
"""Different worker models are preferred while the smallest is at least half the size of the one model slots
would allow: different models give the reviewer different views to combine."""


def recommend(machine: Machine, workers: int = 3) -> Recommendation:
    """Pick models and a layout that fit `machine`, with the reasons.

    The reviewer is the largest model within REVIEWER_SHARE of the budget that leaves room for workers smaller
    than itself. The workers get different models, one instance each, unless one model in slots would be more
    than twice the size of the smallest of them (DIVERSITY_FLOOR).
    """
    budget = machine.usable_gb * SAFETY
    general = sorted((m for m in CATALOGUE if m.kind == "general"), key=lambda m: m.params_b)
    cpu_only = not machine.vram_gb
    fitting = [m for m in general if cost_gb(m, 1) + INSTANCE_OVERHEAD_GB <= budget * REVIEWER_SHARE
               and not (cpu_only and m.params_b > CPU_REVIEWER_MAX_B)]
    best: tuple | None = None
    for reviewer in reversed(fitting):
        smaller = [m for m in general if m.params_b < reviewer.params_b
                   and not (cpu_only and m.params_b > CPU_WORKER_MAX_B)] or [reviewer]
        # instances: one per worker; the reviewer shares the first instance (Ollama keeps both loaded).
        spread = _distinct_models(smaller, workers, budget - cost_gb(reviewer, 1))
        # slots: one instance with N slots; every model loaded there gets N context caches.
        room = budget - cost_gb(reviewer, workers) - INSTANCE_OVERHEAD_GB
        shared = next((m for m in reversed(smaller) if cost_gb(m, workers) <= room), None)
        if spread and (shared is None or min(m.params_b for m in spread) >= DIVERSITY_FLOOR * shared.params_b):
            memory = cost_gb(reviewer, 1) + sum(cost_gb(m, 1) + INSTANCE_OVERHEAD_GB for m in spread)
            best = ("instances", spread, reviewer, memory, shared)
        elif shared:
            memory = cost_gb(reviewer, workers) + cost_gb(shared, workers) + INSTANCE_OVERHEAD_GB
            best = ("slots", [shared] * workers, reviewer, memory, spread)
        if best:
            break  # the largest reviewer that leaves room for workers
    if best is None:
        raise NothingFits(f"{budget:.1f} GB is not enough for {workers} workers and a reviewer, "
                          f"even with {general[0].tag}")
    layout, chosen, reviewer, memory, other = best
    where = f"{machine.vram_gb:.0f} GB VRAM" if machine.vram_gb else f"{machine.ram_gb:.0f} GB RAM"
    reasons = [f"budget {budget:.1f} GB: {where}" + ("" if machine.vram_gb else ", less 2 GB for the system")
               + f", less {100 - SAFETY * 100:.0f}% headroom; a {CONTEXT}-token context per slot"]
    if not machine.vram_gb:
        reasons.append(f"no GPU: workers ≤ {CPU_WORKER_MAX_B:g}B and the reviewer ≤ {CPU_REVIEWER_MAX_B:g}B "
                       "parameters — bigger models generate only a few tokens per second on a CPU")
    reasons.append(f"reviewer {reviewer.tag} ({reviewer.params_b:g}B): the reviewer writes the final answer, so "
                   "it gets the largest model that still leaves room for the workers")
    if layout == "instances":
        reasons.append(f"workers {', '.join(m.tag for m in chosen)}: {workers} different models, one Ollama instance "
                       "each — different models give the reviewer different views to combine, and separate "
                       "instances run truly in parallel (one port per worker)")
        if other:
            reasons.append(f"not {workers} slots of {other.tag}: one instance would hold its weights once, but "
                           "it is less than twice the size of the smallest of these models")
    else:
        shared = chosen[0]
        reasons.append(f"workers {workers} × {shared.tag} on one instance with OLLAMA_NUM_PARALLEL={workers}: its "
                       f"weights are held once ({shared.weights_gb:.1f} GB) and each slot adds only its context "
                       f"cache ({kv_gb(shared):.2f} GB), where {workers} instances would hold "
                       f"{workers * shared.weights_gb:.1f} GB of weights; at this memory that buys bigger workers "
                       "than different models would")
        if other:
            reasons.append(f"not {', '.join(m.tag for m in other)} on separate instances: the smallest would be "
                           f"less than half the size of {shared.tag}")
    if cpu_only:
        cores = os.cpu_count() or 1
        biggest = max(m.params_b for m in [*chosen, reviewer])
        reasons.append(f"speed: on a CPU ({cores} core{'s' if cores != 1 else ''}) a {biggest:g}B model writes a "
                       f"few tokens per second at best{' (fewer with so few cores)' if cores <= 4 else ''}, so a "
                       "300-token answer takes a minute or more, and the workers share the cores: for quick "
                       "answers pick 1–3B models (`ollama pull llama3.2:1b`), or a machine with a GPU")
    tier = _tier(machine)
    reasons.append(f"≈ {memory:.1f} GB in all; the usual layout for {where}: {tier}")
    return Recommendation(machine, budget, tier, layout, chosen, reviewer, memory, reasons)


def _distinct_models(models: list[CatalogueModel], n: int, room: float) -> list[CatalogueModel] | None:
    """n different models, each in its own instance, fitting in `room` together, as large as possible:
    the set whose smallest member is largest (then the largest total)."""
    def need(m: CatalogueModel) -> float:
        return cost_gb(m, 1) + INSTANCE_OVERHEAD_GB

    best: list[CatalogueModel] | None = None
    for floor in models:
        pool = sorted((m for m in models if m.params_b >= floor.params_b), key=need)[:n]
        if len(pool) < n or sum(need(m) for m in pool) > room:
            continue
        # Grow the set greedily from the floor while it still fits.
        chosen = pool
        for candidate in sorted(models, key=lambda m: m.params_b, reverse=True):
            if candidate in chosen:
                continue
            smallest = min(chosen, key=lambda m: m.params_b)
            trial = [m for m in chosen if m is not smallest] + [candidate]
            if candidate.params_b > smallest.params_b and sum(need(m) for m in trial) <= room:
                chosen = trial
        key = (min(m.params_b for m in chosen), sum(m.params_b for m in chosen))
        if best is None or key > (min(m.params_b for m in best), sum(m.params_b for m in best)):
            best = sorted(chosen, key=lambda m: -m.params_b)
    return best


def _tier(machine: Machine) -> str:
    if machine.vram_gb >= 24 or machine.ram_gb >= 64:
        return "≥ 64 GB / GPU: three or more instances"
    if machine.ram_gb >= 32:
        return "32 GB: two instances of 7–8B models"
    return "≤ 16 GB: small models, which can share one instance"
