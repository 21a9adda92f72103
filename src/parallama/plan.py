"""The plan of a fleet before it runs: which agents share which server and its slots (will they really run in
parallel?), and how much memory each server needs against what this machine has."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .backends import backend_for
from .fleet import Agent, Fleet
from .memory import (CATALOGUE, GB, INSTANCE_OVERHEAD_GB, CatalogueModel, Machine, ModelEstimate, catalogue_entry,
                     estimate_from_catalogue, estimate_from_gguf, estimate_from_show, this_machine)
from .probe import ServerProbe, probe_servers, same_model
from .urls import is_local, server_of


def probe_base(agent: Agent) -> str:
    """The URL the server's own endpoints hang from: `http://h:p` for Ollama, `…/v1` for OpenAI-compatible."""
    return backend_for(agent.protocol).probe_base(agent.endpoint)


@dataclass(frozen=True)
class Finding:
    """One thing the plan says, with what to do about it when something should change."""

    text: str
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.text}. {self.fix}." if self.fix else self.text


@dataclass
class ServerPlan:
    url: str
    protocol: str
    parallel: int
    workers: list[str]
    reviewer: str | None
    local: bool
    models: list[ModelEstimate] = field(default_factory=list)
    unknown_models: list[str] = field(default_factory=list)
    probe: ServerProbe | None = None
    pooled: list[str] = field(default_factory=list)
    "Agents whose pool has this server as a replica: its memory holds their model; their requests spread over the pool."

    @property
    def waves(self) -> int:
        """How many rounds the workers on this server take: ⌈workers ÷ slots⌉."""
        return math.ceil(len(self.workers) / self.parallel) if self.workers else 0

    @property
    def memory_gb(self) -> float:
        return INSTANCE_OVERHEAD_GB + sum(m.total_gb(self.parallel) for m in self.models)


@dataclass
class FleetPlan:
    servers: list[ServerPlan]
    machine: Machine
    parallel: list[Finding]
    truly_parallel: bool
    memory_lines: list[str]
    memory: Finding
    "The verdict: fits, does not fit (fix: what to change), or unknown."
    fits: bool | None
    "None when some local model's size is unknown."
    timeouts: list[Finding] = field(default_factory=list)
    "Reasoning models whose timeout leaves little room for thinking (it counts toward the timeout)."

    @property
    def local_memory_gb(self) -> float:
        return sum(s.memory_gb for s in self.servers if s.local)

    def to_dict(self) -> dict:
        return {
            "truly_parallel": self.truly_parallel,
            "parallel": [str(f) for f in self.parallel],
            "timeouts": [str(f) for f in self.timeouts],
            "fits": self.fits,
            "memory": self.memory_lines + [str(self.memory)],
            "machine": {"ram_gb": round(self.machine.ram_gb, 2), "vram_gb": round(self.machine.vram_gb, 2),
                        "gpu": self.machine.gpu, "usable_gb": round(self.machine.usable_gb, 2)},
            "local_memory_gb": round(self.local_memory_gb, 2),
            "servers": [{
                "url": s.url, "protocol": s.protocol, "parallel": s.parallel, "workers": s.workers,
                "reviewer": s.reviewer, "pooled": s.pooled, "local": s.local, "waves": s.waves,
                "memory_gb": round(s.memory_gb, 2),
                "unknown_models": s.unknown_models,
                "models": [{"model": m.model, "weights_gb": round(m.weights_gb, 2),
                            "kv_gb_per_slot": round(m.kv_gb_per_slot, 3), "total_gb": round(m.total_gb(s.parallel), 2),
                            "params_b": m.params_b, "quant": m.quant, "context": m.context, "source": m.source}
                           for m in s.models],
            } for s in self.servers],
        }


async def make_plan(fleet: Fleet, *, machine: Machine | None = None, probe: bool = True) -> FleetPlan:
    """Group the fleet by server, probe the servers (unless told not to), estimate memory, and judge it."""
    machine = machine or this_machine()
    servers: dict[str, ServerPlan] = {}
    bases: dict[str, str] = {}
    headers: dict[str, dict[str, str]] = {}
    for agent in (each.on(r) for each in fleet.agents for r in each.pool):  # every replica of a pool
        plan = servers.get(agent.server)
        if plan is None:
            plan = servers[agent.server] = ServerPlan(
                url=agent.server, protocol=agent.protocol, parallel=fleet.servers[agent.server].parallel,
                workers=[], reviewer=None, local=is_local(agent.server))
            bases[agent.server] = probe_base(agent)
        authorization = agent.authorization()
        if authorization and agent.server not in headers:  # probe as the agents will ask
            headers[agent.server] = {"Authorization": authorization}
        if agent.pooled:
            plan.pooled.append(agent.name)
        elif agent.role == "worker":
            plan.workers.append(agent.name)
        else:
            plan.reviewer = agent.name
    if probe:
        targets = [(bases[url], plan.protocol, _models_on(fleet, url), headers.get(url, {}))
                   for url, plan in servers.items()]
        for plan, result in zip(servers.values(), await probe_servers(targets)):
            plan.probe = result
    for plan in servers.values():
        _estimate_models(fleet, plan)
    parallel, truly_parallel = _parallel_verdict(fleet, list(servers.values()))
    memory_lines, memory, fits = _memory_verdict(list(servers.values()), machine)
    return FleetPlan(list(servers.values()), machine, parallel, truly_parallel, memory_lines, memory, fits,
                     _thinking_timeouts(fleet, servers))


THINKING_TIMEOUT_S = 120.0
"Below this, a model that thinks before answering may run out of time while still thinking."


def _thinking_timeouts(fleet: Fleet, servers: dict[str, ServerPlan]) -> list[Finding]:
    """Agents on a model whose server says it thinks (Ollama `capabilities`), with thinking on and a short timeout."""
    found = []
    for agent in fleet.agents:
        probe = servers[agent.server].probe
        shown = probe.shown.get(agent.model) if probe else None
        if not shown or "thinking" not in (shown.get("capabilities") or []) or agent.think is False:
            continue
        if agent.timeout < THINKING_TIMEOUT_S:
            found.append(Finding(
                f"{agent.name}: {agent.model} thinks before it answers, and its thinking counts toward its "
                f"timeout of {agent.timeout:g} s",
                f"give it a longer `timeout` (≥ {THINKING_TIMEOUT_S:g} s), or `\"think\": false` on the agent"))
    return found


def _models_on(fleet: Fleet, server: str) -> list[str]:
    seen: list[str] = []
    for agent in fleet.agents:
        if any(r.server == server for r in agent.pool) and agent.model not in seen:
            seen.append(agent.model)
    return seen


def _estimate_models(fleet: Fleet, plan: ServerPlan) -> None:
    from .engines.llama_cpp import CONTEXT_PER_SLOT
    from .engines.state import InstanceStore

    ours = {i.url: i for i in InstanceStore().load() if i.engine == "llama-cpp"}
    for model in _models_on(fleet, plan.url):
        agent = next(a for a in fleet.agents if a.model == model and any(r.server == plan.url for r in a.pool))
        context = int(agent.options.get("num_ctx") or backend_for(agent.protocol).default_context)
        estimate = None
        probe = plan.probe
        if probe and probe.loaded:
            size = next((b for name, b in probe.loaded.items() if same_model(model, name)), None)
            if size:
                estimate = ModelEstimate(model, size / 1e9, 0.0, "server (/api/ps, loaded now)", context=context)
        if estimate is None and probe and model in probe.shown:
            estimate = estimate_from_show(model, probe.shown[model], context)
        instance = next((i for u, i in ours.items() if _same_server(u, plan.url)), None)
        if estimate is None and instance and Path(instance.model).is_file():
            estimate = estimate_from_gguf(model, Path(instance.model).stat().st_size, CONTEXT_PER_SLOT)
        if estimate is None:
            estimate = estimate_from_catalogue(model, context)
        if estimate is None:
            plan.unknown_models.append(model)
        else:
            plan.models.append(estimate)


def _same_server(a: str, b: str) -> bool:
    return server_of(a) == server_of(b)


def _parallel_verdict(fleet: Fleet, servers: list[ServerPlan]) -> tuple[list[Finding], bool]:
    findings: list[Finding] = []
    serial = [s for s in servers if s.waves > 1]
    for s in serial:
        n = len(s.workers)
        how = ("they will run one after another (≈ the sum of their times)" if s.parallel == 1
               else f"they will run in {s.waves} rounds")
        fix = backend_for(s.protocol).more_slots_fix(s.url, n)
        slots = f"{s.parallel} slot{'s' if s.parallel > 1 else ''}"
        findings.append(Finding(f"{n} workers share {s.url} with {slots}: {how}", fix))
    pools: dict[tuple[str, ...], list[str]] = {}
    for worker in fleet.workers:
        if worker.pooled:
            pools.setdefault(tuple(r.server for r in worker.pool), []).append(worker.name)
    for replicas, names in pools.items():
        capacity = sum(fleet.servers[url].parallel for url in replicas)
        findings.append(Finding(f"{len(names)} worker{'s' if len(names) > 1 else ''} on a pool of {len(replicas)} "
                                f"replicas with {capacity} slots in all: each request takes a free replica"
                                + (f"; they run in {math.ceil(len(names) / capacity)} rounds"
                                   if len(names) > capacity else "")))
    if not serial:
        n = len(fleet.workers)
        count = len([s for s in servers if s.workers])
        findings.append(Finding(f"all {n} workers run at once on {count} server{'s' if count > 1 else ''}: "
                                "the workers take ≈ the slowest one's time, then the reviewer runs"))
    for s in servers:
        distinct = {m.model for m in s.models} | set(s.unknown_models)
        note = backend_for(s.protocol).several_models_note(len(distinct)) if len(distinct) > 1 else None
        if note and s.parallel > 1:
            findings.append(Finding(f"{s.url} serves {len(distinct)} different models at once", note))
    return findings, not serial


def _memory_verdict(servers: list[ServerPlan], machine: Machine) -> tuple[list[str], Finding, bool | None]:
    lines: list[str] = []
    local = [s for s in servers if s.local]
    unknown = sorted({m for s in local for m in s.unknown_models})
    need = sum(s.memory_gb for s in local)
    where = (f"{machine.vram_gb:.1f} GB of VRAM ({machine.gpu or 'GPU'})" if machine.vram_gb else
             f"{machine.ram_gb:.1f} GB of RAM ({machine.usable_gb:.1f} GB usable for models)")
    for s in local:
        parts = ", ".join(f"{m.model} {m.total_gb(s.parallel):.1f} GB ({m.source})" for m in s.models)
        lines.append(f"{s.url}: ≈ {s.memory_gb:.1f} GB — {parts or 'no known model'}, runtime "
                     f"{INSTANCE_OVERHEAD_GB:.1f} GB")
    if unknown:
        lines.append(f"size unknown for {', '.join(unknown)}: not counted (pull it, or start its server, so "
                     "`plan` can ask)")
    if not local:
        return lines, Finding("no local servers: nothing to hold in this machine's memory"), True
    if need <= machine.usable_gb:
        counted = f" (not counting {', '.join(unknown)})" if unknown else ""
        verdict = Finding(f"fits: ≈ {need:.1f} GB needed of {where}{counted}")
        return lines, verdict, (None if unknown else True)
    if machine.vram_gb and need <= machine.ram_gb - 2:
        return lines, Finding(
            f"does not fit in VRAM: ≈ {need:.1f} GB needed, {where}; Ollama puts the remaining layers on the CPU, "
            "which is much slower",
            "Limit layers per model with \"options\": {\"num_gpu\": N}, or use smaller models"), False
    return lines, Finding(f"does not fit: ≈ {need:.1f} GB needed, {where}",
                          "; ".join(_advice(local, need, machine.usable_gb))), False


def _advice(local: list[ServerPlan], need_gb: float, usable_gb: float) -> list[str]:
    advice: list[str] = []
    by_model: dict[str, list[ServerPlan]] = {}
    for s in local:
        for m in s.models:
            by_model.setdefault(m.model, []).append(s)
    for model, holders in by_model.items():
        if len(holders) > 1:
            weights = next(m.weights_gb for m in holders[0].models if m.model == model)
            advice.append(f"{len(holders)} servers each hold {model} ({weights:.1f} GB of weights): one instance "
                          f"with OLLAMA_NUM_PARALLEL={len(holders)} holds it once (saves ≈ "
                          f"{weights * (len(holders) - 1):.1f} GB)")
    biggest = max(((m, s) for s in local for m in s.models), key=lambda p: p[0].total_gb(p[1].parallel), default=None)
    if biggest:
        heaviest, server = biggest
        advice.append(_replacement(heaviest, server.parallel, usable_gb - (need_gb - heaviest.total_gb(server.parallel)),
                                   usable_gb))
        if server.parallel > 1:
            advice.append(f"fewer slots on {server.url}: each holds {heaviest.kv_gb_per_slot:.2f} GB of context "
                          f"cache for {heaviest.model} (or a lower num_ctx)")
    if len(local) > 1:
        advice.append(f"fewer instances: each of the {len(local)} local servers adds its runtime and models")
    advice.append(f"{need_gb - usable_gb:.1f} GB short")
    return advice


def _replacement(model: ModelEstimate, slots: int, free_gb: float, usable_gb: float) -> str:
    """The largest catalogue model (of the same kind, else any) that fits where `model` is, in the `free_gb` the
    other models leave; or, when none does, that none does and the largest that fits the machine on its own."""
    def total(m: CatalogueModel) -> float:
        return m.weights_gb + m.kv_kib_per_token * 1024 * model.context / GB * slots

    entry = catalogue_entry(model.model)
    kind = entry.kind if entry else "general"
    smaller = [m for m in CATALOGUE if m.weights_gb < model.weights_gb * 0.75]
    fitting = [m for m in smaller if total(m) <= free_gb]
    best = max((m for m in fitting if m.kind == kind), key=lambda m: m.params_b, default=None)
    best = best or max(fitting, key=lambda m: m.params_b, default=None)
    if best:
        return (f"a smaller model instead of {model.model} that fits the ≈ {free_gb:.1f} GB the others leave: "
                f"{best.tag} (≈ {total(best):.1f} GB with its context cache)")
    alone = max((m for m in smaller if total(m) + INSTANCE_OVERHEAD_GB <= usable_gb), key=lambda m: m.params_b,
                default=None)
    left = f"≈ {free_gb:.1f} GB" if free_gb > 0 else "nothing"
    return (f"no model in the catalogue fits in place of {model.model}: the other models leave {left}"
            + (f"; on its own, the largest that fits is {alone.tag} (≈ {total(alone):.1f} GB)" if alone else ""))
